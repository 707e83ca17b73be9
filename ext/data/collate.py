"""Batch collators for tokenize()'s sequences.

The default batch right-pads input_ids (pad id), attention_mask (0) and labels (-100) to the longest sequence. Two
layouts give the same loss and gradients with less work, for models that support them (``for_model`` checks):

- ``packed``: the batch's sequences back to back in one row, padding dropped, with position_ids that restart at 0
  for each sequence and no attention mask; transformers then masks attention to each sequence (its packed-sequence
  detection) and rotary positions restart, so each sequence sees exactly what it saw padded. The first label of each
  sequence is -100: in a padded batch no token predicts a row's first token either.
- ``loss_positions_only``: ``logits_to_keep`` (a boolean mask of the positions whose next token carries loss) and
  ``shift_labels`` (those targets): the lm_head and the cross-entropy run on those positions only. With prompt
  masking that is a few tokens a row instead of all of them, and the lm_head is the largest matmul of a small model.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

from .tokenize import IGNORE_INDEX

MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")


class Collator:
    """Use as the Trainer's data_collator. Extra columns (row_ids) are dropped. pad_to_multiple_of rounds lengths
    up (8 suits tensor cores)."""

    def __init__(self, pad_id: int, pad_to_multiple_of: Optional[int] = None, *, packed: bool = False,
                 loss_positions_only: bool = False):
        self.pad_id, self.multiple = pad_id, pad_to_multiple_of
        self.packed, self.loss_positions_only = packed, loss_positions_only
        self.tokens = 0  # real (non-pad) tokens collated so far: the training throughput counts these

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, pad_to_multiple_of: Optional[int] = None, **layout: bool) -> "Collator":
        from .tokenize import pad_id_of
        return cls(pad_id_of(tokenizer), pad_to_multiple_of, **layout)

    @property
    def layout(self) -> str:
        return "+".join([("packed" if self.packed else "padded")] +
                        (["loss positions only"] if self.loss_positions_only else []))

    def __call__(self, features: list[dict]) -> dict:
        batch = self._packed(features) if self.packed else self._padded(features)
        if self.loss_positions_only and "labels" in batch:
            import torch

            labels = batch["labels"]
            shift = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
            keep = shift != IGNORE_INDEX
            batch["logits_to_keep"] = keep
            batch["shift_labels"] = shift[keep]
        return batch

    def _padded(self, features: list[dict]) -> dict:
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

    def _packed(self, features: list[dict]) -> dict:
        import torch

        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for f in features:
            # tokenize() pads on the right only (pad_to_max_len, join's last block): keep the real tokens
            n = sum(f["attention_mask"]) if "attention_mask" in f else len(f["input_ids"])
            if n == 0:
                continue
            ids.extend(f["input_ids"][:n])
            row_labels = list(f["labels"][:n]) if "labels" in f else list(f["input_ids"][:n])
            row_labels[0] = IGNORE_INDEX
            labels.extend(row_labels)
            positions.extend(range(n))
        self.tokens += len(ids)
        if self.multiple and len(ids) % self.multiple:
            k = self.multiple - len(ids) % self.multiple  # a padding segment of its own, carrying no loss
            ids.extend([self.pad_id] * k)
            labels.extend([IGNORE_INDEX] * k)
            positions.extend(range(k))
        batch = {"input_ids": torch.tensor([ids], dtype=torch.long),
                 "position_ids": torch.tensor([positions], dtype=torch.long)}
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([labels], dtype=torch.long)
        return batch


def for_model(model: Any, tokenizer: Any, sample: Sequence[dict], pad_to_multiple_of: Optional[int] = None, *,
              allow_packing: bool = True, rtol: float = 1e-3) -> Collator:
    """The cheapest batch layout that gives ``model`` the loss of padded batches, checked on ``sample`` (a few
    training sequences): packed + loss positions only, then loss positions only, then packed, else padded.

    A model whose attention ignores position_ids-based packing, or whose forward takes no logits_to_keep or
    shift_labels, fails the check (a different loss, or an error) and gets the padded layout. ``allow_packing``
    must be False when the model keeps a KV cache in training (use_cache), which disables packed-sequence masking.
    """
    import torch

    from .tokenize import pad_id_of

    pad_id = pad_id_of(tokenizer)
    reference = Collator(pad_id, pad_to_multiple_of)
    sample = [f for f in sample][:4]
    if len(sample) < 2 or "labels" not in sample[0]:
        return reference
    candidates = [(True, True), (False, True), (True, False)] if allow_packing else [(False, True)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()

    def loss(collator: Collator) -> torch.Tensor:
        batch = {k: v.to(device) for k, v in collator(sample).items()}
        return model(**batch, use_cache=False).loss.float()

    try:
        with torch.no_grad():
            expected = loss(Collator(pad_id, pad_to_multiple_of))
            if not torch.isfinite(expected):
                return reference
            for packed, positions_only in candidates:
                try:
                    got = loss(Collator(pad_id, pad_to_multiple_of, packed=packed, loss_positions_only=positions_only))
                except Exception:  # noqa: BLE001 - a model that does not take these inputs: try the next layout
                    continue
                if torch.allclose(got, expected, rtol=rtol, atol=1e-5):
                    return Collator(pad_id, pad_to_multiple_of, packed=packed, loss_positions_only=positions_only)
    finally:
        model.train(was_training)
    return reference
