"""The ops capability: every OpInfo plain vs DTensor, opt-in for test runs, known failures as data."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.conformance import _ops
from harness.report import capabilities, junit, render, schema

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "harness" / "conformance" / "test_ops.py"


def _pytest(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(SUITE), *args],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_capability_is_off_unless_asked_for(tmp_path):
    off = _pytest(tmp_path, "--collect-only", env={"HARNESS_OPS": ""})
    assert "no tests collected" in off.stdout, off.stdout[-2000:]
    some = _pytest(tmp_path, "--collect-only", "--harness-ops", "add,nn.functional.relu")
    assert "OpsTest::test_add" in some.stdout and "test_nn_functional_relu" in some.stdout
    assert "2 tests collected" in some.stdout, some.stdout[-2000:]


def test_selection_takes_names_and_globs():
    assert _ops.selection("off") is None and _ops.selection("") is None
    pick = _ops.selection("add, nn.functional.*")
    assert pick("add") and pick("nn.functional.relu") and not pick("addmm")
    assert _ops.selection("all")("anything")
    assert _ops.method_name("max:reduction_with_dim") == "test_max_reduction_with_dim"


def test_the_expectations_file_is_the_torch_minors_or_the_nearest_other(tmp_path):
    assert _ops.expectations_file((2, 13), tmp_path) is None  # no record at all
    for name in ("torch-2.11.toml", "torch-2.13.toml", "notes.toml"):
        (tmp_path / name).write_text("")
    assert _ops.expectations_file((2, 13), tmp_path).name == "torch-2.13.toml"
    assert _ops.expectations_file((2, 12), tmp_path).name == "torch-2.11.toml"
    assert _ops.expectations_file((2, 15), tmp_path).name == "torch-2.13.toml"
    assert _ops.expectations_file((2, 7), tmp_path).name == "torch-2.11.toml"  # oldest newer


def test_another_torchs_record_lends_its_skips_for_the_ops_this_one_has(tmp_path):
    """torch 2.7 borrows 2.13's skips (uninitialised outputs are so on every torch); an
    op 2.7 lacks is left out, not an error, and 2.13's failures are not 2.7's."""
    path = tmp_path / "torch-2.13.toml"
    path.write_text(
        _HEAD + '[skip]\nempty = "no values"\nnewer_op = "no values"\n'
        '[slow]\nnewer_op = 9\ncdist = 4\n[world.4.own]\nnewer_op = "fails"\n'
    )
    lent = _ops.load_expectations(path, ["empty", "cdist", "add"], 4, (2, 7))
    assert (lent.skip, lent.slow) == ({"empty": "no values"}, {"cdist": 4})
    assert (lent.xfail, lent.world_size, lent.worlds) == ({}, None, ())
    with pytest.raises(ValueError, match="'newer_op' is no OpInfo"):  # its own torch: strict
        _ops.load_expectations(path, ["empty", "cdist", "add"], 4, (2, 13))


_HEAD = 'schema = 2\ntorch = "2.13"\n'


@pytest.mark.parametrize(
    "text, words",
    [
        (_HEAD + 'color = "red"\n', "unknown key 'color'"),
        (
            _HEAD + '[world.4.own]\n"no_such_op" = "why"\n',
            "[world.4.own] 'no_such_op' is no OpInfo",
        ),
        (_HEAD + '[skip]\nadd = ""\n', "'add' needs a reason"),
        ("[xfail\n", "not valid TOML"),
        (_HEAD + '[slow]\nadd = "long"\n', "'add' needs its seconds"),
        (_HEAD + "[slow]\nno_such_op = 3\n", "'no_such_op' is no OpInfo"),
        (_HEAD + "[world.two.own]\n", "the key must be a world size"),
        ('schema = 1\n[xfail]\nadd = "x"\n', "schema 1: one [xfail] list"),
    ],
)
def test_a_bad_expectations_file_names_the_key(tmp_path, text, words):
    path = tmp_path / "torch-2.13.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(words)):
        _ops.load_expectations(path, ["add", "mul"])


def test_slow_ops_are_started_first_and_the_rest_keep_their_order(tmp_path):
    path = tmp_path / "torch-2.13.toml"
    path.write_text(_HEAD + "[slow]\nmul = 5\ncdist = 40.5\n")
    expected = _ops.load_expectations(path, ["add", "mul", "cdist", "neg"])
    assert expected.slowest_first(["add", "mul", "neg", "cdist"]) == ["cdist", "mul", "add", "neg"]


def test_the_record_gives_the_known_failures_of_the_cells_world_size_only(tmp_path):
    path = tmp_path / "torch-2.13.toml"
    path.write_text(
        _HEAD + '[world.2.own]\nmul = "ws 2 only"\n[world.4.own]\ncdist = "ws 4 only"\n'
    )
    keys = ["add", "mul", "cdist"]
    at2 = _ops.load_expectations(path, keys, 2, (2, 13))
    assert (at2.xfail, at2.world_size, at2.worlds) == ({"mul": "ws 2 only"}, 2, (2, 4))
    assert _ops.load_expectations(path, keys, 4, (2, 13)).xfail == {"cdist": "ws 4 only"}
    at8 = _ops.load_expectations(path, keys, 8, (2, 13))
    assert at8.xfail == {} and at8.world_size is None and not at8.strict(8)
    assert "no DTensor's own failures for torch 2.13 at world size 8" in at8.note(8)
    # an older torch's record lends its skips and slow ops, never its failures
    assert _ops.load_expectations(path, keys, 2, (2, 15)).xfail == {}


def test_the_shipped_expectations_match_the_installed_torchs_database():
    from harness import compat

    major, minor = compat.torch_version()
    path = _ops.expectations_file((major, minor))
    if path is None or path.name != f"torch-{major}.{minor}.toml":  # borrowed, if any
        shipped = ", ".join(sorted(p.name for p in _ops.XFAILS.glob("torch-*.toml")))
        pytest.skip(f"no op record of torch {major}.{minor}'s own; shipped: {shipped}")
    assert path.parent == _ops.XFAILS
    keys = [_ops.op_key(op) for op in compat.op_database()]
    expected = _ops.load_expectations(path, keys)  # every world's ops are checked
    for size in expected.worlds or (4,):
        at = _ops.load_expectations(path, keys, size)
        assert at.xfail and all(at.xfail.values())  # every entry has its reason


def _case(outcome: str, reason: str = "", op: str = "x") -> junit.CaseResult:
    return junit.CaseResult(
        id=f"t::{op}", capability="ops", outcome=outcome, duration_s=0.1, reason=reason, op=op
    )


def test_coverage_counts_unsupported_as_covered_and_known_failures_apart():
    tests = [
        _case("passed", op="add"),
        _case("passed", op="mul"),
        _case("skipped", f"{capabilities.OPS_UNSUPPORTED}: 3 of 3 samples; ...", op="cdist"),
        _case("skipped", "expected failure: known failure (torch-2.13.toml): ...", op="roll"),
        _case("failed", "wrong values", op="flip"),
        _case("skipped", "no sample could be checked: ...", op="empty"),
    ]
    (cap,) = schema.summarize(tests)
    assert cap["coverage"] == {
        "ops": 6,
        "passed": 2,
        "unsupported": 1,
        "own": 0,
        "xfailed": 1,
        "waived": 0,
        "failed": 1,
        "skipped": 1,
        "passing": round(2 / 6, 4),
        "covered": 0.5,
    }
    line = render._coverage(cap["coverage"])
    assert line.startswith("2 of 6 ops pass (33.3%); 1 not supported by DTensor; 1 known failures")


def test_capabilities_without_ops_have_no_coverage():
    (cap,) = schema.summarize([_case("passed", op="")])
    assert "coverage" not in cap


EXPECT = """
schema = 2
torch = "2.13"

