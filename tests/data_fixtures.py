"""Fixtures for the data and preview tests: tokenizers built offline with exactly predictable token counts.

``word_tokenizer``: a WordLevel tokenizer with a Whitespace pre-tokenizer (one token per word and per run of
punctuation; newlines are not tokens), ``<s>`` added at the start by add_special_tokens, eos ``</s>``, pad ``<pad>``,
and a Phi-3 style chat template. ``bpe_tokenizer``: a small byte-level BPE (tokens can start with a space), to check
masking boundaries on a realistic tokenizer.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import pytest

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"]
PAD, BOS, EOS, UNK = 0, 1, 2, 3
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
TONE_ROWS = [
    {"phrase": "I lost my dog today", "tone": "Sad"},
    {"phrase": "we won the big prize", "tone": "Joy"},
    {"phrase": "footsteps in the dark hallway", "tone": "Fear"},
    {"phrase": "a party behind the door", "tone": "Surprise"},
    {"phrase": "the shop closed forever", "tone": "Sad"},
    {"phrase": "she danced all night", "tone": "Joy"},
]
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"
BASE_WORDS = ("### Text The tone is : I lost my dog today we won the big prize footsteps in dark hallway a party "
              "behind door shop closed forever she danced all night Sad Joy Fear Surprise hello hi there").split()


def make_word_tokenizer(extra_words: Iterable[str] = ()):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS)}
    for w in list(BASE_WORDS) + list(extra_words):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                      special_tokens=[("<s>", BOS)])
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", additional_special_tokens=SPECIALS[4:])
    hf.chat_template = CHAT_TEMPLATE
    return hf


def make_bpe_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [TEMPLATE.format(**r) for r in TONE_ROWS] * 5
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, min_frequency=1, special_tokens=SPECIALS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                 unk_token="<unk>", additional_special_tokens=SPECIALS[4:])
    hf.chat_template = CHAT_TEMPLATE
    return hf


def words(text: str) -> int:
    """Token count of text under the word tokenizer (no special tokens)."""
    import re
    return len(re.findall(r"\w+|[^\w\s]+", text))


def write_jsonl(path: Path, rows: Iterable[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def data_config(data_files: Any, name: str = "tones", data_name: str = "json", split: str = "train",
                **pre: Any):
    from tunecell.config.schema import DataConfig

    if "text_template" not in pre and not pre.get("text_cols") and not pre.get("use_chat_template"):
        pre["text_template"] = TEMPLATE
    elif "text_template" in pre and pre["text_template"] is None:
        del pre["text_template"]
    return DataConfig(name=name, load_dataset_config={"data_name": data_name, "data_files": data_files,
                                                      "split": split},
                      pre_process_data_config=pre)


@pytest.fixture(scope="session")
def word_tokenizer():
    return make_word_tokenizer()


@pytest.fixture(scope="session")
def bpe_tokenizer():
    return make_bpe_tokenizer()


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    """Nothing the tests do may write under the user's home: point every HF cache at a temp folder."""
    home = tmp_path_factory.getbasetemp() / "hf_home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(home / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


@pytest.fixture
def tone_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "tones.jsonl", TONE_ROWS)
