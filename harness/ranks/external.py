"""External mode: this process is already one rank of torchrun or Slurm.

Nothing is spawned. Every rank runs the same pytest session; a test body runs
here, on this rank only, against one process group made once per process from
the launcher's store. After each test the ranks agree on its outcome through
that store -- not through the process group, which a failing test may have left
mid-collective -- so one rank's skip is a skip everywhere, one rank's failure
fails the test on every rank with that rank's traceback, and no rank starts the
next test while another is still in this one. A heartbeat tells a slow rank from
a dead one: a rank that stops beating ends the job with its number, not a hang.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import threading
import time
import traceback
import unittest
from datetime import timedelta
from typing import Any

from harness.ranks.launch import Launch, detect
from harness.ranks.outcome import RankOutcome, verdict

POLL_S = 0.05
BEAT_S = 1.0
# A rank whose heartbeat has not moved for this long is taken for dead.
DEFAULT_LOST_AFTER_S = 60.0


def lost_after() -> float:
    raw = os.environ.get("HARNESS_HEARTBEAT_TIMEOUT", "").strip()
    try:
        return max(2.0, float(raw)) if raw else DEFAULT_LOST_AFTER_S
    except ValueError:
        return DEFAULT_LOST_AFTER_S


class Session:
    """One rank's link to the others: the store, the heartbeat, the process group."""

    def __init__(self, launch: Launch) -> None:
        self.launch = launch
        self.seq = 0  # tests agreed on so far; the same on every rank
        self.generation = 0  # bumped on every rank when a test may have broken the group
        self.group_generation: int | None = None
        self.lost: dict[int, str] = {}
        self.lost_during = ""
        self._store: Any = None
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen: dict[int, tuple[int | None, float]] = {}
        self._beats: Any = None

    # -- the store ---------------------------------------------------------
    def _connect(self, serve: bool) -> Any:
        import torch.distributed as dist

        launch = self.launch
        store = dist.TCPStore(
            launch.master_addr,
            launch.master_port,
            launch.world_size,
            is_master=serve,
            timeout=timedelta(seconds=max(60.0, lost_after())),
            wait_for_workers=False,
            multi_tenant=True,
        )
        return dist.PrefixStore(f"harness/{launch.run_id}/{launch.restart}/", store)

    @property
    def store(self) -> Any:
        if self._store is None:
            # torchrun's agent serves a store already; otherwise rank 0 serves it
            launch = self.launch
            self._store = self._connect(serve=launch.rank == 0 and not launch.agent_store)
            self._start_heartbeat()
        return self._store

    def _start_heartbeat(self) -> None:
        # its own connection: the main thread may be blocked in the other one
        self._beats = beats = self._connect(serve=False)
        key = f"beat/{self.launch.rank}"

        def beat() -> None:
            while not self._stop.is_set():
                try:
                    beats.add(key, 1)
                except Exception:  # the store went away: the waiters will say so
                    return
                self._stop.wait(BEAT_S)

        self._beat = threading.Thread(target=beat, name="harness-heartbeat", daemon=True)
        self._beat.start()

    def say_gone(self, why: str) -> None:
        """Tell the others why this rank is about to end (from any thread)."""
        try:
            self._beats.set(f"gone/{self.launch.rank}", why)
        except Exception:
            pass

    def collect(
        self, prefix: str, limit: float, ranks: list[int] | None = None
    ) -> tuple[dict[int, bytes], dict[int, str]]:
        """Every other live rank's value under ``prefix<rank>``, and why any is missing."""
        store, me = self.store, self.launch.rank
        everyone = range(self.launch.world_size) if ranks is None else ranks
        waiting = [r for r in everyone if r != me and r not in self.lost]
        found: dict[int, bytes] = {}
        missing: dict[int, str] = {}
        started = time.monotonic()
        # (beat count, when it last moved), kept across calls: a rank that died
        # during the last wait is not given a fresh grace period in the next
        seen = self._seen
        for r in waiting:
            seen.setdefault(r, (None, started))
        stale = lost_after()
        pause, last_look = POLL_S, 0.0
        try:
            while waiting:
                keys = [f"{prefix}{r}" for r in waiting]
                if store.check(keys):  # one round trip when everyone is there
                    found.update(zip(waiting, (store.get(k) for k in keys)))
                    break
                now = time.monotonic()
                if now - last_look >= BEAT_S / 2:  # who is here, who is gone: per rank
                    last_look = now
                    for r in list(waiting):
                        why = self._absent(store, prefix, r, now, stale, found)
                        if why is not None:
                            waiting.remove(r)
                            if why:
                                missing[r] = why
                if waiting and now - started > limit:
                    for r in waiting:
                        missing[r] = f"alive, but it did not get here within {limit:g} s"
                    break
                time.sleep(pause)
                pause = min(pause * 2, 0.25)
        except RuntimeError as exc:  # DistNetworkError: the store's host is gone
            for r in waiting:
                missing[r] = self._store_gone(exc)
        return found, missing

    def _absent(self, store, prefix, r, now, stale, found) -> str | None:
        """None: still waiting for ``r``; "": it arrived (now in ``found``); else why not."""
        if store.check([f"{prefix}{r}"]):
            found[r] = store.get(f"{prefix}{r}")
            return ""
        if store.check([f"gone/{r}"]):
            return store.get(f"gone/{r}").decode(errors="replace")
        if store.check([f"done/{r}"]):
            return "it finished its session without this step: the ranks ran different tests"
        beat = store.add(f"beat/{r}", 0)
        if beat != self._seen[r][0]:
            self._seen[r] = (beat, now)
        elif now - self._seen[r][1] > stale:
            return (
                f"no heartbeat for {stale:g} s: it was killed or crashed, or its node is "
                f"gone (its launcher's log has the exit)"
            )
        return None

    def _store_gone(self, exc: BaseException) -> str:
        where = f"{self.launch.master_addr}:{self.launch.master_port}"
        return f"the store at {where} went away ({str(exc).splitlines()[0]})"

    # -- the process group ---------------------------------------------------
    def ensure_group(self) -> None:
        """(Re)make the default group; every rank calls this at the same test."""
        import torch.distributed as dist

        if self.group_generation == self.generation and dist.is_initialized():
            return
        self.drop_group()
        from harness import devices
        from harness.ranks.run import pg_timeout_for

        launch = self.launch
        index = local_device_index(launch)
        if index is not None:
            import torch

            torch.accelerator.set_device_index(index)
        dist.init_process_group(
            backend=devices.PG_BACKEND,
            store=_prefixed(self.store, f"pg/{self.generation}/"),
            rank=launch.rank,
            world_size=launch.world_size,
            timeout=timedelta(seconds=pg_timeout_for(devices.default_timeout())),
        )
        # gloo's init returns before every peer has finished connecting; a rank that
        # skipped at once would otherwise shut connections still being made.
        dist.barrier()
        self.group_generation = self.generation

    def drop_group(self) -> None:
        """Destroy this process's group (it is remade at the next test)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:
                pass
        self.group_generation = None

    def leave_collectives(self) -> None:
        """This rank failed or skipped: make peers blocked in a collective fail now.

        Destroying the group is not enough: meshes and DTensor's caches keep it
        alive, and gloo has no abort. So the group is aborted where the backend
        can (NCCL), and this rank's peer connections are shut, as its exit would
        shut them; each peer that fails then does the same, so all fail within a
        second instead of at the collective timeout. The store's connections stay.
        """
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            try:
                dist.group.WORLD.abort()
            except Exception:
                pass
            shut_peer_connections(keep_port=self.launch.master_port)
        self.drop_group()

    # -- agreeing on a test ------------------------------------------------
    def agree(self, test: str, mine: RankOutcome, limit: float) -> list[RankOutcome]:
        """Post this rank's outcome of ``test``; return every rank's."""
        seq, self.seq = self.seq, self.seq + 1
        prefix = f"outcome/{seq}/"
        try:
            self.store.set(f"{prefix}{self.launch.rank}", json.dumps(_encode(test, mine)))
        except RuntimeError as exc:  # the store's host is gone: so is everyone's meeting point
            why = self._store_gone(exc)
            found, missing = {}, {r: why for r in range(self.launch.world_size) if r != mine.rank}
        else:
            found, missing = self.collect(prefix, limit)
        outcomes = [mine]
        for r, raw in found.items():
            data = json.loads(raw)
            if data.get("test") != test:
                missing[r] = (
                    f"it was at {data.get('test')!r} instead: either its setUp failed or "
                    f"skipped there (see its log), or the ranks collected different tests "
                    f"(same files, -k and plugins on every node?)"
                )
                continue
            outcomes.append(_decode(r, data))
        for r, why in sorted(missing.items()):
            self.lost[r] = why
            outcomes.append(
                RankOutcome(r, "failed", texts=[f"RankLost: rank {r} sent no outcome: {why}"])
            )
        if missing and not self.lost_during:
            self.lost_during = test
        return sorted(outcomes, key=lambda o: o.rank)

    def finish(self) -> None:
        if self._store is not None:
            try:
                self._store.set(f"done/{self.launch.rank}", "1")
            except RuntimeError:
                pass

    def close(self) -> None:
        self._stop.set()

    def stop_message(self) -> str:
        ranks = ", ".join(str(r) for r in sorted(self.lost))
        return (
            f"the job lost rank(s) {ranks} of {self.launch.world_size} during "
            f"{self.lost_during}; stopping here: the rest of the session needs every rank"
        )


def local_device_index(launch: Launch) -> int | None:
    """This rank's device on its node: LOCAL_RANK, or 0 when the launcher gave it one.

    ``srun --gpus-per-task=1`` (or CUDA_VISIBLE_DEVICES per rank) leaves each rank a
    single visible device; otherwise a node's ranks share its devices by local rank.
    """
    from harness import devices

    device = devices.DEVICE_TYPE
    count = devices.host_device_count(device) if device != "cpu" else 0
    if count <= 0:
        return None
    return launch.local_rank % count


def accelerator_budget(host_count: int) -> int | None:
    """Accelerators the job grants a test: the whole world when each rank has its own.

    For :func:`harness.skips.accelerator_budget`, which counts one host's devices;
    None outside a launcher.
    """
    launch = launched()
    if launch is None:
        return None
    return launch.world_size if host_count >= launch.local_world_size else host_count


def shut_peer_connections(keep_port: int) -> int:
    """Shut this process's established TCP connections, except those on ``keep_port``."""
    import socket

    sockets: dict[str, int] = {}
    try:
        for fd in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                sockets[target[8:-1]] = int(fd)
    except OSError:  # no /proc: not Linux
        return 0
    shut = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            ports = {int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)}
            if inode not in sockets or state != "01" or keep_port in ports:  # 01: established
                continue
            try:
                with socket.socket(fileno=os.dup(sockets[inode])) as sock:
                    sock.shutdown(socket.SHUT_RDWR)
                shut += 1
            except OSError:
                pass
    return shut


