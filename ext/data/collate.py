"""A batch collator for tokenize()'s sequences: right-pads input_ids (pad id), attention_mask (0), labels (-100)."""
from __future__ import annotations

from typing import Any, Optional

from .tokenize import IGNORE_INDEX

MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")


class Collator:
    """Use as the Trainer's data_collator. Extra columns (row_ids) are dropped. pad_to_multiple_of rounds lengths
    up (8 suits tensor cores)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: Optional[int] = None):
        self.pad_id, self.multiple = pad_id, pad_to_multiple_of
        self.tokens = 0  # real (non-pad) tokens collated so far: the training throughput counts these

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, pad_to_multiple_of: Optional[int] = None) -> "Collator":
        from .tokenize import pad_id_of
        return cls(pad_id_of(tokenizer), pad_to_multiple_of)

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            width = -(-width // self.multiple) * self.multiple
        pad = {"input_ids": self.pad_id, "attention_mask": 0, "labels": IGNORE_INDEX}
        self.tokens += sum(sum(f["attention_mask"]) if "attention_mask" in f else len(f["input_ids"]) for f in features)
        batch = {}
        for name in MODEL_COLUMNS:
            if name not in features[0]:
                continue
            batch[name] = torch.tensor([list(f[name]) + [pad[name]] * (width - len(f[name])) for f in features],
                                       dtype=torch.long)
        return batch
