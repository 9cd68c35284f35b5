"""PyTorch's own DTensor test directory, run in a cell: ``harness certify CELL --upstream DIR``.

DIR is test/distributed/tensor from the PyTorch checkout that matches the
installed torch; the user supplies it and it is never edited. Its files are
copied into a temporary folder and migrated there (``harness migrate``: only the
imports of PyTorch's private helpers change), then run by pytest with that
folder as rootdir, so every test id reads ``upstream/<file>::<Class>::<test>``
whatever the temporary path, and two runs can be diffed and waived by id. Each
file is a capability of its own (``upstream/test_dtensor.py``). Torch-free.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError
from harness.migrate import MigrateError, iter_test_files, migrate_source

#: The folder the migrated copy lives in, under the run's rootdir; test ids start with it.
FOLDER = "upstream"
#: Set in the upstream pytest run: the progress plugin names capabilities by file
#: (harness.report.pytest_progress reads it; spelled there too, to keep pytest out of here).
ENV = "HARNESS_UPSTREAM"
# What a DTensor test file imports (text search: cheap, and parses nothing).
_DTENSOR_IMPORTS = ("torch.distributed.tensor", "torch.distributed._tensor", "common_dtensor")
_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.pyc")


@dataclass
class Prepared:
    """A migrated copy of DIR: ``root`` is the rootdir, ``root/upstream`` the files."""

    source: Path
    root: Path
    files: list[str]
    sha256: str
    commit: str = ""
    kept: dict[str, list[str]] = field(default_factory=dict)
    unparsed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """What the report records: which tests ran, pinned by a digest of the tree."""
        out = {
            "path": str(self.source),
            "files": len(self.files),
            "sha256": self.sha256,
            "kept_from_torch": sum(len(v) for v in self.kept.values()),
        }
        if self.commit:
            out["git_commit"] = self.commit
        if self.unparsed:
            out["not_migrated"] = self.unparsed
        return out


def check(directory: str | Path) -> list[Path]:
    """The top-level test files of a DTensor test directory, or one UsageError line."""
    path = Path(directory)
    hint = "pass test/distributed/tensor of the PyTorch checkout that matches your torch"
    if not path.is_dir():
        raise UsageError(f"--upstream {directory}: not a folder; {hint}.")
    tops = sorted(path.glob("test_*.py"))
    if not tops:
        raise UsageError(f"--upstream {directory}: holds no test_*.py files; {hint}.")
    dtensor = [f for f in tops if _uses_dtensor(f)]
    if len(dtensor) * 2 < len(tops):
        raise UsageError(
            f"--upstream {directory}: only {len(dtensor)} of its {len(tops)} test files use "
            f"DTensor, so it is not a DTensor test directory; {hint}."
        )
    return tops


def _uses_dtensor(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(name in text for name in _DTENSOR_IMPORTS)


def prepare(directory: str | Path, work: str | Path) -> Prepared:
    """Copy DIR to ``work/upstream`` and migrate every Python file of the copy."""
    source = Path(directory).resolve()
    check(source)
    root = Path(work)
    target = root / FOLDER
    shutil.copytree(source, target, ignore=_IGNORE)
    prepared = Prepared(
        source=source,
        root=root,
        files=[str(p.relative_to(target)) for p in iter_test_files([target])],
        sha256=tree_sha256(source),
        commit=_git_commit(source),
    )
    for path in sorted(target.rglob("*.py")):
        rel = str(path.relative_to(target))
        try:
            migration = migrate_source(path.read_text(encoding="utf-8"), rel)
        except (MigrateError, UnicodeDecodeError):
            prepared.unparsed.append(rel)  # left as it is: pytest reports it as an error
            continue
        if migration.changed:
            path.write_text(migration.new, encoding="utf-8")
        if migration.kept:
            prepared.kept[rel] = migration.kept_lines()
    return prepared


def tree_sha256(directory: Path) -> str:
    """One digest over every file's relative path and content: which tests these were."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory)
        if any(part in ("__pycache__", ".pytest_cache") for part in rel.parts):
            continue
        digest.update(f"{rel.as_posix()}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _git_commit(directory: Path) -> str:
    if shutil.which("git") is None:
        return ""
    try:
        done = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def pytest_args(prepared: Prepared, targets: Iterable[str]) -> list[str]:
    """Arguments of the upstream pytest run (cwd ``prepared.root``).

    A file that does not import is an error of its own capability, not the end of
    the run; test ids given after ``--`` (the rerun line) replace the folder.
    """
    return [
        f"--rootdir={prepared.root}",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        *([] if list(targets) else [FOLDER]),
    ]


def merge_junit(into: Path, extra: Path) -> None:
    """Append the upstream run's test suites to the cell's junit.xml.

    A file that failed to import has no properties in pytest's XML (its entry is
    named ``upstream.test_x``); it gets its capability and id here.
    """
    if not into.is_file():  # --upstream-only: the upstream run is the whole junit.xml
        into.write_text('<?xml version="1.0" encoding="utf-8"?><testsuites/>', encoding="utf-8")
    tree = ET.parse(into)
    root = tree.getroot()
    other = ET.parse(extra).getroot()
    suites = [other] if other.tag == "testsuite" else list(other.iter("testsuite"))
    for suite in suites:
        for case in suite.iter("testcase"):
            if case.find("properties") is None and not case.get("classname"):
                _name_collection_error(case)
        if root.tag == "testsuites":
            root.append(suite)
        else:  # a lone <testsuite>: wrap both
            wrapper = ET.Element("testsuites")
            wrapper.extend([root, suite])
            tree = ET.ElementTree(wrapper)
            root = wrapper
    tree.write(into, encoding="utf-8", xml_declaration=True)


def _name_collection_error(case: ET.Element) -> None:
    """Give a file that did not import its capability, its id, and the cause as reason."""
    name = case.get("name", "")
    if not name.startswith(FOLDER + "."):
        return
    path = name.replace(".", "/") + ".py"
    props = ET.Element("properties")
    ET.SubElement(props, "property", name="capability", value=path)
    ET.SubElement(props, "property", name="nodeid", value=path)
    case.insert(0, props)
    error = case.find("error")
    if error is not None and error.get("message") == "collection failure":
        causes = [ln[1:].strip() for ln in (error.text or "").splitlines() if ln.startswith("E ")]
        if causes:
            error.set("message", f"collection failure: {causes[-1]}")


def environment() -> dict[str, str]:
    """What the upstream pytest run adds to the cell's environment."""
    return {ENV: "1"}