def _prefixed(store: Any, prefix: str) -> Any:
    import torch.distributed as dist

    return dist.PrefixStore(prefix, store)


def _encode(test: str, o: RankOutcome) -> dict[str, Any]:
    return {
        "test": test,
        "status": o.status,
        "reason": o.reason,
        "texts": o.texts,
        "assertion": o.assertion,
        "order": o.order,
        "seconds": o.seconds,
    }


def _decode(rank: int, data: dict[str, Any]) -> RankOutcome:
    return RankOutcome(
        rank,
        data["status"],
        reason=data.get("reason", ""),
        texts=list(data.get("texts", [])),
        assertion=bool(data.get("assertion")),
        order=float(data.get("order") or 0.0),
        seconds=float(data.get("seconds") or 0.0),
    )


_SESSION: Session | None = None
_CHECKED = False


def launched() -> Launch | None:
    """This process's launch (cached), or None when no launcher made it a rank."""
    global _CHECKED, _LAUNCH
    if not _CHECKED:
        _LAUNCH, _CHECKED = detect(), True
    return _LAUNCH


_LAUNCH: Launch | None = None


def session() -> Session:
    global _SESSION
    if _SESSION is None:
        launch = launched()
        if launch is None:
            raise RuntimeError("external mode outside a launcher: no torchrun or Slurm rank here")
        _SESSION = Session(launch)
    return _SESSION


