"""The preview widget (ipywidgets, no kernel needed), its static fallback, and writing the config back."""
from __future__ import annotations

import re

import pytest
import yaml

from data_fixtures import (TEMPLATE, TONE_ROWS, _isolated_hf_home, data_config, make_word_tokenizer,  # noqa: F401
                           tone_file, word_tokenizer, write_jsonl)
from tunecell.config import load_config
from tunecell.data import DataExplorer
from tunecell.errors import DataError
from tunecell.widgets import preview

LONG = {"phrase": "we won the big prize and she danced all night in the dark hallway behind the door",
        "tone": "Joy"}
CONFIG = """# the tone workflow
input_model:
  model_path: {model}
data_configs:
  - name: tones
    load_dataset_config:
      data_name: json
      data_files: {data}
    pre_process_data_config:
      text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}"
      max_seq_len: 64  # plenty for short phrases
passes:
  lora:
    type: LoRA
    train_data_config: tones
    eval_dataset_size: 0.5
evaluators:
  acc:
    metrics:
      - {{name: accuracy, type: accuracy, data_config: tones, label_column: tone,
         labels: [Sad, Joy, Fear, Surprise]}}
"""


def chips(html: str) -> int:
    return html.count('class="tc-tok"')


@pytest.fixture
def long_file(tmp_path):
    return write_jsonl(tmp_path / "tones.jsonl", TONE_ROWS[:3] + [LONG] + TONE_ROWS[3:])


def test_first_page_and_pager_buttons(long_file, word_tokenizer):
    w = preview(data_config(str(long_file), strategy="line-by-line", train_on_prompt=False), word_tokenizer)
    assert (w.index, w.max_seq_len, w.strategy, w.text_template, w.train_on_prompt) == \
        (0, 1024, "line-by-line", TEMPLATE, False)
    assert "<b>row 0</b> of 7" in w.sample_box.value and chips(w.sample_box.value) == 16
    assert "I lost my dog today" in w.sample_box.value
    w.buttons["next"].click()
    w.buttons["next"].click()
    assert w.index == 2 and "footsteps in the dark hallway" in w.sample_box.value
    w.buttons["prev"].click()
    assert w.index == 1
    w.buttons["first"].click()
    w.buttons["prev"].click()
    assert w.index == 0
    w.buttons["longest"].click()
    assert w.index == 3 and "we won the big prize and she danced" in w.sample_box.value
    assert "all rows" in w.stats_box.value  # the longest row needs every row tokenized: stats are exact now
    w.buttons["random"].click()
    assert 0 <= w.index < 7
    w.controls["index"].value = 5
    assert w.index == 5 and "the shop closed forever" in w.sample_box.value
    w.index = 6
    assert w.controls["index"].value == 6 and "she danced all night" in w.sample_box.value


def test_tokens_show_masking_special_tokens_and_the_cut(tone_file, word_tokenizer):
    w = preview(data_config(str(tone_file), strategy="line-by-line", train_on_prompt=False), word_tokenizer)
    html = w.sample_box.value
    spans = re.findall(r'<span class="tc-tok" style="([^"]*)" title="([^"]*)">([^<]*)</span>', html)
    assert [text for _, _, text in spans][:3] == ["&lt;s&gt;", "###", "Text"]
    assert [title.split(" · ")[1] for _, title, _ in spans] == ["label -100"] * 14 + ["label 39", "label 2"]
    assert "special" in spans[0][1] and "special" in spans[-1][1] and "special" not in spans[1][1]
    assert "dashed" in spans[0][0] and "#d8f0d8" in spans[14][0] and "#eeeeee" in spans[1][0]
    assert "✂" not in html
    w.controls["max_seq_len"].value = 10
    assert w.max_seq_len == 10 and w.explorer.pre.max_seq_len == 10
    html = w.sample_box.value
    assert "✂ max_seq_len 10" in html and "line-through" in html
    assert html.index(">today<") < html.index("✂ max_seq_len 10") < html.index(">The<")  # the 11th token is cut
    assert "training drops this row" in html  # the answer is cut away
    held_out = DataExplorer(data_config(str(tone_file), strategy="line-by-line", train_on_prompt=False, max_seq_len=10),
                            word_tokenizer, eval_dataset_size=0.5)
    view = held_out.sample(min(held_out.eval_set))
    from tunecell.widgets.render import sample_html
    html = sample_html(view, strategy="line-by-line", max_seq_len=10, masking=True, total=held_out.n_rows)
    assert view.split == "eval" and "the eval loss leaves this row out" in html and "training drops" not in html
    assert "rows cut at max_seq_len 10 (all rows)</td><td style=\"text-align:left\">6 (100.0%)" in w.stats_box.value


