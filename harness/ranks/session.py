"""One rank's link to the others in external mode: store, heartbeat, agreement, group.

The launcher's store (torchrun's agent serves one; under Slurm rank 0 does) is
where the ranks meet. They agree on each test's outcome there rather than over
the process group, which a failing test may have left mid-collective. A
heartbeat in the store tells a slow rank from a dead one. The process group is
made once per process and remade on every rank after a test that did not pass.
"""

from __future__ import annotations

import json
import os
import threading
import time
from datetime import timedelta
from typing import Any

from harness.ranks.launch import Launch
from harness.ranks.outcome import RankOutcome
from harness.ranks.peers import shut_peer_connections

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
            if self.store.check([f"gone/{r}"]):  # it gave up after posting: lost all the same
                self.lost[r] = self.store.get(f"gone/{r}").decode(errors="replace")
                self.lost_during = self.lost_during or test
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
