"""The README's two set-up commands are the ones CI runs, word for word."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up and run", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_has_the_main_job_and_the_test_command():
    commands = readme_commands()
    assert len(commands) == 2
    assert "nox -s test-cpu-" in commands[0]
    assert "torch==2.13.0" in commands[1] and "pytest" in commands[1]


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in readme_commands():
        assert command in ci, f"{command!r} is not a line of .ci/run"


def test_the_readme_example_test_passes(tmp_path):
    import subprocess
    import sys

    text = (ROOT / "README.md").read_text()
    code = re.search(r"## Write a test\n\n```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "test_shard.py").write_text(code)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "test_shard.py",
            "--harness-world-size",
            "2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout + proc.stderr