def current_session() -> Session | None:
    return _SESSION


# -- the bases' entry ----------------------------------------------------------
def run_test(test: Any, method: str) -> None:
    """Run ``method`` of ``test`` on this rank, agree with the others, raise the verdict."""
    __tracebackhide__ = True
    from harness import bases
    from harness.skips import requirement_skip

    s = session()
    launch = s.launch
    name = f"{type(test).__qualname__}.{method}"
    timeout = bases.effective_timeout(test, method)
    if s.lost:
        raise unittest.SkipTest(f"not run: {s.stop_message()}")
    started = time.monotonic()
    world = int(test.world_size)
    reason = requirement_skip(test, method)
    if reason is None and world != launch.world_size:
        reason = (
            f"needs world size {world}; under {launch.launcher} every test runs on all "
            f"{launch.world_size} ranks"
        )
    try:
        s.ensure_group()  # before any per-rank decision: every rank takes part
    except Exception as exc:
        s.drop_group()
        mine = _failed(launch.rank, exc, note="making the process group failed")
    else:
        if reason is not None:
            mine = RankOutcome(launch.rank, "skipped", reason=reason)
        else:
            mine = _run_body(test, method, s, timeout)
    mine.seconds = time.monotonic() - started
    outcomes = s.agree(f"{type(test).__module__}.{name}", mine, limit=timeout + lost_after())
    if any(o.status != "passed" for o in outcomes) and not s.lost:
        s.generation += 1  # every rank saw the same outcomes, so every rank rebuilds
    result = verdict(
        outcomes,
        world_size=launch.world_size,
        test_name=name,
        timeout=timeout,
        timed_out=any(o.status == "hung" for o in outcomes),
        rerun=rerun_command(bases.rerun_command(test, method)),
    )
    result.raise_if_not_passed()


