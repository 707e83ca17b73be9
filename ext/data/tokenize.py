"""Rendered rows -> token sequences the Trainer consumes, with prompt masking.

Per sample: ``[bos]`` (when add_special_tokens and the tokenizer adds one) + the text's tokens + ``eos`` (always,
unless the text already ends with it), so that the model learns to stop. Labels equal input_ids, except -100 on the
prompt tokens (train_on_prompt: false, or a response_template) and on padding.

- ``line-by-line``: one sequence per row, cut at max_seq_len (a cut sample loses its eos), padded to max_seq_len
  when pad_to_max_len. A row whose answer is cut away entirely (no token left carrying loss) is dropped and counted.
- ``join``: all samples back to back (each ends with eos, so eos separates them), cut into blocks of exactly
  max_seq_len tokens; the last, partial block is padded (labels -100, attention 0) rather than dropped. Prompt masks
  are kept per sample. Each block records the rows it holds.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from ..config.schema import PreProcessDataConfig
from ..errors import DataError
from .templates import Rendered, check_prompt_template, iter_rows, masking, render, text_source

if TYPE_CHECKING:  # pragma: no cover
    import datasets

IGNORE_INDEX = -100
Locate = Callable[[int], tuple[Optional[str], int]]  # a row's index -> (its file, when known; its 1-based row)


@dataclass
class Encoded:
    """One row's tokens before truncation or packing."""

    row: int
    input_ids: list[int]
    labels: list[int]
    text: str
    prompt_tokens: int = 0
    offsets: Optional[list[tuple[int, int]]] = None  # character span of each token in text ((0, 0): added token)

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class TokenSequence:
    input_ids: list[int]
    labels: list[int]
    attention_mask: list[int]
    rows: list[int]  # rows whose tokens it holds
    truncated: bool = False
    start: int = 0  # join: position of the block's first token in the packed stream


@dataclass
class TokenStats:
    rows: int = 0
    sequences: int = 0
    tokens: int = 0  # positions, padding included
    non_pad_tokens: int = 0
    loss_tokens: int = 0
    truncated_rows: int = 0
    dropped_rows: int = 0  # line-by-line rows with no token left carrying loss
    no_loss_blocks: int = 0  # join blocks of prompt tokens only (train_on_prompt: false), left out
    lengths: list[int] = field(default_factory=list)  # tokens per row before truncation (bos and eos included)

    def summary(self) -> dict[str, Any]:
        return {"rows": self.rows, "sequences": self.sequences, "tokens": self.tokens,
                "non_pad_tokens": self.non_pad_tokens, "loss_tokens": self.loss_tokens,
                "truncated_rows": self.truncated_rows, "dropped_rows": self.dropped_rows,
                "no_loss_blocks": self.no_loss_blocks, **length_summary(self.lengths)}


