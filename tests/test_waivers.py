"""Waivers: known failures reported as waived (the cell can pass), stale and unused
waivers named, the file sealed into the report and replayed by verify."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from harness_cli import harness  # tests/ is on sys.path
from report_fixtures import bare_report, ops_junit  # tests/ is on sys.path

from harness.cli import main
from harness.errors import UsageError
from harness.report import bundle, junit, schema, waivers

MATRIX = Path(__file__).parent / "data" / "certify" / "matrix.toml"
ISSUE = "https://github.com/acme/torch-acme/issues/7"

GOOD = f"""
[[waiver]]
test = "suite/test_ops.py::OpsTest::test_nonzero"
reason = "data-dependent shape"
issue = "{ISSUE}"

[[waiver]]
test = "suite/test_ops.py::OpsTest::test_sum[*]"
reason = "reduction order differs on our backend"
issue = "{ISSUE}"

[[waiver]]
test = "suite/test_ops.py::OpsTest::test_add"
reason = "fixed in driver 2.1"
issue = "{ISSUE}"

[[waiver]]
test = "suite/test_gone.py::test_renamed"
reason = "flaky all_to_all"
issue = "{ISSUE}"

[[waiver]]
op = "nn.functional.conv2d"
reason = "no sharding strategy for grouped conv on our backend"
issue = "{ISSUE}"
"""


def _case(test_id: str, outcome: str, op: str = "") -> junit.CaseResult:
    return junit.CaseResult(id=test_id, capability="ops", outcome=outcome, duration_s=0.1, op=op)


RESULTS = [
    _case("suite/test_ops.py::OpsTest::test_nonzero", "failed"),
    _case("suite/test_ops.py::OpsTest::test_sum[float32-dim0]", "error"),
    _case("suite/test_ops.py::OpsTest::test_sum[float64-dim1]", "passed"),
    _case("suite/test_ops.py::OpsTest::test_add", "passed"),
    _case("suite/test_ops.py::OpsTest::test_conv[x]", "failed", op="nn.functional.conv2d"),
    _case("suite/test_ops.py::OpsTest::test_mul", "failed"),
]


def _load(text: str, tmp_path: Path) -> waivers.Waivers:
    path = tmp_path / "waivers.toml"
    path.write_text(text)
    return waivers.load(path)


def test_a_waived_failure_is_neither_pass_nor_fail_and_keeps_what_it_ran_to(tmp_path):
    out, section = waivers.apply(_load(GOOD, tmp_path), RESULTS)
    by_id = {r.id: r for r in out}
    nonzero = by_id["suite/test_ops.py::OpsTest::test_nonzero"]
    assert (nonzero.outcome, nonzero.ran, nonzero.waiver) == ("waived", "failed", 0)
    summed = by_id["suite/test_ops.py::OpsTest::test_sum[float32-dim0]"]
    assert (summed.outcome, summed.ran, summed.waiver) == ("waived", "error", 1)
    conv = by_id["suite/test_ops.py::OpsTest::test_conv[x]"]
    assert (conv.outcome, conv.waiver) == ("waived", 4)  # matched by its op
    assert by_id["suite/test_ops.py::OpsTest::test_mul"].outcome == "failed"  # not waived
    assert [e["status"] for e in section["entries"]] == [
        "used",
        "used",
        "stale",  # its test passes now: remove the waiver
        "unused",  # matches no test that ran
        "used",
    ]
    assert section["counts"] == {"used": 3, "stale": 1, "unused": 1}
    assert section["sha256"] == schema.sha256((tmp_path / "waivers.toml").read_bytes())


def test_star_is_the_only_wildcard_brackets_are_literal(tmp_path):
    text = f'[[waiver]]\ntest = "a/test_x.py::test_p[ab]"\nreason = "r"\nissue = "{ISSUE}"\n'
    known = _load(text, tmp_path)
    out, _ = waivers.apply(
        known, [_case("a/test_x.py::test_p[ab]", "failed"), _case("a/test_x.py::test_pa", "failed")]
    )
    assert [r.outcome for r in out] == ["waived", "failed"]


def test_a_cell_whose_only_failures_are_waived_passes(tmp_path):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        ops_junit(("nonzero", "boom"), ("add", None), ("mul", "wrong"), op_property=False)
    )
    (tmp_path / "w").mkdir()
    known = _load(GOOD, tmp_path / "w")
    results, section = waivers.apply(known, junit.parse(xml))
    report = bare_report(results, waivers=section)
    (cap,) = report["capabilities"]
    assert (cap["passed"], cap["failed"], cap["waived"], cap["verdict"]) == (1, 1, 1, "fail")
    assert report["verdict"] == "fail" and report["summary"]["waived"] == 1
    passing = bare_report(  # the same run without the unwaived failure passes
        [r for r in results if not r.id.endswith("test_mul")], waivers=section
    )
    assert passing["capabilities"][0]["verdict"] == passing["verdict"] == "pass"
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "junit.xml").write_bytes(xml.read_bytes())
    waivers.write(folder, known)
    bundle.write(folder, report)
    assert bundle.verify(folder).ok, bundle.verify(folder).problems
    assert "waivers.toml" in (folder / "SHA256SUMS").read_text()
    md = (folder / "report.md").read_text()
    assert "**waived** `suite/test_ops.py::OpsTest::test_nonzero`" in md
    assert f"waived: data-dependent shape, {ISSUE}" in md
    assert "| stale | test `suite/test_ops.py::OpsTest::test_add` |" in md
    assert 'data-status="unused"' in (folder / "report.html").read_text()

    # verify replays the waiving: a failure turned "waived" without a waiver that
    # covers it is caught even when report.json and SHA256SUMS are made anew.
    forged = json.loads((folder / "report.json").read_text())
    cap = forged["capabilities"][0]
    mul = cap["tests"][2]
    assert mul["id"].endswith("test_mul")
    mul.update(outcome="waived", ran="failed", waiver=0)
    cap.update(failed=0, waived=2, verdict="pass")
    forged["verdict"] = "pass"
    bundle.write(folder, schema.seal(schema.content(forged)))
    problems = bundle.verify(folder).problems
    assert problems == [
        "test suite/test_ops.py::OpsTest::test_mul: report says waived, the waivers give failed"
    ], problems

    bundle.write(folder, report)
    (folder / "waivers.toml").write_text(GOOD.replace("data-dependent", "any"))
    assert any("waivers.toml" in p for p in bundle.verify(folder).problems)


BAD = {
    "unknown top key": ("[[waivers]]\n", "unknown key 'waivers'"),
    "unknown waiver key": (
        f'[[waiver]]\ntest = "a/test_x.py::test_y"\nreason = "r"\nissue = "{ISSUE}"\nexpires = 1\n',
        "waiver 1: unknown key 'expires'",
    ),
    "malformed test id": (
        f'[[waiver]]\ntest = "test_x::test_y"\nreason = "r"\nissue = "{ISSUE}"\n',
        "malformed test id 'test_x::test_y'",
    ),
    "id with a space": (
        f'[[waiver]]\ntest = "a/test_x.py::test y"\nreason = "r"\nissue = "{ISSUE}"\n',
        "malformed test id",
    ),
    "missing reason": (
        f'[[waiver]]\ntest = "a/test_x.py::test_y"\nissue = "{ISSUE}"\n',
        "waiver 1: missing 'reason'",
    ),
    "blank reason": (
        f'[[waiver]]\ntest = "a/test_x.py::test_y"\nreason = " "\nissue = "{ISSUE}"\n',
        "missing 'reason'",
    ),
    "missing issue": ('[[waiver]]\nop = "add"\nreason = "r"\n', "missing 'issue'"),
    "issue not a link": (
        '[[waiver]]\nop = "add"\nreason = "r"\nissue = "ACME-7"\n',
        "is not a link",
    ),
    "test and op": (
        f'[[waiver]]\nop = "add"\ntest = "a/test_x.py::t"\nreason = "r"\nissue = "{ISSUE}"\n',
        "exactly one of `test` or `op`",
    ),
    "not toml": ("[[waiver]\n", "not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_waivers_file_is_one_line_naming_the_key(case, tmp_path):
    text, words = BAD[case]
    with pytest.raises(UsageError) as caught:
        _load(text, tmp_path)
    message = str(caught.value)
    assert words in message and "\n" not in message, message


def test_certify_refuses_a_bad_waivers_file_before_running(tmp_path, capsys):
    bad = tmp_path / "w.toml"
    bad.write_text('[[waiver]]\ntest = "a/test_x.py::t"\nissue = "https://x/1"\n')
    out = tmp_path / "out"
    code = main(
        ["certify", "cpu-2rank", "--matrix", str(MATRIX), "--out", str(out), "--waivers", str(bad)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "missing 'reason'" in err[0], err
    assert not out.exists()  # nothing ran
    assert main(["certify", "cpu-2rank", "--matrix", str(MATRIX), "--waivers", "nope.toml"]) == 2
    assert "waivers file 'nope.toml' not found" in capsys.readouterr().err


def test_certify_with_waivers_passes_the_planted_cell_and_names_stale_ones(tmp_path):
    known = tmp_path / "waivers.toml"
    known.write_text(
        f"""
