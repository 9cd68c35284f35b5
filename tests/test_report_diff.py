"""harness report diff: regressions first, then fixes, waivers, coverage, machines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import bare_report, ops_junit  # tests/ is on sys.path

from harness.cli import main
from harness.report import bundle, diff, junit, schema, waivers

ISSUE = "https://github.com/acme/torch-acme/issues/7"


def _xml(cases: dict[str, str]) -> str:
    """JUnit XML with one case per test id -> outcome (passed, failed, error, skipped)."""
    body = []
    for test_id, outcome in cases.items():
        module, name = test_id.split("::")
        cap = module.removeprefix("suite/test_").removesuffix(".py")
        inner = {
            "passed": "",
            "failed": f'<failure message="{name} broke">trace</failure>',
            "error": f'<error message="{name} errored">trace</error>',
            "skipped": f'<skipped type="pytest.skip" message="{name} skipped"/>',
        }[outcome]
        body.append(
            f'<testcase classname="{module}" name="{name}" time="0.5"><properties>'
            f'<property name="capability" value="{cap}"/>'
            f'<property name="nodeid" value="{test_id}"/></properties>{inner}</testcase>'
        )
    return f'<testsuites><testsuite name="s">{"".join(body)}</testsuite></testsuites>'


def _report(
    folder: Path, cases: dict[str, str], torch: str, driver: str, known=None, cell="acme-4card"
) -> Path:
    folder.mkdir(parents=True)
    (folder / "junit.xml").write_text(_xml(cases))
    results, section = waivers.apply(known, junit.parse(folder / "junit.xml"))
    waivers.write(folder, known)
    report = schema.build(
        cell={"name": cell, "world_size": 4, "backend": "acmecl"},
        matrix={"path": "matrix.toml", "sha256": "0" * 64},
        fingerprint={
            "os": "Debian GNU/Linux 12",
            "torch": {
                "version": torch,
                "backends": {"acmecl": "2.1" if driver == "550" else "2.0"},
                "device": {"type": "acme", "count": 4, "driver": driver},
            },
        },
        results=results,
        run={"command": "harness certify acme-4card", "exit_code": 1, "wall_s": 3.0},
        artifacts={"junit.xml": bundle.file_sha256(folder / "junit.xml")},
        waivers=section,
    )
    bundle.write(folder, report)
    return folder


A_CASES = {
    "suite/test_ops.py::test_regress": "passed",
    "suite/test_ops.py::test_fix": "failed",
    "suite/test_ops.py::test_waive": "failed",
    "suite/test_ops.py::test_same": "passed",
    "suite/test_ops.py::test_gone": "passed",
    "suite/test_mesh.py::test_skip": "skipped",
}
B_CASES = {
    "suite/test_ops.py::test_regress": "failed",
    "suite/test_ops.py::test_fix": "passed",
    "suite/test_ops.py::test_waive": "error",
    "suite/test_ops.py::test_same": "passed",
    "suite/test_ops.py::test_new": "failed",
    "suite/test_mesh.py::test_skip": "skipped",
}


@pytest.fixture
def pair(tmp_path):
    path = tmp_path / "w.toml"
    path.write_text(
        f'[[waiver]]\ntest = "suite/test_ops.py::test_waive"\nreason = "acmecl 2.1 bug"\n'
        f'issue = "{ISSUE}"\n'
    )
    a = _report(tmp_path / "a", A_CASES, "2.12.0+cpu", "535")
    b = _report(tmp_path / "b", B_CASES, "2.13.0+cpu", "550", waivers.load(path))
    return a, b


def test_diff_sorts_every_change_into_its_section(pair):
    found = diff.compare_folders(*pair)
    ids = {k: [r["id"].split("::")[1] for r in found[k]] for k in diff.TITLES}
    assert ids == {
        "regressions": ["test_regress"],
        "fixes": ["test_fix"],
        "newly_waived": ["test_waive"],
        "new_failures": ["test_new"],
        "no_longer_run": ["test_gone"],
        "dtensor_own": [],
    }
    assert found["regressed"] is True
    (waived,) = found["newly_waived"]
    assert (waived["a"], waived["b"], waived["ran"]) == ("failed", "waived", "error")
    assert waived["waiver"] == {"reason": "acmecl 2.1 bug", "issue": ISSUE}
    assert found["regressions"][0]["reason"] == "test_regress broke"
    ops = next(c for c in found["capabilities"] if c["name"] == "ops")
    assert (ops["a"]["passed"], ops["b"]["passed"], ops["passed_change"]) == (3, 2, -1)
    assert (ops["a"]["waived"], ops["b"]["waived"]) == (0, 1)
    assert ops["changes"] == {"passed": -1, "waived": 1}
    mesh = next(c for c in found["capabilities"] if c["name"] == "mesh")
    assert mesh["changed"] is False
    assert [d["key"] for d in found["fingerprint"]] == [
        "torch.version",
        "torch.backends.acmecl",
        "torch.device.driver",
    ]
    assert found["fingerprint"][0] == {"key": "torch.version", "a": "2.12.0+cpu", "b": "2.13.0+cpu"}
    assert found["cell"] == []
    assert found["a"]["problems"] == [] and found["b"]["problems"] == []


def test_text_puts_regressions_first_and_exits_1(pair, capsys):
    assert main(["report", "diff", str(pair[0]), str(pair[1])]) == 1
    out = capsys.readouterr().out
    order = [out.index(diff.TITLES[k]) for k in diff.TITLES]
    assert order == sorted(order) and order[0] < out.index("Capabilities (A -> B):")
    assert "suite/test_ops.py::test_regress  passed -> failed: test_regress broke" in out
    assert f"waived (ran: error): acmecl 2.1 bug <{ISSUE}>" in out
    assert "torch.device.driver: 535 -> 550" in out
    assert "3/5 passed -> 2/5 passed  passed -1, waived +1" in out
    assert out.rstrip().endswith(
        "verdict fail -> fail; 1 regressions, 1 fixes, 1 newly waived, 1 new failures, "
        "1 no longer run, 0 DTensor's own on one side"
    )


def test_no_regression_exits_0_and_json_lists_everything(pair, capsys):
    a, _ = pair
    assert main(["report", "diff", str(a), str(a / "report.json"), "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["regressed"] is False and found["regressions"] == []
    assert found["fingerprint"] == [] and all(not c["changed"] for c in found["capabilities"])


def test_markdown_is_tables_for_a_pull_request(pair, capsys):
    assert main(["report", "diff", *map(str, pair), "--format", "markdown"]) == 1
    md = capsys.readouterr().out
    assert md.startswith("## DTensor certification diff: acme-4card -> acme-4card (regressed)")
    assert "### Regressions (passed -> failed): 1" in md
    assert "| `suite/test_ops.py::test_regress` | passed -> failed | test_regress broke |" in md
    assert "| torch.version | `2.12.0+cpu` | `2.13.0+cpu` |" in md
    assert md.index("### Regressions") < md.index("### Fixes") < md.index("### Capabilities")


def test_an_edited_report_is_flagged_in_the_diff(pair, capsys):
    a, b = pair
    (b / "report.md").write_text("edited")
    main(["report", "diff", str(a), str(b)])
    assert "warning: edited after it was made (1 problem(s))" in capsys.readouterr().out


def _one_line_exit_2(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_reports_of_two_schema_versions_are_refused(pair, capsys):
    a, b = pair
    old = json.loads((a / "report.json").read_text())
    old["schema"]["version"] = 1
    bundle.write(a, schema.seal(schema.content(old)))
    line = _one_line_exit_2(["report", "diff", str(a), str(b)], capsys)
    assert "is report schema 1" in line and f"is schema {schema.SCHEMA_VERSION}" in line


def test_not_a_cell_report_is_refused(pair, tmp_path, capsys):
    a, b = pair
    line = _one_line_exit_2(["report", "diff", str(a), str(tmp_path / "nope")], capsys)
    assert "is not a folder" in line
    main(["report", "merge", str(a), "--out", str(tmp_path / "matrix")])
    capsys.readouterr()
    line = _one_line_exit_2(["report", "diff", str(tmp_path / "matrix"), str(b)], capsys)
    assert "holds a matrix report" in line


def test_folders_of_cells_are_paired_by_cell_name(tmp_path, capsys):
    same = {"suite/test_ops.py::test_same": "passed"}
    _report(tmp_path / "old" / "acme-4card", A_CASES, "2.12.0+cpu", "535")
    _report(tmp_path / "old" / "acme-8card", same, "2.12.0+cpu", "535", cell="acme-8card")
    _report(tmp_path / "old" / "acme-1card", same, "2.12.0+cpu", "535", cell="acme-1card")
    _report(tmp_path / "new" / "acme-4card", B_CASES, "2.13.0+cpu", "535")
    _report(tmp_path / "new" / "acme-8card", same, "2.13.0+cpu", "535", cell="acme-8card")
    argv = ["report", "diff", str(tmp_path / "old"), str(tmp_path / "new")]
    assert main([*argv, "--format", "json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert [c["b"]["cell"] for c in found["cells"]] == ["acme-4card", "acme-8card"]
    assert (found["only_a"], found["only_b"]) == (["acme-1card"], [])
    assert [c["regressed"] for c in found["cells"]] == [True, False]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "Only in A: acme-1card" in out
    assert out.rstrip().endswith("2 cells compared; regressed: acme-4card")


RECORD = b"""schema = 2
torch = "2.13"