def length_summary(lengths: Sequence[int]) -> dict[str, Any]:
    if not lengths:
        return {"length_min": None, "length_median": None, "length_p95": None, "length_max": None}
    s = sorted(lengths)
    n = len(s)
    median = s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2
    p95 = s[min(n - 1, max(0, -(-95 * n // 100) - 1))]  # nearest-rank
    return {"length_min": s[0], "length_median": median, "length_p95": p95, "length_max": s[-1]}


def pad_id_of(tokenizer: Any) -> int:
    for name in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    return 0


def _given_row(index: int) -> tuple[Optional[str], int]:
    """Rows given as they are: the 1-based number among them."""
    return None, index + 1


def render_rows(rows: Any, pre: PreProcessDataConfig, tokenizer: Any = None,
                locate: Locate = _given_row) -> list[Rendered]:
    out = []
    for i, row in enumerate(iter_rows(rows)):
        try:
            out.append(render(row, pre, tokenizer))
        except DataError as e:
            raise row_error(e, *locate(i)) from None
    return out


def row_error(error: DataError, file: Optional[str], row: int) -> DataError:
    """The error of one row, placed at its file and 1-based row."""
    return DataError(error.message, file=file or error.file, row=row, column=error.column, hint=error.hint)


def encode(rendered: Sequence[Rendered], pre: PreProcessDataConfig, tokenizer: Any,
           rows: Optional[Sequence[int]] = None, *, with_offsets: bool = False,
           locate: Locate = _given_row) -> list[Encoded]:
    """Tokenize rendered samples (no truncation), add eos, and set -100 on prompt tokens when masking.

    rows: each sample's row index (default: its position), which `locate` turns into a file and row for errors."""
    if not rendered:
        return []
    rows = list(rows) if rows is not None else list(range(len(rendered)))
    mask = masking(pre)
    texts = [r.text for r in rendered]
    fast = bool(getattr(tokenizer, "is_fast", False))
    want_offsets = fast and (mask or with_offsets)
    all_ids, all_offsets = batch_encode(tokenizer, texts, pre.add_special_tokens, want_offsets)
    bos, eos = getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None)
    bos_text = getattr(tokenizer, "bos_token", None)
    out = []
    for k, (r, ids, offsets) in enumerate(zip(rendered, all_ids, all_offsets)):
        ids = list(ids)
        offsets = [tuple(o) for o in offsets] if offsets is not None else None
        if repeated_bos(ids, r.text, bos, bos_text):
            ids = ids[1:]
            offsets = offsets[1:] if offsets is not None else None
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
            if offsets is not None:
                offsets.append((0, 0))
        n_prompt = 0
        if mask:
            if r.prompt is None:
                raise row_error(_no_prompt(pre), *locate(rows[k]))
            n_prompt = _prompt_tokens(r, ids, offsets, pre, tokenizer)
        labels = [IGNORE_INDEX] * n_prompt + ids[n_prompt:]
        out.append(Encoded(rows[k], ids, labels, r.text, n_prompt, offsets if with_offsets else None))
    return out


def repeated_bos(ids: Sequence[int], text: str, bos: Optional[int], bos_text: Optional[str]) -> bool:
    """Whether ids start with two bos because the text writes its own (a chat template that does) and the tokenizer
    added another (add_special_tokens): training keeps one, and so does evaluation."""
    return bos is not None and bool(bos_text) and len(ids) > 1 and ids[0] == bos and ids[1] == bos and \
        text.startswith(bos_text)


def _no_prompt(pre: PreProcessDataConfig) -> DataError:
    if text_source(pre) == "chat":
        return DataError("train_on_prompt: false, but this conversation has no assistant message to train on",
                         hint="give every conversation an assistant answer, or remove the row")
    return DataError("train_on_prompt: false, but this sample has no prompt part to mask",
                     hint="use a text_template whose last field is the answer, or a response_template")


def batch_encode(tokenizer: Any, texts: list[str], add_special_tokens: bool, offsets: bool) -> tuple[list, list]:
    """(ids, offsets or None) per text, no truncation. A fast tokenizer's Rust backend is called directly (what
    tokenizer(...) does, minus converting every encoding to Python dicts: about twice as fast); the tokenizer's own
    __call__ is used whenever the backend carries settings of its own (truncation, padding)."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.truncation is None and backend.padding is None and \
            not getattr(tokenizer, "split_special_tokens", False):
        encodings = backend.encode_batch(texts, add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings], [e.offsets for e in encodings] if offsets else [None] * len(texts)
    batch = tokenizer(texts, add_special_tokens=add_special_tokens, truncation=False,
                      return_offsets_mapping=offsets, return_attention_mask=False, verbose=False)
    return batch["input_ids"], batch["offset_mapping"] if offsets else [None] * len(texts)


def _prompt_tokens(r: Rendered, ids: list[int], offsets, pre: PreProcessDataConfig, tokenizer: Any) -> int:
    plen = len(r.prompt)
    if offsets is not None:
        # a token belongs to the prompt while it ends inside the prompt; tokens added before the text (bos, with
        # offsets (0, 0)) too, but not those added after it (eos)
        seen_text = False
        for i, (start, end) in enumerate(offsets):
            if end > plen or (seen_text and start == end == 0):
                return i
            seen_text = seen_text or end > 0
        return len(offsets)
    prompt_ids = tokenizer(r.prompt, add_special_tokens=pre.add_special_tokens, truncation=False)["input_ids"]
    return min(len(prompt_ids), len(ids))


def line_by_line(encoded: Sequence[Encoded], pre: PreProcessDataConfig, pad_id: int,
                 stats: Optional[TokenStats] = None) -> list[TokenSequence]:
    max_len = pre.max_seq_len
    out = []
    for e in encoded:
        ids, labels = e.input_ids[:max_len], e.labels[:max_len]
        truncated = len(e.input_ids) > max_len
        if stats is not None:
            stats.rows += 1
            stats.lengths.append(len(e.input_ids))
            stats.truncated_rows += truncated
        if masking(pre) and all(x == IGNORE_INDEX for x in labels):
            if stats is not None:
                stats.dropped_rows += 1
            continue
        attention = [1] * len(ids)
        if pre.pad_to_max_len and len(ids) < max_len:
            k = max_len - len(ids)
            ids, labels, attention = ids + [pad_id] * k, labels + [IGNORE_INDEX] * k, attention + [0] * k
        out.append(TokenSequence(ids, labels, attention, [e.row], truncated))
    return out


def join(encoded: Sequence[Encoded], pre: PreProcessDataConfig, pad_id: int,
         stats: Optional[TokenStats] = None) -> list[TokenSequence]:
    max_len = pre.max_seq_len
    ids: list[int] = []
    labels: list[int] = []
    starts: list[int] = []
    for e in encoded:
        starts.append(len(ids))
        ids.extend(e.input_ids)
        labels.extend(e.labels)
        if stats is not None:
            stats.rows += 1
            stats.lengths.append(len(e.input_ids))
    blocks = []
    for start in range(0, len(ids), max_len):
        block_ids, block_labels = ids[start:start + max_len], labels[start:start + max_len]
        if masking(pre) and all(x == IGNORE_INDEX for x in block_labels):
            # nothing to learn from: a step on it would still move the weights (AdamW's moments, weight decay)
            if stats is not None:
                stats.no_loss_blocks += 1
            continue
        attention = [1] * len(block_ids)
        if len(block_ids) < max_len:
            k = max_len - len(block_ids)
            block_ids, block_labels = block_ids + [pad_id] * k, block_labels + [IGNORE_INDEX] * k
            attention += [0] * k
        first = bisect.bisect_right(starts, start) - 1
        last = bisect.bisect_left(starts, min(start + max_len, len(ids))) - 1
        block_rows = [encoded[j].row for j in range(max(first, 0), last + 1)]
        blocks.append(TokenSequence(block_ids, block_labels, attention, block_rows, False, start))
    return blocks


def sequences(encoded: Sequence[Encoded], pre: PreProcessDataConfig, tokenizer: Any,
              stats: Optional[TokenStats] = None) -> list[TokenSequence]:
    pad_id = pad_id_of(tokenizer)
    build = join if pre.strategy == "join" else line_by_line
    seqs = build(encoded, pre, pad_id, stats)
    if stats is not None:
        stats.sequences += len(seqs)
        for s in seqs:
            stats.tokens += len(s.input_ids)
            stats.non_pad_tokens += sum(s.attention_mask)
            stats.loss_tokens += sum(1 for x in s.labels if x != IGNORE_INDEX)
    return seqs


def tokenize_with_stats(rows: Any, pre: PreProcessDataConfig, tokenizer: Any, *, keep_row_ids: bool = False,
                        locate: Locate = _given_row, role: str = "training set", data_config: Optional[str] = None) \
        -> tuple["datasets.Dataset", TokenStats]:
    """tokenize's dataset, and the numbers. An error names its row through `locate` (row index -> file and row),
    or the rows by their role and data config."""
    check_prompt_template(pre)
    rendered = render_rows(rows, pre, tokenizer, locate)
    stats = TokenStats()
    seqs = sequences(encode(rendered, pre, tokenizer, locate=locate), pre, tokenizer, stats)
    if not seqs:
        of = f" of data config {data_config!r}" if data_config else ""
        if stats.dropped_rows:
            raise DataError(f"the {role}{of} has no sequence left: every row lost its answer to truncation at "
                            f"max_seq_len {pre.max_seq_len}", hint=f"raise max_seq_len{of}")
        raise DataError(f"the {role}{of} has no rows to tokenize")
    return to_dataset(seqs, pre, keep_row_ids=keep_row_ids), stats


def to_dataset(seqs: Sequence[TokenSequence], pre: PreProcessDataConfig, *, keep_row_ids: bool = False):
    import datasets

    columns: dict[str, list] = {"input_ids": [s.input_ids for s in seqs]}
    if pre.use_attention_mask:
        columns["attention_mask"] = [s.attention_mask for s in seqs]
    columns["labels"] = [s.labels for s in seqs]
    if keep_row_ids:
        columns["row_ids"] = [s.rows for s in seqs]
    return datasets.Dataset.from_dict(columns)


def tokenize(rows: Any, pre: PreProcessDataConfig, tokenizer: Any, *, keep_row_ids: bool = False) \
        -> "datasets.Dataset":
    """Rows -> a datasets.Dataset with input_ids, attention_mask (when use_attention_mask) and labels.

    keep_row_ids adds a ``row_ids`` column (the rows each sequence holds): for inspection, not for the Trainer.
    """
    return tokenize_with_stats(rows, pre, tokenizer, keep_row_ids=keep_row_ids)[0]
