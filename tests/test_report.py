"""Reports: JUnit -> per-capability results, sealed, rendered, verified, merged."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import UsageError
from harness.report import bundle, junit, merge, render, schema

JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites name="pytest tests"><testsuite name="cpu-4rank" errors="1" failures="1"
 skipped="2" tests="6" time="3.2">
 <testcase classname="harness.conformance.test_collectives.CollectivesTest"
  name="test_all_reduce" time="0.50">
  <properties><property name="capability" value="collectives"/>
  <property name="nodeid" value="harness/conformance/test_collectives.py::CollectivesTest::test_all_reduce"/>
  </properties></testcase>
 <testcase classname="harness.conformance.test_collectives.CollectivesTest"
  name="test_send_recv" time="0.25">
  <skipped type="pytest.skip" message="needs at least 2 ranks; the cell has 1">skip</skipped>
 </testcase>
 <testcase classname="harness.conformance.test_device_mesh.MeshTest" name="test_2d" time="0.1">
  <skipped type="pytest.skip" message="2-D mesh needs an even world size">skip</skipped>
 </testcase>
 <testcase classname="harness.conformance.test_dtensor_api.ApiTest" name="test_redistribute" time="1.0">
  <failure message="AssertionError: rank 1: tensors differ&#10;second line">Traceback
  line 1
AssertionError: rank 1: tensors differ</failure></testcase>
 <testcase classname="harness.conformance.test_dtensor_api.ApiTest" name="test_uneven" time="0.2"/>
 <testcase classname="harness.conformance" name="test_random" time="0">
  <error message="collection failure">ImportError: no module named foo</error></testcase>
</testsuite></testsuites>
"""


def _cell_report(tmp_path: Path, xml: str = JUNIT) -> dict:
    (tmp_path / "junit.xml").write_text(xml)
    return schema.build(
        cell={"name": "cpu-4rank", "accelerator": "cpu", "world_size": 4, "mode": "native"},
        matrix={"path": "matrix.toml", "sha256": "0" * 64},
        fingerprint={"os": "Debian GNU/Linux 12", "torch": {"version": "2.13.0+cpu"}},
        results=junit.parse(tmp_path / "junit.xml"),
        run={"command": "harness certify cpu-4rank", "exit_code": 1, "wall_s": 3.5},
        artifacts={"junit.xml": bundle.file_sha256(tmp_path / "junit.xml")},
    )


@pytest.fixture
def folder(tmp_path) -> Path:
    out = tmp_path / "cpu-4rank"
    out.mkdir()
    bundle.write(out, _cell_report(out))
    return out


