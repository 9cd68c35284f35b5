"""Distributed checkpoint: save DTensors in one layout, load them into another.

Each rank writes its shards with torch.distributed.checkpoint; loading into
other placements (or another mesh) must give back the same full tensors, the
resharding a job does when it restarts on a different layout.
"""

from __future__ import annotations

import shutil
import tempfile

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

from harness import with_comms
from harness.conformance._base import ConformanceTestBase, needs


def values(*shape: int, offset: float = 0.0) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    return (torch.arange(n, dtype=torch.float32) * 0.5 + offset).reshape(shape)


SIMULATION = "checkpoint planning gathers Python objects from every rank process"


class CheckpointTest(ConformanceTestBase):
    def _shared_dir(self) -> str:
        """One folder every rank writes into (rank 0 makes it and tells the others)."""
        if self.is_local_tensor_enabled:
            return tempfile.mkdtemp(prefix="harness-dcp-")
        path = [tempfile.mkdtemp(prefix="harness-dcp-") if self.rank == 0 else None]
        dist.broadcast_object_list(path, src=0)
        return path[0]

    def _cleanup(self, path: str) -> None:
        dist.barrier()
        if self.is_local_tensor_enabled or self.rank == 0:
            shutil.rmtree(path, ignore_errors=True)

    def _roundtrip(self, saved: dict, loading: dict) -> None:
        try:
            import numpy  # noqa: F401
        except ImportError:
            self.skipTest(
                "torch.distributed.checkpoint needs numpy (torch's object collectives "
                "use it) and it is not installed; pip install numpy"
            )
        path = self._shared_dir()
        try:
            dcp.save(saved, checkpoint_id=path)
            dcp.load(loading, checkpoint_id=path)
        finally:
            self._cleanup(path)

    @needs(local=SIMULATION)
    @with_comms
    def test_save_and_load_with_resharding(self):
        mesh = self.mesh((self.world_size,))
        weight, bias = values(7, 6).to(self.device_type), values(5, offset=3.0).to(self.device_type)
        saved = {
            "weight": distribute_tensor(weight, mesh, [Shard(0)]),
            "bias": distribute_tensor(bias, mesh, [Replicate()]),
        }
        for w_place, b_place in (
            (Shard(1), Shard(0)),
            (Replicate(), Shard(0)),
            (Shard(0), Replicate()),
        ):
            with self.subTest(weight=str(w_place), bias=str(b_place)):
                loading = {
                    "weight": distribute_tensor(torch.zeros_like(weight), mesh, [w_place]),
                    "bias": distribute_tensor(torch.zeros_like(bias), mesh, [b_place]),
                }
                self._roundtrip(saved, loading)
                self.assertEqual(loading["weight"].placements, (w_place,))
                self.assertEqual(loading["weight"].full_tensor(), weight)
                self.assertEqual(loading["bias"].full_tensor(), bias)

    @needs(ranks=4, even=True, local=SIMULATION)
    @with_comms
    def test_load_across_meshes(self):
        world = self.world_size
        mesh_2d = self.mesh((2, world // 2), ("dp", "tp"))
        mesh_1d = self.mesh((world,))
        full = values(9, 10).to(self.device_type)
        saved = {"w": distribute_tensor(full, mesh_2d, [Shard(0), Shard(1)])}
        loading = {"w": distribute_tensor(torch.zeros_like(full), mesh_1d, [Shard(1)])}
        self._roundtrip(saved, loading)
        self.assertEqual(loading["w"].full_tensor(), full)