[world.2.own]
"argmax" = "shape '[1, 4, 2]' is invalid for input of size 2"

[world.4.own]
"transpose" = "Expected dim1 < ndim, got 0 >= 0"
"""


def _ops_report(folder: Path, world_size: int, failing: dict[str, str]) -> Path:
    """A cell's ops judged against RECORD at ``world_size``; ``failing``: op -> error."""
    from harness.report import reference

    folder.mkdir(parents=True)
    cases = [(op, failing.get(op)) for op in ("argmax", "transpose", "add")]
    (folder / "junit.xml").write_text(ops_junit(*cases))
    record = reference.parse(RECORD, "torch-2.13.toml")
    results, section = reference.apply(
        record, junit.parse(folder / "junit.xml"), world_size=world_size, source="shipped"
    )
    reference.write(folder, record)
    cell = {"name": f"cpu-{world_size}rank", "world_size": world_size}
    report = bare_report(results, cell, reference=section)
    bundle.write(folder, report)
    return folder


def test_two_world_sizes_differ_in_dtensors_own_failures_not_in_regressions(tmp_path, capsys):
    a = _ops_report(tmp_path / "ws2", 2, {"argmax": "argmax sample 3 [S(0)]: shape invalid"})
    b = _ops_report(tmp_path / "ws4", 4, {"transpose": "transpose sample 4 [R]: dim1 above ndim"})
    found = diff.compare_folders(a, b)
    rows = {r["id"].rsplit("_", 1)[1]: r for r in found["dtensor_own"]}
    assert set(rows) == {"argmax", "transpose"}
    assert (rows["argmax"]["a"], rows["argmax"]["b"]) == ("own", "passed")
    assert rows["argmax"]["reason"] == "argmax sample 3 [S(0)]: shape invalid"  # A's error
    assert (rows["transpose"]["a"], rows["transpose"]["b"]) == ("passed", "own")
    assert found["regressions"] == [] and found["regressed"] is False  # neither cell's fault
    assert {d["key"] for d in found["reference"]} == {"world_size"}  # one record, two sizes
    assert main(["report", "diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "DTensor's own failure on one side only" in out and "own -> passed" in out