[world.4.own]
transpose = "0-d transpose: DTensor's strategy asks for dim1 < ndim"
mul = "listed, but passes: strict, so this must fail"
neg = "hangs: it passes, so only not running it can make it a known failure"

[skip]
"nn.functional.relu" = "skipped by the expectations file"
"""

# One op per verdict on torch 2.13 (what the full sweep found): a pass, a known
# failure, a stale known failure (strict: fails), "not supported by DTensor", an op
# with no tensor input, one the expectations file skips, and one it says hangs.
VERDICTS = {
    "add": "passed",
    "transpose": "xfailed",
    "mul": "failed",
    "cdist": "unsupported",
    "arange": "skipped",
    "nn.functional.relu": "skipped",
    "neg": "xfailed",  # the record says it hangs: not run
}


@pytest.mark.skipif(
    __import__("harness.compat", fromlist=["x"]).torch_version() != (2, 13),
    reason="the verdicts below are torch 2.13's",
)
@pytest.mark.parametrize(
    ("mode", "place", "ran_on"),
    [
        # real ranks: 4 processes on gloo, the placement torch < 2.10 gets (nox -s slow)
        pytest.param(
            "native",
            "ranks",
            "the cell's 4 rank processes on cpu, gloo",
            marks=pytest.mark.slow,
        ),
        ("local", "workers", "each simulating 4 ranks on cpu (collectives simulated)"),
    ],
)
def test_each_verdict_in_a_4_rank_cell_and_a_sim_cell(tmp_path, mode, place, ran_on):
    expectations = tmp_path / "torch-2.13.toml"
    expectations.write_text(EXPECT)
    xml = tmp_path / "junit.xml"
    done = _pytest(
        tmp_path,
        "-p",
        "harness.report.pytest_progress",
        f"--junitxml={xml}",
        "--harness-world-size=4",
        f"--harness-mode={mode}",
        "--harness-ops=" + ",".join(VERDICTS),
        "--harness-backend=gloo",
        env={_ops.EXPECTATIONS_ENV: str(expectations), _ops.ON_ENV: place},
    )
    results = junit.parse(xml)
    got = {r.op: capabilities.op_verdict(r.outcome, r.reason) for r in results}
    assert got == VERDICTS, done.stdout[-3000:]
    reasons = {r.op: r.reason for r in results}
    assert "XPASS(strict)" in reasons["mul"]
    assert reasons["cdist"].startswith(capabilities.OPS_UNSUPPORTED)
    assert "no tensor input" in reasons["arange"]
    assert "hangs: it passes" in reasons["neg"]  # run, it would XPASS(strict) like mul
    (cap,) = schema.summarize(results)
    assert cap["name"] == "ops" and cap["verdict"] == "fail"  # the stale known failure
    assert cap["coverage"]["ops"] == 7 and cap["coverage"]["covered"] == round(2 / 7, 4)
    assert ran_on in cap["ran_on"]  # the report says whether the collectives were real


def test_certify_refuses_to_leave_the_ops_out(tmp_path, capsys):
    from harness.cli import main

    matrix = ROOT / "tests" / "data" / "certify" / "matrix.toml"
    out = tmp_path / "out"
    assert (
        main(["certify", "cpu-2rank", "--matrix", str(matrix), "--out", str(out), "--ops", "off"])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a certification runs the ops capability" in err[0]
    assert not out.exists()  # refused before anything ran


def test_samples_are_the_same_for_the_same_op_wherever_drawn():
    import torch

    from harness import compat

    (op,) = (o for o in compat.op_database() if _ops.op_key(o) == "add")

    def draw(seed):
        return [
            s.input.detach().clone()
            for s in compat.op_samples(op, "cpu", torch.float32, requires_grad=True, seed=seed)
        ]

    seed = _ops.sample_seed("add")
    first, again, other = draw(seed), draw(seed), draw(seed + 1)
    assert len(first) > 1
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_a_sample_generator_that_breaks_keeps_the_samples_before_and_says_why():
    class Op:
        def sample_inputs_func(self, op, device, dtype, requires_grad):
            yield "first"
            raise RuntimeError("start (4) + length (1) exceeds dimension size (4).")

    why_not: list[str] = []
    assert list(_ops._samples(Op(), "cpu", 0, why_not, contextlib.nullcontext)) == ["first"]
    assert why_not == [
        "the database cannot make sample 1 (RuntimeError: start (4) + length (1) exceeds "
        "dimension size (4).)"
    ]


def test_samples_are_drawn_one_at_a_time_and_the_checks_random_state_is_as_before():
    """A sweep holds one sample, not all; between draws the random state runs on as if
    every sample had been drawn first (each draw reseeds; the checks' stream does not)."""
    import torch

    drawn: list[int] = []

    class Op:
        def sample_inputs_func(self, op, device, dtype, requires_grad):
            for index in range(3):
                drawn.append(index)
                yield torch.rand(2)

    torch.manual_seed(7)
    first_draw = torch.rand(2)  # every sample: drawn right after seeding
    torch.manual_seed(7)
    stream = [torch.rand(1) for _ in range(3)]  # the checks' draws, samples drawn first
    torch.manual_seed(12345)  # whatever state the caller had
    seen = []
    for index, sample in enumerate(_ops._samples(Op(), "cpu", 7, [], contextlib.nullcontext)):
        assert drawn == list(range(index + 1))  # the next one is not made yet
        assert torch.equal(sample, first_draw)
        seen.append(torch.rand(1))  # a check's random draw between samples
    assert all(torch.equal(a, b) for a, b in zip(seen, stream, strict=True))
