"""A report folder: write it, sign it, verify it.

Three layers, each catching what the one before cannot:
- report.json carries a sha256 over its canonical content, per section too, so
  an edit of a result or of the fingerprint is named;
- SHA256SUMS lists every file of the folder (``sha256sum -c`` reads it), so an
  edit of junit.xml, report.md or report.html is caught too, and so is a file added;
- a signature over SHA256SUMS (``ssh-keygen -Y sign``) proves who made it: a
  digest alone can be recomputed by whoever edits the files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.lock import LOCK
from harness.report import junit, reference, render, schema, waivers

REPORT = "report.json"
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
NAMESPACE = "dtensor-harness-report"
# Files a folder's SHA256SUMS covers when present, in this order.
FILES = (
    "junit.xml",
    "pytest.log",
    waivers.FILE,
    reference.FILE,
    REPORT,
    "report.md",
    "report.html",
)
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


def file_sha256(path: Path) -> str:
    return schema.sha256(path.read_bytes())


def contents(folder: Path) -> list[str]:
    """Every file under ``folder`` that SHA256SUMS must list (relative, ``/``-separated):
    all of them but the sums, their signature and a run's lock."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            rel = (Path(root) / name).relative_to(folder).as_posix()
            if rel not in (SUMS, SIGNATURE, LOCK):
                found.append(rel)
    return found