def test_junit_results_carry_capability_outcome_and_reason(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    results = {r.id.rsplit("::", 1)[-1]: r for r in junit.parse(tmp_path / "junit.xml")}
    first = results["test_all_reduce"]
    assert first.id.startswith("harness/conformance/test_collectives.py::")  # the nodeid property
    assert (first.capability, first.outcome, first.duration_s) == ("collectives", "passed", 0.5)
    assert results["test_send_recv"].reason == "needs at least 2 ranks; the cell has 1"
    assert results["test_2d"].capability == "device_mesh"  # no property: from the module name
    failed = results["test_redistribute"]
    assert (failed.outcome, failed.reason) == ("failed", "AssertionError: rank 1: tensors differ")
    assert "line 1" in failed.details
    broken = results["test_random"]
    assert (broken.capability, broken.outcome) == ("random", "error")


def test_verdicts_per_capability_and_overall(tmp_path):
    report = _cell_report(tmp_path)
    verdicts = {c["name"]: c["verdict"] for c in report["capabilities"]}
    assert verdicts == {
        "collectives": "pass",
        "device_mesh": "skip",
        "dtensor_api": "fail",
        "random": "fail",
    }
    assert list(verdicts) == ["collectives", "device_mesh", "dtensor_api", "random"]
    assert report["verdict"] == "fail"
    assert report["summary"] == {
        "passed": 2,
        "failed": 1,
        "error": 1,
        "skipped": 2,
        "waived": 0,
        "own": 0,
        "total": 6,
        "duration_s": 2.05,
    }
    api = next(c for c in report["capabilities"] if c["name"] == "dtensor_api")
    assert (api["passed"], api["failed"], api["duration_s"]) == (1, 1, 1.2)


def test_overall_verdict_rules():
    assert schema.overall_verdict(["pass", "skip"]) == "pass"
    assert schema.overall_verdict(["skip", "skip"]) == "skip"
    assert schema.overall_verdict(["pass"], exit_code=2) == "incomplete"  # interrupted run
    assert schema.overall_verdict(["pass", "fail"], exit_code=2) == "fail"


def test_schema_3_counts_waived_and_own_and_older_reports_still_verify(tmp_path):
    report = _cell_report(tmp_path)
    assert report["schema"]["version"] == 3 and report["waivers"] is None
    assert report["reference"] is None and report["summary"]["own"] == 0
    assert report["summary"]["waived"] == 0
    assert all(cap["waived"] == 0 for cap in report["capabilities"])
    for version, gone in ((2, ("own",)), (1, ("own", "waived"))):
        old = json.loads(json.dumps(schema.content(report)))  # 0.2.0 wrote no own, 0.1.0 no waived
        old["schema"]["version"] = version
        del old["reference"]
        if version == 1:
            del old["waivers"]
        for counts in (old["summary"], *old["capabilities"]):
            for key in gone:
                del counts[key]
        folder = tmp_path / f"v{version}"
        bundle.write(folder, schema.seal(old))
        shutil.copy(tmp_path / "junit.xml", folder / "junit.xml")
        bundle.write(folder, json.loads((folder / "report.json").read_text()))
        assert bundle.verify(folder).ok, bundle.verify(folder).problems


def test_digest_is_over_canonical_content(tmp_path):
    report = _cell_report(tmp_path)
    digest = report["integrity"]["sha256"]
    reordered = json.loads(json.dumps(schema.content(report), sort_keys=True))
    assert schema.sha256(schema.canonical(reordered)) == digest  # key order does not matter
    report["summary"]["passed"] += 1
    assert schema.sha256(schema.canonical(schema.content(report))) != digest


def test_written_folder_verifies_and_lists_every_file(folder):
    found = bundle.verify(folder)
    assert found.ok, found.problems
    listed = [line.split("  ")[1] for line in (folder / "SHA256SUMS").read_text().splitlines()]
    assert listed == ["junit.xml", "report.json", "report.md", "report.html"]
    if shutil.which("sha256sum"):  # the folder checks without the harness too
        subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=folder, check=True)


def _edit_json(folder: Path, edit) -> None:
    path = folder / "report.json"
    report = json.loads(path.read_text())
    edit(report)
    path.write_text(json.dumps(report, indent=2))


def test_verify_names_an_edited_result(folder):
    def flip(report):
        test = report["capabilities"][2]["tests"][0]
        assert test["outcome"] == "failed"
        test["outcome"] = "passed"

    _edit_json(folder, flip)
    problems = bundle.verify(folder).problems
    assert "report.json: section 'capabilities' was edited" in problems
    assert any(
        "test_redistribute: report.json says passed, junit.xml says failed" in p for p in problems
    )
    assert "report.json was edited after the report was made (sha256 differs)" in problems


def test_verify_names_an_edited_fingerprint(folder):
    _edit_json(folder, lambda r: r["fingerprint"].update(os="Ubuntu 24.04"))
    problems = bundle.verify(folder).problems
    assert "report.json: section 'fingerprint' was edited" in problems
    assert not any("capabilities" in p for p in problems)


def test_verify_catches_a_resealed_json_through_the_sums(folder):
    """Recomputing report.json's own digest is not enough to hide an edit."""

    def reseal(report):
        report["capabilities"][0]["tests"][0]["duration_s"] = 0.001
        schema.seal(report)

    _edit_json(folder, reseal)
    assert bundle.verify(folder).problems == [
        "report.json was edited after the report was made (sha256 differs)"
    ]


@pytest.mark.parametrize("name", ["report.html", "report.md", "junit.xml"])
def test_verify_catches_an_edited_file(folder, name):
    path = folder / name
    path.write_text(path.read_text().replace("cpu-4rank", "cuda-4gpu"))
    problems = bundle.verify(folder).problems
    assert f"{name} was edited after the report was made (sha256 differs)" in problems


