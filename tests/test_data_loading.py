"""tunecell.data.load_rows: local formats, file selection, max_samples/shuffle, and every bad-data error."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from data_fixtures import TEMPLATE, TONE_ROWS, _isolated_hf_home, data_config, tone_file, write_jsonl  # noqa: F401
from tunecell.config.schema import AzureMLDatastore, DataConfig
from tunecell.data import load_rows
from tunecell.errors import DataError


def phrases(rows) -> list[str]:
    return [r["phrase"] for r in rows]


# ---------------------------------------------------------------------------------------------- formats
def test_jsonl_relative_to_base_dir(tmp_path):
    write_jsonl(tmp_path / "data" / "tones.jsonl", TONE_ROWS)
    rows = load_rows(data_config("data/tones.jsonl"), base_dir=tmp_path)
    assert rows.num_rows == 6 and rows.column_names == ["phrase", "tone"]
    assert rows[0] == TONE_ROWS[0]


def test_relative_paths_default_to_cwd(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "tones.jsonl", TONE_ROWS)
    monkeypatch.chdir(tmp_path)
    assert load_rows(data_config("tones.jsonl")).num_rows == 6


def test_json_array_csv_parquet_and_text(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps(TONE_ROWS), encoding="utf-8")
    assert phrases(load_rows(data_config(str(tmp_path / "a.json")))) == phrases(TONE_ROWS)

    lines = ["phrase,tone"] + [f'"{r["phrase"]}",{r["tone"]}' for r in TONE_ROWS]
    (tmp_path / "a.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = load_rows(data_config(str(tmp_path / "a.csv"), data_name="csv"))
    assert rows.to_list() == TONE_ROWS

    pq.write_table(pa.Table.from_pylist(TONE_ROWS), tmp_path / "a.parquet")
    assert load_rows(data_config(str(tmp_path / "a.parquet"), data_name="parquet")).to_list() == TONE_ROWS

    (tmp_path / "a.txt").write_text("first line\n\nsecond line\n", encoding="utf-8")
    rows = load_rows(data_config(str(tmp_path / "a.txt"), data_name="text", text_template=None))
    assert rows.to_list() == [{"text": "first line"}, {"text": "second line"}]


def test_a_file_of_one_object_is_one_row(tmp_path):
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    for name, row, pre in (("one.jsonl", TONE_ROWS[0], {}), ("one.json", TONE_ROWS[0], {}),
                           ("chat.jsonl", chat, {"use_chat_template": True})):
        (tmp_path / name).write_text(json.dumps(row) + "\n", encoding="utf-8")
        assert load_rows(data_config(str(tmp_path / name), **pre)).to_list() == [row], name


def test_csv_values_stay_text(tmp_path):
    (tmp_path / "a.csv").write_text("phrase,tone\n007 is here,1\n", encoding="utf-8")
    rows = load_rows(data_config(str(tmp_path / "a.csv"), data_name="csv"))
    assert rows[0] == {"phrase": "007 is here", "tone": "1"}


def test_glob_list_and_split_mapping(tmp_path):
    write_jsonl(tmp_path / "part-1.jsonl", TONE_ROWS[:2])
    write_jsonl(tmp_path / "part-2.jsonl", TONE_ROWS[2:4])
    write_jsonl(tmp_path / "test.jsonl", TONE_ROWS[4:])
    assert phrases(load_rows(data_config("part-*.jsonl"), tmp_path)) == phrases(TONE_ROWS[:4])
    assert load_rows(data_config(["part-2.jsonl", "test.jsonl"]), tmp_path).num_rows == 4
    mapping = {"train": "part-*.jsonl", "test": ["test.jsonl"]}
    assert load_rows(data_config(mapping, split="test"), tmp_path).to_list() == TONE_ROWS[4:]
    assert load_rows(data_config(mapping, split="train[:3]"), tmp_path).num_rows == 3
    assert phrases(load_rows(data_config(mapping, split="train[50%:]"), tmp_path)) == phrases(TONE_ROWS[2:4])
    with pytest.raises(DataError, match=r"split 'validation' is not in data_files \(splits: train, test\)"):
        load_rows(data_config(mapping, split="validation"), tmp_path)


def folder_config(folder: str, split: str) -> DataConfig:
    return DataConfig(name="d", load_dataset_config={"data_name": folder, "split": split},
                      pre_process_data_config={"text_template": TEMPLATE})


def test_a_folder_is_split_by_name_as_datasets_does(tmp_path):
    write_jsonl(tmp_path / "tones" / "train.jsonl", TONE_ROWS[:4])
    write_jsonl(tmp_path / "tones" / "dev.jsonl", TONE_ROWS[4:])
    assert load_rows(folder_config("tones", "train"), tmp_path).to_list() == TONE_ROWS[:4]
    for split in ("validation", "dev"):  # datasets reads dev.jsonl as the validation split
        assert load_rows(folder_config("tones", split), tmp_path).to_list() == TONE_ROWS[4:], split
    with pytest.raises(DataError, match=r"split 'test' is not in the folder \(splits found: train: train.jsonl; "
                                        r"validation: dev.jsonl\)") as e:
        load_rows(folder_config("tones", "test"), tmp_path)
    assert e.value.file == str(tmp_path / "tones") and "split to train or validation" in e.value.hint

    write_jsonl(tmp_path / "plain" / "tones.jsonl", TONE_ROWS)  # no split name: all train
    assert load_rows(folder_config("plain", "train"), tmp_path).num_rows == 6
    with pytest.raises(DataError, match=r"split 'validation' is not in the folder \(splits found: train: tones.jsonl"):
        load_rows(folder_config("plain", "validation"), tmp_path)


def test_folders_skip_hidden_and_dunder_paths_as_datasets_does(tmp_path):
    write_jsonl(tmp_path / "tones" / "train.jsonl", TONE_ROWS[:2])
    write_jsonl(tmp_path / "tones" / ".ipynb_checkpoints" / "train-checkpoint.jsonl", TONE_ROWS[2:4])
    write_jsonl(tmp_path / "tones" / "__pycache__" / "train.jsonl", TONE_ROWS[4:])
    write_jsonl(tmp_path / "tones" / ".train.jsonl", TONE_ROWS[4:])
    for config in (folder_config("tones", "train"), data_config("tones")):
        assert load_rows(config, tmp_path).to_list() == TONE_ROWS[:2]


def test_max_samples_and_seeded_shuffle(tone_file):
    assert load_rows(data_config(str(tone_file), max_samples=2)).to_list() == TONE_ROWS[:2]
    a = load_rows(data_config(str(tone_file), shuffle=True, data_seed=1))
    b = load_rows(data_config(str(tone_file), shuffle=True, data_seed=1))
    c = load_rows(data_config(str(tone_file), shuffle=True, data_seed=2))
    assert phrases(a) == phrases(b)
    assert sorted(phrases(a)) == sorted(phrases(TONE_ROWS)) and phrases(a) != phrases(TONE_ROWS)
    assert phrases(a) != phrases(c)
    cut = load_rows(data_config(str(tone_file), shuffle=True, data_seed=1, max_samples=3))
    assert phrases(cut) == phrases(a)[:3]


def test_rows_are_in_memory_and_write_no_cache(tone_file, tmp_path_factory):
    rows = load_rows(data_config(str(tone_file)))
    assert rows.cache_files == []
    assert not (tmp_path_factory.getbasetemp() / "hf_home" / "datasets").exists()


def test_import_is_light():
    code = ("import sys, tunecell, tunecell.data, tunecell.widgets; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'ipywidgets', 'pyarrow') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------- errors
def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError) as e:
        load_rows(data_config("data/nope.jsonl"), base_dir=tmp_path)
    assert str(tmp_path / "data" / "nope.jsonl") in str(e.value) and "file not found" in str(e.value)
    assert e.value.file == str(tmp_path / "data" / "nope.jsonl")
    with pytest.raises(DataError, match=r"no file matches 'data/\*\.jsonl'"):
        load_rows(data_config("data/*.jsonl"), base_dir=tmp_path)


@pytest.mark.parametrize("content", [b"", b"  \n\n"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert str(e.value) == f"{path}: file is empty"


def test_csv_with_only_a_header_has_no_rows(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("phrase,tone\n", encoding="utf-8")
    with pytest.raises(DataError, match="file has no rows"):
        load_rows(data_config(str(path), data_name="csv"))


def test_bad_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"phrase": "ok", "tone": "Joy"}\n{"phrase": "caf\xe9", "tone": "Joy"}\n')
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert str(path) in str(e.value) and "line 2, character 16: not valid UTF-8 (byte 0xe9)" in str(e.value)


def test_bad_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"phrase": "ok", "tone": "Joy"}\n\n{"phrase": "oops" "tone": "Joy"}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert e.value.file == str(path) and e.value.row == 2 and "line 3: not valid JSON" in str(e.value)


def test_a_json_line_holding_a_unicode_line_separator_is_one_line(tmp_path):
    """JSON lines end at "\n" only: U+2028 inside a string (legal, unescaped, in JSON) does not split a row."""
    path = tmp_path / "bad.jsonl"
    path.write_text('{"phrase": "one\u2028two", "tone": "Joy"}\n{"phrase": "ok", "tone": "Joy"}\n'
                    '{"phrase": "oops" "tone": "Joy"}\n', encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert e.value.row == 3 and "line 3: not valid JSON" in str(e.value)


def test_template_field_not_a_column_lists_the_columns(tone_file):
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(tone_file), text_template="### Text: {text}\n### The tone is:\n{tone}"))
    assert str(tone_file) in str(e.value)
    assert "text_template field 'text' is not a column (columns: phrase, tone)" in str(e.value)
    assert e.value.column == "text"
    with pytest.raises(DataError, match=r"text_cols column 'body' is not a column \(columns: phrase, tone\)"):
        load_rows(data_config(str(tone_file), text_cols=["phrase", "body"]))
    with pytest.raises(DataError, match=r"label_column 'label' is not a column"):
        load_rows(data_config(str(tone_file), label_column="label"))


def test_null_field_names_row_and_column(tmp_path):
    rows = [dict(r) for r in TONE_ROWS]
    rows[3]["phrase"] = None
    path = write_jsonl(tmp_path / "null.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert (e.value.file, e.value.row, e.value.column) == (str(path), 4, "phrase")
    assert str(e.value).startswith(f"{path}, row 4, column 'phrase': missing value (null) (line 4)")


@pytest.mark.parametrize("name, value, was", [("tones.jsonl", 3, "text"), ("tones.json", True, "text")])
def test_a_value_of_another_kind_than_its_column_names_row_and_column(tmp_path, name, value, was):
    rows = [dict(r) for r in TONE_ROWS]
    rows[2]["tone"] = value
    path = tmp_path / name
    text = "\n".join(json.dumps(r) for r in rows) if name.endswith("l") else json.dumps(rows)
    path.write_text(text + "\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert (e.value.row, e.value.column) == (3, "tone")
    assert f"column 'tone' holds {was} values above, and here {value!r}" in e.value.message
    assert "quote numbers" in e.value.hint


def test_missing_key_counts_as_null(tmp_path):
    path = write_jsonl(tmp_path / "gap.jsonl", TONE_ROWS[:2] + [{"phrase": "no tone here"}])
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path)))
    assert (e.value.row, e.value.column) == (3, "tone")


def test_empty_csv_cell_is_a_null(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("phrase,tone\nfine,Joy\n,Sad\n", encoding="utf-8")
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path), data_name="csv"))
    assert (e.value.row, e.value.column) == (2, "phrase") and "(line 3)" in str(e.value)


def test_label_outside_the_label_set(tmp_path):
    rows = [dict(r) for r in TONE_ROWS]
    rows[4]["tone"] = "Anger"
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    labels = ["Sad", "Joy", "Fear", "Surprise"]
    with pytest.raises(DataError) as e:
        load_rows(data_config(str(path), label_column="tone", labels=labels))
    assert (e.value.file, e.value.row, e.value.column) == (str(path), 5, "tone")
    assert "label 'Anger' is not one of the labels ['Sad', 'Joy', 'Fear', 'Surprise']" in str(e.value)
    # labels without label_column: the template's last field is the label
    with pytest.raises(DataError, match="label 'Anger'"):
        load_rows(data_config(str(path), labels=labels))


def test_errors_are_checked_per_file_with_that_files_row(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", TONE_ROWS)
    bad = write_jsonl(tmp_path / "b.jsonl", [TONE_ROWS[0], {"phrase": None, "tone": "Joy"}])
    with pytest.raises(DataError) as e:
        load_rows(data_config("*.jsonl"), tmp_path)
    assert (e.value.file, e.value.row) == (str(bad), 2)


def test_chat_needs_a_conversation_column(tone_file):
    with pytest.raises(DataError, match=r"needs a 'messages' or 'conversations' column.*columns: phrase, tone"):
        load_rows(data_config(str(tone_file), use_chat_template=True))


# ------------------------------------------------------------------------------------ other sources
def test_azureml_datastore_needs_the_azureml_target():
    uri = "azureml://datastores/workspaceblobstore/paths/data/train.jsonl"
    with pytest.raises(DataError, match="needs the AzureML target or a local copy") as e:
        load_rows(data_config(uri))
    assert uri in str(e.value)
    store = AzureMLDatastore(datastore_name="workspaceblobstore", relative_path="dataset/tones.json")
    config = DataConfig(name="d", load_dataset_config={"data_name": "json", "data_files": store})
    with pytest.raises(DataError, match="azureml://datastores/workspaceblobstore/paths/dataset/tones.json: this "
                                        "needs the AzureML target or a local copy"):
        load_rows(config)


def test_hub_name_offline_says_so(tmp_path):
    config = DataConfig(name="d", load_dataset_config={"data_name": "someone/tones"},
                        pre_process_data_config={"text_template": TEMPLATE})
    with pytest.raises(DataError) as e:
        load_rows(config, tmp_path)
    assert "the HF hub cannot be reached" in str(e.value) and "point data_files at local files" in str(e.value)


def test_hub_connection_failure_says_so(tmp_path, monkeypatch):
    import datasets

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/tones' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    config = DataConfig(name="d", load_dataset_config={"data_name": "someone/tones"},
                        pre_process_data_config={"text_template": TEMPLATE})
    with pytest.raises(DataError, match="(?s)the HF hub cannot be reached.*point data_files at local files"):
        load_rows(config, tmp_path)


def test_saved_dataset_folder(tmp_path):
    import datasets

    datasets.Dataset.from_list(TONE_ROWS).save_to_disk(str(tmp_path / "saved"))
    config = DataConfig(name="d", load_dataset_config={"data_name": "saved"},
                        pre_process_data_config={"text_template": TEMPLATE, "max_samples": 4})
    assert load_rows(config, tmp_path).to_list() == TONE_ROWS[:4]


def test_a_saved_dataset_dict_without_the_split_says_so(tmp_path):
    import datasets

    datasets.DatasetDict({"train": datasets.Dataset.from_list(TONE_ROWS)}).save_to_disk(str(tmp_path / "saved"))
    assert load_rows(folder_config("saved", "train[:2]"), tmp_path).to_list() == TONE_ROWS[:2]
    with pytest.raises(DataError, match=r"split 'test' is not in the saved dataset \(splits: train\)") as e:
        load_rows(folder_config("saved", "test"), tmp_path)
    assert e.value.file == str(tmp_path / "saved")


def test_a_single_saved_dataset_has_no_other_split(tmp_path):
    import datasets

    datasets.Dataset.from_list(TONE_ROWS).save_to_disk(str(tmp_path / "saved"))
    assert load_rows(folder_config("saved", "train[:2]"), tmp_path).to_list() == TONE_ROWS[:2]
    with pytest.raises(DataError, match="split 'test': a single saved Dataset has no splits") as e:
        load_rows(folder_config("saved", "test"), tmp_path)
    assert e.value.file == str(tmp_path / "saved") and "drop load_dataset_config.split" in e.value.hint

    test_split = datasets.Dataset.from_list(TONE_ROWS, split=datasets.Split.TEST)
    test_split.save_to_disk(str(tmp_path / "saved_test"))  # it keeps the name of the split it was saved from
    assert load_rows(folder_config("saved_test", "test"), tmp_path).num_rows == 6
    with pytest.raises(DataError, match=r"no splits \(it was saved from split 'test'\)"):
        load_rows(folder_config("saved_test", "validation"), tmp_path)


def test_a_file_that_does_not_parse_as_data_name_but_is_named_as_another_format_gets_that_hint(tmp_path):
    path = tmp_path / "tones.csv"
    path.write_text("phrase,tone\nI lost my dog,Sad\n", encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as e:
        load_rows(data_config(str(path)))  # data_name: json
    assert e.value.hint == ("the file's name says csv, load_dataset_config.data_name says json: write "
                            "data_name: csv")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"phrase": "x", "tone": "Sad"}\n{"phrase": \n', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as e:
        load_rows(data_config(str(bad)))
    assert e.value.hint is None  # a .jsonl that is broken: data_name is right
