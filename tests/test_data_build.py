"""split_rows, build_training_data, eval_examples and data_hash."""
from __future__ import annotations

import pytest

from data_fixtures import (TEMPLATE, TONE_ROWS, _isolated_hf_home, data_config, tone_file,  # noqa: F401
                           word_tokenizer, write_jsonl)
from tunecell.data import build_training_data, data_hash, eval_examples, load_rows, split_rows
from tunecell.data.split import split_indices
from tunecell.errors import DataError

ROWS = [{"phrase": f"phrase number {i}", "tone": ["Sad", "Joy", "Fear", "Surprise"][i % 4]} for i in range(40)]


def phrases(rows) -> list[str]:
    return [r["phrase"] for r in rows]


# ----------------------------------------------------------------------------------------------- split
def test_split_is_seeded_and_reproducible(tmp_path):
    rows = load_rows(data_config(str(write_jsonl(tmp_path / "r.jsonl", ROWS))))
    train, held = split_rows(rows, 0.25, seed=7)
    again_train, again_held = split_rows(rows, 0.25, seed=7)
    other_train, other_held = split_rows(rows, 0.25, seed=8)
    assert (train.num_rows, held.num_rows) == (30, 10)
    assert phrases(held) == phrases(again_held) and phrases(train) == phrases(again_train)
    assert phrases(held) != phrases(other_held)
    assert set(phrases(train)).isdisjoint(phrases(held)) and len(set(phrases(train) + phrases(held))) == 40
    assert phrases(train) == [p for p in phrases(ROWS) if p not in set(phrases(held))]  # original order kept
    # the split depends on the seed and the row count only: it is fixed across runs and machines
    assert split_indices(10, 3, seed=0)[1] == [0, 6, 9]


def test_split_by_count_none_and_bad_sizes():
    assert split_rows(ROWS, None, seed=0) == (ROWS, None)
    train, held = split_rows(ROWS, 5, seed=0)
    assert (len(train), len(held)) == (35, 5)
    assert len(split_rows(ROWS, 5.0, seed=0)[1]) == 5  # the config gives floats
    assert len(split_rows(ROWS[:3], 0.01, seed=0)[1]) == 1  # a fraction holds out at least one row
    with pytest.raises(DataError, match="takes 40 of the 40 rows and leaves none to train on"):
        split_rows(ROWS, 40, seed=0)
    with pytest.raises(DataError, match="a fraction below 1"):
        split_rows(ROWS, 2.5, seed=0)


# ---------------------------------------------------------------------------------------------- build
def test_build_training_data(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "r.jsonl", ROWS)
    config = data_config(path.name, strategy="line-by-line", train_on_prompt=False, max_seq_len=13)
    data = build_training_data(config, word_tokenizer, eval_dataset_size=0.2, seed=3, base_dir=tmp_path)
    assert (data.train.num_rows, data.eval.num_rows) == (32, 8)
    assert set(phrases(data.train_rows)).isdisjoint(phrases(data.eval_rows))
    assert phrases(data.eval_rows) == phrases(split_rows(load_rows(config, tmp_path), 0.2, seed=3)[1])
    # "### Text: phrase number 7\n### The tone is:\nJoy" is 12 tokens; with <s> and </s>, 14: cut at 13, the
    # label stays (the 12 prompt tokens are masked), </s> goes
    s = data.stats
    assert (s.rows, s.train_rows, s.eval_rows, s.train_sequences, s.eval_sequences) == (40, 32, 8, 32, 8)
    assert (s.length_min, s.length_max, s.truncated_rows, s.dropped_rows) == (14, 14, 32, 0)
    assert (s.tokens, s.non_pad_tokens, s.loss_tokens) == (32 * 13, 32 * 13, 32)
    assert s.eval_source == "split" and s.as_dict()["strategy"] == "line-by-line"


