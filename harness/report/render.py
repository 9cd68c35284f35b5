"""report.md and report.html from a report dict (cell or matrix).

The HTML is one file with inline CSS and no script, font or image from
anywhere: a vendor mails it, a reader opens it offline.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from harness.report import views

_MARK = {"pass": "\u2713", "fail": "\u2717", "skip": "\u2013", "incomplete": "!"}


# --- Markdown ---------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(report: Mapping[str, Any]) -> str:
    rows = views.rows(report)
    cols = views.columns(rows)
    out = [f"# {_heading(report)}", ""]
    out += [f"**Verdict: {report['verdict'].upper()}**  ", _byline(report), ""]
    out += ["| cell | verdict | " + " | ".join(title for _, title in cols) + " |"]
    out += ["|---" * (len(cols) + 2) + "|"]
    for row in rows:
        cells = [views.cell_text(row["capabilities"].get(name)) for name, _ in cols]
        out.append(f"| {row['cell']} | {row['verdict']} | " + " | ".join(cells) + " |")
    out.append("")
    if report.get("kind") == "cell":
        out += _md_cell_details(report)
    else:
        out += _md_matrix_details(rows)
    out += ["## Integrity", ""]
    out += [f"- sha256 of the canonical report.json content: `{report['integrity']['sha256']}`"]
    out += ["- check it: `harness report verify DIR` (or `sha256sum -c SHA256SUMS` for the files)"]
    return "\n".join(out) + "\n"


def _heading(report: Mapping[str, Any]) -> str:
    if report.get("kind") == "cell":
        return f"DTensor certification: {report['cell']['name']}"
    return f"DTensor certification matrix: {len(report['cells'])} cells"


def _byline(report: Mapping[str, Any]) -> str:
    return f"dtensor-harness {report['harness_version']}, {report['created']}"


def _md_cell_details(report: Mapping[str, Any]) -> list[str]:
    cell = report["cell"]
    out = ["## Cell", ""]
    for key in ("accelerator", "device", "backend", "world_size", "mode", "torch", "image"):
        if key in cell:
            out.append(f"- {key}: `{cell[key]}`")
    out.append(
        f"- matrix: `{report['matrix'].get('path', '')}` sha256 `{report['matrix'].get('sha256', '')}`"
    )
    out += ["", "## Capabilities", ""]
    for cap in report["capabilities"]:
        out.append(
            f"### {cap['title']}: {cap['verdict']} "
            f"({cap['passed']} passed, {cap['failed'] + cap['error']} failed, "
            f"{_waived(cap)}{cap['skipped']} skipped, {cap['duration_s']:.2f} s)"
        )
        out.append("")
        if cap.get("coverage"):
            out += [f"Coverage: {_coverage(cap['coverage'])}.", ""]
        if cap.get("ran_on"):
            out += [f"Ran on: {_md(cap['ran_on'])}.", ""]
        problems = [t for t in cap["tests"] if t["outcome"] != "passed"]
        for test in problems:
            out.append(
                f"- **{test['outcome']}** `{test['id']}`: {_md(test.get('reason', ''))}"
                + _md(_waiver_note(report, test))
            )
        if problems:
            out.append("")
    out += _md_waivers(report)
    out += [f"{line}" for line in _reference_lines(report)]
    out += ["## Machine", ""]
    for key, value in views.flatten(report.get("fingerprint", {})):
        out.append(f"- {key}: `{value}`")
    out.append("")
    return out


def _coverage(cov: Mapping[str, Any]) -> str:
    """The ops capability's line: ops passing of the ops in the database, then the rest."""
    words = {
        "unsupported": "not supported by DTensor",
        "own": "DTensor's own failures (they fail on the reference too)",
        "xfailed": "known failures",
        "waived": "waived",
        "failed": "failed",
        "skipped": "skipped",
    }
    rest = [f"{cov[k]} {w}" for k, w in words.items() if cov.get(k)]
    return f"{cov['passed']} of {cov['ops']} ops pass ({cov['passing']:.1%})" + "".join(
        f"; {r}" for r in rest
    )


