"""report.html in a real browser: headless Chromium renders the matrix table, coloured.

Debian's chromium (CI installs it in .ci/setup/30-chromium.sh). The page must
need nothing from the network: Chromium runs with networking features off.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.report import bundle, junit, merge, schema

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.needs("chromium")  # skip reason, HARNESS_REQUIRE: conftest.py

CASE = '<testcase classname="harness.conformance.test_{cap}.T" name="test_{n}" time="0.1">{body}</testcase>'
FAIL = '<failure message="AssertionError: rank 3: all_reduce sum differs">tb</failure>'
SKIP = '<skipped type="pytest.skip" message="needs an even world size">s</skipped>'


def _cell(root: Path, name: str, cases: list[tuple[str, str]]) -> Path:
    folder = root / name
    folder.mkdir()
    body = "".join(CASE.format(cap=cap, n=i, body=b) for i, (cap, b) in enumerate(cases))
    (folder / "junit.xml").write_text(f"<testsuites><testsuite>{body}</testsuite></testsuites>")
    report = schema.build(
        cell={"name": name, "accelerator": "cpu", "world_size": 4, "mode": "native"},
        matrix={"path": "matrix.toml", "sha256": "0" * 64},
        fingerprint={"torch": {"version": "2.13.0+cpu", "build": "cpu"}},
        results=junit.parse(folder / "junit.xml"),
        run={"exit_code": 1},
        artifacts={},
    )
    bundle.write(folder, report)
    return folder


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reports")
    one = _cell(root, "cpu-1rank", [("collectives", ""), ("parallel", SKIP)])
    four = _cell(
        root,
        "cpu-4rank",
        [("collectives", ""), ("collectives", FAIL), ("parallel", ""), ("random", "")],
    )
    report, problems = merge.merge([one, four])
    assert not problems
    bundle.write(root / "matrix", report)
    return root / "matrix" / "report.html"


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


class _Table(HTMLParser):
    """The rows of table#matrix as the browser serialised them."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.rows: list[list[dict]] = []
        self.cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id") == "matrix":
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = {**attrs, "text": ""}
            self.rows[-1].append(self.cell)

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        if tag in ("td", "th"):
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell["text"] += data


def test_chromium_renders_the_matrix_table(page, tmp_path):
    dom = _chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    table = _Table()
    table.feed(dom)
    header, *rows = table.rows
    assert [c["text"] for c in header] == [
        "cell",
        "verdict",
        "Collectives",
        "Tensor, sequence and expert parallel",
        "Random ops",
    ]
    seen = {
        (row[0]["text"], c["data-capability"]): (c["data-outcome"], c["text"].strip())
        for row in rows
        for c in row[2:]
    }
    assert seen == {
        ("cpu-1rank", "collectives"): ("pass", "\u2713 pass 1/1"),
        ("cpu-1rank", "parallel"): ("skip", "\u2013 skip 1"),
        ("cpu-1rank", "random"): ("none", "not run"),
        ("cpu-4rank", "collectives"): ("fail", "\u2717 fail 1 of 2"),
        ("cpu-4rank", "parallel"): ("pass", "\u2713 pass 1/1"),
        ("cpu-4rank", "random"): ("pass", "\u2713 pass 1/1"),
    }
    assert [(r[0]["text"], r[1]["text"]) for r in rows] == [
        ("cpu-1rank", "pass"),
        ("cpu-4rank", "fail"),
    ]
    assert "rank 3: all_reduce sum differs" in dom  # the reason is on the page


def test_chromium_paints_each_outcome_in_its_colour(page, tmp_path):
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,360", page.as_uri())
    colours = _colours(shot)
    for name, rgb in {
        "pass": (0xDA, 0xFB, 0xE1),
        "fail": (0xFF, 0xE1, 0xDE),
        "skip": (0xFF, 0xF4, 0xC2),
        "not run": (0xEE, 0xF1, 0xF4),
    }.items():
        assert rgb in colours, f"no {name} background painted"


def _colours(path: Path) -> set[tuple[int, int, int]]:
    """Distinct RGB colours of an 8-bit RGB/RGBA PNG (Chromium's screenshot)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, chunk = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    assert depth == 8 and ctype in (2, 6), (depth, ctype)
    bpp = 3 if ctype == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        colours.update(tuple(line[i : i + 3]) for i in range(0, stride, bpp))
        prev = line
    return colours