def test_build_stats_exact(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "r.jsonl", TONE_ROWS)
    config = data_config(str(path), strategy="line-by-line", train_on_prompt=False, max_seq_len=15)
    data = build_training_data(config, word_tokenizer)
    s = data.stats
    # rows 0-3 have 16 tokens (cut to 15, keeping "Sad" but losing </s>), rows 4-5 have 15
    assert (s.rows, s.train_rows, s.eval_rows, data.eval, data.eval_rows) == (6, 6, 0, None, None)
    assert (s.length_min, s.length_median, s.length_p95, s.length_max) == (15, 16, 16, 16)
    assert (s.truncated_rows, s.dropped_rows, s.tokens, s.non_pad_tokens) == (4, 0, 90, 90)
    assert s.loss_tokens == 4 * 1 + 2 * 2


def test_build_with_an_eval_data_config(tmp_path, word_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", TONE_ROWS[:4])
    write_jsonl(tmp_path / "eval.jsonl", TONE_ROWS[4:])
    train_config = data_config("train.jsonl", strategy="join", max_seq_len=16)
    eval_config = data_config("eval.jsonl", name="held", strategy="line-by-line",
                              text_template="{phrase} => {tone}")
    data = build_training_data(train_config, word_tokenizer, eval_data_config=eval_config, base_dir=tmp_path)
    assert data.train.num_rows == 4 and data.eval_rows.to_list() == TONE_ROWS[4:]
    assert [len(x) for x in data.eval["input_ids"]] == [8, 8]  # its own template and strategy
    assert data.stats.eval_source == "held"
    with pytest.raises(DataError, match="not both"):
        build_training_data(train_config, word_tokenizer, eval_data_config=eval_config, eval_dataset_size=0.5,
                            base_dir=tmp_path)


def test_an_eval_set_that_truncation_empties_is_named(tmp_path, word_tokenizer):
    write_jsonl(tmp_path / "train.jsonl", TONE_ROWS)
    write_jsonl(tmp_path / "eval.jsonl", TONE_ROWS)
    train_config = data_config("train.jsonl", strategy="line-by-line", train_on_prompt=False, max_seq_len=64)
    eval_config = data_config("eval.jsonl", name="held", strategy="line-by-line", train_on_prompt=False,
                              max_seq_len=8)  # the 11 prompt tokens fill every row: no answer is left
    with pytest.raises(DataError, match="^the evaluation set of data config 'held' has no sequence left: every row "
                                        "lost its answer to truncation at max_seq_len 8") as e:
        build_training_data(train_config, word_tokenizer, eval_data_config=eval_config, base_dir=tmp_path)
    assert e.value.hint == "raise max_seq_len of data config 'held'"
    with pytest.raises(DataError, match="^the training set of data config 'held' has no sequence left"):
        build_training_data(eval_config, word_tokenizer, base_dir=tmp_path)
    long = {"phrase": "dog " * 20, "tone": "Sad"}  # held out (seed 5), it alone loses its answer at 16 tokens
    write_jsonl(tmp_path / "mixed.jsonl", TONE_ROWS[:4] + [long])
    config = data_config("mixed.jsonl", strategy="line-by-line", train_on_prompt=False, max_seq_len=16)
    assert split_indices(5, 1, 5)[1] == [4]
    with pytest.raises(DataError, match="^the held-out evaluation set of data config 'tones' has no sequence left"):
        build_training_data(config, word_tokenizer, eval_dataset_size=1, seed=5, base_dir=tmp_path)


def test_tokenizing_errors_name_the_file_and_its_row(tmp_path, word_tokenizer):
    good = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    bad = {"messages": [{"role": "user", "content": "hello"}, None]}
    write_jsonl(tmp_path / "a.jsonl", [good] * 3)
    b = write_jsonl(tmp_path / "b.jsonl", [good] * 5 + [bad] + [good] * 2)
    config = data_config("*.jsonl", use_chat_template=True, shuffle=True, data_seed=5)
    loaded = load_rows(config, tmp_path).to_list().index(bad)
    assert loaded != 8  # shuffled: its place among the loaded rows is not its place in the files
    held_out = [loaded in split_indices(11, 0.3, seed)[1] for seed in range(20)]
    for size, seed in ((None, 0), (0.3, held_out.index(False)), (0.3, held_out.index(True))):  # train, then eval
        with pytest.raises(DataError, match="messages item 2 is null, not a message") as e:
            build_training_data(config, word_tokenizer, eval_dataset_size=size, seed=seed, base_dir=tmp_path)
        assert (e.value.file, e.value.row, e.value.column) == (str(b), 6, "messages"), (size, seed)


def test_a_conversation_without_an_assistant_message_is_named_by_file_and_row(tmp_path, word_tokenizer):
    good = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, good, {"messages": [{"role": "user", "content": "hello"}]}])
    config = data_config("chat.jsonl", use_chat_template=True, train_on_prompt=False, strategy="line-by-line")
    with pytest.raises(DataError, match="this conversation has no assistant message to train on") as e:
        build_training_data(config, word_tokenizer, base_dir=tmp_path)
    assert (e.value.file, e.value.row) == (str(path), 3)


