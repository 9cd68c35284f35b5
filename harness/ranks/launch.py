"""Who started this process: torchrun (detected) or Slurm (only when asked).

torchrun exports its own variables (``TORCHELASTIC_RUN_ID`` among them), so its
ranks are recognised without a flag. Slurm exports ``SLURM_*`` in every
allocation shell, including the one a user types ``pytest`` into, so it counts
only when ``HARNESS_LAUNCHER=slurm`` (``harness run --launcher slurm``) says so.
Imports no torch: the CLI reads this before any rank exists.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import UsageError

LAUNCHERS = ("torchrun", "slurm")


class LaunchError(UsageError):
    """The launcher's environment is incomplete or contradicts itself."""


@dataclass(frozen=True)
class Launch:
    """This process's place among the launcher's ranks."""

    launcher: str  # torchrun | slurm
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    node_rank: int
    master_addr: str
    master_port: int
    # torchrun's agent on the first node already serves a store at MASTER_ADDR:PORT
    agent_store: bool = False
    run_id: str = "harness"
    restart: int = 0

    def torch_env(self) -> dict[str, str]:
        """The variables torch and test code read (srun sets SLURM_* names instead)."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def describe(self) -> str:
        return (
            f"rank {self.rank} of {self.world_size} ({self.launcher}, node {self.node_rank}, "
            f"local rank {self.local_rank} of {self.local_world_size}; "
            f"store {self.master_addr}:{self.master_port})"
        )


def requested(env: Mapping[str, str] | None = None) -> str | None:
    """The launcher named by HARNESS_LAUNCHER, or torchrun when its variables are set."""
    env = os.environ if env is None else env
    asked = env.get("HARNESS_LAUNCHER", "").strip().lower()
    if asked in ("none", "off"):
        return None
    if asked and asked not in LAUNCHERS:
        raise LaunchError(
            f"HARNESS_LAUNCHER={asked!r}: use one of {', '.join(LAUNCHERS)} (or none)."
        )
    if asked:
        return asked
    return "torchrun" if env.get("TORCHELASTIC_RUN_ID") is not None else None


def detect(env: Mapping[str, str] | None = None) -> Launch | None:
    """This process's :class:`Launch`, or None when no launcher started it."""
    env = os.environ if env is None else env
    launcher = requested(env)
    if launcher is None:
        return None
    launch = _slurm(env) if launcher == "slurm" else _torchrun(env)
    if not 0 <= launch.rank < launch.world_size:
        raise LaunchError(
            f"{launcher}: rank {launch.rank} is outside the world of {launch.world_size} ranks."
        )
    return launch


def _int(env: Mapping[str, str], name: str, fix: str, default: int | None = None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is not None:
            return default
        raise LaunchError(f"{name} is not set; {fix}")
    match = re.match(r"\d+", raw)  # Slurm writes counts like "2(x3)"
    if match is None:
        raise LaunchError(f"{name}={raw!r} is not a whole number; {fix}")
    return int(match.group())


def _torchrun(env: Mapping[str, str]) -> Launch:
    fix = "start the ranks with torchrun, or set HARNESS_LAUNCHER=none to run without it."
    addr = env.get("MASTER_ADDR", "").strip()
    if not addr:
        raise LaunchError(f"MASTER_ADDR is not set; {fix}")
    return Launch(
        launcher="torchrun",
        rank=_int(env, "RANK", fix),
        world_size=_int(env, "WORLD_SIZE", fix),
        local_rank=_int(env, "LOCAL_RANK", fix, default=0),
        local_world_size=_int(env, "LOCAL_WORLD_SIZE", fix, default=1),
        node_rank=_int(env, "GROUP_RANK", fix, default=0),
        master_addr=addr,
        master_port=_int(env, "MASTER_PORT", fix),
        agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE", "") == "True",
        run_id=env.get("TORCHELASTIC_RUN_ID", "") or "harness",
        restart=_int(env, "TORCHELASTIC_RESTART_COUNT", fix, default=0),
    )


def _slurm(env: Mapping[str, str]) -> Launch:
    fix = "run this under srun (see deploy/slurm/), or drop --launcher slurm."
    rank = _int(env, "SLURM_PROCID", fix)
    job = _int(env, "SLURM_JOB_ID", fix, default=0)
    addr = env.get("MASTER_ADDR", "").strip()
    if not addr:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or ""
        addr = first_host(nodes) or ""
    if not addr:
        raise LaunchError(
            "MASTER_ADDR is not set and no Slurm node list names the first node; export "
            "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) before srun."
        )
    tasks_per_node = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    return Launch(
        launcher="slurm",
        rank=rank,
        world_size=_int(env, "SLURM_NTASKS", fix, default=_int(env, "SLURM_NPROCS", fix, 0) or 1),
        local_rank=_int(env, "SLURM_LOCALID", fix, default=0),
        local_world_size=_int({"n": tasks_per_node or ""}, "n", fix, default=1),
        node_rank=_int(env, "SLURM_NODEID", fix, default=0),
        master_addr=addr,
        # one port per job, so two jobs sharing a first node do not collide
        master_port=_int(env, "MASTER_PORT", fix, default=20000 + job % 20000),
        run_id=f"slurm-{job}",
    )


def first_host(nodelist: str) -> str | None:
    """The first host of a Slurm node list: ``rack[1-2]-node[01-04]`` -> ``rack1-node01``.

    Slurm's syntax (several bracket groups, zero padding, ranges and lists) is
    expanded by python-hostlist, the library Slurm sites use for it.
    """
    import hostlist

    if not nodelist.strip():
        return None
    try:
        hosts = hostlist.expand_hostlist(nodelist.strip())
    except hostlist.BadHostlist as exc:
        raise LaunchError(
            f"cannot read the Slurm node list {nodelist!r} ({exc}); export "
            "MASTER_ADDR=$(scontrol show hostnames $SLURM_JOB_NODELIST | head -n1) before srun."
        ) from None
    return hosts[0] if hosts else None
