"""Reference models: parallel runs match the same model on one device.

Parity means: the loss, and every parameter's gradient, of the parallelized
model equal those of an unparallelized copy, within atol=rtol=1e-4 for the
loss and atol=1e-5, rtol=1e-4 for gradients (float32; the differences come
from summation order in the collectives).

Expert parallelism is data parallel for everything but the experts: each EP
rank gets its own slice of the batch, the reference sees the whole batch, and
non-expert gradients are summed over the EP ranks before comparing.

On CPU (torch 2.13) the fused attention op has no DTensor sharding strategy,
so these runs use ``local_output_for_attn=True`` (attention on local heads);
``test_tp_dtensor_attention`` tries the DTensor attention path and skips,
naming the op, where the device has no strategy for it (a GPU run covers it).
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

from harness import DTensorTestBase, LocalDTensorTestBase, compat, with_comms
from harness.models import (
    Attention,
    MLPModule,
    MLPStacked,
    ModelArgs,
    RMSNormPython,
    Transformer,
)
from harness.testcase import TestCase

LOSS_TOL = {"atol": 1e-4, "rtol": 1e-4}
GRAD_TOL = {"atol": 1e-5, "rtol": 1e-4}


def tiny_args(num_experts: int = 0) -> ModelArgs:
    # n_heads and vocab divisible by 8 (the largest TP size used); no dropout.
    return ModelArgs(
        n_layers=2, vocab_size=16, max_seq_len=16, dim=16, n_heads=8, dropout_p=0.0,
        num_experts=num_experts,
    )  # fmt: skip


def check_transformer_parity(
    case: TestCase,
    *,
    tp_mesh: DeviceMesh | None,
    ep_mesh: DeviceMesh | None,
    seq_parallel: bool = False,
    num_experts: int = 0,
    local_attention: bool = True,
) -> None:
    """Forward + backward of a parallelized Transformer against a plain copy."""
    torch.manual_seed(0)
    reference = Transformer(tiny_args(num_experts))
    model = copy.deepcopy(reference)
    data_parallel = ep_mesh.size() if ep_mesh is not None else 1
    tokens = torch.randint(0, 16, (2 * data_parallel, 8))

    ref_loss = reference(tokens).sum()
    ref_loss.backward()

    Transformer.parallelize(
        model, tp_mesh, seq_parallel, local_output_for_attn=local_attention, ep_mesh=ep_mesh
    )
    if reference.model_args.weight_tying:
        case.assertIs(model.output.weight, model.tok_embeddings.weight)

    def over_data(t: torch.Tensor) -> torch.Tensor:
        # sum a per-rank value over the EP (= data parallel) ranks
        if ep_mesh is None:
            return t
        return DTensor.from_local(t, ep_mesh, [Partial()]).full_tensor()

    my_tokens = tokens
    if ep_mesh is not None:
        my_tokens = distribute_tensor(tokens, ep_mesh, [Shard(0)]).to_local()
    try:
        loss = model(my_tokens).sum()
    except NotImplementedError as exc:
        if local_attention or "does not have a sharding strategy" not in str(exc):
            raise
        case.skipTest(f"DTensor attention is not supported here ({exc}); a GPU run covers it")
    loss.backward()
    case.assertEqual(over_data(loss.detach()), ref_loss.detach(), **LOSS_TOL)

    ref_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        case.assertIsNotNone(param.grad, msg=f"{name} got no gradient")
        grad = param.grad
        expert = ".experts." in name
        if isinstance(grad, DTensor):
            grad = grad.full_tensor()
        if not (expert and ep_mesh is not None):
            grad = over_data(grad)
        case.assertEqual(grad, ref_params[name].grad, msg=f"gradient of {name}", **GRAD_TOL)


def check_mlp_parity(case: TestCase, mesh: DeviceMesh, plan: dict) -> None:
    reference = MLPModule("cpu")
    model = parallelize_module(MLPModule("cpu"), mesh, plan)
    torch.manual_seed(1)
    x = torch.randn(4, 10)
    ref_out = reference(x)
    out = model(x)
    case.assertEqual(out, ref_out, **GRAD_TOL)
    ref_out.sum().backward()
    out.sum().backward()
    ref_params = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        grad = param.grad.full_tensor() if isinstance(param.grad, DTensor) else param.grad
        case.assertEqual(grad, ref_params[name].grad, msg=f"gradient of {name}", **GRAD_TOL)


MLP_PLANS = {
    "colwise+rowwise": lambda: {"net1": ColwiseParallel(), "net2": RowwiseParallel()},
    "colwise only": lambda: {"net1": ColwiseParallel(output_layouts=Replicate())},
    "rowwise only": lambda: {"net2": RowwiseParallel(input_layouts=Replicate())},
}


def mesh_2d(case: TestCase, shape: tuple[int, int], names: tuple[str, str]) -> DeviceMesh:
    """A named 2-D mesh; built outside LocalTensorMode, as a real rank builds it."""
    quiet = (
        compat.local_tensor_module().maybe_disable_local_tensor_mode()
        if case.is_local_tensor_enabled
        else contextlib.nullcontext()
    )
    with quiet:
        return init_device_mesh(case.device_type, shape, mesh_dim_names=names)


class LocalParity(LocalDTensorTestBase):
    """The breadth: 8 simulated ranks in one process."""

    @property
    def world_size(self) -> int:
        return 8

    @with_comms
    def test_tp(self) -> None:
        check_transformer_parity(self, tp_mesh=self.build_device_mesh(), ep_mesh=None)

    @with_comms
    def test_tp_dtensor_attention(self) -> None:
        mesh = self.build_device_mesh()
        check_transformer_parity(self, tp_mesh=mesh, ep_mesh=None, local_attention=False)

    @with_comms
    def test_tp_sequence_parallel(self) -> None:
        mesh = self.build_device_mesh()
        check_transformer_parity(self, tp_mesh=mesh, ep_mesh=None, seq_parallel=True)

    @with_comms
    def test_tp_experts(self) -> None:
        mesh = self.build_device_mesh()
        check_transformer_parity(self, tp_mesh=mesh, ep_mesh=None, num_experts=4)

    @with_comms
    def test_tp_sequence_parallel_experts(self) -> None:
        mesh = self.build_device_mesh()
        check_transformer_parity(self, tp_mesh=mesh, ep_mesh=None, seq_parallel=True, num_experts=4)

    @with_comms
    def test_ep_with_sequence_parallel_is_refused(self) -> None:
        model = Transformer(tiny_args(num_experts=8))
        with self.assertRaisesRegex(NotImplementedError, "sequence parallel with expert parallel"):
            Transformer.parallelize(model, None, True, ep_mesh=self.build_device_mesh())

    @with_comms
    def test_ep(self) -> None:
        mesh = self.build_device_mesh()
        check_transformer_parity(self, tp_mesh=None, ep_mesh=mesh, num_experts=8)

    @with_comms
    def test_ep_tp(self) -> None:
        mesh = mesh_2d(self, (2, 4), ("ep", "tp"))
        check_transformer_parity(self, tp_mesh=mesh["tp"], ep_mesh=mesh["ep"], num_experts=4)

    @with_comms
    def test_mlp_plans(self) -> None:
        mesh = self.build_device_mesh()
        for name, plan in MLP_PLANS.items():
            with self.subTest(plan=name):
                check_mlp_parity(self, mesh, plan())


class ProcessParity(DTensorTestBase):
    """The same checks on 4 real rank processes (gloo): a handful, they are slow."""

    @property
    def world_size(self) -> int:
        return 4

    @with_comms
    def test_tp_sequence_parallel(self) -> None:
        check_transformer_parity(
            self, tp_mesh=self.build_device_mesh(), ep_mesh=None, seq_parallel=True
        )

    @with_comms
    def test_ep_tp_and_mlp(self) -> None:
        mesh = mesh_2d(self, (2, 2), ("ep", "tp"))
        check_transformer_parity(self, tp_mesh=mesh["tp"], ep_mesh=mesh["ep"], num_experts=4)
        for plan in MLP_PLANS.values():
            check_mlp_parity(self, self.build_device_mesh(), plan())


class ModelBasics(TestCase):
    def test_mlp_is_seeded_and_resettable(self) -> None:
        a, b = MLPModule("cpu"), MLPModule("cpu", bias=False)
        self.assertEqual(a.net1.weight, b.net1.weight)
        self.assertIsNone(b.net1.bias)
        before = a.net2.weight.detach().clone()
        a.reset_parameters()
        self.assertNotEqual(a.net2.weight, before)
        self.assertEqual(MLPStacked("cpu", n_layers=3)(torch.ones(2, 10)).shape, (2, 10))

    def test_rms_norm(self) -> None:
        x = torch.randn(3, 8)
        expected = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
        self.assertEqual(RMSNormPython(8)(x), expected)

    def test_attention_is_causal(self) -> None:
        torch.manual_seed(0)
        attn = Attention(tiny_args())
        x = torch.randn(1, 6, 16)
        y = x.clone()
        y[:, 4:] += 1.0  # changing later tokens must not change earlier outputs
        self.assertEqual(attn(x)[:, :4], attn(y)[:, :4])
        self.assertNotEqual(attn(x)[:, 4:], attn(y)[:, 4:])

    def test_bad_arguments_are_named(self) -> None:
        with self.assertRaisesRegex(ValueError, "multiple of n_heads"):
            Attention(ModelArgs(dim=10, n_heads=4))
        with self.assertRaisesRegex(ValueError, "tp_mesh, ep_mesh or both"):
            Transformer.parallelize(Transformer(tiny_args()), None, False)
        with self.assertRaisesRegex(ValueError, "exceeds max_seq_len"):
            Transformer(tiny_args())(torch.zeros(1, 17, dtype=torch.long))
