"""pytest plugin that ``harness certify`` loads (``-p harness.report.pytest_progress``).

It tags every test with its capability and node id in the JUnit XML (as
properties), and, when HARNESS_PROGRESS_FILE is set, appends one JSON line per
finished test there, so the certify process can show progress while pytest's
own output goes to pytest.log.
"""

from __future__ import annotations

import json
import os
from collections import Counter

import pytest

from harness.report import capabilities
from harness.report.junit import one_line

ENV = "HARNESS_PROGRESS_FILE"
#: Where to write the machine fingerprint, taken in the process that ran the tests
#: (torch is imported there already, so it costs nothing and describes that torch).
FINGERPRINT_ENV = "HARNESS_FINGERPRINT_FILE"
#: Set (by ``harness certify --upstream``) when the run is PyTorch's own test folder.
UPSTREAM_ENV = "HARNESS_UPSTREAM"
#: A file of op keys, one a line: DTensor's own failures on the run's reference (set by
#: ``harness certify`` when it knows the reference before the run), shown as such.
OWN_ENV = "HARNESS_REFERENCE_OWN"
_RANK = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}


def capability(nodeid: str) -> str:
    """A suite's test: its module's capability; an upstream test (certify --upstream): its file."""
    if os.environ.get(UPSTREAM_ENV):
        return nodeid.split("::", 1)[0]
    return capabilities.from_path(nodeid)


def pytest_collection_modifyitems(session, config, items) -> None:
    for item in items:
        item.user_properties.append(("capability", capability(item.nodeid)))
        item.user_properties.append(("nodeid", item.nodeid))
        obj = getattr(item, "obj", None)
        op = getattr(obj, "harness_op", None)
        if op:  # the op a test checks (set by the ops capability): waivers can name it
            item.user_properties.append(("op", str(op)))
        ran_on = getattr(obj, "harness_ran_on", None)
        if ran_on:  # where the ops ran: simulated workers or the cell's ranks
            item.user_properties.append(("ran_on", str(ran_on)))


def pytest_configure(config) -> None:
    path = os.environ.get(ENV)
    if path and not hasattr(config, "workerinput"):  # an xdist worker: its controller reports
        config.pluginmanager.register(Events(path), "harness-progress-events")


def pytest_sessionfinish(session) -> None:
    path = os.environ.get(FINGERPRINT_ENV)
    if not path or hasattr(session.config, "workerinput"):
        return
    from harness.report import fingerprint

    info = fingerprint.collect(
        os.environ.get("HARNESS_DEVICE", "cpu"), os.environ.get("HARNESS_BACKEND", "gloo")
    )
    with open(path, "w", encoding="utf-8") as out:
        json.dump(info, out)


class Events:
    """Writes ``collected`` once, then one ``test`` event per finished test."""

    def __init__(self, path: str):
        self.path = path
        self.ops: dict[str, str] = {}  # nodeid -> the op it checks
        own = os.environ.get(OWN_ENV)
        self.own = set(_read_lines(own)) if own else set()
        self.outcome: dict[str, str] = {}
        self.duration: dict[str, float] = {}
        self.reason: dict[str, str] = {}
        self.counted = False

    def emit(self, **event) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(event) + "\n")

    def counts(self, nodeids) -> None:
        if not self.counted:
            self.counted = True
            self.emit(event="collected", counts=dict(Counter(map(capability, nodeids))))

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        self.counts(item.nodeid for item in items)
        for item in items:
            op = getattr(getattr(item, "obj", None), "harness_op", None)
            if op:
                self.ops[item.nodeid] = str(op)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        self.counts(ids)

    def pytest_collectreport(self, report) -> None:
        if report.failed:
            self.emit(
                event="test",
                capability=capability(report.nodeid),
                nodeid=report.nodeid,
                outcome="error",
                duration=0.0,
                reason=_reason(report) or "collection failed",
            )

    def pytest_runtest_logreport(self, report) -> None:
        nodeid = report.nodeid
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome
            if report.when != "call" and outcome == "failed":
                outcome = "error"
            if _RANK[outcome] >= _RANK[self.outcome.get(nodeid, "passed")]:
                self.outcome[nodeid] = outcome
                if outcome != "passed":
                    self.reason[nodeid] = _reason(report)
        self.duration[nodeid] = self.duration.get(nodeid, 0.0) + (report.duration or 0.0)
        if report.when == "teardown":
            outcome = self.outcome.pop(nodeid, "passed")
            if outcome in ("failed", "error") and self.ops.get(nodeid) in self.own:
                outcome = "own"  # fails on the reference too: the report counts it apart
            self.emit(
                event="test",
                capability=capability(nodeid),
                nodeid=nodeid,
                outcome=outcome,
                duration=round(self.duration.pop(nodeid, 0.0), 3),
                reason=self.reason.pop(nodeid, ""),
            )


def _read_lines(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as lines:
            return [line.strip() for line in lines if line.strip()]
    except OSError:
        return []


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        text = str(longrepr[2]).removeprefix("Skipped: ")
    else:
        crash = getattr(longrepr, "reprcrash", None)
        text = getattr(crash, "message", None) or str(longrepr or "")
    return one_line(text)