def _run_body(test: Any, method: str, s: Session, timeout: float) -> RankOutcome:
    from harness.skips import skip_reason_for_exit_code

    rank = s.launch.rank
    test.rank = rank
    # The group belongs to the session: with_comms must neither make nor destroy it,
    # but after an error it leaves the group so peers in a collective fail fast.
    shadows = {
        "init_pg": lambda *a, **k: None,
        "destroy_pg": lambda *a, **k: None,
        "_pg_after_error": s.leave_collectives,
    }
    vars(test).update(shadows)
    test._harness_direct = True
    watchdog = _Watchdog(s, f"{type(test).__qualname__}.{method}", timeout)
    mine = RankOutcome(rank, "passed")
    try:
        getattr(test, method)()
    except unittest.SkipTest as exc:
        s.leave_collectives()
        mine = RankOutcome(rank, "skipped", reason=str(exc))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        s.leave_collectives()  # peers waiting in a collective for this rank fail now
        skip = skip_reason_for_exit_code(exc.code) if isinstance(exc, SystemExit) else None
        if skip is not None:
            mine = RankOutcome(rank, "skipped", reason=skip)
        else:
            mine = _failed(rank, exc, assertion=isinstance(exc, test.failureException))
    finally:
        watchdog.cancel()
        test._harness_direct = False
        for key in shadows:
            vars(test).pop(key, None)
    if watchdog.fired and mine.status != "skipped":
        return RankOutcome(rank, "hung", stack=watchdog.stack, order=time.time())
    outcome = getattr(test, "_outcome", None)
    if mine.status == "passed" and outcome is not None and not getattr(outcome, "success", True):
        mine = RankOutcome(
            rank, "failed", texts=[f"SubTestFailure: a subTest failed on rank {rank}"]
        )
        mine.order = time.time()
    return mine


