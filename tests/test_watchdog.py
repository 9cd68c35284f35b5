"""The per-test watchdog of external ranks: a body that ends at its timeout is not hung.

At the timeout the watchdog shuts the rank's peer connections, which makes the
collective the body waits in fail at once: the body then ends while the watchdog
is still at work. The grace timer must not start then, or the rank would call a
finished test "hung outside any collective" and exit (a flaky CI failure of
tests/test_external_slurm.py on a loaded host).
"""

from __future__ import annotations

import threading
import types

from harness.ranks import watchdog as wd


def _session(gone: list[str]):
    return types.SimpleNamespace(
        launch=types.SimpleNamespace(rank=1, master_port=0), say_gone=gone.append
    )


def _watch(monkeypatch, tmp_path, on_shut):
    # the rank's exit is recorded, not done: it would end this test process
    monkeypatch.setattr(wd, "os", types.SimpleNamespace(_exit=lambda code: None))
    monkeypatch.setattr(wd, "_STACKS", open(tmp_path / "stacks", "w"))
    monkeypatch.setattr(wd, "shut_peer_connections", on_shut)
    monkeypatch.setattr(wd, "LAST_WORDS", None)


def test_a_body_that_ends_while_the_watchdog_fires_is_not_called_hung(monkeypatch, tmp_path):
    gone: list[str] = []
    shut = threading.Event()
    dog: list[wd.Watchdog] = []

    def body_ends_now(keep_port: int) -> int:  # the collective fails; the body returns
        dog[0].cancel()
        shut.set()
        return 1

    _watch(monkeypatch, tmp_path, body_ends_now)
    dog.append(wd.Watchdog(_session(gone), "test_x", timeout=0.05))
    assert shut.wait(10)
    threading.Event().wait(dog[0].grace + 0.5)
    assert dog[0].fired and gone == []


def test_a_body_still_running_after_the_grace_gives_up(monkeypatch, tmp_path):
    gone: list[str] = []
    _watch(monkeypatch, tmp_path, lambda keep_port: 0)
    dog = wd.Watchdog(_session(gone), "test_x", timeout=0.05)
    try:
        deadline = threading.Event()
        for _ in range(int((dog.grace + 5) / 0.1)):
            if gone:
                break
            deadline.wait(0.1)
        assert gone and "outside any collective" in gone[0]
    finally:
        dog.cancel()
