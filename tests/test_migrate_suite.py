"""bench/suite.py: outcomes are read from JUnit XML and compared per test, side by side."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def suite():
    spec = importlib.util.spec_from_file_location("bench_suite", ROOT / "bench" / "suite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_suite"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


OUTCOMES = """
import pytest

def test_pass():
    pass

def test_fail():
    assert False, "boom"

@pytest.mark.skip(reason="not here")
def test_skip():
    pass

@pytest.mark.xfail(reason="known")
def test_xfail():
    assert False
"""


def test_each_outcome_is_read_from_junit(suite, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "test_outcomes.py").write_text(OUTCOMES)
    xml = tmp_path / "out.xml"
    run = suite.run_pytest("upstream", tmp_path / "src", "test_outcomes.py", xml, 120, [])
    assert run.exit_code == 1 and not run.timed_out
    assert run.outcomes == {
        "test_outcomes::test_pass": "pass",
        "test_outcomes::test_fail": "fail",
        "test_outcomes::test_skip": "skip",
        "test_outcomes::test_xfail": "xfail",
    }
    assert "boom" in run.messages["test_outcomes::test_fail"]
    assert run.times.keys() == run.outcomes.keys()
    assert run.wall_s > 0 and run.tree_rss_mb > 0 and run.max_rss_mb > 0


BURN = """
import subprocess, sys

def test_rank_burns_cpu():
    # a child the test waits for, as a rank process is: its CPU counts in the floor
    subprocess.run([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
                    "while time.process_time() - t < 1.0: pass"], check=True)
"""


def test_the_floor_counts_the_cpu_of_waited_for_children(suite, tmp_path):
    (tmp_path / "test_burn.py").write_text(BURN)
    run = suite.run_pytest("harness", tmp_path, "test_burn.py", tmp_path / "o.xml", 120, [])
    assert run.outcomes == {"test_burn::test_rank_burns_cpu": "pass"}
    assert run.cpu_s >= 1.0  # the child's second of CPU, plus pytest's own
    assert run.cores >= 1 and run.floor_s == round(run.cpu_s / run.cores, 2)
    entry = {"file": "f.py", "runs": {s: suite.asdict(run) for s in suite.SIDES}}
    row = suite.markdown({"command": "c", "date": "d", "host": {}, "memory": "m", "files": [entry]})
    wall_over_floor = f"{round(run.wall_s / run.floor_s, 3):.2f}"
    over_serial = f"{round(run.wall_s / run.serial_floor_s, 3):.2f}"
    assert row.splitlines()[-1].endswith(
        f"| {wall_over_floor} | {wall_over_floor} | {over_serial} | {over_serial} |"
    )
    # the child's second ran on one core: the serial floor counts it whole, not
    # spread over the cores, and is still no more than the wall
    assert run.serial_floor_s >= 0.9 and run.floor_s <= run.serial_floor_s <= run.wall_s


def test_the_serial_floor_counts_one_busy_process_whole_and_idle_time_not_at_all(suite):
    floor = suite.SerialFloor(cores=2, last_s=0.0)
    floor.add(1.0, {1: 1.0})  # one process, busy the whole second
    floor.add(2.0, {1: 1.0, 2: 1.0, 3: 1.0})  # two processes, a core each
    floor.add(3.0, {1: 1.0, 2: 1.0, 3: 1.0})  # nobody computing: waiting
    floor.add(4.0, {1: 1.0, 2: 2.0, 3: 2.0, 4: 1.0})  # three on two cores: 1.5 s of work
    floor.add(5.0, {1: 3.0, 2: 2.0, 3: 2.0, 4: 1.0})  # a process with threads: 2 s in 1 s
    assert floor.total_s == 1.0 + 1.0 + 0.0 + 1.5 + 1.0
    assert floor.finish(cpu_s=sum(floor.seen.values()) + 2.0) == floor.total_s + 1.0


SERVER = """
import pathlib, subprocess, sys, time

BURN = ("import pathlib, time\\nt = time.process_time()\\n"
        "while time.process_time() - t < 3.0: pass\\npathlib.Path('done').touch()\\n"
        "time.sleep(5)")
SERVE = f"import subprocess, sys, time\\nsubprocess.run([sys.executable, '-c', {BURN!r}])\\ntime.sleep(30)"

def test_a_server_starts_the_rank():
    # like a pool's server and its rank: pytest ends before the server, so wait4 sees neither
    subprocess.Popen([sys.executable, "-c", SERVE])
    while not pathlib.Path("done").exists():
        time.sleep(0.05)
    time.sleep(0.75)  # the bench looks at the burner, done and idle, a few more times