# Where a hung rank's stacks go: stderr as it was before pytest captured it.
_STACKS: Any = None


def keep_stderr() -> None:
    """Remember this process's stderr now, before pytest's capture replaces fd 2."""
    global _STACKS
    _STACKS = os.fdopen(os.dup(2), "w", buffering=1)


class _Watchdog:
    """What happens to a test body still running at its timeout, on this rank.

    At the timeout the rank prints every thread's stack and shuts its peer
    connections, so a collective it (or a peer) is stuck in fails now; it then
    reports "still running at the timeout" with the stack of where it was. A
    body stuck outside any collective gets a short grace, then the rank tells the
    others why through the store and exits. If it holds the GIL so no timer can
    run, faulthandler ends it later and the others see its heartbeat stop.
    """

    def __init__(self, s: Session, name: str, timeout: float) -> None:
        self.s, self.name, self.timeout = s, name, timeout
        self.grace = min(10.0, max(2.0, timeout / 2))
        self.stack = ""
        self.fired = False
        self.out = _STACKS or sys.__stderr__
        self.main = threading.get_ident()
        self.timers = [threading.Timer(timeout, self._at_timeout)]
        for timer in self.timers:
            timer.daemon = True
            timer.start()
        faulthandler.dump_traceback_later(timeout + self.grace + 30.0, exit=True, file=self.out)

    def _dump(self, what: str) -> None:
        rank = self.s.launch.rank
        print(f"\nharness: rank {rank}: {self.name} {what}", file=self.out, flush=True)
        faulthandler.dump_traceback(file=self.out, all_threads=True)
        self.out.flush()

    def _at_timeout(self) -> None:
        frame = sys._current_frames().get(self.main)
        frames = traceback.format_stack(frame) if frame is not None else []
        body = [i for i, f in enumerate(frames) if "in _run_body" in f]  # the test's own frames
        self.stack = "".join(frames[body[-1] + 1 :] if body else frames)
        self.fired = True
        self._dump(f"still running after {self.timeout:g} s; every thread's stack follows")
        shut_peer_connections(keep_port=self.s.launch.master_port)
        last = threading.Timer(self.grace, self._give_up)
        last.daemon = True
        self.timers.append(last)
        last.start()

    def _give_up(self) -> None:
        rank = self.s.launch.rank
        self.s.say_gone(
            f"it hung past the {self.timeout:g} s per-test timeout outside any collective; "
            f"it printed every thread's stack (its stderr, or results/<cell>/ranks/"
            f"rank{rank}.log) and exited"
        )
        self._dump(f"still stuck {self.grace:g} s after the timeout; this rank exits")
        os._exit(1)

    def cancel(self) -> None:
        for timer in self.timers:
            timer.cancel()
        faulthandler.cancel_dump_traceback_later()


def _failed(rank: int, exc: BaseException, assertion: bool = False, note: str = "") -> RankOutcome:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return RankOutcome(
        rank,
        "failed",
        texts=[f"{note}\n{text}" if note else text],
        assertion=assertion,
        order=getattr(exc, "_harness_failed_at", None) or time.time(),
    )


def rerun_command(local: str) -> str:
    """The launch command that reruns one test: ``harness run`` sets its prefix."""
    target = local.removeprefix("pytest ").strip()
    prefix = os.environ.get("HARNESS_RERUN", "").strip()
    if prefix:
        return f"{prefix} -- {target}   (on every node)"
    return f"torchrun <your launch flags> -m harness.ranks.external_main {target}"
