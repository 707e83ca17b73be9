"""render / tokenize: templates, text_cols, chat, both strategies and prompt masking, with exact token counts.

The word tokenizer makes one token per word and per run of punctuation, so every count below is countable by hand:
"### Text: I lost my dog today\\n### The tone is:\\nSad" is 14 tokens; with <s> and </s>, 16.
"""
from __future__ import annotations

import pytest

from data_fixtures import (BOS, EOS, PAD, TEMPLATE, TONE_ROWS, _isolated_hf_home, bpe_tokenizer,  # noqa: F401
                           word_tokenizer, words)
from tunecell.config.schema import PreProcessDataConfig
from tunecell.data import Collator, IGNORE_INDEX, Rendered, render, tokenize
from tunecell.data.tokenize import tokenize_with_stats
from tunecell.errors import DataError

ROW = TONE_ROWS[0]
TEXT = "### Text: I lost my dog today\n### The tone is:\nSad"
PROMPT = "### Text: I lost my dog today\n### The tone is:\n"


def pre(**kw) -> PreProcessDataConfig:
    if not (kw.get("text_cols") or kw.get("use_chat_template")):
        kw.setdefault("text_template", TEMPLATE)
    kw.setdefault("max_seq_len", 64)
    return PreProcessDataConfig(**kw)


def n_tokens(row: dict) -> int:
    return words(TEMPLATE.format(**row)) + 2  # <s> ... </s>


# ------------------------------------------------------------------------------------------------ render
def test_render_template_and_prompt():
    assert render(ROW, pre()) == Rendered(TEXT, None)
    assert render(ROW, pre(train_on_prompt=False)) == Rendered(TEXT, PROMPT)
    assert render(ROW, pre(label_column="tone")) == Rendered(TEXT, PROMPT)  # for evaluation, without masking
    assert render(ROW, pre(response_template="The tone is:")).prompt == "### Text: I lost my dog today\n### The tone is:"


def test_render_prompt_stops_at_the_label_field_not_the_last():
    p = pre(text_template="Tone of '{phrase}': {tone}. Source: {source}", label_column="tone")
    assert render({**ROW, "source": "diary"}, p).prompt == "Tone of 'I lost my dog today': "


def test_text_cols_are_joined_with_one_space():
    p = pre(text_cols=["phrase", "tone"], train_on_prompt=False)
    assert render(ROW, p) == Rendered("I lost my dog today Sad", "I lost my dog today ")
    assert render({"text": "just text"}, PreProcessDataConfig()).text == "just text"  # Olive's default column


def test_literal_braces_and_format_specs():
    p = pre(text_template="{{json}} {phrase!r:>25} -> {tone}")
    assert render(ROW, p).text == "{json}     'I lost my dog today' -> Sad" == p.text_template.format(**ROW)


@pytest.mark.parametrize("row", [
    {"messages": [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]},
    {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi"}]},
    {"user": "hello there", "assistant": "hi"},
])
def test_chat_template_rows(word_tokenizer, row):
    p = pre(use_chat_template=True, train_on_prompt=False, strategy="line-by-line")
    r = render(row, p, word_tokenizer)
    assert r.text == "<|user|>\nhello there<|end|>\n<|assistant|>\nhi<|end|>\n"
    assert r.prompt == "<|user|>\nhello there<|end|>\n<|assistant|>\n"
    ds = tokenize([row], p, word_tokenizer)
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert word_tokenizer.convert_ids_to_tokens(ids) == [
        "<s>", "<|user|>", "hello", "there", "<|end|>", "<|assistant|>", "hi", "<|end|>", "</s>"]
    assert labels == [IGNORE_INDEX] * 6 + ids[6:]


def test_a_conversation_item_that_is_not_a_message_names_its_row_and_place(word_tokenizer):
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
            {"messages": [{"role": "user", "content": "hi"}, None]}]
    with pytest.raises(DataError, match=r"^row 2, column 'messages': messages item 2 is null, not a message") as e:
        tokenize(rows, pre(use_chat_template=True, strategy="line-by-line"), word_tokenizer)
    assert e.value.row == 2 and e.value.hint.startswith("each message is an object")


def test_a_conversation_without_an_assistant_message_says_so_when_masking(word_tokenizer):
    rows = [{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]},
            {"messages": [{"role": "user", "content": "hello there"}]}]
    with pytest.raises(DataError, match="^row 2: train_on_prompt: false, but this conversation has no assistant "
                                        "message to train on") as e:
        tokenize(rows, pre(use_chat_template=True, train_on_prompt=False, strategy="line-by-line"), word_tokenizer)
    assert e.value.row == 2 and "assistant answer" in e.value.hint