def _waived(cap: Mapping[str, Any]) -> str:
    own = f"{cap['own']} DTensor's own, " if cap.get("own") else ""
    return own + (f"{cap['waived']} waived, " if cap.get("waived") else "")


def _waiver_note(report: Mapping[str, Any], test: Mapping[str, Any]) -> str:
    """Why a waived test is not a failure: its outcome as run and its waiver."""
    if test.get("outcome") != "waived":
        return ""
    entry = (report.get("waivers") or {}).get("entries", [])[test["waiver"]]
    return f" (ran: {test['ran']}; waived: {entry['reason']}, {entry['issue']})"


def _md_waivers(report: Mapping[str, Any]) -> list[str]:
    section = report.get("waivers")
    if not section:
        return []
    out = [
        "## Waivers",
        "",
        f"`{section['source']}` (sha256 `{section['sha256']}`, copied as `{section['file']}`)",
        "",
        "| status | waiver | reason | issue |",
        "|---|---|---|---|",
    ]
    for entry in section["entries"]:
        what = f"test `{entry['test']}`" if "test" in entry else f"op `{entry['op']}`"
        out.append(
            f"| {entry['status']} | {_md(what)} | {_md(entry['reason'])} | {_md(entry['issue'])} |"
        )
    return [*out, ""]


def reference_summary(section: Mapping[str, Any] | None) -> list[str]:
    """The reference the ops were judged against, in lines a terminal or a page shows."""
    if not section:
        return []
    if not section.get("sha256"):
        return [f"no reference: {section.get('note', 'none was found')}"]
    lines = [
        f"{section['source']}: {section.get('means', '')}",
        f"record {section.get('path', '')} [world.{section['world_size']}] (torch "
        f"{section.get('torch', '')}, sha256 {section['sha256'][:16]}..., copied as "
        f"{section['file']}); made: {section.get('made') or 'not said'}",
        f"{section['own']} op{'' if section['own'] == 1 else 's'} failed as on the reference: "
        "DTensor's own, not the cell's",
    ]
    names = {
        "regressions": "regressions (the shipped record says they pass)",
        "failed_only_here": "failed here only (the reference passes them)",
        "unknown": "not in the reference (judged alone)",
        "stale": "stale record entries (DTensor's own on record, passed here: remake it)",
        "passed_only_here": "passed here, DTensor's own on the reference",
    }
    for key, words in names.items():
        if section.get(key):
            ops = section[key]
            shown = ", ".join(ops[:12]) + (f" and {len(ops) - 12} more" if len(ops) > 12 else "")
            lines.append(f"{len(ops)} {words}: {shown}")
    if section.get("note"):
        lines.append(section["note"])
    return lines


def _reference_lines(report: Mapping[str, Any]) -> list[str]:
    lines = reference_summary(report.get("reference"))
    if not lines:
        return []
    return ["## Reference", "", *(f"- {_md(line)}" for line in lines), ""]