def test_verify_catches_removed_sums_and_files(folder):
    (folder / "report.md").unlink()
    assert bundle.verify(folder).problems == ["report.md is missing"]
    (folder / "SHA256SUMS").unlink()
    assert bundle.verify(folder).problems[0].startswith("SHA256SUMS is missing")


def test_cli_verify_exit_codes(folder, tmp_path, capsys):
    assert main(["report", "verify", str(folder), "--integrity-only"]) == 0
    assert "OK, integrity only (cpu-4rank, verdict fail" in capsys.readouterr().out
    assert main(["report", "verify", str(folder)]) == 3  # nothing proves who made it
    assert "UNVERIFIED (cpu-4rank, verdict fail" in capsys.readouterr().err
    (folder / "report.html").write_text("<p>all green</p>")
    assert main(["report", "verify", str(folder)]) == 1
    err = capsys.readouterr().err
    assert "MODIFIED" in err and "report.html was edited" in err
    assert main(["report", "verify", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", "verify", str(tmp_path / "empty")]) == 2
    assert "holds no report.json" in capsys.readouterr().err
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / "report.json").write_text("{not json")
    assert main(["report", "verify", str(bogus)]) == 2
    assert "is not JSON" in capsys.readouterr().err


def test_markdown_and_html_show_the_matrix_row(tmp_path):
    report = _cell_report(tmp_path)
    md = render.markdown(report)
    assert "| cpu-4rank | fail | pass 1/1 +1 skip | skip 1 | fail 1 of 2 | fail 1 of 1 |" in md
    assert "needs at least 2 ranks; the cell has 1" in md
    page = render.html_page(report)
    assert 'data-capability="dtensor_api" data-outcome="fail"' in page
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from anywhere
    assert "<script" not in page


def test_html_escapes_what_tests_report(tmp_path):
    xml = JUNIT.replace("tensors differ", "&lt;script&gt;alert(1)&lt;/script&gt;")
    page = render.html_page(_cell_report(tmp_path, xml))
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page


def test_merge_makes_one_matrix_report(folder, tmp_path):
    other = tmp_path / "cpu-1rank"
    other.mkdir()
    report = _cell_report(other, JUNIT.replace("cpu-4rank", "cpu-1rank"))
    report["cell"]["name"] = "cpu-1rank"
    bundle.write(other, schema.seal(report))
    out = tmp_path / "matrix"
    assert main(["report", "merge", str(tmp_path), "--out", str(out)]) == 1  # a cell failed
    merged = bundle.load(out)
    assert merged["kind"] == "matrix" and merged["verdict"] == "fail"
    assert [c["cell"] for c in merged["cells"]] == ["cpu-1rank", "cpu-4rank"]
    assert merged["cells"][1]["capabilities"]["collectives"]["verdict"] == "pass"
    assert bundle.verify(out).ok
    assert "| cpu-1rank | fail |" in (out / "report.md").read_text()
    # merging again skips the earlier matrix report, wherever the new one goes
    assert main(["report", "merge", str(tmp_path), "--out", str(out)]) == 1
    assert main(["report", "merge", str(tmp_path), "--out", str(tmp_path / "again")]) == 1
    assert len(bundle.load(out)["cells"]) == len(bundle.load(tmp_path / "again")["cells"]) == 2


def test_merge_refuses_an_edited_cell(folder, tmp_path, capsys):
    _edit_json(folder, lambda r: r.update(verdict="pass"))
    assert main(["report", "merge", str(folder), "--out", str(tmp_path / "m")]) == 1
    assert "refusing to merge edited reports" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="holds no report.json"):
        merge.find_reports([tmp_path / "empty"])


