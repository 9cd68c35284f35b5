"""DeviceMesh: 1-D and 2-D meshes, named sub-meshes, and their process groups."""

from __future__ import annotations

import torch
import torch.distributed as dist

from harness import with_comms
from harness.conformance._base import ConformanceTestBase, needs


class DeviceMeshTest(ConformanceTestBase):
    @with_comms
    def test_1d_mesh(self):
        world = self.world_size
        mesh = self.mesh((world,), ("world",))
        self.assertEqual(mesh.size(), world)
        self.assertEqual(mesh.ndim, 1)
        self.assertEqual(mesh.mesh_dim_names, ("world",))
        self.assertEqual(mesh.mesh.tolist(), list(range(world)))
        self.assertEqual(mesh.device_type, self.device_type)
        self.assert_per_rank(mesh.get_local_rank(), lambda r: r)
        self.assert_per_rank(mesh.get_coordinate(), lambda r: [r])
        group = mesh.get_group()
        self.assertEqual(dist.get_world_size(group), world)
        tensor = self.per_rank(lambda r: torch.tensor([float(r)])).to(self.device_type)
        dist.all_reduce(tensor, group=group)
        self.assertEqual(tensor.cpu(), torch.tensor([float(sum(range(world)))]))

    @needs(ranks=4, even=True)
    @with_comms
    def test_2d_mesh_and_submeshes(self):
        world = self.world_size
        rows, cols = 2, world // 2
        mesh = self.mesh((rows, cols), ("dp", "tp"))
        self.assertEqual((mesh.ndim, mesh.size(0), mesh.size(1)), (2, rows, cols))
        self.assert_per_rank(mesh.get_coordinate(), lambda r: [r // cols, r % cols])
        self.assert_per_rank(mesh.get_local_rank("dp"), lambda r: r // cols)
        self.assert_per_rank(mesh.get_local_rank("tp"), lambda r: r % cols)

        # rank r's sub-meshes: its row (tp) and its column (dp) of the 2-D mesh
        members = {
            "tp": lambda r: [r // cols * cols + c for c in range(cols)],
            "dp": lambda r: [r % cols + cols * i for i in range(rows)],
        }
        for name, size in (("tp", cols), ("dp", rows)):
            with self.subTest(submesh=name):
                sub = mesh[name]
                self.assertEqual((sub.size(), sub.mesh_dim_names), (size, (name,)))
                if not self.is_local_tensor_enabled:  # one process sees rank 0's sub-mesh
                    self.assertEqual(sub.mesh.tolist(), members[name](int(self.rank)))
                # a sum over the sub-mesh's group adds exactly its ranks
                value = self.per_rank(lambda r: torch.tensor([float(r)])).to(self.device_type)
                dist.all_reduce(value, group=sub.get_group())
                expected = self.per_rank(
                    lambda r, m=members[name]: torch.tensor([float(sum(m(r)))])
                )
                self.assertEqual(value.cpu(), expected)

    @needs(ranks=2, even=True)
    @with_comms
    def test_2d_mesh_groups_cover_the_world(self):
        world = self.world_size
        mesh = self.mesh((2, world // 2), ("dp", "tp"))
        groups = mesh.get_all_groups()
        self.assertEqual(len(groups), 2)
        self.assertEqual([dist.get_world_size(g) for g in groups], [2, world // 2])