def test_chat_without_a_tokenizer_fails():
    with pytest.raises(DataError, match="needs the model's tokenizer"):
        render({"user": "a", "assistant": "b"}, pre(use_chat_template=True))


def test_response_template_missing_names_the_row(tmp_path, word_tokenizer):
    from data_fixtures import data_config, write_jsonl
    from tunecell.data import load_rows

    rows = [ROW, {"phrase": "no marker", "tone": "Joy"}]
    p = pre(text_template="{phrase} {tone}", response_template=" => ")
    with pytest.raises(DataError) as e:  # rows given directly: their 1-based number
        tokenize(rows, p, word_tokenizer)
    assert e.value.row == 1 and str(e.value).startswith("row 1: ")
    assert "response_template ' => ' is not in the rendered text" in str(e.value)
    path = write_jsonl(tmp_path / "r.jsonl", [{"phrase": "a", "tone": "Joy"}, {"phrase": "b", "tone": "Sad"}])
    with pytest.raises(DataError) as e:  # loaded from a file: checked there, with the file's row and line
        load_rows(data_config(str(path), text_template="{phrase} => {tone}", response_template=" =>  "))
    assert (e.value.file, e.value.row) == (str(path), 1) and "(line 1)" in str(e.value)


# ------------------------------------------------------------------------------------------ line-by-line
def test_line_by_line_without_masking(word_tokenizer):
    ds, stats = tokenize_with_stats(TONE_ROWS, pre(strategy="line-by-line"), word_tokenizer)
    assert ds.column_names == ["input_ids", "attention_mask", "labels"]
    assert [len(x) for x in ds["input_ids"]] == [n_tokens(r) for r in TONE_ROWS] == [16, 16, 16, 16, 15, 15]
    for row in ds:
        assert row["input_ids"][0] == BOS and row["input_ids"][-1] == EOS
        assert row["labels"] == row["input_ids"] and row["attention_mask"] == [1] * len(row["input_ids"])
    assert (stats.sequences, stats.tokens, stats.loss_tokens, stats.truncated_rows) == (6, 94, 94, 0)


def test_line_by_line_masks_the_prompt(word_tokenizer):
    ds = tokenize(TONE_ROWS, pre(strategy="line-by-line", train_on_prompt=False), word_tokenizer)
    ids, labels = ds[0]["input_ids"], ds[0]["labels"]
    assert word_tokenizer.convert_ids_to_tokens(ids[14:]) == ["Sad", "</s>"]
    assert labels == [IGNORE_INDEX] * 14 + ids[14:]
    # a response_template masks the same way, even with train_on_prompt left true
    same = tokenize(TONE_ROWS, pre(strategy="line-by-line", response_template="The tone is:\n"), word_tokenizer)
    assert same["labels"] == ds["labels"]


def test_line_by_line_padding(word_tokenizer):
    ds = tokenize(TONE_ROWS[4:5], pre(strategy="line-by-line", max_seq_len=20, pad_to_max_len=True,
                                      train_on_prompt=False), word_tokenizer)
    row = ds[0]
    assert len(row["input_ids"]) == 20 and row["input_ids"][15:] == [PAD] * 5
    assert row["attention_mask"] == [1] * 15 + [0] * 5
    assert row["labels"] == [IGNORE_INDEX] * 13 + row["input_ids"][13:15] + [IGNORE_INDEX] * 5


def test_line_by_line_truncation_and_dropped_rows(word_tokenizer):
    ds, stats = tokenize_with_stats(TONE_ROWS, pre(strategy="line-by-line", max_seq_len=10), word_tokenizer)
    assert all(len(x) == 10 and x[-1] != EOS for x in ds["input_ids"]) and stats.truncated_rows == 6
    # masked: rows 0-3 keep only their 14 masked prompt tokens: no loss left, so they are dropped
    ds, stats = tokenize_with_stats(TONE_ROWS, pre(strategy="line-by-line", max_seq_len=14, train_on_prompt=False),
                                    word_tokenizer)
    assert (ds.num_rows, stats.dropped_rows, stats.truncated_rows) == (2, 4, 6)
    assert [sum(x != IGNORE_INDEX for x in lab) for lab in ds["labels"]] == [1, 1]
    with pytest.raises(DataError, match="every row lost its answer to truncation at max_seq_len 12"):
        tokenize(TONE_ROWS, pre(strategy="line-by-line", max_seq_len=12, train_on_prompt=False), word_tokenizer)


