"""Training data: load rows (local files, checked), render templates, tokenize (join / line-by-line) with prompt
masking, split, hash, and the lazy views behind the preview widget.

Importing this package imports no heavy library (datasets, pyarrow, transformers, torch are imported on use).
"""
from .build import DataStats, TrainingData, build_training_data
from .collate import Collator
from .explore import DataExplorer
from .files import hub_offline
from .hashing import data_hash
from .loading import load_rows, load_table
from .split import split_indices, split_rows
from .tokenizer import load_tokenizer
from .templates import TEXT_COLS_JOINER, Rendered, Template, after_label, eval_examples, render
from .tokenize import IGNORE_INDEX, tokenize


def preview(*args, **kwargs):
    """The sample preview widget: see tunecell.widgets.preview."""
    from tunecell.widgets import preview as _preview
    return _preview(*args, **kwargs)


__all__ = ["load_rows", "load_table", "split_rows", "split_indices", "render", "Rendered", "Template", "tokenize",
           "build_training_data", "TrainingData", "DataStats", "eval_examples", "after_label", "data_hash",
           "DataExplorer",
           "Collator", "load_tokenizer", "IGNORE_INDEX", "TEXT_COLS_JOINER", "hub_offline", "preview"]
