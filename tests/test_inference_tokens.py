"""Scoring tokenizes as training does, on both backends: the end-of-text token after each label is the tokenizer's
eos, and prompts get the tokenizer's special tokens (a bos) only as the data config's add_special_tokens says."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tunecell.inference import load_model
from tunecell.passes.model_builder import build_onnx

PROMPT = "### Text: I lost my keys\n### The tone is:\n"
LABELS = ["Sad", "Joy", "Fear", "Surprise"]


@pytest.fixture(scope="module")
def models(tiny_model, tmp_path_factory) -> tuple:
    """The tiny model and its fp32 ONNX build, with Llama-3-Instruct's shapes: generation_config lists an eos
    before the tokenizer's (3), and the tokenizer puts a bos (<s>) before every text."""
    from tokenizers import Tokenizer, processors

    hf = tmp_path_factory.mktemp("llama-shaped")
    shutil.copytree(tiny_model, hf, dirs_exist_ok=True)
    generation = json.loads((hf / "generation_config.json").read_text())
    (hf / "generation_config.json").write_text(json.dumps({**generation, "eos_token_id": [6, 3]}))
    tokenizer = Tokenizer.from_file(str(hf / "tokenizer.json"))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tokenizer.save(str(hf / "tokenizer.json"))
    onnx = tmp_path_factory.mktemp("llama-shaped-onnx")
    build_onnx(hf, onnx, precision="fp32", execution_provider="cpu", scratch_dir=tmp_path_factory.mktemp("scratch"))
    assert json.loads((onnx / "genai_config.json").read_text())["model"]["eos_token_id"][0] == 6
    return load_model(hf), load_model(onnx)


def test_the_onnx_model_ends_each_label_with_the_tokenizer_s_eos_as_training_does(models):
    hf, onnx = models
    with hf.special_tokens(True), onnx.special_tokens(True):
        assert onnx.label_logprobs(PROMPT, LABELS) == pytest.approx(hf.label_logprobs(PROMPT, LABELS), abs=1e-3)


@pytest.mark.parametrize("backend", [0, 1], ids=["hf", "onnx"])
def test_prompts_get_a_bos_only_when_add_special_tokens_says_so(models, backend):
    # a template that writes its own <s> is trained with add_special_tokens: false, on one bos: scored so too
    model = models[backend]
    with model.special_tokens(False):
        written = model.label_logprobs("<s>" + PROMPT, LABELS), model.generate("<s>" + PROMPT, 6)
    with model.special_tokens(True):
        added = model.label_logprobs(PROMPT, LABELS), model.generate(PROMPT, 6)
    assert written[0] == pytest.approx(added[0], abs=1e-3) and written[1] == added[1]


@pytest.mark.parametrize("backend", [0, 1], ids=["hf", "onnx"])
def test_a_prompt_that_writes_its_own_bos_keeps_one_as_training_does(models, backend):
    # a chat template that starts with {{ bos_token }}, tokenized with add_special_tokens: training drops the
    # tokenizer's second bos (tunecell.data.tokenize), so scoring and generation do too
    model = models[backend]
    with model.special_tokens(True):
        assert model._encode("<s>" + PROMPT) == model._encode(PROMPT)
        written = model.label_logprobs("<s>" + PROMPT, LABELS), model.generate("<s>" + PROMPT, 6)
        added = model.label_logprobs(PROMPT, LABELS), model.generate(PROMPT, 6)
    assert written[0] == pytest.approx(added[0], abs=1e-3) and written[1] == added[1]


def test_an_eos_name_the_onnx_tokenizer_does_not_know_falls_back_to_genai_s_list(models, tmp_path):
    onnx = tmp_path / "onnx"
    shutil.copytree(models[1].path, onnx)
    settings = json.loads((onnx / "tokenizer_config.json").read_text())
    (onnx / "tokenizer_config.json").write_text(json.dumps({**settings, "eos_token": "<|not-a-token|>"}))
    model = load_model(onnx)
    assert model._end_of_text == 6  # genai_config.json's first eos, not -1 appended to every label
    assert all(value > float("-inf") for value in model.label_logprobs(PROMPT, LABELS))