def test_add_special_tokens_and_attention_mask_options(word_tokenizer):
    ds = tokenize(TONE_ROWS[:1], pre(strategy="line-by-line", add_special_tokens=False, use_attention_mask=False),
                  word_tokenizer)
    assert ds.column_names == ["input_ids", "labels"]
    assert len(ds[0]["input_ids"]) == 15 and ds[0]["input_ids"][0] != BOS and ds[0]["input_ids"][-1] == EOS


def test_a_bos_written_by_the_template_is_not_doubled(word_tokenizer):
    ds = tokenize(TONE_ROWS[:1], pre(strategy="line-by-line", text_template="<s>{phrase} {tone}</s>"),
                  word_tokenizer)
    assert word_tokenizer.convert_ids_to_tokens(ds[0]["input_ids"]) == [
        "<s>", "I", "lost", "my", "dog", "today", "Sad", "</s>"]


def test_masking_needs_a_prompt(word_tokenizer):
    with pytest.raises(DataError, match="needs a prompt before the answer"):
        tokenize(TONE_ROWS, pre(text_template="{phrase}", train_on_prompt=False), word_tokenizer)
    with pytest.raises(DataError, match="text_cols has one column"):
        tokenize(TONE_ROWS, pre(text_cols=["phrase"], train_on_prompt=False), word_tokenizer)


def test_masking_boundary_on_byte_level_bpe(bpe_tokenizer):
    # this tokenizer (like the tiny Phi-3's) has no post-processor: add_special_tokens adds no <s>
    ds = tokenize(TONE_ROWS, pre(strategy="line-by-line", train_on_prompt=False), bpe_tokenizer)
    for row, ids, labels in zip(TONE_ROWS, ds["input_ids"], ds["labels"]):
        masked = [i for i, lab in zip(ids, labels) if lab == IGNORE_INDEX]
        answer = [lab for lab in labels if lab != IGNORE_INDEX]
        assert bpe_tokenizer.decode(masked, skip_special_tokens=False) == TEMPLATE.format(**row)[:-len(row["tone"])]
        assert answer[-1] == bpe_tokenizer.eos_token_id
        assert bpe_tokenizer.decode(answer[:-1]) == row["tone"]


# -------------------------------------------------------------------------------------------------- join
def test_join_packs_blocks_of_exactly_max_seq_len(word_tokenizer):
    ds, stats = tokenize_with_stats(TONE_ROWS, pre(strategy="join", max_seq_len=16), word_tokenizer,
                                    keep_row_ids=True)
    # 16+16+16+16+15+15 = 94 tokens -> 5 full blocks and one of 14 tokens padded to 16
    assert [len(x) for x in ds["input_ids"]] == [16] * 6
    assert ds["row_ids"] == [[0], [1], [2], [3], [4, 5], [5]]
    assert ds[0]["input_ids"][15] == EOS and ds[1]["input_ids"][0] == BOS  # eos between samples
    last = ds[5]
    assert last["attention_mask"] == [1] * 14 + [0] * 2 and last["labels"][14:] == [IGNORE_INDEX] * 2
    assert last["input_ids"][14:] == [PAD, PAD]
    assert ds[4]["labels"] == ds[4]["input_ids"]
    assert (stats.sequences, stats.tokens, stats.non_pad_tokens, stats.loss_tokens) == (6, 96, 94, 94)


def test_join_keeps_each_samples_prompt_mask(word_tokenizer):
    ds = tokenize(TONE_ROWS, pre(strategy="join", max_seq_len=32, train_on_prompt=False), word_tokenizer)
    labels = ds[0]["labels"]
    ids = ds[0]["input_ids"]
    assert labels[:14] == [IGNORE_INDEX] * 14 and labels[14:16] == ids[14:16]  # row 0: Sad </s>
    assert labels[16:30] == [IGNORE_INDEX] * 14 and labels[30:32] == ids[30:32]  # row 1: Joy </s>
    assert ds.column_names == ["input_ids", "attention_mask", "labels"]


