"""How :meth:`Transformer.parallelize` shards the model: one plan per module level."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import Replicate, Shard
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    ParallelStyle,
    PrepareModuleInput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from harness.models.experts import ExpertParallel, ExpertParallelWithTP, TensorParallelForExpert

if TYPE_CHECKING:  # the model calls its plans, never the other way (.importlinter)
    from harness.models.transformer import Transformer, TransformerBlock

# With sequence parallel the residual stream is sharded on the sequence dim
# (dim 1 of (batch, seq, dim)) between blocks; without it, replicated.
_SEQ = Shard(1)


def root_plan(seq_parallel: bool) -> dict[str, ParallelStyle]:
    """Embeddings are row-sharded on vocab/positions; outputs land on the stream layout."""
    if seq_parallel:
        return {
            "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=_SEQ),
            # position embeddings are (seq, dim): the sequence is dim 0 there
            "pos_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Shard(0)),
            "norm": SequenceParallel(),
        }
    return {
        "tok_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
        "pos_embeddings": RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
    }


def block_plan(
    block: TransformerBlock, seq_parallel: bool, local_attn: bool, experts_by_tp: bool
) -> dict[str, ParallelStyle]:
    """Megatron-style: q/k/v and w1 column-sharded, wo and w2 row-sharded."""
    plan: dict[str, ParallelStyle] = {}
    if seq_parallel:
        plan["attention_norm"] = SequenceParallel()
        plan["ffn_norm"] = SequenceParallel()
        plan["attention"] = PrepareModuleInput(
            input_layouts=_SEQ, desired_input_layouts=Replicate()
        )
    for name in ("wq", "wk", "wv"):
        plan[f"attention.{name}"] = ColwiseParallel(use_local_output=local_attn)
    plan["attention.wo"] = (
        RowwiseParallel(output_layouts=_SEQ) if seq_parallel else RowwiseParallel()
    )
    if not block.has_experts:
        if seq_parallel:
            plan["feed_forward.w1"] = ColwiseParallel(input_layouts=_SEQ)
            plan["feed_forward.w2"] = RowwiseParallel(output_layouts=_SEQ)
        else:
            plan["feed_forward.w1"] = ColwiseParallel()
            plan["feed_forward.w2"] = RowwiseParallel()
    elif experts_by_tp and seq_parallel:
        # The expert layer works on plain tensors: hand it this rank's sequence
        # slice; Experts all-gather the tokens and reduce-scatter them back.
        plan["expert_layer"] = PrepareModuleInput(
            input_layouts=_SEQ, desired_input_layouts=_SEQ, use_local_output=True
        )
        plan["expert_layer.experts"] = TensorParallelForExpert(
            input_layouts=Shard(0), output_layouts=Shard(0)
        )
    elif experts_by_tp:
        plan["expert_layer.experts"] = TensorParallelForExpert()
    return plan


def parallelize_transformer(
    module: Transformer,
    tp_mesh: DeviceMesh | None,
    use_seq_parallel: bool,
    *,
    local_output_for_attn: bool = False,
    ep_mesh: DeviceMesh | None = None,
) -> nn.Module:
    """The body of :meth:`Transformer.parallelize`."""
    if tp_mesh is None and ep_mesh is None:
        raise ValueError("Transformer.parallelize needs tp_mesh, ep_mesh or both")
    if ep_mesh is not None and use_seq_parallel and module.model_args.num_experts > 0:
        raise NotImplementedError(
            "Transformer.parallelize: sequence parallel with expert parallel is not "
            "supported; use use_seq_parallel=False with ep_mesh, or TP+SP without ep_mesh"
        )

    if tp_mesh is not None:
        parallelize_module(module, tp_mesh, root_plan(use_seq_parallel))
    for block in module.layers:
        if tp_mesh is not None:
            plan = block_plan(
                block, use_seq_parallel, local_output_for_attn, experts_by_tp=ep_mesh is None
            )
            parallelize_module(block, tp_mesh, plan)
        if ep_mesh is not None and block.has_experts:
            if tp_mesh is None:
                parallelize_module(block.expert_layer.experts, ep_mesh, ExpertParallel())
            else:
                parallelize_module(
                    block.expert_layer, ep_mesh, ExpertParallelWithTP(ep_mesh, tp_mesh)
                )

    if tp_mesh is not None:
        # The head is column-sharded on vocab, like the (tied) embedding's rows,
        # so one sharded weight serves both.
        head = (
            ColwiseParallel(input_layouts=_SEQ, output_layouts=Replicate())
            if use_seq_parallel
            else ColwiseParallel(output_layouts=Replicate())
        )
        parallelize_module(module.output, tp_mesh, head)
        if local_output_for_attn:
            for block in module.layers:
                block.attention.n_heads = module.model_args.n_heads // tp_mesh.size()
        if module.model_args.weight_tying:
            module.output.weight = module.tok_embeddings.weight
    return module