"""


def test_the_floor_counts_ranks_nobody_waits_for(suite, tmp_path):
    (tmp_path / "test_server.py").write_text(SERVER)
    (tmp_path / "test_alone.py").write_text("def test_nothing():\n    pass\n")
    run = suite.run_pytest("harness", tmp_path, "test_server.py", tmp_path / "o.xml", 300, [])
    alone = suite.run_pytest("harness", tmp_path, "test_alone.py", tmp_path / "a.xml", 300, [])
    assert run.outcomes == {"test_server::test_a_server_starts_the_rank": "pass"}
    # the rank's 3 s of CPU, less at most its last sample (SAMPLE_S), over pytest's own
    assert run.cpu_s - alone.cpu_s >= 2.5


def test_a_timeout_is_reported_not_hidden(suite, tmp_path):
    (tmp_path / "test_hang.py").write_text("import time\n\ndef test_hang():\n    time.sleep(60)\n")
    run = suite.run_pytest("harness", tmp_path, "test_hang.py", tmp_path / "o.xml", 3, [])
    assert run.timed_out and run.outcomes == {} and "timed out" in run.note


def test_compare_lists_only_differences_including_missing_tests(suite):
    up = suite.Run("upstream", "f.py", [], outcomes={"a": "pass", "b": "skip", "c": "fail"})
    ours = suite.Run("harness", "f.py", [], outcomes={"a": "pass", "b": "pass", "d": "skip"})
    rows = suite.compare({"upstream": up, "harness": ours})
    assert [(r["test"], r["upstream"], r["harness"]) for r in rows] == [
        ("b", "skip", "pass"),
        ("c", "fail", "missing"),
        ("d", "missing", "skip"),
    ]


def test_upstreams_skip_after_an_earlier_failure_is_set_apart_as_by_design(suite):
    poison = "Previous test failed, skipping test_x"
    up = suite.Run("upstream", "f.py", [], outcomes={"a": "skip", "b": "skip"})
    up.messages = {"a": poison, "b": "needs 8 GPUs"}
    ours = suite.Run("harness", "f.py", [], outcomes={"a": "pass", "b": "pass"})
    rows = suite.compare({"upstream": up, "harness": ours})
    assert [bool(suite.by_design(r)) for r in rows] == [True, False]
    entry = {"mismatches": rows}
    assert [r["test"] for r in suite.real_mismatches(entry)] == ["b"]
    assert suite._mismatch_cell([entry]) == "1 (+1 by design)"


def test_end_to_end_writes_markdown_and_json(suite, tmp_path, capsys):
    src = tmp_path / "suite"
    src.mkdir()
    (src / "test_outcomes.py").write_text(OUTCOMES)
    (src / "helper.py").write_text("X = 1\n")  # not a test file: not run
    out = tmp_path / "out"
    assert suite.main([str(src), "--out", str(out)]) == 0  # same outcomes both sides
    report = json.loads((out / "suite.json").read_text())
    (entry,) = report["files"]
    assert entry["file"] == "test_outcomes.py" and entry["mismatches"] == []
    assert set(entry["runs"]) == {"upstream", "harness"}
    table = (out / "suite.md").read_text()
    assert "| test_outcomes.py | 1/1/1/1 | 1/1/1/1 | 0 |" in table
    assert "| test_outcomes.py | 1 | " in table.split("## Time per skipped test")[1]


def test_one_side_now_and_the_other_appended_later_are_compared(suite, tmp_path):
    src = tmp_path / "suite"
    src.mkdir()
    (src / "test_outcomes.py").write_text(OUTCOMES)
    out = tmp_path / "out"
    assert suite.main([str(src), "--out", str(out), "--sides", "harness"]) == 0
    (entry,) = json.loads((out / "suite.json").read_text())["files"]
    assert set(entry["runs"]) == {"harness"} and "mismatches" not in entry
    ours = entry["runs"]["harness"]["wall_s"]

    # The upstream side later: the harness run is kept, not measured again, and
    # the file gets its per-test comparison.
    (src / "test_outcomes.py").write_text(OUTCOMES.replace("def test_skip", "def test_skip2"))
    args = [str(src), "--out", str(out), "--sides", "upstream", "--append"]
    assert suite.main(args) == 1
    (entry,) = json.loads((out / "suite.json").read_text())["files"]
    assert set(entry["runs"]) == {"upstream", "harness"}
    assert entry["runs"]["harness"]["wall_s"] == ours
    assert {m["test"].split("::")[-1] for m in entry["mismatches"]} == {"test_skip", "test_skip2"}


def test_bad_dir_is_exit_2(suite, tmp_path, capsys):
    assert suite.main([str(tmp_path / "missing")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_pytest_args_after_double_dash_follow_options(suite, tmp_path, monkeypatch):
    """``DIR --only F -- -k EXPR``: what follows ``--`` reaches pytest on both sides."""
    (tmp_path / "test_k.py").write_text(
        "def test_kept():\n    pass\n\ndef test_dropped():\n    pass\n"
    )
    seen = []

    def fake_run(side, root, rel, xml, timeout, pytest_args):
        seen.append(list(pytest_args))
        return suite.Run(side, rel, [], exit_code=0, outcomes={"test_kept": "pass"})

    monkeypatch.setattr(suite, "run_pytest", fake_run)
    out = tmp_path / "out"
    argv = [str(tmp_path), "--only", "test_k.py", "--out", str(out), "--", "-k", "not dropped"]
    assert suite.main(argv) == 0
    assert seen == [["-k", "not dropped"], ["-k", "not dropped"]]
    seen.clear()  # --harness-args: the kit's side only (e.g. its xdist scheduler)
    assert suite.main([*argv[:-3], "--harness-args", "-n 2", *argv[-3:]]) == 0
    assert seen == [["-k", "not dropped"], ["-k", "not dropped", "-n", "2"]]
