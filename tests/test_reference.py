"""Verdicts against a reference: an op fails a cell only where the reference passes it.

The record format and its loading, DTensor's own failures counted apart, regressions
and stale entries on a CPU cell with a shipped record, the reference sealed into the
report and replayed by verify, the order a certification looks for a reference in,
and ``harness reference make``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from report_fixtures import bare_report, ops_junit  # tests/ is on sys.path

from harness import references
from harness._version import __version__
from harness.cli import main
from harness.errors import UsageError
from harness.report import bundle, junit, reference, schema

RECORD = b"""schema = 2
torch = "2.13"

[skip]
"empty" = "uninitialised memory"

[world.2]
checked = "all"
made = "a test"

[world.2.own]
"argmax" = "shape '[1, 4, 2]' is invalid for input of size 2"
"rms_norm" = "add_ on Partial(avg)"

[world.4.own]
"transpose" = "0-d transpose"
"""


def _case(op: str, outcome: str, reason: str = "") -> junit.CaseResult:
    return junit.CaseResult(
        id=f"suite/test_ops.py::OpsTest::test_{op}",
        capability="ops",
        outcome=outcome,
        duration_s=0.1,
        reason=reason,
        op=op,
    )


RESULTS = [
    _case("argmax", "failed", "argmax sample 3 with input placements [S(0)] raised RuntimeError"),
    _case("rms_norm", "passed"),
    _case("neg", "failed", "neg sample 0: wrong values"),
    _case("add", "passed"),
]


def test_an_op_failing_on_the_reference_too_is_dtensors_own_and_never_the_cells():
    record = reference.parse(RECORD, "r.toml")
    out, section = reference.apply(record, RESULTS, world_size=2, source="file", path="r.toml")
    outcomes = {r.op: (r.outcome, r.ran) for r in out}
    assert outcomes["argmax"] == ("own", "failed")  # it keeps what it ran to, and its error
    assert outcomes["neg"] == ("failed", "")  # the reference passes neg: the cell's failure
    assert section["own"] == 1 and section["failed_only_here"] == ["neg"]
    assert section["passed_only_here"] == ["rms_norm"] and section["sha256"] == record.sha256
    (cap,) = schema.summarize(out)
    assert (cap["own"], cap["failed"], cap["verdict"]) == (1, 1, "fail")
    assert cap["coverage"]["own"] == 1 and cap["coverage"]["failed"] == 1
    (alone,) = schema.summarize([r for r in out if r.op != "neg"])
    assert alone["verdict"] == "pass"  # DTensor's own failure does not fail the cell


def test_each_world_size_has_its_own_reference():
    record = reference.parse(RECORD, "r.toml")
    out, section = reference.apply(record, RESULTS, world_size=4)
    assert [r.outcome for r in out if r.op == "argmax"] == ["failed"]  # not DTensor's at 4
    assert reference.apply(record, RESULTS, world_size=8)[1] is None  # no reference: none
    assert record.at(4).passes("argmax") and not record.at(2).passes("argmax")


def test_a_cpu_cell_against_its_shipped_record_names_regressions_and_stale_entries():
    record = reference.parse(RECORD, "r.toml")
    _, section = reference.apply(record, RESULTS, world_size=2, source="shipped", guards=True)
    assert section["regressions"] == ["neg"] and section["stale"] == ["rms_norm"]


def test_a_partial_reference_judges_what_it_never_ran_alone():
    partial = RECORD.replace(b'checked = "all"', b'checked = ["argmax", "add"]')
    out, section = reference.apply(reference.parse(partial, "r"), RESULTS, world_size=2)
    assert section["unknown"] == ["neg"] and section["failed_only_here"] == []


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b'schema = 1\ntorch = "2.13"\n[xfail]\nadd = "x"\n', "schema 1: one [xfail] list"),
        (b'schema = 2\ntorch = "2.13"\n[world.0.own]\n', "[world.0]: the key must be a world size"),
        (b'schema = 2\ntorch = "2.13"\n[world.2]\nchecked = 3\n', '`checked` is "all" or a list'),
        (b'schema = 2\ntorch = "2.13"\n[world.2.own]\nadd = ""\n', "'add' needs a reason"),
        (b'schema = 2\ntorch = "2.13"\n[world.2]\nwho = "me"\n', "unknown key 'who'"),
        (b"schema = 2\n", "`torch` must be the torch version"),
    ],
)
def test_a_bad_record_is_one_line_naming_the_key(text, words):
    with pytest.raises(UsageError, match=words.replace("[", r"\[").replace("]", r"\]")):
        reference.parse(text, "r.toml")


def test_the_record_written_reads_back_the_same():
    record = reference.parse(RECORD, "r.toml")
    text = reference.dumps(record.torch, record.worlds, record.skip, record.slow, "a header")
    again = reference.parse(text.encode(), "again")
    assert again.worlds == record.worlds and again.skip == record.skip


def test_the_report_seals_its_reference_and_verify_replays_it(tmp_path):
    folder = tmp_path / "report"
    folder.mkdir()
    (folder / "junit.xml").write_text(ops_junit(("argmax", "boom"), ("add", None)))
    record = reference.parse(RECORD, "r.toml")
    results, section = reference.apply(
        record, junit.parse(folder / "junit.xml"), world_size=2, source="file", path="r.toml"
    )
    report = bare_report(results, reference=section)
    assert report["verdict"] == "pass" and report["summary"]["own"] == 1
    reference.write(folder, record)
    bundle.write(folder, report)
    assert bundle.verify(folder).ok, bundle.verify(folder).problems
    assert "reference.toml" in (folder / "SHA256SUMS").read_text()
    md = (folder / "report.md").read_text()
    assert "**own** `suite/test_ops.py::OpsTest::test_argmax`: boom" in md
    assert "1 op failed as on the reference: DTensor's own" in md

    # a reference edited to cover a failure is caught, even with the sums made anew
    (folder / "reference.toml").write_bytes(RECORD.replace(b'"argmax"', b'"add"'))
    bundle.write(folder, report)
    assert any("reference.toml: sha256 differs" in p for p in bundle.verify(folder).problems)

    # so is a failure forged into DTensor's own without the reference saying so
    reference.write(folder, record)
    (folder / "junit.xml").write_text(ops_junit(("argmax", "boom"), ("add", "bad")))
    forged = json.loads(json.dumps(report))
    add = forged["capabilities"][0]["tests"][1]
    add.update(outcome="own", ran="failed")
    forged["capabilities"][0].update(passed=0, own=2)
    forged["summary"].update(passed=0, own=2)
    forged["reference"]["own"] = 2
    bundle.write(folder, schema.seal(schema.content(forged)))
    problems = bundle.verify(folder).problems
    assert any("test_add: report says own, the reference gives failed" in p for p in problems)


class _Cell:
    def __init__(self, device="cpu", plugins=(), world_size=2):
        self.device, self.plugins, self.world_size = device, plugins, world_size


def test_the_reference_is_the_file_given_then_the_shipped_record_then_the_cache(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("HARNESS_REFERENCE_CACHE", raising=False)  # the user cache, as users have it
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(reference, "SHIPPED", shipped)
    monkeypatch.setattr(references, "torch_build", lambda: "2.13.0+cpu")
    given = tmp_path / "given.toml"
    given.write_bytes(RECORD)
    assert references.plan(_Cell(), str(given)).source == "file"
    with pytest.raises(UsageError, match=r"holds no \[world.8\] \(world sizes: 2, 4\)"):
        references.plan(_Cell(world_size=8), str(given))
    assert references.plan(_Cell()).record is None  # nothing shipped, nothing cached
    (shipped / "torch-2.13.toml").write_bytes(RECORD)
    use = references.plan(_Cell(device="acme", plugins=("acme_ccl",)))
    assert (use.source, use.path, use.guards) == (
        "shipped",
        "harness/conformance/xfails/torch-2.13.toml",
        False,
    )
    assert references.plan(_Cell()).guards  # a CPU cell without plugins guards the record
    assert references.plan(_Cell(world_size=8)).record is None  # shipped, not for ws 8


def test_a_cpu_cell_without_a_record_becomes_the_record(tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_REFERENCE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(reference, "SHIPPED", tmp_path)
    monkeypatch.setattr(references, "torch_build", lambda: "2.16.0.dev20261201+cpu")
    use = references.settle(references.plan(_Cell()), RESULTS, timeout=60)
    assert use.source == "this run" and set(use.record.at(2).own) == {"argmax", "neg"}
    assert use.record.at(2).checked == {"argmax", "rms_norm", "neg", "add"}  # what it ran
    assert not use.record.at(2).knows("mul")
    cached = references.cache_file("2.16.0.dev20261201+cpu", 2)
    assert cached == tmp_path / "cache" / "dtensor-harness" / "references" / cached.name
    assert cached.is_file()
    digest = references.code_digest()
    assert cached.name == f"torch-2.16.0.dev20261201+cpu-ws2-harness-{__version__}-{digest}.toml"
    again = references.plan(_Cell())  # the next run reads it from the cache
    assert again.source == "cache" and again.record.sha256 == use.record.sha256
    out, section = reference.apply(again.record, RESULTS, world_size=2, source="cache")
    assert {r.outcome for r in out if r.op in ("argmax", "neg")} == {"own"}
    # an op the cached record saw pass that fails now is not learned as DTensor's own
    worse = [*RESULTS[:3], _case("add", "failed", "add: wrong values")]
    later = references.settle(again, worse, timeout=60)
    assert later.record.sha256 == again.record.sha256  # nothing new to record
    out, _ = reference.apply(later.record, worse, world_size=2, source=later.source)
    assert [r.outcome for r in out if r.op == "add"] == ["failed"]


def test_a_run_that_skipped_its_ops_does_not_record_them_as_passing(tmp_path, monkeypatch):
    """A sim cell on a torch without LocalTensor skips every op: its run must not become
    a record saying they pass, or the same torch's native cell is judged against it."""
    monkeypatch.setenv("HARNESS_REFERENCE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(reference, "SHIPPED", tmp_path)
    monkeypatch.setattr(references, "torch_build", lambda: "2.7.1")
    skipped = [
        _case(op, "skipped", "LocalTensor mode needs torch >= 2.10") for op in ("add", "neg")
    ]
    use = references.settle(references.plan(_Cell()), [*skipped, RESULTS[0]], timeout=60)
    world = use.record.at(2)
    assert world.knows("argmax") and not world.knows("add") and not world.knows("neg")
    later = references.plan(_Cell())  # what the native cell of that torch then reads
    assert later.source == "cache" and not later.record.at(2).knows("neg")


def test_the_cache_key_changes_with_the_code_that_checks_ops(tmp_path):
    """A checkout that changes how ops are judged does not reuse the old verdicts."""
    kit = Path(references.__file__).resolve().parent
    copy = tmp_path / "harness"
    shutil.copytree(kit, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert references.code_digest(copy) == references.code_digest()
    (copy / "unrelated_note.py").write_text("# not about ops\n")
    assert references.code_digest(copy) == references.code_digest()
    with (copy / "local" / "helpers.py").open("a") as helpers:
        helpers.write("# a change in LocalTensor's helpers\n")
    assert references.code_digest(copy) != references.code_digest()


def test_reference_make_writes_a_world_size_and_keeps_reviewed_reasons(tmp_path, capsys):
    record = tmp_path / "torch-2.13.toml"
    record.write_bytes(RECORD)
    xml = tmp_path / "junit.xml"
    xml.write_text(
        ops_junit(("argmax", "AssertionError: new words"), ("cdist", "boom"), ("add", None))
    )
    code = main(["reference", "make", str(xml), "--world-size", "2", "--record", str(record)])
    assert code == 0
    made = reference.load(record)
    assert made.at(2).own == {
        "argmax": "shape '[1, 4, 2]' is invalid for input of size 2",  # reviewed: kept
        "cdist": "boom",  # new: its first error
    }
    assert made.at(2).checked == {"argmax", "cdist", "add"}  # a partial sweep says so
    assert made.at(4).own == {"transpose": "0-d transpose"} and made.skip  # the rest is kept
    said = capsys.readouterr().out
    assert "1 reasons kept, 1 new, 1 gone" in said and "new: cdist: boom" in said


def test_reference_make_refuses_a_sweep_whose_failures_were_marked(tmp_path, capsys):
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="s"><testcase classname="s.test_ops.OpsTest" '
        'name="test_add" time="0"><properties><property name="op" value="add"/></properties>'
        '<skipped type="pytest.xfail" message="known"/></testcase></testsuite></testsuites>'
    )
    code = main(
        ["reference", "make", str(xml), "--world-size", "2", "--record", str(tmp_path / "r")]
    )
    assert code == 2
    assert "HARNESS_OPS_VERDICTS=raw" in capsys.readouterr().err


def test_certify_refuses_ops_that_name_no_op_before_anything_runs(tmp_path, capsys):
    matrix = Path(__file__).parent / "data" / "certify" / "matrix.toml"
    out = tmp_path / "out"
    code = main(
        ["certify", "cpu-2rank", "--matrix", str(matrix), "--out", str(out), "--ops", "add,argmx"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "'argmx' names no op" in err and "closest: argmax" in err
    assert not out.exists()  # nothing started: no results folder


def test_reference_make_reads_a_certify_report_folder_and_its_world_size(tmp_path, capsys):
    folder = tmp_path / "cpu-2rank"
    folder.mkdir()
    (folder / "junit.xml").write_text(ops_junit(("argmax", "boom"), ("add", None)))
    (folder / "report.json").write_text(json.dumps({"cell": {"world_size": 2}}))
    record = tmp_path / "r.toml"
    assert main(["reference", "make", str(folder), "--record", str(record)]) == 0
    made = reference.load(record)
    assert made.at(2).own == {"argmax": "boom"}
    # a new record lends the nearest shipped record's skips: no values to compare on any torch
    shipped = reference.load(reference.SHIPPED / "torch-2.13.toml")
    assert made.skip == shipped.skip and "empty" in made.skip
    assert made.slow == shipped.slow
    assert main(["reference", "make", str(tmp_path / "nothing.xml"), "--record", str(record)]) == 2
    assert "--world-size N" in capsys.readouterr().err
