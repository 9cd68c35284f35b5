"""Rewrite imports of PyTorch's private DTensor test helpers to ``harness``.

Only the import statements change, located by their ast positions, so every other
byte of a test file (comments, formatting, line endings) stays as it was. Names
the kit does not provide keep importing from their original module and are
reported, so a migration never drops a name silently. Torch-free: the names the
kit provides come from ``harness._EXPORTS``, read without importing torch.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import io
import os
import stat
import tempfile
import tokenize
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness import _EXPORTS

COMMON_DTENSOR = "torch.testing._internal.distributed._tensor.common_dtensor"
COMMON_DISTRIBUTED = "torch.testing._internal.common_distributed"
# a module -> the package a ``from PACKAGE import MODULE`` names it through
PACKAGES = {
    COMMON_DTENSOR: "torch.testing._internal.distributed._tensor",
    COMMON_DISTRIBUTED: "torch.testing._internal",
}
TARGET = "harness"
#: Modules the kit takes only some names of: those move, the rest stay silently
#: (``common_utils`` is torch's general test module; only the kit's twins of what a
#: DTensor file needs from it move, so the same file runs on a torch without them).
SOME_NAMES = {
    "torch.testing._internal.common_utils": frozenset({"HardwareClassification"}),
}
#: Submodules PyTorch's helper modules import for themselves, which a test file that
#: imported the helper can reach as ``torch.a.b`` without importing them
#: (``common_dtensor`` imports ``common_distributed``, which imports
#: ``torch._dynamo.test_case``: PyTorch's ``test_dtensor_compile.py`` subclasses
#: ``torch._dynamo.test_case.TestCase`` on that alone). When migration removes a
#: file's last import of the helper, the file gets the import it was leaning on.
BORROWED_SUBMODULES = {
    COMMON_DISTRIBUTED: ("torch._dynamo.test_case",),
    COMMON_DTENSOR: ("torch._dynamo.test_case",),
}


def provided_names() -> frozenset[str]:
    """What ``from harness import NAME`` gives: the public table, nothing else."""
    return frozenset(_EXPORTS)


@dataclass(frozen=True)
class Kept:
    """A name that stays imported from PyTorch's module: the kit has no such name."""

    line: int
    name: str
    module: str
    note: str = ""