def test_strategy_control_and_join_blocks(tone_file, word_tokenizer):
    w = preview(data_config(str(tone_file), strategy="line-by-line", max_seq_len=16), word_tokenizer)
    assert w.controls["view"].layout.display == "none"
    w.controls["strategy"].value = "join"
    assert w.strategy == "join" and w.explorer.pre.strategy == "join"
    assert w.controls["view"].layout.display == ""
    assert "packed into block 0" in w.sample_box.value
    w.controls["view"].value = "blocks"
    assert w.view == "blocks" and w.index == 0
    assert "<b>block 0</b>" in w.sample_box.value and "rows 0" in w.sample_box.value
    w.controls["index"].value = 4
    html = w.sample_box.value
    assert "<b>block 4</b> of 6" in html and "rows 4, 5" in html and ">r5</sup>" in html
    w.buttons["next"].click()
    assert "2 padding" in w.sample_box.value and chips(w.sample_box.value) == 16
    w.buttons["next"].click()
    assert w.index == 5  # the last block
    assert "join blocks of 16 tokens</td><td style=\"text-align:left\">6" in w.stats_box.value


def test_join_blocks_of_prompt_tokens_only_are_marked_and_not_counted_as_trained(tone_file, word_tokenizer):
    # as tests/test_data_tokenize.py's: blocks of 8 over rows of 15-16 tokens, every other one prompt tokens only
    w = preview(data_config(str(tone_file), strategy="join", max_seq_len=8, train_on_prompt=False), word_tokenizer)
    stats = w.explorer.stats()
    assert stats.exact and (stats.sequences, stats.no_loss_blocks) == (6, 6)  # what the LoRA pass trains on
    assert "join blocks of 8 tokens trained on</td><td style=\"text-align:left\">6" in w.stats_box.value
    assert "blocks of prompt tokens only (left out)</td><td style=\"text-align:left\">6" in w.stats_box.value
    w.controls["view"].value = "blocks"
    assert [w.explorer.block(i).trained for i in range(4)] == [False, True, False, True]
    assert "training leaves this block out" in w.sample_box.value  # block 0
    w.buttons["next"].click()
    assert "training leaves this block out" not in w.sample_box.value
    assert w.explorer.n_blocks() == (12, True)  # the pages number every block


def test_template_control_rerenders_and_rejects_unknown_columns(tone_file, word_tokenizer):
    w = preview(data_config(str(tone_file), strategy="line-by-line"), word_tokenizer)
    w.controls["text_template"].value = "{phrase} => {tone}"
    assert w.error == "" and "I lost my dog today =&gt; Sad" in w.sample_box.value
    w.controls["text_template"].value = "{text} => {tone}"
    assert "text_template field 'text' is not a column (columns: phrase, tone)" in w.error
    assert w.explorer.pre.text_template == "{phrase} => {tone}"  # the last good template stays
    assert "is not a column" in w.error_box.value
    w.buttons["write"].click()
    written = yaml.safe_load(w.config_text)
    assert written["pre_process_data_config"]["text_template"] == "{phrase} => {tone}"


def test_write_config_edits_the_text_in_place(tmp_path, tone_file, word_tokenizer):
    word_tokenizer.save_pretrained(tmp_path / "model")
    text = CONFIG.format(model=tmp_path / "model", data=tone_file)
    got = []
    w = preview(text, on_write=got.append)  # the tokenizer comes from input_model's folder
    assert w.explorer.eval_rows == 3 and "eval rows" in w.stats_box.value
    assert "labels (tone, all rows)" in w.stats_box.value and "Sad: 2 · Joy: 2 · Fear: 1 · Surprise: 1" in \
        w.stats_box.value
    w.buttons["write"].click()
    assert w.config_text == text and got == [text]  # nothing changed
    w.controls["max_seq_len"].value = 32
    w.controls["strategy"].value = "line-by-line"
    w.controls["train_on_prompt"].value = False
    w.buttons["write"].click()
    new = w.config_text
    assert got[-1] == new
    assert "max_seq_len: 32  # plenty for short phrases" in new and "# the tone workflow" in new
    assert "strategy: line-by-line" in new and "train_on_prompt: false" in new
    pre = load_config(new).data_config("tones").pre_process_data_config
    assert (pre.max_seq_len, pre.strategy, pre.train_on_prompt, pre.text_template) == \
        (32, "line-by-line", False, TEMPLATE)


