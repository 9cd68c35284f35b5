"""The watcher of harness.ranks.last_words, run by path in its own interpreter.

argv: JUNIT_FILE (or "") SUITE_NAME; stdin: the test process's pipe. Lines that
start with \\x1e are the runner's (T: a test starts, R: thread id -> rank, E:
the test ended); everything else is faulthandler's dump, passed on to stderr.
When the pipe ends while a test runs, the process died in it: write its verdict.
"""

import json
import signal
import sys
import xml.etree.ElementTree as ET

# faulthandler's first line, "Fatal Python error: <this>", for each signal it handles
FATAL = {
    "Segmentation fault": signal.SIGSEGV,
    "Aborted": signal.SIGABRT,
    "Bus error": signal.SIGBUS,
    "Floating-point exception": signal.SIGFPE,
    "Floating point exception": signal.SIGFPE,
    "Illegal instruction": signal.SIGILL,
}


def _cause(dump: list[str], ranks: dict[int, int]) -> str:
    sig = thread = None
    for line in dump:
        if line.startswith("Fatal Python error: "):
            sig = FATAL.get(line.split(": ", 1)[1].strip())
        elif line.startswith("Current thread 0x") and thread is None:
            thread = int(line.split()[2], 16)
    if sig is None:
        return "the test process ended without a word (a signal from outside, e.g. SIGKILL)"
    how = f"killed by {sig.name} (exit code {-sig.value})"
    if thread in ranks:
        return f"rank {ranks[thread]} crashed: {how}, and the test process with it"
    return f"the test process was {how} outside any rank thread"


def _junit(path: str, suite: str, test: dict, message: str, dump: str) -> None:
    root = ET.Element("testsuites")
    attrs = {"name": suite, "tests": "1", "failures": "1", "errors": "0", "skipped": "0"}
    case = ET.SubElement(ET.SubElement(root, "testsuite", attrs), "testcase")
    case.set("classname", test["classname"])
    case.set("name", test["name"])
    ET.SubElement(case, "failure", message=message).text = message + "\n\n" + dump
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def main() -> None:
    junit, suite = sys.argv[1], sys.argv[2]
    test, ranks, dump = None, {}, []
    for raw in sys.stdin.buffer:
        line = raw.decode("utf-8", "replace")
        if line.startswith("\x1eT "):
            test, ranks, dump = json.loads(line[3:]), {}, []
        elif line.startswith("\x1eR "):
            ident, rank = line[3:].split()
            ranks[int(ident)] = int(rank)
        elif line.startswith("\x1eE"):
            test = None
        else:
            dump.append(line)
            sys.stderr.write(line)
            sys.stderr.flush()
    if test is None:
        return
    message = (
        f"{test['test']} (threads mode): {_cause(dump, ranks)}. "
        f"Rerun just this test: {test['rerun']}"
    )
    print(f"harness: {message}", file=sys.stderr, flush=True)
    if junit:
        _junit(junit, suite, test, message, "".join(dump))


if __name__ == "__main__":
    main()
