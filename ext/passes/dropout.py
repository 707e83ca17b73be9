"""LoRA dropout for models trained on the CPU, drawing its mask from 16 random bits per element.

peft applies nn.Dropout to each LoRA layer's input. On the CPU, torch's Bernoulli sampling draws one Mersenne
Twister number per element and was 9% of a SmolLM2 training step; the step took 0.91 s with it and 0.86 s with
this module (bench/README.md, change 7). Same distribution up to the drop probability's rounding to 1/65536,
the same inverted scaling, and the same torch generator, so `transformers.set_seed` and Trainer's checkpointed
RNG state make runs reproducible and resumable as before. On a GPU, torch's own dropout is already cheap.
"""
from __future__ import annotations

from typing import Any, Optional

import torch

RESOLUTION = 1 << 16


class BitsDropout(torch.nn.Module):
    """Zeroes each element with probability ``p`` (rounded to a multiple of 1/65536) and scales the rest by
    1/(1 - p) in training; the identity in eval mode."""

    def __init__(self, p: float):
        super().__init__()
        self.drops = round(p * RESOLUTION)  # how many of the 65536 values of a 16-bit draw drop an element
        self.p = self.drops / RESOLUTION
        self.scale = 1.0 / (1.0 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = self.dropped(x)
        # a masked fill: multiplying by the boolean mask would first copy it to floats
        return x if dropped is None else x.masked_fill(dropped, 0) * self.scale

    def dropped(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        """A boolean mask of x's shape, True where an element is dropped (probability ``p``); None when nothing is
        dropped (eval mode, or p = 0)."""
        if not self.training or self.drops == 0:
            return None
        n = x.numel()
        # four signed 16-bit draws from each random int64, uniform over [-32768, 32767]
        words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64, device=x.device)
        return words.view(torch.int16)[:n].view(x.shape) < self.drops - RESOLUTION // 2

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_bits_dropout(model: Any) -> int:
    """Swap the nn.Dropout of every LoRA layer of a peft model on the CPU for BitsDropout; returns how many."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, torch.nn.ModuleDict):
            continue
        weight = next(module.parameters(), None)
        if weight is None or weight.device.type != "cpu":
            continue
        for name, dropout in dropouts.items():
            if type(dropout) is torch.nn.Dropout:
                dropouts[name] = BitsDropout(dropout.p)
                swapped += 1
    return swapped
