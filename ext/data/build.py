"""Everything the LoRA pass needs from the data: tokenized train and eval sets, the raw rows, and the numbers."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Union

from ..config.schema import DataConfig
from ..errors import DataError
from .loading import as_dataset, load_located
from .split import split_indices, take
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
    no_loss_blocks: int  # join blocks of prompt tokens only (train_on_prompt: false), left out
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
    table, origins = load_located(data_config, base_dir)
    rows = as_dataset(table)
    pre = data_config.pre_process_data_config
    train_at, eval_at = split_indices(len(rows), eval_dataset_size, seed)  # eval_at is [] without eval_dataset_size
    if eval_data_config is not None:
        eval_table, eval_origins = load_located(eval_data_config, base_dir)
        train_rows, eval_rows = rows, as_dataset(eval_table)
        eval_set = ("evaluation set", eval_data_config, eval_origins.locate)
        eval_source = eval_data_config.name
    elif eval_at:
        train_rows, eval_rows = take(rows, train_at), take(rows, eval_at)
        eval_set = ("held-out evaluation set", data_config,
                    lambda k: origins.locate(eval_at[k]))
        eval_source = "split"
    else:
        train_rows, eval_rows, eval_source = rows, None, None
    # errors name a row by its file and its row there: train row k is loaded row train_at[k]
    train, tstats = tokenize_with_stats(train_rows, pre, tokenizer, locate=lambda k: origins.locate(train_at[k]),
                                        data_config=data_config.name)
    evaluation, estats = (None, TokenStats())
    if eval_rows is not None:
        role, config, locate = eval_set
        evaluation, estats = tokenize_with_stats(eval_rows, config.pre_process_data_config, tokenizer,
                                                 locate=locate, role=role, data_config=config.name)
    stats = DataStats(
        rows=len(rows), train_rows=len(train_rows), eval_rows=len(eval_rows) if eval_rows is not None else 0,
        strategy=pre.strategy, max_seq_len=pre.max_seq_len, train_sequences=tstats.sequences,
        eval_sequences=estats.sequences, tokens=tstats.tokens, non_pad_tokens=tstats.non_pad_tokens,
        loss_tokens=tstats.loss_tokens, truncated_rows=tstats.truncated_rows, dropped_rows=tstats.dropped_rows,
        no_loss_blocks=tstats.no_loss_blocks, eval_source=eval_source, **length_summary(tstats.lengths))
    return TrainingData(train, evaluation, train_rows, eval_rows, stats)