def _keygen(tmp_path: Path, name: str, comment: str) -> Path:
    key = tmp_path / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)], check=True
    )
    return key


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH) not installed")
def test_signature_proves_who_signed(folder, tmp_path, capsys):
    vendor = _keygen(tmp_path, "vendor", "qa@vendor.example")
    mallory = _keygen(tmp_path, "mallory", "mallory@example")
    signers = tmp_path / "allowed_signers"
    public = (tmp_path / "vendor.pub").read_text().strip()
    signers.write_text(f'qa@vendor.example namespaces="{bundle.NAMESPACE}" {public}\n')

    assert main(["report", "sign", str(folder), "--key", str(vendor)]) == 0
    found = bundle.verify(folder, signers)
    assert found.ok and found.signer == "qa@vendor.example"
    assert bundle.verify(folder, tmp_path / "vendor.pub").ok  # a bare .pub works too
    assert main(["report", "verify", str(folder), "--allowed-signers", str(signers)]) == 0
    assert "signed by qa@vendor.example" in capsys.readouterr().out

    # someone else's signature over the same files is refused
    bundle.sign(folder, mallory)
    assert bundle.verify(folder, signers).problems == [
        f"signature: made by no key listed in {signers}"
    ]
    # an edit after signing breaks the sums, and a re-made SHA256SUMS breaks the signature
    bundle.sign(folder, vendor)
    (folder / "report.md").write_text("# all green\n")
    lines = [
        f"{bundle.file_sha256(folder / n)}  {n}"
        for n in ("junit.xml", "report.json", "report.md", "report.html")
    ]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    problems = bundle.verify(folder, signers).problems
    assert len(problems) == 1 and problems[0].startswith("signature: does not verify")
    (folder / "SHA256SUMS.sig").unlink()
    assert bundle.verify(folder, signers).problems == ["not signed: SHA256SUMS.sig is missing"]


def test_sign_bad_key_is_usage_error(folder, tmp_path, capsys):
    assert main(["report", "sign", str(folder), "--key", str(tmp_path / "none")]) == 2
    assert "signing key" in capsys.readouterr().err


def test_build_reports_a_junit_from_harness_run(tmp_path, capsys):
    """JUnit written without the certify plugin: capabilities come from module names."""
    matrix = Path(__file__).parent / "data" / "certify" / "matrix.toml"
    (tmp_path / "junit.xml").write_text(JUNIT)
    assert (
        main(["report", "build", str(tmp_path), "--cell", "cpu-1rank", "--matrix", str(matrix)])
        == 1
    )
    report = bundle.load(tmp_path)
    assert report["cell"]["name"] == "cpu-1rank" and report["verdict"] == "fail"
    assert report["run"]["command"] == (
        f"harness report build {tmp_path} --cell cpu-1rank --matrix {matrix}"
    )
    assert {c["name"] for c in report["capabilities"]} == {
        "collectives",
        "device_mesh",
        "dtensor_api",
        "random",
    }
    assert bundle.verify(tmp_path).ok
    assert "verdict fail" in capsys.readouterr().out
    assert main(["report", "build", str(tmp_path / "none"), "--cell", "cpu-1rank",
                 "--matrix", str(matrix)]) == 2  # fmt: skip


def test_build_reads_the_cell_from_the_junit_suite_name(tmp_path, capsys):
    """`harness run` names the JUnit suite after the cell, so `report build DIR` needs no --cell."""
    matrix = Path(__file__).parent / "data" / "certify" / "matrix.toml"
    (tmp_path / "junit.xml").write_text(JUNIT.replace('name="cpu-4rank"', 'name="cpu-1rank"'))
    assert main(["report", "build", str(tmp_path), "--matrix", str(matrix)]) == 1
    assert bundle.load(tmp_path)["cell"]["name"] == "cpu-1rank"
    assert "harness: cpu-1rank: verdict fail" in capsys.readouterr().out
    # pytest's default suite name says nothing: one line naming the fix, exit 2
    (tmp_path / "junit.xml").write_text(JUNIT.replace('name="cpu-4rank"', 'name="pytest"'))
    assert main(["report", "build", str(tmp_path), "--matrix", str(matrix)]) == 2
    assert "pass --cell NAME" in capsys.readouterr().err


