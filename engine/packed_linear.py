"""Float32 linear layers through oneDNN, their weights packed once: faster decoding on a CPU.

PyTorch's `F.linear` on a CPU calls MKL's sgemm, which runs the shapes of decoding (a few rows of
activations against a weight matrix) well below what the machine can do. oneDNN, also inside
PyTorch, runs them faster once a weight is reordered into its blocked layout, and PyTorch's
compiler does exactly that when it freezes a model for CPU inference (`_reorder_linear_weight`,
then `_linear_pointwise`). `pack_linears` does the same for an eager model, without compiling.

Measured on this project's 2-core AMD EPYC machines (AVX-512), float32, 16 rows: a 1536 x 576
projection 150 vs 251 us, the 49,152 x 576 output head 5.3 vs 18 ms; one row: 45 vs 77 us and 2.9
vs 9.4 ms. A row's result is the same whatever the number of rows computed with it, from 2 up
(MKL: from 8 up), and alone too where a layer's output is at least as wide as its input; so a
reply depends less on what it is batched with. Results differ from MKL's in the last bits
(summation order), as any two BLAS do.

The packed copy replaces the dense weight, except where another module shares it (an output head
tied to the input embeddings). Loaded weights are mapped from the checkpoint's file, so a dropped
one leaves clean pages the kernel reclaims once nothing reads them; what the packing adds is its
copies: 520 MB of anonymous memory for the default 135M model in float32, 250 MB with NF4 weights
(where only the output head is float32). A packed layer computes for inference only: with
gradients on, it computes densely again (`to_dense`), and its input gets gradients; its weight,
frozen for serving, gets none.
"""

from __future__ import annotations

import logging
import types
from typing import Any

log = logging.getLogger(__name__)

# The row count oneDNN packs for. From 16 up, a row alone scores as in a batch (but in the MLP's down
# projection); packed for 1, it does in no layer (measured).
_ROWS_HINT = 64
# Narrower layers (a LoRA adapter's, rank 8-32) stay on MKL: oneDNN's fixed cost of about 15 us a
# call outweighs its gain there (576 -> 16 with 16 rows: 18 vs 10 us).
_MIN_WIDTH = 64


def pack_linears(model: Any) -> int:
    """Route `model`'s float32 CPU `nn.Linear` layers through oneDNN with packed weights; how many.

    Quantized layers (bitsandbytes' subclasses of `nn.Linear`), narrow ones, and layers on other
    devices or in other dtypes are left as they are; so is everything when this PyTorch has no oneDNN."""
    import torch

    if not _available():
        log.info("oneDNN linear is not available in this PyTorch: linear layers use its default path")
        return 0
    shared = _shared_weights(model)
    packed = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or weight is None or weight.device.type != "cpu" \
                or weight.dtype != torch.float32 or min(weight.shape) < _MIN_WIDTH or hasattr(module, "_onednn_weight"):
            continue
        with torch.no_grad():
            module._onednn_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), _ROWS_HINT)
        if id(weight) not in shared:  # the packed copy is the weight now
            module.weight = torch.nn.Parameter(weight.new_empty(0), requires_grad=False)
        module.forward = types.MethodType(_packed_forward, module)
        packed += 1
    return packed


def _available() -> bool:
    import torch

    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") \
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _shared_weights(model: Any) -> set[int]:
    """The ids of parameters that more than one module holds (tied embeddings)."""
    seen: set[int] = set()
    shared: set[int] = set()
    for _, parameter in model.named_parameters(remove_duplicate=False):
        (shared if id(parameter) in seen else seen).add(id(parameter))
    return shared


def _packed_forward(self: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F

    if torch.is_grad_enabled() or x.dtype != torch.float32 or x.device.type != "cpu":
        weight = self.weight if self.weight.numel() else self._onednn_weight.to_dense()
        return F.linear(x, weight, self.bias)
    return torch.ops.mkldnn._linear_pointwise(x, self._onednn_weight, self.bias, "none", [], "")