def _md_matrix_details(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Cells", ""]
    for row in rows:
        facts = ", ".join(f"{k} {v}" for k, v in row["fingerprint"].items())
        out += [f"### {row['cell']}: {row['verdict']}", "", f"{facts}", ""]
        for cap in row["capabilities"].values():
            for test in cap["problems"]:
                out.append(f"- **{test['outcome']}** `{test['id']}`: {_md(test['reason'])}")
        out.append("")
    return out


# --- HTML -------------------------------------------------------------------

_CSS = """
:root { --pass:#1a7f37; --pass-bg:#dafbe1; --fail:#b3261e; --fail-bg:#ffe1de;
        --skip:#7a5c00; --skip-bg:#fff4c2; --none:#6e7781; --none-bg:#eef1f4; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 72rem; padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; font-size: 1.15rem; }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
.byline { color: #59636e; margin-top: 0; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #d1d9e0; padding: .35rem .6rem; text-align: left; vertical-align: top; }
thead th { background: #f6f8fa; }
tbody th { white-space: nowrap; }
td.outcome, td.verdict, span.verdict { font-weight: 600; white-space: nowrap; }
.pass { background: var(--pass-bg); color: var(--pass); }
.fail { background: var(--fail-bg); color: var(--fail); }
.skip { background: var(--skip-bg); color: var(--skip); }
.none, .incomplete { background: var(--none-bg); color: var(--none); }
span.verdict { padding: .1rem .5rem; border-radius: .3rem; }
code { font-size: 12px; } pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: 12px; }
table.facts td:first-child { color: #59636e; }
ul.problems { margin: .2rem 0 .6rem; }
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def html_page(report: Mapping[str, Any]) -> str:
    rows = views.rows(report)
    cols = views.columns(rows)
    verdict = report["verdict"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(_heading(report))}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_h(_heading(report))}</h1>",
        f'<p class="byline">Verdict <span class="verdict {_h(verdict)}" id="verdict">'
        f"{_h(verdict.upper())}</span> &middot; {_h(_byline(report))}</p>",
        _html_matrix(rows, cols),
    ]
    if report.get("kind") == "cell":
        parts.append(_html_cell_details(report))
    else:
        parts.append(_html_matrix_details(rows))
    parts.append(
        "<h2>Integrity</h2><p>sha256 of the canonical report.json content: "
        f'<code id="sha256">{_h(report["integrity"]["sha256"])}</code>. '
        "Check it with <code>harness report verify DIR</code>.</p>"
    )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_matrix(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "".join(f'<th scope="col" data-capability="{_h(n)}">{_h(t)}</th>' for n, t in cols)
    body = []
    for row in rows:
        tds = []
        for name, _ in cols:
            cap = row["capabilities"].get(name)
            outcome = cap["verdict"] if cap else "none"
            tip = _tooltip(cap)
            tds.append(
                f'<td class="outcome {_h(outcome)}" data-cell="{_h(row["cell"])}" '
                f'data-capability="{_h(name)}" data-outcome="{_h(outcome)}" title="{_h(tip)}">'
                f"{_MARK.get(outcome, '')} {_h(views.cell_text(cap))}</td>"
            )
        body.append(
            f'<tr data-cell="{_h(row["cell"])}"><th scope="row">{_h(row["cell"])}</th>'
            f'<td class="verdict {_h(row["verdict"])}" data-outcome="{_h(row["verdict"])}">'
            f"{_h(row['verdict'])}</td>{''.join(tds)}</tr>"
        )
    return (
        '<table id="matrix"><thead><tr><th scope="col">cell</th><th scope="col">verdict</th>'
        f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _tooltip(cap: Mapping[str, Any] | None) -> str:
    if cap is None:
        return "no test of this capability ran in this cell"
    lines = [
        f"{cap['passed']} passed, {cap['failed']} failed, {cap['error']} errors, "
        f"{_waived(cap)}{cap['skipped']} skipped in {cap['duration_s']:.2f} s"
    ]
    lines += [f"{p['outcome']}: {p['reason']}" for p in cap["problems"][:5]]
    return "\n".join(lines)


def _html_cell_details(report: Mapping[str, Any]) -> str:
    out = ["<h2>Capabilities</h2>"]
    for cap in report["capabilities"]:
        out.append(
            f'<h3 id="cap-{_h(cap["name"])}">{_h(cap["title"])} '
            f'<span class="verdict {_h(cap["verdict"])}">{_h(cap["verdict"])}</span></h3>'
            f"<p>{cap['passed']} passed, {cap['failed'] + cap['error']} failed, "
            f"{_waived(cap)}{cap['skipped']} skipped, {cap['duration_s']:.2f} s</p>"
        )
        if cap.get("coverage"):
            out.append(f'<p class="coverage">Coverage: {_h(_coverage(cap["coverage"]))}</p>')
        if cap.get("ran_on"):
            out.append(f'<p class="ran-on">Ran on: {_h(cap["ran_on"])}</p>')
        problems = [t for t in cap["tests"] if t["outcome"] != "passed"]
        if problems:
            out.append('<ul class="problems">')
            for test in problems:
                out.append(
                    f'<li><span class="verdict {_outcome_class(test["outcome"])}">'
                    f"{_h(test['outcome'])}</span> <code>{_h(test['id'])}</code>: "
                    f"{_h(test.get('reason', ''))}{_h(_waiver_note(report, test))}"
                )
                if test.get("details"):
                    out.append(
                        f"<details><summary>traceback</summary><pre>{_h(test['details'])}</pre></details>"
                    )
                out.append("</li>")
            out.append("</ul>")
        out.append(
            f"<details><summary>every test ({cap['total']})</summary><table><tbody>"
            + "".join(
                f'<tr><td class="outcome {_outcome_class(t["outcome"])}">{_h(t["outcome"])}</td>'
                f"<td><code>{_h(t['id'])}</code></td><td>{t['duration_s']:.3f} s</td></tr>"
                for t in cap["tests"]
            )
            + "</tbody></table></details>"
        )
    out.append(_html_waivers(report))
    ref = reference_summary(report.get("reference"))
    if ref:
        out.append(
            '<h2 id="reference">Reference</h2><ul>'
            + "".join(f"<li>{_h(line)}</li>" for line in ref)
            + "</ul>"
        )
    out.append("<h2>Cell</h2>" + _facts(report["cell"]))
    out.append("<h2>Machine</h2>" + _facts(report.get("fingerprint", {})))
    out.append(
        "<h2>Run</h2>" + _facts({"matrix": report.get("matrix", {}), **report.get("run", {})})
    )
    return "\n".join(out)


def _outcome_class(outcome: str) -> str:
    return {"passed": "pass", "skipped": "skip", "waived": "skip", "own": "skip"}.get(
        outcome, "fail"
    )


def _html_waivers(report: Mapping[str, Any]) -> str:
    section = report.get("waivers")
    if not section:
        return ""
    rows = "".join(
        f'<tr data-status="{_h(e["status"])}"><td>{_h(e["status"])}</td>'
        f"<td>{_h('test' if 'test' in e else 'op')} <code>{_h(e.get('test') or e.get('op'))}</code>"
        f"</td><td>{_h(e['reason'])}</td><td>{_h(e['issue'])}</td></tr>"
        for e in section["entries"]
    )
    return (
        f'<h2 id="waivers">Waivers</h2><p><code>{_h(section["source"])}</code>, sha256 '
        f"<code>{_h(section['sha256'])}</code> (copied as <code>{_h(section['file'])}</code>)</p>"
        "<table><thead><tr><th>status</th><th>waiver</th><th>reason</th><th>issue</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
    )


def _facts(data: Mapping[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{_h(k)}</td><td><code>{_h(v)}</code></td></tr>" for k, v in views.flatten(data)
    )
    return f'<table class="facts"><tbody>{rows}</tbody></table>'


def _html_matrix_details(rows: list[dict[str, Any]]) -> str:
    out = ["<h2>Cells</h2>"]
    for row in rows:
        out.append(
            f'<h3 id="cell-{_h(row["cell"])}">{_h(row["cell"])} '
            f'<span class="verdict {_h(row["verdict"])}">{_h(row["verdict"])}</span></h3>'
        )
        out.append(_facts({**row["fingerprint"], "report sha256": row["report_sha256"]}))
        problems = [p for cap in row["capabilities"].values() for p in cap["problems"]]
        if problems:
            out.append('<ul class="problems">')
            out += [
                f"<li>{_h(p['outcome'])} <code>{_h(p['id'])}</code>: {_h(p['reason'])}</li>"
                for p in problems
            ]
            out.append("</ul>")
    return "\n".join(out)
