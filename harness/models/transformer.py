"""A toy decoder-only transformer (nanoGPT-like) for parallelism parity tests.

Attribute names (``tok_embeddings``, ``layers[i].attention.wq``, ``output``...)
are part of the API: parallelize plans address modules by these names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.models.experts import ExpertLayer
from harness.models.plans import parallelize_transformer


@dataclass
class ModelArgs:
    """Sizes and switches of :class:`Transformer`; ``num_experts > 0`` swaps the
    feed-forward for an :class:`ExpertLayer`. Set ``dropout_p=0`` for parity tests."""

    n_layers: int = 2
    vocab_size: int = 8
    max_seq_len: int = 16
    dim: int = 16
    n_heads: int = 4
    dropout_p: float = 0.1
    use_attn_mask: bool = True
    weight_tying: bool = True
    checkpoint_activations: bool = False
    num_experts: int = 0


class Attention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention``.

    ``use_attn_mask`` makes it causal. ``n_heads`` is an attribute, not a
    constant: tensor parallel with local outputs lowers it to the per-rank count.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.dim % args.n_heads:
            raise ValueError(f"dim ({args.dim}) must be a multiple of n_heads ({args.n_heads})")
        self.n_heads = args.n_heads
        self.head_dim = args.dim // args.n_heads
        self.dropout_p = args.dropout_p
        self.use_attn_mask = args.use_attn_mask
        self.resid_dropout = nn.Dropout(args.dropout_p)
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.dim, bias=False)
        self.wv = nn.Linear(args.dim, args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)

    def _heads(self, t: torch.Tensor, batch: int, seq: int) -> torch.Tensor:
        # (batch, seq, heads * head_dim) -> (batch, heads, seq, head_dim)
        return t.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.size()
        q, k, v = (self._heads(proj(x), batch, seq) for proj in (self.wq, self.wk, self.wv))
        attn = F.scaled_dot_product_attention(
            q,
            k,
            v,
            None,
            self.dropout_p if self.training else 0.0,
            self.use_attn_mask,
        )
        merged = attn.transpose(1, 2).reshape(batch, seq, -1)
        return self.resid_dropout(self.wo(merged))


class FeedForward(nn.Module):
    """Linear -> GELU -> Linear -> dropout."""

    def __init__(self, dim: int, hidden_dim: int, dropout_p: float):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden_dim)
        self.gelu = nn.GELU()
        self.w2 = nn.Linear(hidden_dim, dim)
        self.resid_dropout = nn.Dropout(dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resid_dropout(self.w2(self.gelu(self.w1(x))))


class TransformerBlock(nn.Module):
    """Pre-norm block: attention then feed-forward (or experts), both residual."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = nn.LayerNorm(args.dim)
        self.attention = Attention(args)
        self.ffn_norm = nn.LayerNorm(args.dim)
        self.has_experts = args.num_experts > 0
        if self.has_experts:
            self.expert_layer = ExpertLayer(args.num_experts, dim=args.dim, hidden_dim=4 * args.dim)
        else:
            self.feed_forward = FeedForward(args.dim, 4 * args.dim, args.dropout_p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x))
        mlp = self.expert_layer if self.has_experts else self.feed_forward
        return h + mlp(self.ffn_norm(h))


class Transformer(nn.Module):
    """Token and position embeddings, ``n_layers`` blocks, a norm and a vocab head.

    With ``weight_tying`` the head shares its weight with ``tok_embeddings``;
    :meth:`parallelize` keeps them shared. Returns float32 logits.
    """

    def __init__(self, args: ModelArgs):
        super().__init__()
        if args.vocab_size is None or args.max_seq_len is None:
            raise ValueError("ModelArgs.vocab_size and ModelArgs.max_seq_len must be set")
        self.model_args = args
        self.max_seq_len = args.max_seq_len
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.pos_embeddings = nn.Embedding(args.max_seq_len, args.dim)
        self.dropout = nn.Dropout(args.dropout_p)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = nn.LayerNorm(args.dim)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        if args.weight_tying:
            self.output.weight = self.tok_embeddings.weight
        self.checkpoint_activations = args.checkpoint_activations

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        _, seq = tokens.size()
        if seq > self.max_seq_len:
            raise ValueError(f"sequence length {seq} exceeds max_seq_len {self.max_seq_len}")
        positions = torch.arange(seq, device=tokens.device)
        h = self.dropout(self.tok_embeddings(tokens) + self.pos_embeddings(positions))
        for layer in self.layers:
            if self.checkpoint_activations:
                h = checkpoint(layer, h, use_reentrant=False)
            else:
                h = layer(h)
        return self.output(self.norm(h)).float()

    @staticmethod
    def parallelize(
        module: Transformer,
        tp_mesh,
        use_seq_parallel: bool,
        local_output_for_attn: bool = False,
        ep_mesh=None,
    ) -> nn.Module:
        """Apply TP (optionally with sequence parallel) and/or EP in place.

        ``tp_mesh`` and ``ep_mesh`` are 1-D meshes; give either or both (for EP
        with TP, two dims of one 2-D mesh). ``local_output_for_attn`` computes
        attention on local head shards (plain tensors), needed where the fused
        attention op has no DTensor strategy (CPU in torch 2.13).
        """
        if not isinstance(module, Transformer):
            raise TypeError(
                f"Transformer.parallelize needs a Transformer, got {type(module).__name__}"
            )
        return parallelize_transformer(
            module,
            tp_mesh,
            use_seq_parallel,
            local_output_for_attn=local_output_for_attn,
            ep_mesh=ep_mesh,
        )
