"""peft's LoRA linear layer with its training arithmetic in one autograd function, for models trained on the CPU.

peft computes ``W x + B(A(dropout(x))) * scaling``: the dropout mask and the scaling are elementwise passes over
[tokens, features] tensors, forward and backward, and on the CPU each mask multiply first casts the boolean mask
to floats. Here the dropout is a masked fill, the scaling is applied to the rank-r product ``A x`` (r columns
instead of the layer's width), and the backward is five matmuls written out, with no gradient for the frozen
weight. Same dropout draws as BitsDropout (same generator, same call order), so runs stay seedable and
resumable. Layers that use anything else peft offers (DoRA and other variants, several active adapters,
lora_bias, a merged or disabled adapter, extra forward arguments, autocast, hooks on the base layer) run peft's
own forward.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners.lora.layer import Linear

from .dropout import BitsDropout


class _LoRAMatmuls(torch.autograd.Function):
    """y = x Wᵀ + b + scale · (mask(x) Aᵀ) Bᵀ, with W and b frozen; ``dropped`` marks the inputs LoRA drops."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scale: float, dropped: Optional[torch.Tensor]):
        rows = kept = x.reshape(-1, x.shape[-1])
        if dropped is not None:
            dropped = dropped.view(rows.shape)
            kept = rows.masked_fill(dropped, 0)
        low_rank = torch.mm(kept, lora_a.t()).mul_(scale)
        y = torch.mm(rows, weight.t()) if bias is None else torch.addmm(bias, rows, weight.t())
        y.addmm_(low_rank, lora_b.t())
        ctx.save_for_backward(kept, low_rank, weight, lora_a, lora_b, dropped)
        ctx.scale, ctx.input_shape = scale, x.shape
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    def backward(ctx, grad_y):
        kept, low_rank, weight, lora_a, lora_b, dropped = ctx.saved_tensors
        grad_rows = grad_y.reshape(-1, grad_y.shape[-1])
        grad_low_rank = torch.mm(grad_rows, lora_b).mul_(ctx.scale)
        grad_x = grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(grad_low_rank, lora_a)
            if dropped is not None:
                grad_x.masked_fill_(dropped, 0)
            grad_x = grad_x.addmm_(grad_rows, weight).view(ctx.input_shape)
        if ctx.needs_input_grad[3]:
            grad_a = torch.mm(grad_low_rank.t(), kept)
        if ctx.needs_input_grad[4]:
            grad_b = torch.mm(grad_rows.t(), low_rank)
        return grad_x, None, None, grad_a, grad_b, None, None


class MatmulLoRALinear(Linear):
    """A peft ``lora.Linear`` whose plain case (one vanilla adapter, a frozen nn.Linear, one dtype throughout) runs
    as ``_LoRAMatmuls``; it saves, loads and merges as peft's layer does."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        adapter = self._plain_adapter(x, args, kwargs)
        if adapter is None:
            return super().forward(x, *args, **kwargs)
        base, lora_a, lora_b = self.base_layer, self.lora_A[adapter].weight, self.lora_B[adapter].weight
        dropout = self.lora_dropout[adapter]
        dropped = dropout.dropped(x) if isinstance(dropout, BitsDropout) else None
        scale = self.scaling[adapter] * (dropout.scale if dropped is not None else 1.0)
        return _LoRAMatmuls.apply(x, base.weight, base.bias, lora_a, lora_b, scale, dropped)

    def _plain_adapter(self, x: torch.Tensor, args: tuple, kwargs: dict) -> Optional[str]:
        """The one active adapter's name when this forward is the plain case, else None."""
        if args or kwargs or self.disable_adapters or self.merged or len(self.active_adapters) != 1:
            return None
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: peft's forward lets autocast cast each op
            return None
        adapter = self.active_adapters[0]
        if adapter not in self.lora_A or adapter in self.lora_variant or self.lora_B[adapter].bias is not None:
            return None
        base = self.base_layer
        trains_base = base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad)
        if type(base) is not torch.nn.Linear or trains_base or self.fan_in_fan_out:
            return None
        if base._forward_hooks or base._forward_pre_hooks or hasattr(base, "_hf_hook"):  # the fused path skips them
            return None
        if not isinstance(self.lora_dropout[adapter], (BitsDropout, torch.nn.Identity)):
            return None
        dtypes = {x.dtype, base.weight.dtype, self.lora_A[adapter].weight.dtype, self.lora_B[adapter].weight.dtype}
        return adapter if len(dtypes) == 1 else None


def use_matmul_lora(model: Any) -> int:
    """Make every peft ``lora.Linear`` of ``model`` on the CPU a MatmulLoRALinear; returns how many."""
    swapped = 0
    for module in model.modules():
        if type(module) is Linear and module.base_layer.weight.device.type == "cpu":
            module.__class__ = MatmulLoRALinear
            swapped += 1
    return swapped
