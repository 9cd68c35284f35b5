"""Ops-capability JUnit and bare cell reports, for the tests of waivers, references
and report diffs (imported by name: tests/ is on sys.path, like spawn_guard)."""

from __future__ import annotations

from typing import Any

from harness.report import schema


def ops_junit(*cases: tuple[str, str | None], op_property: bool = True) -> str:
    """JUnit of ops-capability tests: (op, failure message or None for a pass).

    ``op_property=False`` leaves out the ``op`` property, as a plain pytest run does.
    """
    out = ['<testsuites><testsuite name="cpu-2rank">']
    for op, failure in cases:
        out.append(
            f'<testcase classname="suite.test_ops.OpsTest" name="test_{op}" time="0.1">'
            '<properties><property name="capability" value="ops"/>'
            + (f'<property name="op" value="{op}"/>' if op_property else "")
            + f'<property name="nodeid" value="suite/test_ops.py::OpsTest::test_{op}"/>'
            "</properties>"
            + (f'<failure message="{failure}">{failure}</failure>' if failure else "")
            + "</testcase>"
        )
    return "".join(out) + "</testsuite></testsuites>"


def bare_report(
    results: list,
    cell: dict[str, Any] | None = None,
    *,
    waivers: dict[str, Any] | None = None,
    reference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A cell report of ``results`` and nothing else known (no matrix, no machine),
    with the waivers or reference section they were judged by."""
    return schema.build(
        cell=cell or {"name": "cpu-2rank"},
        matrix={},
        fingerprint={},
        results=results,
        run={"exit_code": 1},
        artifacts={},
        waivers=waivers,
        reference=reference,
    )
