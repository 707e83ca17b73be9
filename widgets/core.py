"""The sample preview: what the model will be trained on, before any compute is spent (no ipywidgets here).

``preview(config_or_text, tokenizer=None, data_config=None, namespace=None)`` returns a PreviewWidget (or, without
ipywidgets, a StaticPreview): a pager over rows (first/prev/next/random/longest/index), the rendered text, its tokens
(boundaries visible, loss vs masked by colour, special tokens marked, the max_seq_len cut), the packed join blocks,
stats, and controls (max_seq_len, strategy, template, train_on_prompt) whose changes "Write config" turns into new
config text (``widget.config_text``, and ``on_write(text)``).

Nothing heavy is imported at module level: the tokenizer is passed in or loaded on demand.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

from tunecell.config.schema import LoRA, DataConfig, WorkflowConfig
from tunecell.data.explore import DataExplorer
from tunecell.data.templates import masking
from tunecell.data.tokenizer import load_tokenizer
from tunecell.errors import TunecellError

from . import render as R

STATIC_SAMPLES = 3


@dataclass
class Target:
    """What to preview: one data config and the settings around it taken from the workflow."""

    data_config: DataConfig
    config: Optional[WorkflowConfig] = None
    source: Any = None  # the original text or object, for writing back
    eval_dataset_size: Optional[float] = None
    eval_data_config: Optional[DataConfig] = None
    seed: int = 42
    label_column: Optional[str] = None
    labels: Optional[list[str]] = None
    base_dir: Optional[str] = None


def resolve_target(config_or_text: Any, data_config: Optional[str] = None,
                   namespace: Optional[Mapping[str, Any]] = None, base_dir: Optional[Union[str, Path]] = None) \
        -> Target:
    """A WorkflowConfig, a DataConfig, config text (YAML/JSON, any Olive dialect), a config file path or a dict."""
    source = config_or_text
    if isinstance(config_or_text, DataConfig):
        return Target(config_or_text, None, source, base_dir=str(base_dir) if base_dir else None)
    if isinstance(config_or_text, WorkflowConfig):
        config = config_or_text
    else:
        from tunecell.config import load_config
        config = load_config(config_or_text, namespace)
        if isinstance(config_or_text, os.PathLike) or (isinstance(config_or_text, str) and "\n" not in config_or_text
                                                       and Path(config_or_text).suffix in (".yaml", ".yml", ".json")):
            source = Path(config_or_text).read_text(encoding="utf-8")
        elif not isinstance(config_or_text, str):  # a dict: write back from the validated config
            source = config
    if not config.data_configs:
        raise TunecellError("the config has no data_configs to preview")
    lora = next((p for p in config.passes.values() if isinstance(p, LoRA)), None)
    name = data_config or (lora.train_data_config if lora else config.data_configs[0].name)
    names = [d.name for d in config.data_configs]
    if name not in names:
        raise TunecellError(f"data config {name!r} not found (data_configs: {', '.join(names)})")
    dc = config.data_config(name)
    target = Target(dc, config, source, base_dir=str(base_dir) if base_dir else getattr(config, "_base_dir", None))
    if lora is not None and lora.train_data_config == name:
        target.eval_dataset_size = lora.eval_dataset_size
        if lora.eval_data_config and lora.eval_data_config != name:
            target.eval_data_config = config.data_config(lora.eval_data_config)
        # the split seed, as the LoRA pass and the evaluator take it (tunecell.passes.lora.split_seed)
        target.seed = int((lora.training_args.model_extra or {}).get("data_seed", lora.training_args.seed))
    for evaluator in config.evaluators.values():
        for metric in evaluator.metrics:
            if metric.label_column and metric.data_config in (None, name, lora.eval_data_config if lora else None):
                target.label_column = target.label_column or metric.label_column
                target.labels = target.labels or metric.labels
    return target


def _explorer(target: Target, tokenizer: Any, stats_sample: int) -> DataExplorer:
    return DataExplorer(target.data_config, tokenizer, base_dir=target.base_dir,
                        eval_dataset_size=target.eval_dataset_size, eval_data_config=target.eval_data_config,
                        seed=target.seed, label_column=target.label_column, labels=target.labels,
                        stats_sample=stats_sample)


def preview(config_or_text: Any, tokenizer: Any = None, data_config: Optional[str] = None,
            namespace: Optional[Mapping[str, Any]] = None, *, base_dir: Optional[Union[str, Path]] = None,
            on_write: Optional[Callable[[str], Any]] = None, stats_sample: int = 1000, widget: bool = True):
    """Preview what the model will be trained on.

    config_or_text: a WorkflowConfig, a DataConfig, config text or a config file. tokenizer: a tokenizer object, a
    model folder or name, or None for the config's input_model (tokenizer files only, never the weights).
    data_config: the data config's name (default: the LoRA pass's train_data_config, else the first one).
    on_write(text) is called with the new config text when "Write config" is clicked; a text it returns is shown
    beside the new config (what to do next).
    Returns a PreviewWidget, or a StaticPreview when widget=False or ipywidgets is missing.
    """
    target = resolve_target(config_or_text, data_config, namespace, base_dir)
    tok = load_tokenizer(tokenizer, target.config)
    explorer = _explorer(target, tok, stats_sample)
    if widget:
        try:
            import ipywidgets  # noqa: F401
        except ImportError:
            widget = False
    if not widget:
        return StaticPreview(explorer)
    from .preview_widget import PreviewWidget
    return PreviewWidget(explorer, source=target.source, namespace=namespace, on_write=on_write)


# ------------------------------------------------------------------------------------------- static
class StaticPreview:
    """The first samples and the stats as HTML and text: for saved notebooks, terminals and nbconvert."""

    def __init__(self, explorer: DataExplorer, n_samples: int = STATIC_SAMPLES):
        self.explorer = explorer
        self.n_samples = n_samples

    def _title(self) -> str:
        ex = self.explorer
        pre = ex.pre
        loss = "loss on the answer only" if masking(pre) else "loss on every token"
        return (f"tunecell preview · data config {ex.data_config.name!r} · {ex.n_rows:,} rows · {pre.strategy}, "
                f"max_seq_len {pre.max_seq_len}, {loss}")

    def to_html(self) -> str:
        ex = self.explorer
        parts = [f'<div class="tunecell-preview" style="{R.BOX}"><div style="font-weight:600;margin-bottom:4px">'
                 f'{R._e(self._title())}</div>', R.legend_html(masking(ex.pre))]
        for i in range(min(self.n_samples, ex.n_rows)):
            parts.append(R.sample_html(ex.sample(i), strategy=ex.pre.strategy, max_seq_len=ex.pre.max_seq_len,
                                       masking=masking(ex.pre), total=ex.n_rows))
        if ex.pre.strategy == "join" and ex.train_index:
            total, exact = ex.n_blocks()
            parts.append(R.block_html(ex.block(0), total=total, exact=exact, max_seq_len=ex.pre.max_seq_len))
        parts.append(R.stats_html(ex.stats()))
        parts.append("</div>")
        return "".join(parts)

    def to_text(self) -> str:
        ex = self.explorer
        lines = [self._title(), "tokens: [x] = masked (label -100, no loss), x = carries loss, ✂ = max_seq_len cut", ""]
        for i in range(min(self.n_samples, ex.n_rows)):
            lines += [R.sample_text(ex.sample(i), max_seq_len=ex.pre.max_seq_len, total=ex.n_rows), ""]
        lines += ["stats:", R.stats_text(ex.stats())]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(self.to_text())
