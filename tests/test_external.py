"""External mode without a launcher: detection, agreement, merging, and the CLI's refusals.

The end-to-end run under two torchrun agents is tests/test_external_torchrun.py.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import junit as junit_merge
from harness.cli import main
from harness.ranks.launch import LaunchError, detect, first_host
from harness.ranks.outcome import RankOutcome

ROOT = Path(__file__).resolve().parent.parent
MATRIX = str(ROOT / "tests" / "data" / "external" / "matrix.toml")

TORCHRUN_ENV = {
    "RANK": "3",
    "WORLD_SIZE": "4",
    "LOCAL_RANK": "1",
    "LOCAL_WORLD_SIZE": "2",
    "GROUP_RANK": "1",
    "MASTER_ADDR": "node01",
    "MASTER_PORT": "29400",
    "TORCHELASTIC_RUN_ID": "job7",
    "TORCHELASTIC_USE_AGENT_STORE": "True",
    "TORCHELASTIC_RESTART_COUNT": "0",
}
SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_TASKS_PER_NODE": "4(x2)",
    "SLURM_JOB_NODELIST": "gpu[007-008]",
}


# -- detection -------------------------------------------------------------------
def test_torchrun_is_detected_from_its_environment():
    launch = detect(TORCHRUN_ENV)
    assert launch is not None and launch.launcher == "torchrun"
    assert (launch.rank, launch.world_size, launch.local_rank, launch.node_rank) == (3, 4, 1, 1)
    assert (launch.master_addr, launch.master_port, launch.agent_store) == ("node01", 29400, True)


def test_no_launcher_means_no_external_mode():
    assert detect({}) is None
    assert detect({**TORCHRUN_ENV, "HARNESS_LAUNCHER": "none"}) is None


def test_slurm_counts_only_when_asked():
    # SLURM_* is set in every allocation shell: a plain pytest there is not a rank
    assert detect(SLURM_ENV) is None
    launch = detect({**SLURM_ENV, "HARNESS_LAUNCHER": "slurm"})
    assert launch is not None and launch.launcher == "slurm"
    assert (launch.rank, launch.world_size, launch.local_rank, launch.local_world_size) == (
        5,
        8,
        1,
        4,
    )
    assert launch.master_addr == "gpu007"  # the first node of the job
    assert launch.master_port == 20000 + 4242


@pytest.mark.parametrize(
    "nodelist, first",
    [
        ("node01", "node01"),
        ("gpu[007-009,012],cpu1", "gpu007"),
        ("a[3,5]-ib", "a3-ib"),
        ("x1,x2", "x1"),
        ("rack[1-2]-node[01-04]", "rack1-node01"),  # two bracket groups
        ("n[09-11]", "n09"),
        ("gpu[3-4,1],cpu1", "gpu3"),  # Slurm's order, not sorted
        ("", None),
    ],
)
def test_first_host_of_a_slurm_node_list(nodelist, first):
    assert first_host(nodelist) == first


def test_a_malformed_slurm_node_list_is_one_clear_error():
    with pytest.raises(LaunchError, match=r"cannot read the Slurm node list 'gpu\[1-' .*scontrol"):
        first_host("gpu[1-")


@pytest.mark.parametrize(
    "env, names",
    [
        ({**TORCHRUN_ENV, "MASTER_ADDR": ""}, "MASTER_ADDR"),
        ({k: v for k, v in TORCHRUN_ENV.items() if k != "RANK"}, "RANK"),
        ({**TORCHRUN_ENV, "RANK": "9"}, "rank 9"),
        ({"HARNESS_LAUNCHER": "mpirun"}, "HARNESS_LAUNCHER"),
        ({"HARNESS_LAUNCHER": "slurm"}, "SLURM_PROCID"),
    ],
)
def test_an_incomplete_launch_names_what_is_missing(env, names):
    with pytest.raises(LaunchError, match=names):
        detect(env)


# -- agreement through the store (ranks as threads over one real TCPStore) ----------
def _sessions(monkeypatch, world: int):
    import socket

    from harness.ranks.launch import Launch
    from harness.ranks.session import Session

    monkeypatch.setenv("HARNESS_HEARTBEAT_TIMEOUT", "2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def launch(rank: int) -> Launch:
        return Launch("torchrun", rank, world, rank, world, 0, "127.0.0.1", port)

    sessions = [Session(launch(r)) for r in range(world)]
    sessions[0].store  # rank 0 serves the store: connect it first  # noqa: B018
    return sessions


def _agree_all(sessions, outcomes, limit=30.0, skip=()):
    results: dict[int, list[RankOutcome]] = {}

    def one(s, o):
        results[s.launch.rank] = s.agree("t", o, limit)

    threads = [
        threading.Thread(target=one, args=(s, o))
        for s, o in zip(sessions, outcomes)
        if s.launch.rank not in skip
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_every_rank_sees_every_outcome(monkeypatch):
    sessions = _sessions(monkeypatch, 3)
    try:
        mine = [
            RankOutcome(0, "passed"),
            RankOutcome(1, "failed", texts=["AssertionError: on rank 1"], assertion=True),
            RankOutcome(2, "skipped", reason="no widget"),
        ]
        results = _agree_all(sessions, mine)
        for rank in range(3):
            got = {o.rank: o.status for o in results[rank]}
            assert got == {0: "passed", 1: "failed", 2: "skipped"}
        assert results[0][1].texts == ["AssertionError: on rank 1"]
    finally:
        for s in sessions:
            s.close()


def test_a_rank_that_stops_beating_is_named_not_waited_for(monkeypatch):
    sessions = _sessions(monkeypatch, 3)
    try:
        sessions[2].store  # noqa: B018 (joins, beats once, then "dies")
        sessions[2].close()
        mine = [RankOutcome(r, "passed") for r in range(3)]
        results = _agree_all(sessions, mine, skip=(2,))
        lost = results[0][2]
        assert lost.status == "failed" and "no heartbeat for 2 s" in lost.texts[0]
        assert sessions[0].lost == sessions[1].lost and 2 in sessions[0].lost
        assert "rank(s) 2 of 3" in sessions[0].stop_message()
    finally:
        for s in sessions:
            s.close()


def test_ranks_that_ran_different_tests_are_told_so(monkeypatch):
    sessions = _sessions(monkeypatch, 2)
    try:
        done = {}

        def other():
            done[1] = sessions[1].agree("other_test", RankOutcome(1, "passed"), 30)

        t = threading.Thread(target=other)
        t.start()
        out = sessions[0].agree("t", RankOutcome(0, "passed"), 30)
        t.join(60)
        assert "'other_test' instead" in out[1].texts[0]
        assert "the ranks collected different tests" in out[1].texts[0]
    finally:
        for s in sessions:
            s.close()


# -- merging every rank's JUnit XML --------------------------------------------------
def _junit(*cases: str) -> bytes:
    return f"<testsuites><testsuite>{''.join(cases)}</testsuite></testsuites>".encode()


def _case(name: str, inner: str = "") -> str:
    return f'<testcase classname="m" name="{name}" time="1.5">{inner}</testcase>'


def test_merge_keeps_agreed_outcomes_and_names_a_one_rank_failure():
    per_rank = {
        0: _junit(_case("agreed"), _case("plain"), _case("skip", '<skipped message="why"/>')),
        1: _junit(
            _case("agreed"),
            _case("plain", '<failure message="boom">tb</failure>'),
            _case("skip", '<skipped message="why"/>'),
        ),
    }
    root = ET.fromstring(junit_merge.merge(per_rank, {}, suite_name="cpu-2rank"))
    suite = root.find("testsuite")
    assert suite.get("name") == "cpu-2rank"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert cases["agreed"].find("failure") is None and cases["agreed"].find("skipped") is None
    failure = cases["plain"].find("failure")
    assert failure.get("message") == "on rank 1 of ranks 0, 1: boom"
    assert "--- rank 1 ---\ntb" in failure.text
    assert cases["skip"].find("skipped").get("message") == "why"
    assert junit_merge.failed(junit_merge.merge(per_rank, {}))
    assert not junit_merge.failed(junit_merge.merge({0: _junit(_case("agreed"))}, {}))


def test_merge_reports_a_rank_that_sent_nothing():
    root = ET.fromstring(junit_merge.merge({0: _junit(_case("a"))}, {1: "no heartbeat"}))
    lost = [c for c in root.iter("testcase") if c.get("name") == "rank 1"]
    assert lost and "rank 1 sent no report: no heartbeat" in lost[0].find("error").get("message")
    assert root.find("testsuite").get("errors") == "1"


def test_merged_junit_reads_as_a_report():
    from harness.report import junit

    merged = junit_merge.merge({0: _junit(_case("a"))}, {1: "gone"})
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"merged-{os.getpid()}.xml"
    path.write_bytes(merged)
    try:
        outcomes = {r.id: r.outcome for r in junit.parse(path)}
    finally:
        path.unlink()
    assert outcomes == {"m::a": "passed", "harness.external::rank 1": "error"}


# -- the CLI ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "flags, message",
    [
        (["--nnodes", "2", "--nproc-per-node", "3"], "= 6 ranks, but cell cpu-4rank has 4"),
        (["--nnodes", "2"], "needs --rdzv-endpoint HOST:PORT"),
        (["--nnodes", "2", "--rdzv-endpoint", "node01"], "give HOST:PORT"),
        (["--nnodes", "3"], "cannot share evenly"),
    ],
)
def test_run_refuses_a_launch_that_does_not_fit_the_cell(capsys, flags, message):
    argv = ["run", "cpu-4rank", "--matrix", MATRIX, "--launcher", "torchrun", *flags, "--dry-run"]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_run_under_slurm_needs_srun(capsys, monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    argv = ["run", "cpu-4rank", "--matrix", MATRIX, "--launcher", "slurm", "--dry-run"]
    assert main(argv) == 2
    assert "SLURM_PROCID is not set; run this under srun" in capsys.readouterr().err


def test_a_local_cell_has_no_launcher(capsys, tmp_path):
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        'schema = 1\n[accelerators.cpu]\ndevice = "cpu"\nbackend = "gloo"\n'
        "cells = { local = [8] }\n"
    )
    assert main(["run", "cpu-8sim", "--matrix", str(matrix), "--launcher", "torchrun"]) == 2
    assert "simulates its ranks in one process" in capsys.readouterr().err


def test_dry_run_shows_the_torchrun_command(capsys):
    argv = ["run", "cpu-4rank", "--matrix", MATRIX, "--launcher", "torchrun", "--nnodes", "2"]
    argv += ["--rdzv-endpoint", "node01:29500", "--node-rank", "1", "--dry-run", "--", "-x"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for part in (
        "-m torch.distributed.run --nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d",
        "--rdzv-endpoint=node01:29500 --rdzv-id=harness-cpu-4rank",
        "--rdzv-conf=is_host=0 --max-restarts=0",  # node 1 does not serve the store
        "-m harness.ranks.external_main",
        "HARNESS_JUNIT=",
        "HARNESS_RERUN='harness run cpu-4rank --launcher torchrun --nnodes 2 "
        "--nproc-per-node 2 --rdzv-endpoint node01:29500",
    ):
        assert part in out
    assert out.rstrip().endswith("-x")
    assert "--node-rank" not in out  # c10d numbers the nodes itself


def test_the_rank_entry_point_refuses_to_run_outside_a_launcher(capsys, monkeypatch):
    from harness.ranks import external_main

    for key in [k for k in os.environ if k.startswith(("TORCHELASTIC", "HARNESS_LAUNCHER"))]:
        monkeypatch.delenv(key)
    assert external_main.main([]) == 2
    assert "not started by a launcher" in capsys.readouterr().err


def test_two_nodes_of_8_gpus_grant_16_ranks_their_accelerator(monkeypatch):
    """Each node shows 8 devices; a 16-rank job must not skip as 'needs 16 devices'."""
    from harness import bases, devices, skips
    from harness.ranks import external
    from harness.ranks.launch import Launch

    launch = Launch(
        "torchrun",
        rank=9,
        world_size=16,
        local_rank=1,
        local_world_size=8,
        node_rank=1,
        master_addr="node01",
        master_port=29500,
    )
    monkeypatch.setattr(external, "launched", lambda: launch)
    monkeypatch.setattr(devices, "detected_accelerator", lambda: "cuda")
    monkeypatch.setattr(devices, "host_device_count", lambda accel: 8)
    monkeypatch.setattr(devices, "cell_world_size", lambda: 16)
    assert skips.accelerator_budget() == 16
    monkeypatch.setattr(devices, "has_accelerator", lambda: True)

    class Sixteen(bases.DTensorTestBase):
        @property
        def world_size(self):
            return 16

    monkeypatch.setattr(bases, "DEVICE_TYPE", "cuda")
    assert Sixteen("__init__").device_type == "cuda"
    # a node with fewer devices than ranks on it gets only what it has
    thin = dataclasses.replace(launch, rank=0, local_rank=0, node_rank=0)
    monkeypatch.setattr(external, "launched", lambda: thin)
    monkeypatch.setattr(devices, "host_device_count", lambda accel: 4)
    assert skips.accelerator_budget() == 4
