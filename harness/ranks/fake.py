"""Fake mode's runner: a few ranks of a large world, each in its own fresh process.

On the fake process group a process is rank ``r`` of a world of ``N`` and every
collective returns at once, so what DTensor decides (placements, local shapes,
redistribute plans, the collectives it issues) is real at any ``N`` while values
are not. The runner starts one process per chosen rank (the cell's
``HARNESS_FAKE_RANKS``, else the first, the middle and the last), at most
:data:`AT_ONCE` at a time, since they never wait for each other. The test class
becomes its fake variant in each rank (``variant``, imported by name: this floor
knows nothing of the bases).
"""

from __future__ import annotations

import os

from harness import devices
from harness.ranks.group import RankGroup
from harness.ranks.outcome import RankOutcome, Verdict, verdict
from harness.ranks.runner import Job

#: The test side's fake variant of a class (harness.fake.fake_variant).
VARIANT = "harness.fake:fake_variant"
#: Rank processes alive at once; HARNESS_FAKE_AT_ONCE overrides (default: 2, or the cores).
AT_ONCE = max(1, min(2, os.cpu_count() or 1))


def at_once() -> int:
    raw = os.environ.get("HARNESS_FAKE_AT_ONCE", "").strip()
    if not raw:
        return AT_ONCE
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"HARNESS_FAKE_AT_ONCE={raw!r}: use a whole number >= 1")
    return int(raw)


def run_fake(job: Job) -> Verdict:
    """Run ``job`` as each chosen rank of ``job.world_size``, a few processes at a time."""
    chosen = list(devices.fake_ranks(job.world_size))
    batch = at_once()
    outcomes: list[RankOutcome] = []
    timed_out = False
    for start in range(0, len(chosen), batch):
        group = RankGroup.for_job(
            job, ranks=chosen[start : start + batch], extra={"variant": VARIANT}
        )
        got, timed_out = group.run_once(job.timeout)
        outcomes += got
        if any(o.status != "passed" for o in got):
            break  # the first rank that did not pass decides; the rest would only repeat it
    shown = ", ".join(map(str, chosen))
    ran = {o.rank for o in outcomes}
    left = [r for r in chosen if r not in ran]
    skipped = f"; rank{'s' * (len(left) > 1)} {', '.join(map(str, left))} not run" if left else ""
    return verdict(
        outcomes,
        world_size=len(outcomes),
        test_name=f"{job.name} (fake ranks {shown} of {job.world_size}{skipped})",
        timeout=job.timeout,
        timed_out=timed_out,
        rerun=job.rerun,
    )


__all__ = ["AT_ONCE", "VARIANT", "at_once", "run_fake"]