@dataclass
class Migration:
    """One file's outcome: the new source, what moved and what was kept."""

    path: str
    old: str
    new: str
    moved: list[tuple[int, str]] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    #: (line, module): imports added because the file used a submodule that only a
    #: moved-away import of PyTorch's helper had loaded (BORROWED_SUBMODULES)
    added: list[tuple[int, str]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        absolute = os.path.isabs(self.path)
        return "".join(
            difflib.unified_diff(
                self.old.splitlines(keepends=True),
                self.new.splitlines(keepends=True),
                fromfile=self.path if absolute else f"a/{self.path}",
                tofile=self.path if absolute else f"b/{self.path}",
            )
        )

    def added_lines(self) -> list[str]:
        return [
            f"{self.path}:{line}: import {module}: added (a PyTorch helper the file "
            "no longer imports had loaded it)"
            for line, module in self.added
        ]

    def kept_lines(self) -> list[str]:
        lines = []
        for k in self.kept:
            note = f" ({k.note})" if k.note else ""
            lines.append(f"{self.path}:{k.line}: {k.name}: kept from {k.module}{note}")
        return lines


class MigrateError(ValueError):
    """The file cannot be migrated as it is: unreadable, not source, or not writable."""


# --- public entry points ------------------------------------------------------------


def migrate_source(source: str, path: str = "<string>", names: Iterable[str] | None = None):
    """Migrate one file's text; ``names`` overrides the kit's table (for tests)."""
    provided = frozenset(names) if names is not None else provided_names()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise MigrateError(f"{path}:{exc.lineno}: cannot parse: {exc.msg}") from None
    text = _Text(source)
    result = Migration(path=path, old=source, new=source)
    edits: list[tuple[int, int, str]] = []
    lenders: list[tuple[int, ast.AST]] = []  # edits that rewrote an import of a helper
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            edit = _from_import(node, text, provided, result, tree)
        elif isinstance(node, ast.Import):
            edit = _plain_import(node, text, provided, result, tree)
        else:
            continue
        if edit is not None:
            edits.append(edit)
            if _imported_by(node) & BORROWED_SUBMODULES.keys():
                lenders.append((len(edits) - 1, node))
    if lenders:
        _keep_borrowed(tree, text, edits, lenders, result)
    new = source
    for start, end, replacement in sorted(edits, reverse=True):
        new = new[:start] + replacement + new[end:]
    result.new = new
    result.moved.sort()
    result.kept.sort(key=lambda k: (k.line, k.name))
    return result


def _imported_by(node) -> set[str]:
    """Every module an import statement loads (``from a import b``: ``a`` and ``a.b``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return set()


def _dotted_names(tree) -> set[str]:
    """``a.b.c`` for every attribute chain rooted at a plain name."""
    found = set()
    for node in ast.walk(tree):
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name):
            found.add(".".join([node.id, *reversed(parts)]))
    return found


def _keep_borrowed(tree, text, edits, lenders, result):
    """Add ``import SUB`` after the first rewritten helper import, for each borrowed SUB.

    Only where the file reaches SUB as an attribute chain, loads SUB nowhere itself,
    and keeps no import of a helper (one left unrewritten, or names a rewrite kept).
    """
    rewritten = {id(node) for _, node in lenders}
    loaded = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in rewritten:
            loaded |= _imported_by(node)
    helpers = BORROWED_SUBMODULES.keys()
    if loaded & helpers or any(h in edits[i][2] for i, _ in lenders for h in helpers):
        return
    lenders_of = {m for _, node in lenders for m in _imported_by(node) & helpers}
    lent = {sub for m in lenders_of for sub in BORROWED_SUBMODULES[m]}
    used = _dotted_names(tree)
    wanted = sorted(
        sub
        for sub in lent
        if any(u == sub or u.startswith(sub + ".") for u in used)
        and not any(m == sub or m.startswith(sub + ".") for m in loaded)
    )
    if not wanted:
        return
    first, node = min(lenders, key=lambda pair: edits[pair[0]][0])
    start, end, replacement = edits[first]
    sep = text.separator(start)
    edits[first] = (start, end, replacement + "".join(f"{sep}import {sub}" for sub in wanted))
    result.added.extend((node.lineno, sub) for sub in wanted)


def migrate_file(path: str | os.PathLike, names: Iterable[str] | None = None) -> Migration:
    """Read (keeping the file's encoding and line endings) and migrate one file.

    Anything that makes the file unreadable as Python source (binary bytes, a wrong
    encoding, a syntax error) is a MigrateError with one line naming the file.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MigrateError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if b"\0" in raw:
        raise MigrateError(f"{path}: binary file (NUL bytes), not Python source")
    try:
        try:
            encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        except SyntaxError as exc:  # no usable cookie: either a bad one, or bytes not UTF-8
            if b"coding" in b"".join(raw.splitlines(keepends=True)[:2]):
                raise MigrateError(f"{path}: bad encoding declaration: {exc}") from None
            encoding = "utf-8"
        source = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise MigrateError(
            f"{path}: not valid {exc.encoding} at byte {exc.start}; "
            "declare its encoding (# -*- coding: ... -*-) or convert it"
        ) from None
    if source.startswith("\ufeff"):
        source = source[1:]
    return migrate_source(source, str(path), names)


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before anything is written, a file the migration could not replace.

    A file without its owner's write bit counts as read-only even for root: writing by
    replace-rename would otherwise defeat the protection the user put on it.
    """
    path = Path(path)
    mode = path.stat().st_mode
    if not mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise MigrateError(f"{path}: read-only; make it writable (chmod u+w) or leave it out")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise MigrateError(f"{path}: its directory is not writable, so it cannot be replaced")


def write_migration(migration: Migration) -> None:
    """Write a migration back with the encoding, BOM and mode the file had.

    The new bytes go to a temporary file beside it, renamed over the original, so a
    file is either the old one or the new one, never half written.
    """
    path = Path(migration.path)
    raw = path.read_bytes()
    encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    bom = raw[:3] if raw.startswith(b"\xef\xbb\xbf") else b""
    data = bom + migration.new.encode(encoding.replace("-sig", ""))
    mode = stat.S_IMODE(path.stat().st_mode)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".migrate", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def find_test_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(regular test files, skipped non-regular ones: FIFOs, sockets, devices).

    Directories are walked (sorted) for test_*.py and *_test.py. A FIFO is never
    opened: reading one blocks until a writer comes, which may be never.
    """
    files: list[Path] = []
    skipped: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for root, dirs, names in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
                found.extend(
                    Path(root) / name
                    for name in sorted(names)
                    if name.endswith(".py")
                    and (name.startswith("test_") or name.endswith("_test.py"))
                )
        elif path.exists():
            found = [path]
        else:
            raise FileNotFoundError(str(raw))
        for candidate in found:
            try:
                regular = stat.S_ISREG(candidate.stat().st_mode)
            except OSError:  # a dangling link
                regular = False
            (files if regular else skipped).append(candidate)
    return files, skipped


def iter_test_files(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """The regular test files of ``paths`` (see find_test_files)."""
    yield from find_test_files(paths)[0]


# --- positions --------------------------------------------------------------------------


class _Text:
    """Maps ast positions (1-based line, UTF-8 byte column) to string offsets."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines = source.splitlines(keepends=True)
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line))
        self._tokens: list[tokenize.TokenInfo] | None = None

    def offset(self, lineno: int, col: int) -> int:
        line = self.lines[lineno - 1] if lineno <= len(self.lines) else ""
        chars = len(line.encode("utf-8")[:col].decode("utf-8", errors="ignore"))
        return self.starts[lineno - 1] + chars

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)
        return start, self.offset(node.end_lineno, node.end_col_offset)

    def tokens(self) -> list[tokenize.TokenInfo]:
        if self._tokens is None:
            self._tokens = list(tokenize.generate_tokens(io.StringIO(self.source).readline))
        return self._tokens

    def tok_offset(self, pos: tuple[int, int]) -> int:
        return self.starts[pos[0] - 1] + pos[1]  # tokenize columns count characters

    def comments(self, start: int, end: int) -> list[tuple[int, str]]:
        return [
            (self.tok_offset(t.start), t.string)
            for t in self.tokens()
            if t.type == tokenize.COMMENT and start <= self.tok_offset(t.start) < end
        ]

    def separator(self, start: int) -> str:
        """What puts a second statement after the one starting at ``start``."""
        line_start = self.source.rfind("\n", 0, start) + 1
        prefix = self.source[line_start:start]
        if prefix.strip():
            return "; "
        newline = "\r\n" if self.source[:start].endswith("\r\n") else "\n"
        if line_start == 0:
            first = self.lines[0] if self.lines else "\n"
            newline = "\r\n" if first.endswith("\r\n") else "\n"
        return newline + prefix


# --- rewriting ----------------------------------------------------------------------------


def _from_import(node, text, provided, result, tree):
    module = node.module
    if module in PACKAGES.values() and module not in PACKAGES:
        return _from_package(node, text, provided, result, tree)
    partial = SOME_NAMES.get(module)
    if partial is not None:
        provided = provided & partial
    elif module not in PACKAGES:
        return None
    if partial is not None and not any(a.name in provided for a in node.names):
        return None  # nothing of the kit's: the import is not ours to note
    if any(a.name == "*" for a in node.names):
        result.kept.append(
            Kept(node.lineno, "*", module, "star import: name what you use, then migrate")
        )
        return None
    moves = [a for a in node.names if a.name in provided]
    stays = [a for a in node.names if a.name not in provided]
    for alias in stays if partial is None else ():
        result.kept.append(Kept(alias.lineno, alias.name, module, "not provided by harness"))
    result.moved.extend((a.lineno, a.name) for a in moves)
    if not moves:
        return None
    start, end = text.span(node)
    if not stays:
        return _rename_module(node, text, start, end)
    moved = _render(node, text, moves, TARGET)
    kept = _render(node, text, stays, module)
    return start, end, moved + text.separator(start) + kept


def _rename_module(node, text, start, end):
    """All names move: change only the dotted module, so the rest stays as written."""
    toks = [t for t in text.tokens() if start <= text.tok_offset(t.start) < end]
    kinds = [t for t in toks if t.type not in (tokenize.NL, tokenize.COMMENT)]
    names = kinds[1:]  # after "from"
    stop = next(i for i, t in enumerate(names) if t.type == tokenize.NAME and t.string == "import")
    first, last = names[0], names[stop - 1]
    a, b = text.tok_offset(first.start), text.tok_offset(last.end)
    source = text.source
    return start, end, source[start:a] + TARGET + source[b:end]


def _render(node, text, aliases, module):
    """``from MODULE import aliases`` in the statement's own layout, with its comments."""
    start, end = text.span(node)
    alias_text = [text.source[slice(*text.span(a))] for a in aliases]
    comments = _comments_by_alias(node, text, start, end)
    vertical = "(" in text.source[start:end] and node.names[0].lineno != node.lineno
    if not vertical or text.separator(start).startswith(";"):
        notes = [c for a in aliases for part in comments[id(a)] for c in part]
        tail = ("  " + " ".join(notes)) if notes else ""
        return f"from {module} import " + ", ".join(alias_text) + tail
    newline = "\r\n" if "\r\n" in text.source[start:end] else "\n"
    indent = _indent_of(text, node.names[0])
    out = [f"from {module} import ({newline}"]
    for alias, source in zip(aliases, alias_text):
        leading, trailing = comments[id(alias)]
        out.extend(f"{indent}{c}{newline}" for c in leading)
        tail = ("  " + " ".join(trailing)) if trailing else ""
        out.append(f"{indent}{source},{tail}{newline}")
    out.append(f"{_indent_of_closing(text, start, end)})")
    return "".join(out)


def _indent_of(text, alias):
    line = text.lines[alias.lineno - 1]
    return line[: len(line) - len(line.lstrip())] or "    "


def _indent_of_closing(text, start, end):
    """Where the original put its ")": alone on a line, or the statement's indent."""
    line_start = text.source.rfind("\n", 0, end) + 1
    prefix = text.source[line_start : end - 1]
    if not prefix.strip():
        return prefix
    first = text.source[text.source.rfind("\n", 0, start) + 1 : start]
    return first if not first.strip() else ""


def _comments_by_alias(node, text, start, end):
    """Comment -> the alias it belongs with: same line (trailing) or the next (leading)."""
    spans = [(text.span(a), a) for a in node.names]
    found: dict[int, tuple[list[str], list[str]]] = {id(a): ([], []) for a in node.names}
    for offset, comment in text.comments(start, end):
        line_start = text.source.rfind("\n", 0, offset) + 1
        before = [a for (s, e), a in spans if line_start <= e <= offset]
        if before:
            found[id(before[-1])][1].append(comment)
            continue
        after = [a for (s, e), a in spans if s > offset]
        target = after[0] if after else node.names[-1]
        found[id(target)][0 if after else 1].append(comment)
    return found


def _attributes_used(tree, name):
    """Attributes read through ``name.attr``, and lines where ``name`` is used bare."""
    attrs: dict[str, int] = {}
    bare: list[int] = []
    parents = {}
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            parents[child] = parent
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == name:
            parent = parents.get(node)
            if isinstance(parent, ast.Attribute) and parent.value is node:
                attrs.setdefault(parent.attr, parent.lineno)
            else:
                bare.append(node.lineno)
    return attrs, bare


def _module_alias_ok(tree, local, module, provided, result, line):
    """Whether ``import MODULE as local`` can become ``import harness as local``."""
    attrs, bare = _attributes_used(tree, local)
    missing = {a: n for a, n in attrs.items() if a not in provided}
    for attr, lineno in sorted(missing.items(), key=lambda kv: kv[1]):
        result.kept.append(Kept(lineno, f"{local}.{attr}", module, "not provided by harness"))
    if bare:
        result.kept.append(
            Kept(line, local, module, f"module used as a value on line {bare[0]}: not rewritten")
        )
    return not missing and not bare


def _plain_import(node, text, provided, result, tree):
    """``import torch...common_dtensor as cd`` -> ``import harness as cd`` when it can."""
    hits = [a for a in node.names if a.name in PACKAGES]
    if not hits:
        return None
    ok = []
    for alias in hits:
        if alias.asname is None:
            result.kept.append(
                Kept(node.lineno, alias.name, alias.name, "imported without `as`: not rewritten")
            )
            continue
        if _module_alias_ok(tree, alias.asname, alias.name, provided, result, node.lineno):
            ok.append(alias)
            result.moved.append((node.lineno, alias.asname))
    if not ok:
        return None
    parts = []
    for alias in node.names:
        source = text.source[slice(*text.span(alias))]
        parts.append(f"{TARGET} as {alias.asname}" if alias in ok else source)
    start, end = text.span(node)
    if len(node.names) == 1:
        return start, end, f"import {parts[0]}"
    return start, end, "import " + ", ".join(parts)


def _from_package(node, text, provided, result, tree):
    """``from torch...distributed._tensor import common_dtensor [as cd]``."""
    wanted = {pkg: mod for mod, pkg in PACKAGES.items()}
    module = wanted[node.module]
    short = module.rsplit(".", 1)[1]
    hits = [a for a in node.names if a.name == short]
    if not hits:
        return None
    ok = [
        a
        for a in hits
        if _module_alias_ok(tree, a.asname or a.name, module, provided, result, node.lineno)
    ]
    if not ok:
        return None
    result.moved.extend((node.lineno, a.asname or a.name) for a in ok)
    alias = ok[0]
    statement = f"import {TARGET} as {alias.asname or alias.name}"
    start, end = text.span(node)
    rest = [a for a in node.names if a is not alias]
    if not rest:
        return start, end, statement
    return start, end, statement + text.separator(start) + _render(node, text, rest, node.module)