def test_write_config_from_python_objects(tone_file, word_tokenizer):
    w = preview(data_config(str(tone_file), text_cols=["phrase", "tone"]), word_tokenizer)
    assert w.text_template == "{phrase} {tone}"  # text_cols shown as the template it amounts to
    w.controls["max_seq_len"].value = 48
    w.buttons["write"].click()
    written = yaml.safe_load(w.config_text)
    assert written["pre_process_data_config"] == {"text_cols": ["phrase", "tone"], "max_seq_len": 48}
    w.controls["text_template"].value = "{phrase}\n=> {tone}"
    w.buttons["write"].click()
    written = yaml.safe_load(w.config_text)
    assert written["pre_process_data_config"] == {"max_seq_len": 48, "text_template": "{phrase}\n=> {tone}"}
    assert "text_template: |-\n" in w.config_text


def test_static_fallback(tone_file, word_tokenizer):
    static = preview(data_config(str(tone_file), train_on_prompt=False, max_seq_len=32), word_tokenizer,
                     widget=False)
    text, html = repr(static), static._repr_html_()
    assert "row 0 of 6 (train)" in text and "| ### Text: I lost my dog today" in text
    assert "[<s>] [###] [Text] [:] [I] [lost] [my] [dog] [today] [###] [The] [tone] [is] [:] Sad </s>" in text
    assert "stats:" in text and "join blocks of 32 tokens: 3" in text
    assert "I lost my dog today" in html and "<b>block 0</b>" in html and "tc-stats" in html
    w = preview(data_config(str(tone_file)), word_tokenizer)
    bundle = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "I lost my dog today" in bundle["text/html"] and "I lost my dog today" in bundle["text/plain"]


def test_stats_over_a_sample_say_so(tmp_path, word_tokenizer):
    rows = [{"phrase": " ".join(["dog"] * (1 + i % 7)), "tone": "Sad"} for i in range(50)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    explorer = DataExplorer(data_config(str(path), strategy="line-by-line", max_seq_len=14), word_tokenizer,
                            stats_sample=10)
    stats = explorer.stats()
    assert (stats.sampled, stats.exact, stats.rows) == (10, False, 50)
    assert len(explorer._encoded) == 10  # page one did not tokenize the dataset
    from tunecell.widgets.render import stats_text
    assert "a random sample of 10 of 50 rows" in stats_text(stats)
    explorer.all_lengths()
    stats = explorer.stats()
    # "### Text: dog dog\n### The tone is:\nSad": 9 tokens + one per "dog", and <s> </s>
    assert stats.exact and stats.lengths["length_max"] == 18 and stats.truncated == sum(
        1 for i in range(50) if 11 + 1 + i % 7 > 14)


def test_stats_over_a_sample_estimate_the_training_rows_whatever_the_split(tmp_path, word_tokenizer):
    rows = [{"phrase": f"phrase {i}", "tone": "Joy"} for i in range(600)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    # a sample as large as the held-out split: drawn as the split is, every sampled row would be held out
    explorer = DataExplorer(data_config(str(path), strategy="line-by-line", max_seq_len=64), word_tokenizer,
                            eval_dataset_size=0.5, stats_sample=300)
    stats = explorer.stats()
    assert not stats.exact and stats.train_rows == 300
    assert 250 <= stats.sequences <= 350  # every training row is one sequence


def test_chat_config_disables_the_template_box(tmp_path, word_tokenizer):
    path = write_jsonl(tmp_path / "chat.jsonl", [{"user": "hello there", "assistant": "hi"}] * 2)
    w = preview(data_config(str(path), use_chat_template=True, train_on_prompt=False, strategy="line-by-line"),
                word_tokenizer)
    assert w.controls["text_template"].disabled and w.text_template == ""
    assert "&lt;|assistant|&gt;" in w.sample_box.value
    w.controls["max_seq_len"].value = 8
    assert w.error == "" and w.explorer.pre.use_chat_template


def test_a_row_that_cannot_be_tokenized_is_named_by_file_and_row(tmp_path, word_tokenizer):
    good = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good] * 4 + [{"messages": [{"role": "user", "content": "hello"}]}])
    config = data_config(str(path), use_chat_template=True, train_on_prompt=False, strategy="line-by-line",
                         shuffle=True, data_seed=1)
    explorer = DataExplorer(config, word_tokenizer)
    index = next(i for i in range(explorer.n_rows) if len(explorer.row(i)["messages"]) == 1)
    assert index != 4  # shuffled
    for show in (lambda: explorer.sample(index), explorer.stats):
        with pytest.raises(DataError, match="this conversation has no assistant message to train on") as e:
            show()
        assert (e.value.file, e.value.row) == (str(path), 5)