[[waiver]]
test = "*planted.py::test_planted_failure"
reason = "planted: the rank disagreement is this fixture's point"
issue = "{ISSUE}"

[[waiver]]
test = "*sound.py::test_arithmetic"
reason = "was flaky"
issue = "{ISSUE}"
"""
    )
    out = tmp_path / "report"
    argv = ["certify", "cpu-2rank", "--matrix", str(MATRIX), "--out", str(out)]
    done = harness(*argv, "--waivers", str(known), cwd=tmp_path, env={"CI": "true"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS (2 passed, 0 failed, 1 waived, 1 skipped" in done.stdout
    assert f"waiver stale: *sound.py::test_arithmetic ({ISSUE})" in done.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["waivers"]["sha256"] == schema.sha256(known.read_bytes())
    assert "--waivers" in report["run"]["command"]
    assert (out / "waivers.toml").read_bytes() == known.read_bytes()
    assert bundle.verify(out).ok, bundle.verify(out).problems


def test_matrix_sets_waivers_per_accelerator_and_per_cell(tmp_path, capsys):
    from harness.matrix import MatrixError, load_matrix

    (tmp_path / "sound.py").write_text("def test_ok():\n    pass\n")
    text = (
        "schema = 1\n[defaults]\nsuites = ['sound.py']\n"
        "[accelerators.cpu]\ndevice = 'cpu'\nbackend = 'gloo'\ncells = { native = [1, 2] }\n"
        "waivers = 'waivers/cpu.toml'\n"
        "[overrides.cpu-2rank]\nwaivers = 'waivers/cpu-2rank.toml'\n"
    )
    matrix_path = tmp_path / "matrix.toml"
    matrix_path.write_text(text)
    matrix = load_matrix(matrix_path)
    assert matrix.cell("cpu-1rank").waivers == "waivers/cpu.toml"
    assert matrix.cell("cpu-2rank").waivers == "waivers/cpu-2rank.toml"
    assert matrix.cell("cpu-2rank").to_dict()["waivers"] == "waivers/cpu-2rank.toml"

    # the path is relative to the matrix, and a bad file stops certify before it runs
    (tmp_path / "waivers").mkdir()
    (tmp_path / "waivers" / "cpu.toml").write_text('[[waiver]]\nop = "add"\nreason = "r"\n')
    out = tmp_path / "out"
    code = main(["certify", "cpu-1rank", "--matrix", str(matrix_path), "--out", str(out)])
    assert code == 2 and "cpu.toml: waiver 1: missing 'issue'" in capsys.readouterr().err
    assert not out.exists()

    matrix_path.write_text(text.replace("waivers = 'waivers/cpu.toml'", "waivers = 3"))
    with pytest.raises(MatrixError, match="waivers"):
        load_matrix(matrix_path)


def test_a_test_that_names_its_op_can_be_waived_by_op(tmp_path):
    """The ops capability sets ``harness_op`` on a test; JUnit carries it as property ``op``."""
    (tmp_path / "test_opcheck.py").write_text(
        "def test_nonzero():\n    assert False, 'no strategy'\n\n"
        "test_nonzero.harness_op = 'nonzero'\n\n"
        "def test_plain():\n    assert False\n"
    )
    xml = tmp_path / "junit.xml"
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "harness.report.pytest_progress"]
        + ["-p", "no:cacheprovider", f"--junitxml={xml}", "test_opcheck.py"],
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
        check=False,
    )
    results = junit.parse(xml)
    assert {r.id: r.op for r in results} == {
        "test_opcheck.py::test_nonzero": "nonzero",
        "test_opcheck.py::test_plain": "",
    }
    known = _load(f'[[waiver]]\nop = "nonzero"\nreason = "r"\nissue = "{ISSUE}"\n', tmp_path)
    out, section = waivers.apply(known, results)
    assert [r.outcome for r in out] == ["waived", "failed"]
    assert section["entries"][0]["status"] == "used"


def test_report_build_applies_waivers_too(tmp_path, capsys):
    (tmp_path / "junit.xml").write_text(
        ops_junit(("nonzero", "boom"), ("add", None), op_property=False)
    )
    known = tmp_path / "known.toml"
    known.write_text(GOOD)
    argv = ["report", "build", str(tmp_path), "--cell", "cpu-2rank", "--matrix", str(MATRIX)]
    assert main([*argv, "--waivers", str(known)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["verdict"], report["summary"]["waived"]) == ("pass", 1)
    assert bundle.verify(tmp_path).ok, bundle.verify(tmp_path).problems
    assert main(argv) == 1  # without them the failure stands
    assert not (tmp_path / "waivers.toml").exists()  # and no earlier copy misleads
