"""What each launcher rank runs: ``python -m harness.ranks.external_main [pytest args]``.

torchrun or srun starts one of these per rank. Each runs the same pytest
session in external mode; rank 0 keeps the console, the others write
``<results>/ranks/rank<N>.log``. At the end every rank hands its JUnit XML to
rank 0 through the launcher's store (nodes need not share a disk), and rank 0
writes the merged file where ``HARNESS_JUNIT`` points (``harness run`` sets it;
default ``results/<HARNESS_CELL or external>/junit.xml``).
"""

from __future__ import annotations

import contextlib
import faulthandler
import functools
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from harness import junit, lifelines
from harness.errors import UsageError
from harness.ranks import external, watchdog
from harness.ranks.launch import Launch, detect
from harness.ranks.session import Session

# How long rank 0 waits for the other ranks' reports after its own session ends.
GATHER_S = 600.0
# How long a rank 0 that gives up waits for each of the others (agreeing, gathering).
LAST_WORDS_S = 30.0


class _ExternalHooks:
    """Stops the session once a rank is lost; names this rank in the header."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.session = None
        self.running: tuple[str, Any] | None = None  # (nodeid, location) of the test

    def pytest_runtest_logstart(self, nodeid, location) -> None:
        self.running = (nodeid, location)

    def pytest_sessionstart(self, session) -> None:
        self.session = session

    def pytest_report_header(self) -> str:
        return f"harness: external {self.launch.describe()}"

    def pytest_runtest_logfinish(self) -> None:
        s = external.current_session()
        if s is not None and s.lost and self.session is not None:
            self.session.shouldstop = s.stop_message()


def _redirect(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        launch = detect()
    except UsageError as exc:
        print(f"harness: error: {exc}", file=sys.stderr)
        return 2
    if launch is None:
        print(
            "harness: error: this process was not started by a launcher; run it under "
            "torchrun, or under srun with HARNESS_LAUNCHER=slurm (see docs/multi-node.md).",
            file=sys.stderr,
        )
        return 2
    if launch.launcher == "torchrun":  # the agent gone (SIGKILL included), its ranks go
        lifelines.die_with_parent()
    # The launcher's world is the world: tests size themselves from it.
    os.environ.update(launch.torch_env())
    os.environ["HARNESS_WORLD_SIZE"] = str(launch.world_size)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # `harness run` names the merged file; a bare torchrun gets the same layout
    cell = os.environ.get("HARNESS_CELL", "").strip() or "external"
    final = Path(os.environ.get("HARNESS_JUNIT", "").strip() or Path("results", cell, "junit.xml"))
    mine = final.parent / "ranks" / f"junit-rank{launch.rank}.xml"
    args.append(f"--junitxml={mine}")
    if launch.rank != 0:
        _redirect(mine.parent / f"rank{launch.rank}.log")
    watchdog.keep_stderr()
    hooks = _ExternalHooks(launch)
    watchdog.LAST_WORDS = functools.partial(_last_words, hooks, launch, mine, final)
    # the entry point imported harness before pytest could rewrite it; that is fine
    args += ["-W", "ignore::pytest.PytestAssertRewriteWarning"]
    code = int(pytest.main(args, plugins=[hooks]))
    s = external.session()
    code = _hand_in(s, launch, mine, final, code)
    s.finish()
    sys.stdout.flush()
    sys.stderr.flush()
    s.close()
    # Skip interpreter teardown: a group whose peers are gone can block in its destructor.
    os._exit(code)


def _last_words(hooks: _ExternalHooks, launch: Launch, mine: Path, final: Path, dog) -> None:
    """A rank gives up on a hung test: record it, write its JUnit XML, and on rank 0
    (which serves the store under Slurm) agree on the test and write the merged file,
    all before the process exits."""
    from harness.ranks.outcome import RankOutcome, verdict
    from harness.ranks.session import lost_after

    s = external.session()
    # however long agreeing and gathering take, this rank ends after them
    faulthandler.dump_traceback_later(2 * LAST_WORDS_S + 10.0, exit=True, file=dog.out)
    hung = RankOutcome(launch.rank, "hung", stack=dog.stack)
    message = f"rank {launch.rank}: {dog.name} hung past its {dog.timeout:g} s timeout"
    if launch.rank == 0:
        outcomes = s.agree(dog.key, hung, limit=min(lost_after(), LAST_WORDS_S))
        message = verdict(
            outcomes,
            world_size=launch.world_size,
            test_name=dog.name,
            timeout=dog.timeout,
            timed_out=True,
            rerun=external.rerun_command(f"pytest {hooks.running[0] if hooks.running else ''}"),
        ).message
    _record_failure(hooks, message)
    if launch.rank == 0:  # pytest captures stdout in a test: say it where the stacks went
        with contextlib.redirect_stdout(dog.out):
            _hand_in(s, launch, mine, final, 1, gather=min(lost_after(), LAST_WORDS_S))


def _record_failure(hooks: _ExternalHooks, message: str) -> None:
    """The running test as failed in pytest's JUnit XML, and the file written now."""
    from _pytest.junitxml import xml_key
    from _pytest.reports import TestReport

    xml = hooks.session.config.stash.get(xml_key, None) if hooks.session else None
    if xml is None or hooks.running is None:
        return
    nodeid, location = hooks.running
    for when, outcome, longrepr in (("call", "failed", message), ("teardown", "passed", None)):
        xml.pytest_runtest_logreport(
            TestReport(nodeid, location, {}, outcome, longrepr, when, user_properties=[])
        )
    xml.pytest_sessionfinish()


def _hand_in(
    s: Session, launch: Launch, mine: Path, final: Path, code: int, gather: float = GATHER_S
) -> int:
    data = mine.read_bytes() if mine.is_file() else b""
    if launch.rank != 0:
        # Wait for rank 0's merge: torchrun stops a node's ranks when one exits non-zero.
        s.store.set(f"junit/{launch.rank}", data)
        s.collect("merged/", gather, ranks=[0])
        return code
    found, missing = s.collect("junit/", gather)
    missing.update(s.lost)
    per_rank = {0: data, **{r: v for r, v in found.items() if v}}
    missing.update({r: "it wrote no JUnit XML" for r, v in found.items() if not v})
    suite = os.environ.get("HARNESS_CELL", "harness")
    final.parent.mkdir(parents=True, exist_ok=True)
    merged = junit.merge(per_rank, missing, suite_name=suite)
    final.write_bytes(merged)
    if code == 0 and junit.failed(merged):  # a plain test failed on another rank only
        code = 1
    s.store.set("merged/0", str(final))
    have = len(per_rank)
    print(f"harness: merged the JUnit XML of {have} of {launch.world_size} ranks -> {final}")
    for r, why in sorted(missing.items()):
        print(f"harness: rank {r}: {why}")
    if missing:
        print(f"harness: {s.stop_message() if s.lost else 'the merged report is incomplete'}")
        return code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