# ---------------------------------------------------------------------------------------- eval_examples
def test_eval_examples(tone_file):
    rows = load_rows(data_config(str(tone_file)))
    config = data_config(str(tone_file)).pre_process_data_config
    pairs = eval_examples(rows, config, "tone")
    assert pairs[0] == ("### Text: I lost my dog today\n### The tone is:\n", "Sad")
    assert [label for _, label in pairs] == [r["tone"] for r in TONE_ROWS]
    other = data_config(str(tone_file), text_template="Tone: {tone}\nText: {phrase}").pre_process_data_config
    assert eval_examples(TONE_ROWS[:1], other, "tone") == [("Tone: ", "Sad")]
    with pytest.raises(DataError, match=r"label_column 'label' is not a field of text_template .*fields: phrase, tone"):
        eval_examples(rows, config, "label")


# ---------------------------------------------------------------------------------------------- hashing
def test_data_hash_is_stable_and_follows_content(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "r.jsonl", TONE_ROWS)
    config = data_config("r.jsonl")
    first = data_hash(config, tmp_path)
    assert len(first) == 64 and first == data_hash(config, tmp_path)
    assert first == data_hash(data_config(str(path)), tmp_path)  # absolute or relative: the same files
    # the text template is not data: same hash unless asked for
    assert data_hash(data_config("r.jsonl", text_template="{phrase}"), tmp_path) == first
    assert data_hash(data_config("r.jsonl", text_template="{phrase}"), tmp_path, include_preprocess=True) != \
        data_hash(config, tmp_path, include_preprocess=True)
    assert data_hash(data_config("r.jsonl", split="train[:2]"), tmp_path) != first  # the load config counts
    write_jsonl(path, TONE_ROWS[:5] + [{"phrase": "she danced all night", "tone": "Fear"}])
    changed = data_hash(config, tmp_path)
    assert changed != first
    # never loads the data
    import tunecell.data.loading as loading
    monkeypatch.setattr(loading, "load_table", lambda *a, **k: pytest.fail("data_hash loaded the dataset"))
    assert data_hash(config, tmp_path) == changed


def test_data_hash_covers_every_file_of_a_glob(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TONE_ROWS[:3])
    write_jsonl(tmp_path / "b.jsonl", TONE_ROWS[3:])
    config = data_config("*.jsonl")
    before = data_hash(config, tmp_path)
    write_jsonl(tmp_path / "c.jsonl", TONE_ROWS[:1])
    assert data_hash(config, tmp_path) != before


def test_data_hash_of_sources_not_on_this_machine(tmp_path):
    uri = "azureml://datastores/store/paths/tones.jsonl"
    assert data_hash(data_config(uri)) == data_hash(data_config(uri)) != data_hash(data_config(uri + "l"))
    with pytest.raises(DataError, match="file not found"):
        data_hash(data_config("missing.jsonl"), tmp_path)
