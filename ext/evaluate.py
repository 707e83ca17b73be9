"""Metrics over a loaded model (tunecell.inference.LoadedModel). Pure functions: no config, no caching."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from tunecell.inference import LoadedModel, Scoring

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data", ".gguf")


def accuracy(model: "LoadedModel", examples: list[tuple[str, str]], labels: list[str],
             max_new_tokens: int, scoring: "Scoring" = "generate", after_label: str = "") -> float:
    """Fraction of (prompt, expected label) pairs that the model classifies right: by the first label word it
    generates, or by the most likely label (``scoring`` and ``after_label``, see LoadedModel.classify)."""
    if not examples:
        raise ValueError("accuracy needs at least one example")
    predictions = model.classify_many([prompt for prompt, _ in examples], labels, max_new_tokens=max_new_tokens,
                                      scoring=scoring, after_label=after_label)
    correct = sum(predicted is not None and predicted.lower() == expected.lower()
                  for predicted, (_, expected) in zip(predictions, examples))
    return correct / len(examples)


def latency_ms(model: "LoadedModel", prompts: list[str], max_new_tokens: int, warmup: int = 1) -> float:
    """Mean milliseconds per request of max_new_tokens new tokens (tokenize + generate + decode), after `warmup`
    untimed requests. Every model generates that many: a fine-tuned model that answers in one token and ends is
    not faster than its base that keeps talking."""
    if not prompts:
        raise ValueError("latency needs at least one prompt")
    _warm_up(model, prompts, max_new_tokens, warmup)
    seconds = [model.generate_with_stats(prompt, max_new_tokens, fixed_length=True)[2] for prompt in prompts]
    return 1000 * sum(seconds) / len(seconds)


def throughput(model: "LoadedModel", prompts: list[str], max_new_tokens: int, warmup: int = 1) -> float:
    """Generated tokens per second over all prompts, one request of max_new_tokens new tokens at a time, after
    `warmup` untimed requests."""
    if not prompts:
        raise ValueError("throughput needs at least one prompt")
    _warm_up(model, prompts, max_new_tokens, warmup)
    runs = [model.generate_with_stats(prompt, max_new_tokens, fixed_length=True) for prompt in prompts]
    return sum(tokens for _, tokens, _ in runs) / sum(seconds for _, _, seconds in runs)


def _warm_up(model: "LoadedModel", prompts: list[str], max_new_tokens: int, requests: int) -> None:
    """The first requests to a fresh session pay for its set-up (an ONNX session's first run took 25x a later
    one's on the tiny test model): leave them out of the timings."""
    for i in range(requests):
        model.generate_with_stats(prompts[i % len(prompts)], max_new_tokens, fixed_length=True)


def size_on_disk_mb(path: Union[str, Path]) -> float:
    """Size of the weight files (safetensors, bin, onnx and its external .data, gguf) in MB (10^6 bytes)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size / 1e6
    total = 0
    for root, _, files in os.walk(path):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files if name.endswith(WEIGHT_SUFFIXES))
    return total / 1e6
