"""Reference models for DTensor tests, with the same names and signatures as
PyTorch's private test helpers, so a test moves over by changing its import."""

from harness.models.experts import (
    ExpertLayer,
    ExpertParallel,
    ExpertParallelWithTP,
    Experts,
    TensorParallelForExpert,
)
from harness.models.mlp import MLPModule, MLPStacked, RMSNormPython
from harness.models.transformer import (
    Attention,
    FeedForward,
    ModelArgs,
    Transformer,
    TransformerBlock,
)

__all__ = [
    "Attention",
    "ExpertLayer",
    "ExpertParallel",
    "ExpertParallelWithTP",
    "Experts",
    "FeedForward",
    "MLPModule",
    "MLPStacked",
    "ModelArgs",
    "RMSNormPython",
    "TensorParallelForExpert",
    "Transformer",
    "TransformerBlock",
]
