"""A seeded, reproducible train/eval split of raw rows: the same rows and seed give the same split on any machine."""
from __future__ import annotations

import random
from typing import Any, Optional, Union

from ..errors import DataError


def eval_count(n: int, eval_dataset_size: Optional[Union[float, int]]) -> int:
    """Rows held out for evaluation: a fraction below 1 (rounded, at least 1) or a whole count."""
    if eval_dataset_size is None:
        return 0
    size = float(eval_dataset_size)
    if size <= 0:
        raise DataError(f"eval_dataset_size must be above 0, got {eval_dataset_size}")
    if size < 1:
        count = max(1, round(n * size))
    elif size != int(size):
        raise DataError(f"eval_dataset_size is a fraction below 1 (0.2) or a whole row count (100), "
                        f"got {eval_dataset_size}")
    else:
        count = int(size)
    if count >= n:
        raise DataError(f"eval_dataset_size {eval_dataset_size} takes {count} of the {n} rows and leaves none to "
                        "train on", hint="use a smaller fraction or count, or more rows (max_samples)")
    return count


def split_indices(n: int, eval_dataset_size: Optional[Union[float, int]], seed: int) -> tuple[list[int], list[int]]:
    """(train, eval) row indices, each in the original order. Seeded with random.Random(seed) (stable across
    Python versions and platforms)."""
    k = eval_count(n, eval_dataset_size)
    if k == 0:
        return list(range(n)), []
    held = set(random.Random(seed).sample(range(n), k))
    return [i for i in range(n) if i not in held], sorted(held)


def take(rows: Any, indices: list[int]) -> Any:
    """The rows at indices, for a datasets.Dataset, an Arrow table, or a list."""
    if isinstance(rows, list):
        return [rows[i] for i in indices]
    if hasattr(rows, "select") and hasattr(rows, "features"):  # datasets.Dataset
        return rows.select(indices)
    import pyarrow as pa
    return rows.take(pa.array(indices, type=pa.int64()))


def split_rows(rows: Any, eval_dataset_size: Optional[Union[float, int]], seed: int) -> tuple[Any, Optional[Any]]:
    """(train_rows, eval_rows or None). eval_dataset_size: None (no split), a fraction below 1, or a row count."""
    if eval_dataset_size is None:
        return rows, None
    train, held = split_indices(len(rows), eval_dataset_size, seed)
    return take(rows, train), take(rows, held)