def test_report_side_needs_neither_torch_nor_the_rank_runner():
    """A reader verifies a report where torch is not installed; report -/-> ranks."""
    code = (
        "import sys\n"
        "import harness.report.bundle, harness.report.merge, harness.report.progress\n"
        "import harness.report.pytest_progress, harness.commands.report\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('harness.ranks')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_reason_of_a_rank_failure_names_the_cause():
    message = "RankError: T.test_x failed on 1 of 4 ranks:\n  rank 2 failed: ValueError: bad\n\ntb"
    assert junit.one_line(message) == (
        "RankError: T.test_x failed on 1 of 4 ranks: rank 2 failed: ValueError: bad"
    )
    assert junit.one_line("AssertionError: x\nmore") == "AssertionError: x"
    assert junit.one_line("y" * 400).endswith("\u2026") and len(junit.one_line("y" * 400)) == 300


def test_fingerprint_records_torch_cpu_os_and_the_image(monkeypatch):
    from harness.report import fingerprint

    monkeypatch.setenv("HARNESS_IMAGE", "dtensor-harness:cpu-torch2.13.0")
    monkeypatch.setenv("HARNESS_IMAGE_ID", "sha256:" + "ab" * 32)
    info = fingerprint.collect("cpu", "gloo")
    import torch

    assert info["torch"]["version"] == torch.__version__
    assert info["torch"]["backends"]["gloo"] is True and info["torch"]["backend"] == "gloo"
    assert info["torch"]["device"]["type"] == "cpu" and info["cpu"]["cores"] >= 1
    assert info["container"]["image_id"] == "sha256:" + "ab" * 32
    assert info["os"] and info["python"]
    json.dumps(info, allow_nan=False)  # canonical JSON must take it


@pytest.mark.parametrize("added", ["extra.txt", "sub/more.xml", ".hidden"])
def test_verify_rejects_a_file_added_after_the_report(folder, capsys, added):
    (folder / added).parent.mkdir(exist_ok=True)
    (folder / added).write_text("<testcase name='test_extra'/>")
    assert bundle.verify(folder).problems == [
        f"{added} is not listed in SHA256SUMS (added after the report was made)"
    ]
    assert main(["report", "verify", str(folder), "--integrity-only"]) == 1
    assert "MODIFIED" in capsys.readouterr().err


def test_files_written_before_the_report_are_listed_and_verify(folder):
    (folder / "ranks").mkdir()
    (folder / "ranks" / "rank0.log").write_text("rank 0 log\n")
    bundle.write(folder, bundle.load(folder))
    assert "ranks/rank0.log" in (folder / "SHA256SUMS").read_text()
    assert bundle.verify(folder).ok
    (folder / "ranks" / "rank0.log").write_text("edited\n")
    assert bundle.verify(folder).problems == [
        "ranks/rank0.log was edited after the report was made (sha256 differs)"
    ]


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen (OpenSSH) not installed")
def test_a_bad_signature_fails_even_without_allowed_signers(folder, tmp_path, capsys):
    vendor = _keygen(tmp_path, "vendor", "qa@vendor.example")
    bundle.sign(folder, vendor)
    # intact: unverified (exit 3), unless only integrity is asked for
    assert main(["report", "verify", str(folder)]) == 3
    captured = capsys.readouterr()
    assert "UNVERIFIED" in captured.err and "signature intact" in captured.out
    assert main(["report", "verify", str(folder), "--integrity-only"]) == 0
    capsys.readouterr()
    # SHA256SUMS re-made after signing: the signature no longer verifies, with or without signers
    (folder / "report.md").write_text("# all green\n")
    bundle_sums = folder / "SHA256SUMS"
    lines = [
        f"{bundle.file_sha256(folder / n)}  {n}"
        for n in ("junit.xml", "report.json", "report.md", "report.html")
    ]
    bundle_sums.write_text("\n".join(lines) + "\n")
    problems = bundle.verify(folder).problems
    assert len(problems) == 1 and problems[0].startswith("signature: does not verify"), problems
    assert main(["report", "verify", str(folder), "--integrity-only"]) == 1
    assert "signature: does not verify" in capsys.readouterr().err
    # a signature file that is not a signature at all
    (folder / "SHA256SUMS.sig").write_text("-----BEGIN SSH SIGNATURE-----\ngarbage\n")
    assert bundle.verify(folder).problems[0].startswith("signature: does not verify")