@pytest.mark.parametrize("name", ["tunecell.yaml", "olive013.json", "cookbook.json", "params_config.json"])
def test_write_config_keeps_every_dialect_as_written(name):
    from pathlib import Path

    from tunecell.widgets.config_text import write_config

    text = (Path(__file__).parent / "configs" / name).read_text(encoding="utf-8")
    data_name = load_config(text).data_configs[0].name
    new = write_config(text, data_name, {"max_seq_len": 100, "strategy": "line-by-line", "train_on_prompt": False})
    pre = load_config(new).data_config(data_name).pre_process_data_config
    assert (pre.max_seq_len, pre.strategy, pre.train_on_prompt) == (100, "line-by-line", False)
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert len(set(new_lines) - set(old_lines)) <= 4 and len(set(old_lines) - set(new_lines)) <= 3


def test_write_config_adds_a_missing_section():
    from tunecell.widgets.config_text import write_config

    text = ("input_model: {model_path: m}\ndata_configs:\n  - name: d\n    load_dataset_config:\n"
            "      data_name: json\n      data_files: x.jsonl\n# the end\n")
    new = write_config(text, "d", {"max_seq_len": 32, "text_template": "{a}\n{b}"})
    assert new.startswith(text[:text.index("# the end")]) and new.endswith("# the end\n")
    pre = load_config(new).data_config("d").pre_process_data_config
    assert (pre.max_seq_len, pre.text_template) == (32, "{a}\n{b}")


def test_preview_loads_only_the_input_models_tokenizer(tiny_model, tone_file, monkeypatch):
    import transformers

    def no_weights(*args, **kwargs):
        raise AssertionError("the preview must not load model weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_weights)
    text = CONFIG.format(model=tiny_model, data=tone_file).replace("max_seq_len: 64", "max_seq_len: 64\n"
                                                                  "      train_on_prompt: false")
    w = preview(text)
    assert type(w.explorer.tokenizer).__name__ in ("TokenizersBackend", "PreTrainedTokenizerFast")
    view = w.explorer.sample(0)
    masked = "".join(t.text for t in view.tokens if not t.loss)
    answer = "".join(t.text for t in view.tokens if t.loss)
    assert masked.endswith("### The tone is:\n") and answer.startswith("Sad")
    assert view.tokens[-1].special and view.tokens[-1].loss  # the eos the model learns to stop with


def test_preview_splits_like_the_lora_pass(tmp_path, word_tokenizer):
    from tunecell.data import split_indices
    from tunecell.passes.lora import split_seed

    rows = [{"phrase": f"phrase {i}", "tone": "Joy"} for i in range(30)]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    text = CONFIG.format(model="unused", data=path).replace("eval_dataset_size: 0.5",
                                                           "eval_dataset_size: 0.2\n    training_args: {data_seed: 5}")
    w = preview(text, word_tokenizer)
    seed = split_seed(load_config(text).passes["lora"])
    assert seed == 5 and sorted(w.explorer.eval_set) == split_indices(30, 0.2, seed)[1]
    first_eval = min(w.explorer.eval_set)
    w.index = first_eval
    assert ">eval</span>" in w.sample_box.value


def test_characters_split_over_byte_tokens_show_whole_and_numbered(tiny_model, tmp_path):
    import transformers

    path = write_jsonl(tmp_path / "r.jsonl", [{"phrase": "日本 🎉 party", "tone": "Joy"}])
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)  # byte-level BPE: 日 is three tokens
    shown = preview(data_config(str(path)), tokenizer, widget=False)
    view = shown.explorer.sample(0)
    texts = [t.text for t in view.tokens]
    assert not any("\ufffd" in text for text in texts)
    assert texts[texts.index("日₁"):texts.index("日₁") + 3] == ["日₁", "日₂", "日₃"]
    assert "🎉₄" in "".join(texts)
    assert len(texts) == view.n_tokens  # one chip per token still
    from tunecell.widgets.render import tokens_text
    assert " 日₁ 日₂ 日₃ 本₁ " in tokens_text(view.tokens)  # the text fallback (no masking here)