def write(folder: str | Path, report: dict[str, Any]) -> Path:
    """Write report.json, report.md, report.html and SHA256SUMS into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REPORT).write_text(
        json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    (folder / "report.md").write_text(render.markdown(report), encoding="utf-8")
    (folder / "report.html").write_text(render.html_page(report), encoding="utf-8")
    stale = folder / SIGNATURE
    if stale.exists():  # a signature over the old sums would only mislead
        stale.unlink()
    present = set(contents(folder))
    names = [n for n in FILES if n in present] + sorted(present.difference(FILES))
    lines = [f"{file_sha256(folder / n)}  {n}" for n in names]
    (folder / SUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _ssh_keygen() -> str:
    found = shutil.which("ssh-keygen")
    if found is None:
        raise UsageError(
            "ssh-keygen not found; install OpenSSH (Debian: apt-get install openssh-client) "
            "to sign or check signatures."
        )
    return found


def sign(folder: str | Path, key: str | Path) -> Path:
    """Sign the folder's SHA256SUMS with an SSH private key; returns the .sig path."""
    folder, key = Path(folder), Path(key)
    if not key.is_file():
        raise UsageError(f"signing key {str(key)!r} not found; pass --sign PRIVATE_KEY_FILE.")
    sums = folder / SUMS
    if not sums.is_file():
        raise UsageError(f"{folder} has no {SUMS}; make the report first (`harness certify`).")
    sig = folder / SIGNATURE
    if sig.exists():
        sig.unlink()
    done = subprocess.run(
        [_ssh_keygen(), "-Y", "sign", "-q", "-f", str(key), "-n", NAMESPACE, str(sums)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not sig.is_file():
        why = (done.stderr or done.stdout).strip().splitlines()
        raise UsageError(
            f"ssh-keygen could not sign with {key}: {why[-1] if why else 'no reason given'}; "
            f"pass the private key (not the .pub) of an ssh-keygen key."
        )
    return sig


@dataclass
class Verdict:
    """What verify found: ``problems`` make it fail, ``notes`` are for the reader."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signer: str | None = None

    @property
    def ok(self) -> bool:
        """Nothing was edited, added or removed, and any signature verifies."""
        return not self.problems

    @property
    def verified(self) -> bool:
        """Intact and signed by a key the caller allowed: who made it is proven."""
        return self.ok and self.signer is not None


def load(folder: str | Path) -> dict[str, Any]:
    """report.json of a folder, or UsageError when it is not a report folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(
            f"{str(folder)!r} is not a folder; pass a report folder (it holds {REPORT})."
        )
    path = folder / REPORT
    if not path.is_file():
        raise UsageError(
            f"{folder} holds no {REPORT}; pass the folder `harness certify` wrote "
            f"(default results/<cell>/)."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"{path} is not JSON ({exc}); it was damaged or is not a report."
        ) from None
    info = report.get("schema") if isinstance(report, dict) else None
    if not isinstance(info, dict) or info.get("name") != schema.SCHEMA:
        raise UsageError(f"{path} is not a dtensor-harness report (no schema {schema.SCHEMA!r}).")
    if info.get("version", 0) > schema.SCHEMA_VERSION:
        raise UsageError(
            f"{path} uses report schema {info.get('version')}; this harness reads up to "
            f"{schema.SCHEMA_VERSION}. Upgrade dtensor-harness to verify it."
        )
    return report


def verify(
    folder: str | Path, allowed_signers: str | Path | None = None, identity: str | None = None
) -> Verdict:
    folder = Path(folder)
    report = load(folder)
    verdict = Verdict()
    _check_digest(report, verdict)
    if report.get("kind") == "cell":
        _check_results(folder, report, verdict)
    _check_sums(folder, verdict)
    _check_signature(folder, allowed_signers, identity, verdict)
    return verdict


def _check_digest(report: dict[str, Any], verdict: Verdict) -> None:
    seal = report.get(schema.INTEGRITY)
    if not isinstance(seal, dict) or "sha256" not in seal:
        verdict.problems.append(f"{REPORT}: its integrity block was removed")
        return
    body = schema.content(report)
    stored = seal.get("sections") or {}
    edited = [k for k in sorted(body) if stored.get(k) != schema.sha256(schema.canonical(body[k]))]
    removed = [k for k in sorted(stored) if k not in body]
    for key in edited:
        verdict.problems.append(
            f"{REPORT}: section {key!r} was " + ("added" if key not in stored else "edited")
        )
    for key in removed:
        verdict.problems.append(f"{REPORT}: section {key!r} was removed")
    if schema.sha256(schema.canonical(body)) != seal["sha256"] and not edited and not removed:
        verdict.problems.append(f"{REPORT}: its integrity block was edited (sha256 differs)")


def _check_results(folder: Path, report: dict[str, Any], verdict: Verdict) -> None:
    """Results and verdicts must follow from junit.xml and from each other."""
    for cap in report.get("capabilities", []):
        counts = dict.fromkeys(schema.COUNTS, 0)
        for test in cap.get("tests", []):
            counts[test.get("outcome", "")] = counts.get(test.get("outcome", ""), 0) + 1
        if any(cap.get(k, 0) != v for k, v in counts.items()):  # schema 1 had no "waived"
            verdict.problems.append(
                f"capability {cap.get('name')!r}: its counts do not match its tests"
            )
        if cap.get("verdict") != schema.capability_verdict(counts):
            verdict.problems.append(
                f"capability {cap.get('name')!r}: verdict {cap.get('verdict')!r} does not follow "
                f"from its tests ({counts['passed']} passed, {counts['failed'] + counts['error']} failed)"
            )
    xml = folder / "junit.xml"
    if not xml.is_file():
        verdict.problems += reference.replay(folder, report, None)[1]
        verdict.problems += waivers.problems(folder, report, None)
        return
    try:
        results = junit.parse(xml)
    except UsageError as exc:
        verdict.problems.append(f"junit.xml: {exc}")
        return
    judged, found = reference.replay(folder, report, results)  # DTensor's own, then waivers
    verdict.problems += found
    verdict.problems += waivers.problems(folder, report, judged)
    from_junit = {r.id: r.outcome for r in results}
    in_report = {  # a waived test, and DTensor's own, keep what they ran to
        t["id"]: t.get("ran", t["outcome"])
        for c in report.get("capabilities", [])
        for t in c.get("tests", [])
    }
    for test_id in sorted(from_junit.keys() | in_report.keys()):
        said, ran = in_report.get(test_id), from_junit.get(test_id)
        if said != ran:
            verdict.problems.append(
                f"test {test_id}: {REPORT} says {said or 'nothing'}, junit.xml says {ran or 'nothing'}"
            )


def _check_sums(folder: Path, verdict: Verdict) -> None:
    sums = folder / SUMS
    if not sums.is_file():
        verdict.problems.append(f"{SUMS} is missing, so edits of the other files cannot be checked")
        return
    listed = set()
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, name = line.partition("  ")
        parts = name.split("/")
        if len(digest) != 64 or not name or name.startswith("/") or ".." in parts:
            verdict.problems.append(f"{SUMS} line {number} is malformed: {line[:80]!r}")
            continue
        listed.add(name)
        path = folder / name
        if not path.is_file():
            verdict.problems.append(f"{name} is missing")
        elif file_sha256(path) != digest:
            verdict.problems.append(f"{name} was edited after the report was made (sha256 differs)")
    for name in contents(folder):
        if name not in listed:
            verdict.problems.append(
                f"{name} is not listed in {SUMS} (added after the report was made)"
            )


def _check_signature(
    folder: Path, allowed: str | Path | None, identity: str | None, verdict: Verdict
) -> None:
    sig, sums = folder / SIGNATURE, folder / SUMS
    if not sig.is_file():
        if allowed is not None:
            verdict.problems.append(f"not signed: {SIGNATURE} is missing")
        else:
            verdict.notes.append(
                "not signed (integrity checked; `harness certify --sign KEY` signs)"
            )
        return
    if not sums.is_file():
        return  # already reported
    if allowed is None:
        _check_signature_alone(sig, sums, verdict)
        return
    allowed = Path(allowed)
    if not allowed.is_file():
        raise UsageError(f"allowed-signers file {str(allowed)!r} not found.")
    keygen = _ssh_keygen()
    with tempfile.TemporaryDirectory(prefix="harness-verify-") as tmp:
        signers, default_identity = _signers_file(allowed, Path(tmp))
        principals = [identity] if identity else ([default_identity] if default_identity else [])
        if not principals:
            found = subprocess.run(
                [keygen, "-Y", "find-principals", "-s", str(sig), "-f", str(signers)],
                capture_output=True,
                text=True,
                check=False,
            )
            principals = found.stdout.split() if found.returncode == 0 else []
        if not principals:
            verdict.problems.append(f"signature: made by no key listed in {allowed}")
            return
        for principal in principals:
            with sums.open("rb") as data:
                done = subprocess.run(
                    [
                        keygen,
                        "-Y",
                        "verify",
                        "-f",
                        str(signers),
                        "-I",
                        principal,
                        "-n",
                        NAMESPACE,
                        "-s",
                        str(sig),
                    ],
                    stdin=data,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if done.returncode == 0:
                verdict.signer = principal if not default_identity else f"the key in {allowed}"
                verdict.notes.append(f"signed by {verdict.signer}: {done.stdout.strip()}")
                return
        why = (done.stderr or done.stdout).strip().splitlines()
        verdict.problems.append(
            f"signature: does not verify for {', '.join(principals)} "
            f"({why[-1] if why else 'no reason given'})"
        )


def _check_signature_alone(sig: Path, sums: Path, verdict: Verdict) -> None:
    """Without allowed signers: the signature must still verify against its own key.

    That proves SHA256SUMS was not changed since someone signed it, not who signed.
    """
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        verdict.notes.append("signed, but ssh-keygen is not installed to check the signature")
        return
    with sums.open("rb") as data:
        done = subprocess.run(
            [keygen, "-Y", "check-novalidate", "-n", NAMESPACE, "-s", str(sig)],
            stdin=data,
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        verdict.problems.append(
            f"signature: does not verify ({why[-1] if why else 'no reason given'})"
        )
        return
    verdict.notes.append(
        "signed, signature intact; pass --allowed-signers FILE (or a .pub key) to check who signed it"
    )


def _signers_file(path: Path, tmp: Path) -> tuple[Path, str | None]:
    """Accept an allowed-signers file, or a bare public key (.pub) as its only signer."""
    lines = [
        line.strip()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if lines and lines[0].startswith(_KEY_TYPES):
        signers = tmp / "allowed_signers"
        signers.write_text(f'signer namespaces="{NAMESPACE}" {lines[0]}\n', encoding="utf-8")
        os.chmod(signers, 0o600)
        return signers, "signer"
    return path, None
