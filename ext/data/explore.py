"""What the preview shows, computed lazily: one sample's tokens, one packed block, and stats over a sample of rows.

Nothing here tokenizes the whole dataset to show one page: a sample is encoded when it is asked for, join blocks are
packed as far as the page asked for, and the length stats come from a seeded random sample of rows (say so in the
UI: ``stats.sampled`` and ``stats.exact``). Asking for the longest row encodes every row once (then stats are exact).
The numbers follow the same functions as build_training_data, so the preview shows what training will see.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..config.schema import DataConfig, PreProcessDataConfig
from ..errors import DataError
from .loading import check_table, label_column_of, load_located, load_table
from .split import split_indices
from .templates import check_prompt_template, masking, render
from .tokenize import IGNORE_INDEX, Encoded, encode, length_summary, pad_id_of, row_error

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

CHUNK = 256  # rows encoded at a time for a page
BULK = 4096  # rows encoded at a time for whole-dataset numbers


@dataclass
class TokenView:
    id: int
    text: str  # the token as text (decoded on its own)
    loss: bool  # its label is not -100
    special: bool = False
    pad: bool = False
    beyond: bool = False  # cut away by max_seq_len
    row: Optional[int] = None  # join blocks: the row it comes from
    row_start: bool = False  # join blocks: the first token of a row


@dataclass
class SampleView:
    index: int  # position among the loaded rows (after shuffle and max_samples)
    split: str  # "train" or "eval"
    row: dict
    text: str
    prompt: Optional[str]
    tokens: list[TokenView]
    cut_at: Optional[int]  # line-by-line: tokens from here on are cut by max_seq_len
    loss_tokens: int
    dropped: bool = False  # line-by-line: truncation leaves no token carrying loss, so training drops the row
    blocks: Optional[list[int]] = None  # join: blocks holding this row, when known

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


@dataclass
class BlockView:
    index: int
    tokens: list[TokenView]
    rows: list[int]
    padded: int  # pad tokens at the end (the last block)
    loss_tokens: int
    trained: bool = True  # False: prompt tokens only with train_on_prompt false, so training leaves it out


@dataclass
class StatsView:
    rows: int
    train_rows: int
    eval_rows: Optional[int]
    eval_source: Optional[str]
    strategy: str
    max_seq_len: int
    sampled: int  # rows tokenized for the length numbers
    exact: bool  # every row was tokenized
    lengths: dict[str, Any]
    truncated: int  # rows (of the sampled) longer than max_seq_len
    dropped: int  # line-by-line rows (of the sampled) left with no loss token after truncation
    loss_fraction: Optional[float]  # loss-carrying tokens / tokens, over the sampled rows
    sequences: Optional[int]  # line-by-line: rows trained on; join: blocks trained on (estimated unless exact)
    histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (low, high, count) of lengths
    label_column: Optional[str] = None
    label_counts: list[tuple[str, int]] = field(default_factory=list)  # exact, over all loaded rows
    no_loss_blocks: int = 0  # join: blocks of prompt tokens only, which training leaves out (estimated unless exact)


class DataExplorer:
    """Lazy views over one data config with one tokenizer. Change settings with ``update()``."""

    def __init__(self, data_config: DataConfig, tokenizer: Any, *, base_dir: Optional[Union[str, Path]] = None,
                 eval_dataset_size: Optional[float] = None, eval_data_config: Optional[DataConfig] = None,
                 seed: int = 42, label_column: Optional[str] = None, labels: Optional[list[str]] = None,
                 stats_sample: int = 1000, table: Optional["pa.Table"] = None):
        self.data_config = data_config
        self.tokenizer = tokenizer
        self.base_dir = base_dir
        self.eval_dataset_size = eval_dataset_size
        self.eval_data_config = eval_data_config
        self.seed = seed
        self.stats_sample = stats_sample
        self.table, self._origins = (table, None) if table is not None else load_located(data_config, base_dir)
        self.pre = data_config.pre_process_data_config
        self.label_column = label_column or label_column_of(self.pre)
        self.labels = labels or self.pre.labels
        check_prompt_template(self.pre)
        n = self.table.num_rows
        self.train_index, eval_index = split_indices(n, eval_dataset_size, seed) if eval_data_config is None \
            else (list(range(n)), [])
        self.eval_set = set(eval_index)
        self._eval_rows: Optional[int] = None
        self._rows_cache: dict[int, dict] = {}
        self._special = _special_ids(tokenizer)
        self._reset()

    # ------------------------------------------------------------------------------------- settings
    def _reset(self) -> None:
        self._encoded: dict[int, Encoded] = {}
        self._all_lengths: Optional[list[int]] = None
        self._all_prompts: Optional[list[int]] = None
        self._stream_ids: list[int] = []
        self._stream_labels: list[int] = []
        self._stream_starts: list[int] = []  # stream position of each packed train row
        self._stream_done = 0  # train rows packed so far
        self._stats: Optional[StatsView] = None

    def update(self, **changes: Any) -> PreProcessDataConfig:
        """Apply changed pre_process_data_config values (max_seq_len, strategy, text_template, train_on_prompt...).

        Setting text_template drops text_cols and use_chat_template. Raises DataError/ValueError and keeps the old
        settings when the new ones do not fit the data."""
        values = self.pre.model_dump()
        values.update(changes)
        if changes.get("text_template") is not None:
            values["text_cols"], values["use_chat_template"] = None, False
        pre = PreProcessDataConfig(**values)
        check_table(self.table, pre, self.data_config.name)
        check_prompt_template(pre)
        text_changed = any(getattr(pre, k) != getattr(self.pre, k) for k in
                           ("text_template", "text_cols", "use_chat_template", "train_on_prompt", "response_template",
                            "add_special_tokens", "label_column"))
        self.pre = pre
        if text_changed:
            self._reset()
        else:  # lengths and masks stay; packing and stats depend on max_seq_len/strategy
            self._stream_ids, self._stream_labels, self._stream_starts, self._stream_done = [], [], [], 0
            self._stats = None
        return pre

    # ----------------------------------------------------------------------------------------- rows
    @property
    def n_rows(self) -> int:
        return self.table.num_rows

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def row(self, index: int) -> dict:
        if not 0 <= index < self.n_rows:
            raise IndexError(f"row {index} is outside 0..{self.n_rows - 1}")
        row = self._rows_cache.get(index)
        if row is None:
            row = self._rows_cache[index] = self.table.slice(index, 1).to_pylist()[0]
        return row

    def rows(self, indices: list[int]) -> list[dict]:
        import pyarrow as pa
        return self.table.take(pa.array(indices, type=pa.int64())).to_pylist() if indices else []

    def split_of(self, index: int) -> str:
        return "eval" if index in self.eval_set else "train"

    @property
    def eval_rows(self) -> Optional[int]:
        if self.eval_data_config is not None:
            if self._eval_rows is None:
                self._eval_rows = load_table(self.eval_data_config, self.base_dir).num_rows
            return self._eval_rows
        return len(self.eval_set) if self.eval_dataset_size is not None else None

    def _encode(self, indices: list[int], chunk: int = CHUNK, keep: bool = True) -> list[Encoded]:
        """Encoded rows, cached when keep (keep=False encodes what is not cached without caching it)."""
        missing = [i for i in indices if i not in self._encoded]
        fresh: dict[int, Encoded] = {}
        for k in range(0, len(missing), chunk):
            for e in self._encode_rows(missing[k:k + chunk]):
                (self._encoded if keep else fresh)[e.row] = e
        return [self._encoded[i] if i in self._encoded else fresh[i] for i in indices]

    def _encode_rows(self, part: list[int]) -> list[Encoded]:
        rendered = []
        for i, row in zip(part, self.rows(part)):
            try:
                rendered.append(render(row, self.pre, self.tokenizer))
            except DataError as e:
                raise row_error(e, *self._locate(i)) from None
        return encode(rendered, self.pre, self.tokenizer, part, locate=self._locate)

    def _locate(self, index: int) -> tuple[str, int]:
        """(file, 1-based row there) of a loaded row, for errors; a table given as it is: its row."""
        if self._origins is not None:
            return self._origins.locate(index)
        return f"data config {self.data_config.name!r}", index + 1

    # --------------------------------------------------------------------------------------- sample
    def sample(self, index: int) -> SampleView:
        row = self.row(index)
        enc = self._encode([index])[0]  # first: its errors name the row
        rendered = render(row, self.pre, self.tokenizer)
        cut_at = None
        dropped = False
        if self.pre.strategy == "line-by-line" and len(enc) > self.pre.max_seq_len:
            cut_at = self.pre.max_seq_len
        if self.pre.strategy == "line-by-line" and masking(self.pre):
            kept = enc.labels[:self.pre.max_seq_len]
            dropped = all(x == IGNORE_INDEX for x in kept)
        texts = _token_texts(self.tokenizer, enc.input_ids)
        tokens = [TokenView(t, s, lab != IGNORE_INDEX, t in self._special, False, cut_at is not None and k >= cut_at)
                  for k, (t, s, lab) in enumerate(zip(enc.input_ids, texts, enc.labels))]
        loss = sum(1 for tok in tokens if tok.loss and not tok.beyond)
        blocks = self._blocks_of(index) if self.pre.strategy == "join" else None
        return SampleView(index, self.split_of(index), row, rendered.text, rendered.prompt, tokens, cut_at, loss,
                          dropped, blocks)

    def random_index(self, rng: Optional[random.Random] = None) -> int:
        return (rng or random).randrange(self.n_rows)

    def longest_index(self) -> int:
        lengths = self.all_lengths()
        return max(range(len(lengths)), key=lengths.__getitem__)

    def all_lengths(self) -> list[int]:
        """Tokens per row (before truncation) for every row: encodes the whole dataset once (keeping only the
        lengths and prompt sizes, not the tokens)."""
        if self._all_lengths is None:
            lengths, prompts = [], []
            for k in range(0, self.n_rows, BULK):
                for e in self._encode(list(range(k, min(k + BULK, self.n_rows))), BULK, keep=False):
                    lengths.append(len(e))
                    prompts.append(e.prompt_tokens)
            self._all_lengths, self._all_prompts = lengths, prompts
            self._stats = None
        return self._all_lengths

    # --------------------------------------------------------------------------------------- blocks
    def _pack_until(self, tokens: Optional[int] = None, row_position: Optional[int] = None) -> None:
        """Extend the packed train stream until it holds `tokens` tokens or train row `row_position`."""
        while self._stream_done < len(self.train_index):
            if tokens is not None and len(self._stream_ids) >= tokens:
                return
            if row_position is not None and self._stream_done > row_position:
                return
            part = self.train_index[self._stream_done:self._stream_done + CHUNK]
            for e in self._encode(part):
                self._stream_starts.append(len(self._stream_ids))
                self._stream_ids.extend(e.input_ids)
                self._stream_labels.extend(e.labels)
            self._stream_done += len(part)

    @property
    def packed_all(self) -> bool:
        return self._stream_done >= len(self.train_index)

    def n_blocks(self) -> tuple[int, bool]:
        """(number of join blocks, exact?): exact once every train row was packed, else an estimate."""
        if self.packed_all:
            return max(1, math.ceil(len(self._stream_ids) / self.pre.max_seq_len)) if self._stream_ids else 0, True
        stats = self.stats()
        return (stats.sequences or 0) + stats.no_loss_blocks, False  # the pages number every block

    def block(self, index: int) -> BlockView:
        size = self.pre.max_seq_len
        self._pack_until(tokens=(index + 1) * size)
        start = index * size
        if start >= len(self._stream_ids):
            raise IndexError(f"block {index} is past the last block")
        ids = self._stream_ids[start:start + size]
        labels = self._stream_labels[start:start + size]
        import bisect
        starts = self._stream_starts
        tokens = []
        texts = _token_texts(self.tokenizer, ids)
        rows = []
        for k, (t, s, lab) in enumerate(zip(ids, texts, labels)):
            pos = start + k
            j = bisect.bisect_right(starts, pos) - 1
            row = self.train_index[j]
            if not rows or rows[-1] != row:
                rows.append(row)
            tokens.append(TokenView(t, s, lab != IGNORE_INDEX, t in self._special, row=row,
                                    row_start=starts[j] == pos))
        padded = size - len(ids) if self.packed_all else 0
        pad_id = pad_id_of(self.tokenizer)
        pad_text = _token_texts(self.tokenizer, [pad_id])[0] if padded else ""
        tokens += [TokenView(pad_id, pad_text, False, True, pad=True) for _ in range(padded)]
        loss_tokens = sum(1 for t in tokens if t.loss)
        return BlockView(index, tokens, rows, padded, loss_tokens, trained=bool(loss_tokens) or not masking(self.pre))

    def _blocks_of(self, index: int) -> Optional[list[int]]:
        """The join blocks that hold row `index` (None for eval rows, or when that far is not packed yet)."""
        if index in self.eval_set:
            return None
        import bisect
        position = bisect.bisect_left(self.train_index, index)
        if position >= self._stream_done and position > 4 * CHUNK:
            return None  # packing that far would be slow for one page: the blocks view packs on demand
        self._pack_until(row_position=position)
        start = self._stream_starts[position]
        end = start + len(self._encoded[index])
        size = self.pre.max_seq_len
        return list(range(start // size, (end - 1) // size + 1))

    # ---------------------------------------------------------------------------------------- stats
    def stats(self) -> StatsView:
        if self._stats is not None:
            return self._stats
        n = self.n_rows
        if self._all_lengths is not None:
            sample = list(range(n))
            lengths, prompts = self._all_lengths, self._all_prompts
        else:
            # its own stream: random.Random(seed).sample's first draws are those of the split's sample, so with as
            # many held-out rows as the sample takes, every sampled row would be held out
            sample = list(range(n)) if n <= self.stats_sample else \
                sorted(random.Random(f"stats sample {self.seed}").sample(range(n), self.stats_sample))
            encoded = self._encode(sample)
            lengths, prompts = [len(e) for e in encoded], [e.prompt_tokens for e in encoded]
        size = self.pre.max_seq_len
        join = self.pre.strategy == "join"
        # labels are -100 on the first prompt_tokens tokens, so loss tokens follow from the two numbers
        kept = lengths if join else [min(x, size) for x in lengths]
        loss = [max(0, k - p) for k, p in zip(kept, prompts)]
        truncated = 0 if join else sum(1 for x in lengths if x > size)
        no_loss = [not join and masking(self.pre) and x > size and lo == 0 for x, lo in zip(lengths, loss)]
        in_train = [i not in self.eval_set for i in sample]
        n_train = len(self.train_index)
        sampled_train = sum(in_train)
        if join:
            train_tokens = sum(x for x, t in zip(lengths, in_train) if t)
            est = train_tokens * (n_train / sampled_train) if sampled_train else 0
            blocks = math.ceil(est / size) if est else 0
            if masking(self.pre) and blocks:
                train = [(x, p) for x, p, t in zip(lengths, prompts, in_train) if t]
                with_loss, sampled_blocks = _blocks_with_loss(train, size)
                sequences = round(blocks * with_loss / sampled_blocks)
            else:
                sequences = blocks
            no_loss_blocks = blocks - sequences
        else:
            kept_train = sum(1 for t, d in zip(in_train, no_loss) if t and not d)
            sequences = round(kept_train * n_train / sampled_train) if sampled_train else 0
            no_loss_blocks = 0
        total = sum(kept)
        self._stats = StatsView(
            rows=n, train_rows=n_train, eval_rows=self.eval_rows,
            eval_source=(self.eval_data_config.name if self.eval_data_config is not None
                         else "split" if self.eval_dataset_size is not None else None),
            strategy=self.pre.strategy, max_seq_len=size, sampled=len(sample), exact=len(sample) == n,
            lengths=length_summary(lengths), truncated=truncated, dropped=sum(no_loss),
            loss_fraction=(sum(loss) / total) if total else None, sequences=sequences,
            histogram=_histogram(lengths), label_column=self.label_column, label_counts=self.label_counts(),
            no_loss_blocks=no_loss_blocks)
        return self._stats

    def label_counts(self) -> list[tuple[str, int]]:
        column = self.label_column
        if not column or column not in self.table.column_names:
            return []
        import pyarrow as pa
        import pyarrow.compute as pc
        counts = pc.value_counts(pc.cast(self.table.column(column), pa.string())).to_pylist()
        out = [(str(c["values"]), int(c["counts"])) for c in counts]
        order = {label: k for k, label in enumerate(self.labels or [])}
        return sorted(out, key=lambda x: (order.get(x[0], len(order)), -x[1], x[0]))


def _blocks_with_loss(rows: list[tuple[int, int]], size: int) -> tuple[int, int]:
    """(blocks holding a loss token, blocks) of rows (tokens, of them prompt tokens) joined in this order."""
    position, with_loss = 0, set()
    for tokens, prompt in rows:
        if prompt < tokens:
            with_loss.update(range((position + prompt) // size, (position + tokens - 1) // size + 1))
        position += tokens
    return len(with_loss), math.ceil(position / size)


def _histogram(lengths: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    if not lengths:
        return []
    low, high = min(lengths), max(lengths)
    if low == high:
        return [(low, high, len(lengths))]
    width = max(1, math.ceil((high - low + 1) / bins))
    counts = [0] * math.ceil((high - low + 1) / width)
    for x in lengths:
        counts[(x - low) // width] += 1
    return [(low + k * width, low + (k + 1) * width - 1, c) for k, c in enumerate(counts)]


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
    return ids


def _token_texts(tokenizer: Any, ids: list[int]) -> list[str]:
    """Each token's text. A character that byte-level tokens split (日, 🎉, é in some vocabularies) decodes to U+FFFD
    one token at a time: each of its tokens shows the whole character, numbered (日₁ 日₂ 日₃)."""
    if not ids:
        return []
    options = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}
    try:
        texts = list(tokenizer.batch_decode([[i] for i in ids], **options))
    except Exception:
        return [str(t) for t in tokenizer.convert_ids_to_tokens(ids)]
    k = 0
    while k < len(ids):
        if "\ufffd" in texts[k]:
            for n in range(2, min(4, len(ids) - k) + 1):  # a character is at most 4 bytes of UTF-8
                whole = tokenizer.decode(ids[k:k + n], **options)
                if "\ufffd" not in whole:
                    texts[k:k + n] = [whole + "₁₂₃₄"[i] for i in range(n)]
                    k += n - 1
                    break
        k += 1
    return texts