def test_join_leaves_out_blocks_of_prompt_tokens_only(word_tokenizer):
    # rows of 16, 16, 16, 16, 15, 15 tokens, each ending in its label and </s>: in blocks of 8, every other block
    # holds prompt tokens only. A step on one would still move the weights (AdamW), and log a loss of 0.
    masked = pre(strategy="join", max_seq_len=8, train_on_prompt=False)
    ds, stats = tokenize_with_stats(TONE_ROWS, masked, word_tokenizer, keep_row_ids=True)
    assert (ds.num_rows, stats.no_loss_blocks, stats.sequences) == (6, 6, 6)
    assert ds["row_ids"] == [[0], [1], [2], [3], [4, 5], [5]]
    assert [sum(x != IGNORE_INDEX for x in labels) for labels in ds["labels"]] == [2] * 6
    assert stats.summary()["no_loss_blocks"] == 6
    whole, stats = tokenize_with_stats(TONE_ROWS, pre(strategy="join", max_seq_len=8), word_tokenizer)
    assert (whole.num_rows, stats.no_loss_blocks) == (12, 0)


def test_collator_pads_a_batch(word_tokenizer):
    import torch

    ds = tokenize(TONE_ROWS[3:5], pre(strategy="line-by-line"), word_tokenizer)
    batch = Collator.for_tokenizer(word_tokenizer, pad_to_multiple_of=8)(list(ds))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    assert batch["input_ids"].shape == (2, 16) and batch["input_ids"].dtype == torch.long
    assert batch["labels"][1, 15].item() == IGNORE_INDEX and batch["attention_mask"][1].sum().item() == 15
    assert batch["input_ids"][1, 15].item() == PAD


# ------------------------------------------------------------------------------------------- properties
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from data_fixtures import BASE_WORDS, make_word_tokenizer  # noqa: E402

_TOKENIZER = make_word_tokenizer()
_PHRASES = st.lists(st.lists(st.sampled_from([w for w in BASE_WORDS if w.isalpha()]), min_size=1, max_size=12)
                    .map(" ".join), min_size=1, max_size=8)


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(phrases=_PHRASES, max_seq_len=st.integers(8, 40), mask=st.booleans())
def test_join_invariants(phrases, max_seq_len, mask):
    rows = [{"phrase": p, "tone": "Joy"} for p in phrases]
    p = pre(strategy="join", max_seq_len=max_seq_len, train_on_prompt=not mask)
    ds, stats = tokenize_with_stats(rows, p, _TOKENIZER, keep_row_ids=True)
    per_row = [n_tokens(r) for r in rows]
    assert all(len(x) == max_seq_len for x in ds["input_ids"])
    assert ds.num_rows + stats.no_loss_blocks == -(-sum(per_row) // max_seq_len)
    assert all(any(x != IGNORE_INDEX for x in labels) for labels in ds["labels"])  # prompt-only blocks left out
    loss = sum(x != IGNORE_INDEX for labels in ds["labels"] for x in labels)
    assert loss == (2 * len(rows) if mask else sum(per_row))  # masked: the label and </s> of each row
    if not mask:
        assert stats.no_loss_blocks == 0 and stats.non_pad_tokens == sum(per_row)
        stream = [t for ids, att in zip(ds["input_ids"], ds["attention_mask"]) for t, a in zip(ids, att) if a]
        assert stream.count(EOS) == len(rows) and stream.count(BOS) == len(rows)
        assert sorted({r for block in ds["row_ids"] for r in block}) == list(range(len(rows)))


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(phrases=_PHRASES, max_seq_len=st.integers(8, 40), pad=st.booleans())
def test_line_by_line_invariants(phrases, max_seq_len, pad):
    rows = [{"phrase": p, "tone": "Joy"} for p in phrases]
    p = pre(strategy="line-by-line", max_seq_len=max_seq_len, pad_to_max_len=pad)
    ds, stats = tokenize_with_stats(rows, p, _TOKENIZER)
    per_row = [n_tokens(r) for r in rows]
    assert [sum(a) for a in ds["attention_mask"]] == [min(n, max_seq_len) for n in per_row]
    assert stats.truncated_rows == sum(n > max_seq_len for n in per_row)
    assert all(len(x) == (max_seq_len if pad else min(n, max_seq_len)) for x, n in zip(ds["input_ids"], per_row))
    for ids, labels, att in zip(ds["input_ids"], ds["labels"], ds["attention_mask"]):
        assert [lab for lab, a in zip(labels, att) if a] == [i for i, a in zip(ids, att) if a]
        assert all(lab == IGNORE_INDEX for lab, a in zip(labels, att) if not a)
