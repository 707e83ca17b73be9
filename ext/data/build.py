"""Everything the LoRA pass needs from the data: tokenized train and eval sets, the raw rows, and the numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..config.schema import DataConfig
from ..errors import DataError
from .loading import load_rows
from .split import split_rows
from .tokenize import TokenStats, length_summary, tokenize_with_stats

if TYPE_CHECKING:  # pragma: no cover
    import datasets


@dataclass
class DataStats:
    rows: int  # rows loaded (after max_samples), before the eval split
    train_rows: int
    eval_rows: int
    strategy: str
    max_seq_len: int
    train_sequences: int  # rows (line-by-line) or blocks (join)
    eval_sequences: int
    tokens: int  # train positions, padding included
    non_pad_tokens: int
    loss_tokens: int  # train tokens whose label is not -100
    truncated_rows: int  # train rows longer than max_seq_len (line-by-line)
    dropped_rows: int  # train rows dropped because truncation left no token carrying loss
    length_min: Optional[int] = None  # tokens per train row, bos and eos included, before truncation
    length_median: Optional[float] = None
    length_p95: Optional[int] = None
    length_max: Optional[int] = None
    eval_source: Optional[str] = None  # "split" or the eval data config's name
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainingData:
    train: "datasets.Dataset"
    eval: Optional["datasets.Dataset"]
    train_rows: "datasets.Dataset"
    eval_rows: Optional["datasets.Dataset"]  # raw rows the model never trains on (for accuracy)
    stats: DataStats


def build_training_data(data_config: DataConfig, tokenizer: Any, *,
                        eval_dataset_size: Optional[Union[float, int]] = None,
                        eval_data_config: Optional[DataConfig] = None, seed: int = 42,
                        base_dir: Optional[Union[str, Path]] = None) -> TrainingData:
    """Load, split (eval_dataset_size, seeded) or load the eval data config, and tokenize both.

    The eval data config is rendered and tokenized with its own pre_process_data_config.
    """
    if eval_dataset_size is not None and eval_data_config is not None:
        raise DataError("give eval_dataset_size or eval_data_config, not both")
    rows = load_rows(data_config, base_dir)
    pre = data_config.pre_process_data_config
    eval_source = None
    if eval_data_config is not None:
        train_rows, eval_rows = rows, load_rows(eval_data_config, base_dir)
        eval_pre = eval_data_config.pre_process_data_config
        eval_source = eval_data_config.name
    else:
        train_rows, eval_rows = split_rows(rows, eval_dataset_size, seed)
        eval_pre = pre
        eval_source = "split" if eval_rows is not None else None
    train, tstats = tokenize_with_stats(train_rows, pre, tokenizer)
    evaluation, estats = (None, TokenStats())
    if eval_rows is not None:
        evaluation, estats = tokenize_with_stats(eval_rows, eval_pre, tokenizer)
    stats = DataStats(
        rows=len(rows), train_rows=len(train_rows), eval_rows=len(eval_rows) if eval_rows is not None else 0,
        strategy=pre.strategy, max_seq_len=pre.max_seq_len, train_sequences=tstats.sequences,
        eval_sequences=estats.sequences, tokens=tstats.tokens, non_pad_tokens=tstats.non_pad_tokens,
        loss_tokens=tstats.loss_tokens, truncated_rows=tstats.truncated_rows, dropped_rows=tstats.dropped_rows,
        eval_source=eval_source, **length_summary(tstats.lengths))
    return TrainingData(train, evaluation, train_rows, eval_rows, stats)
