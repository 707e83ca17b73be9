"""The config form (ipywidgets, no kernel needed): round trips of the four dialects, errors on their fields in the
loader's words, Apply through %%finetune --form, debouncing, the live YAML/plan/estimate, and the static fallback."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from traitlets.config import Config

from fake_kernel import in_a_kernel
from tunecell.config import load_config
from tunecell.config.loader import _tree
from tunecell.errors import ConfigError
from tunecell.widgets import ConfigForm, config_form
from tunecell.widgets.form import plain, set_in, tree_path

CONFIGS = Path(__file__).parent / "configs"
DIALECTS = ["cookbook.json", "params_config.json", "olive013.json", "tunecell.yaml"]
DATA = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
R = "passes.lora.r"
MAX_SEQ_LEN = "data_configs.tones.pre_process_data_config.max_seq_len"

BODY = """\
# the tone task on the tiny model
input_model: {{model_path: {model}}}
data_configs:
  - name: tones
    load_dataset_config: {{data_name: json, data_files: {data}}}
    pre_process_data_config:
      text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}"
      strategy: line-by-line
      max_seq_len: 64
      train_on_prompt: false
passes:
  lora:
    type: LoRA
    r: 16
    alpha: 32
    target_modules: [qkv_proj, o_proj]
    train_data_config: tones
    eval_dataset_size: 0.2
    training_args: {{max_steps: 40, learning_rate: 3.0e-4, per_device_train_batch_size: 8, seed: 0}}
  merge: {{type: MergeAdapterWeights}}
  mb: {{type: ModelBuilder, precision: int4}}
evaluators:
  tone_eval:
    metrics:
      - {{name: accuracy, type: accuracy, data_config: tones, label_column: tone, max_new_tokens: 4}}
      - {{name: latency, type: latency}}
evaluator: tone_eval
cache_dir: {cache}
output_dir: {out}
"""


@pytest.fixture(scope="module")
def body(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("form")
    return BODY.format(model=tiny_model, data=DATA, cache=root / "cache", out=root / "out")


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture
def form(body: str, tokenizer) -> ConfigForm:
    return config_form(body, tokenizer=tokenizer)


def loader_message(text: str, path: tuple, value: Any) -> str:
    """What load_config says about the config with ``path`` (a ConfigError path) set to ``value``."""
    tree = plain(_tree(text, None)[0])
    set_in(tree, tree_path(tree, path), value)
    with pytest.raises(ConfigError) as info:
        load_config(tree)
    return info.value.message


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", DIALECTS)
def test_each_dialect_round_trips(name: str) -> None:
    original = load_config(CONFIGS / name)
    for source in (CONFIGS / name, (CONFIGS / name).read_text(encoding="utf-8"), original):
        form = config_form(source, estimate=False)
        assert form.valid and not form.errors
        assert load_config(form.yaml).model_dump() == original.model_dump()
    # minimal: the defaults are left out, the rest is there
    assert "r: 64" not in form.yaml and "per_device_eval_batch_size: 1" in form.yaml
    assert form.get("passes.lora.target_modules") == ["o_proj", "qkv_proj"]
    assert form.get("target") == "aml" and form.get("execution_provider") == "cuda"
    # an edit changes that value and nothing else
    form.set("passes.lora.r", 8)
    form.set("passes.lora.training_args.per_device_train_batch_size", 2)
    edited = load_config(form.yaml).model_dump()
    expected = original.model_dump()
    expected["passes"]["lora"]["r"] = 8
    expected["passes"]["lora"]["training_args"]["per_device_train_batch_size"] = 2
    assert edited == expected


def test_the_form_is_generated_from_the_config(form: ConfigForm) -> None:
    import ipywidgets as W

    assert isinstance(form.fields["passes.lora.training_args.learning_rate"].widget, W.FloatLogSlider)
    modules = form.fields["passes.lora.target_modules"].control
    assert isinstance(modules.select, W.SelectMultiple)
    assert list(modules.select.options) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]  # the model's
    assert form.fields["passes.lora.torch_dtype"].widget.options == \
        (("float32", "float32"), ("bfloat16", "bfloat16"), ("float16", "float16"))  # the schema's Literal
    assert form.fields["passes.mb.precision"].widget.value == "int4"
    for key in ("input_model.model_path", "data_configs.tones.pre_process_data_config.text_template",
                "data_configs.tones.pre_process_data_config.strategy", MAX_SEQ_LEN,
                "data_configs.tones.pre_process_data_config.train_on_prompt", "passes.lora.eval_dataset_size",
                "passes.lora.alpha", "passes.lora.lora_dropout", "passes.lora.training_args.max_steps",
                "passes.lora.training_args.gradient_accumulation_steps", "evaluator",
                "evaluators.tone_eval.metrics.accuracy.goal", "target", "execution_provider"):
        assert key in form.fields, key
    text_fields = [f.widget for f in form.fields.values() if isinstance(f.widget, (W.Text, W.Textarea, W.IntText))]
    assert text_fields and all(w.continuous_update is False for w in text_fields)


# ------------------------------------------------------------------------------------ errors on their fields
def test_invalid_values_show_the_loaders_message_on_the_field(form: ConfigForm, body: str) -> None:
    form.set(R, 0)
    expected = loader_message(body, ("passes", "lora", "r"), 0)
    assert expected == "Input should be greater than or equal to 1 (got 0)"
    assert form.errors == {R: expected} and form.fields[R].error == expected
    assert expected in form.fields[R].message.value and not form.valid
    assert form._apply_button.disabled
    with pytest.raises(ConfigError):
        form.apply()
    # a second bad value: both fields show their own message
    form.set(MAX_SEQ_LEN, 2)
    message = loader_message(body, ("data_configs", "tones", "pre_process_data_config", "max_seq_len"), 2)
    assert form.fields[MAX_SEQ_LEN].error.startswith(message.split(" (and")[0])
    assert form.fields[R].error == expected
    assert "greater than or equal to 8" in form._banner.value
    # the estimate and plan stay on the last valid settings, flagged
    assert "last valid settings" in form._plan_box.value
    form.set(R, 8)
    form.set(MAX_SEQ_LEN, 128)
    assert form.valid and form.errors == {} and form.fields[R].message.value == ""
    assert not form._apply_button.disabled


def test_a_cross_section_error_lands_on_the_field_it_names(form: ConfigForm) -> None:
    form.set("target", "nowhere")  # not a system of the config: references.check says so on `target`
    assert "target names system 'nowhere'" in form.fields["target"].error
    form.set("target", "local")
    assert form.valid


def test_typing_into_a_widget_validates(form: ConfigForm) -> None:
    form.fields[R].widget.value = 0  # as the frontend would
    assert "greater than or equal to 1" in form.fields[R].error
    form.fields[R].widget.value = 4
    assert form.valid and form.config.passes["lora"].r == 4


# ----------------------------------------------------------------------------------------- the live outputs
def test_yaml_plan_and_estimate_follow_the_fields(form: ConfigForm, tokenizer) -> None:
    assert "r: 16" in form.yaml and "# the tone task" not in form.yaml
    assert "1. lora [LoRA]" in form.plan_text
    est = form.estimate
    assert est.trainable_params == 16 * 4 * ((256 + 768) + (256 + 256))  # r * (in + out), 4 layers
    tokens_before = est.tokens_per_epoch
    form.set("passes.lora.target_modules", ["qkv_proj", "gate_up_proj", "down_proj"])
    form.set("passes.lora.training_args.learning_rate", 1e-3)
    form.set("passes.lora.training_args.max_steps", ("epochs", None, 2.0))
    form.set(MAX_SEQ_LEN, 24)
    form.set("evaluators.tone_eval.metrics.accuracy.goal", ("min-improvement", 0.05))
    config = load_config(form.yaml)
    lora = config.passes["lora"]
    assert lora.target_modules == ["qkv_proj", "gate_up_proj", "down_proj"]
    assert lora.training_args.learning_rate == 1e-3
    assert (lora.training_args.max_steps, lora.training_args.num_train_epochs) == (-1, 2.0)
    assert config.evaluators["tone_eval"].metrics[0].goal.model_dump() == {"type": "min-improvement", "value": 0.05}
    est = form.estimate
    assert est.trainable_params == 16 * 4 * ((256 + 768) + (256 + 1024) + (512 + 256))
    assert est.tokens_per_epoch < tokens_before and est.steps == 2 * est.sequences_per_epoch // 8 + 2 * (
        est.sequences_per_epoch % 8 > 0)
    assert "training_args.num_train_epochs: 2.0" in form.plan_text
    assert "trainable" in form._estimate_box.value and "tokens per epoch" in form._estimate_box.value
    assert "learning_rate: 0.001" in form._yaml_box.value


def test_target_and_execution_provider(form: ConfigForm) -> None:
    assert (form.get("target"), form.get("execution_provider")) == ("local", "cpu")
    form.set("execution_provider", "cuda")  # a local GPU: a LocalSystem with CUDA becomes the target
    config = load_config(form.yaml)
    assert config.execution_provider == "cuda" and config.target == "local_gpu" and config.host is None
    assert form.get("target") == "local_gpu"
    form.set("target", "local")
    assert form.get("execution_provider") == "cpu" and load_config(form.yaml).target is None


def test_debounced_one_recompute_for_a_burst_of_changes(form: ConfigForm) -> None:
    async def burst() -> tuple[int, int]:
        start = form.recomputes
        for r in (2, 4, 6, 8):
            form.set(R, r)
        during = form.recomputes - start
        await asyncio.sleep(form.debounce + 0.25)
        return during, form.recomputes - start

    during, after = asyncio.run(burst())
    assert (during, after) == (0, 1)
    assert form.config.passes["lora"].r == 8 and "r: 8" in form.yaml


# -------------------------------------------------------------------------------------------------- buttons
def test_preview_data_opens_the_preview_on_the_current_settings(form: ConfigForm) -> None:
    from tunecell.widgets import PreviewWidget

    form.set(MAX_SEQ_LEN, 24)
    shown = form.preview_data()
    assert isinstance(shown, PreviewWidget) and shown.explorer.pre.max_seq_len == 24
    assert form._output.outputs  # displayed below the form
    shown.max_seq_len = 48  # the preview's own control, then its "Write config": back into the form
    shown.buttons["write"].click()
    assert form.get(MAX_SEQ_LEN) == 48 and "max_seq_len: 48" in form.yaml


@pytest.fixture
def ip() -> Iterator[InteractiveShell]:
    InteractiveShell.clear_instance()
    config = Config()
    config.HistoryAccessor.enabled = False
    shell = InteractiveShell.instance(config=config)
    shell.displayhook.flush = lambda: None
    shell.run_line_magic("load_ext", "tunecell")
    yield shell
    shell.run_line_magic("unload_ext", "tunecell")
    InteractiveShell.clear_instance()


def run_form(ip: InteractiveShell, line: str, body: str) -> ConfigForm:
    with capture_output() as captured:
        result = ip.run_cell(f"{line}\n{body}")
    assert result.error_in_exec is None, captured.stderr
    return result.result


def test_apply_rewrites_the_cell(ip: InteractiveShell, body: str, monkeypatch) -> None:
    written: list[tuple[str, bool]] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: written.append((text, replace)))
    form = run_form(ip, "%%finetune --form", body)
    assert isinstance(form, ConfigForm) and form.valid
    form.set(R, 4)
    text = form.apply()
    assert written == [(f"%%finetune\n{form.yaml}", True)] and text == form.yaml
    assert load_config(written[0][0].split("\n", 1)[1]).model_dump() == form.config.model_dump()
    # the other arguments stay on the line; --form goes
    written.clear()
    form = run_form(ip, "%%optimize --target local --form --set passes.lora.alpha=8", body)
    assert form.fields["passes.lora.alpha"].note.startswith("overridden on the magic line")
    form.apply()
    [(text, replace)] = written
    assert text.startswith("%%optimize --target local --set passes.lora.alpha=8\n") and replace
    assert "alpha: 32" in text  # the body's own value; --set still applies when the cell runs


def test_literal_braces_survive_apply_the_preview_and_export(ip: InteractiveShell, body: str, tmp_path: Path,
                                                              monkeypatch) -> None:
    """A template with literal braces, written as the docs say ({{ '{{' }}): what tunecell writes back loads to
    the same template."""
    from tunecell.config.export import export_config
    from tunecell.widgets import preview

    braces = body.replace('"### Text: {phrase}', """"{{ '{{' }}text{{ '}}' }} ### Text: {phrase}""")
    template = load_config(braces).data_configs[0].pre_process_data_config.text_template
    assert template.startswith("{{text}} ### Text: {phrase}")
    written: list[str] = []
    monkeypatch.setattr(ip, "set_next_input", lambda text, replace=False: written.append(text))
    form = run_form(ip, "%%finetune --form", braces)
    form.set(MAX_SEQ_LEN, 32)  # an unrelated edit
    form.apply()
    again = load_config(written[-1].split("\n", 1)[1])
    assert again.data_configs[0].pre_process_data_config.text_template == template
    shown = preview(load_config(braces), tokenizer=form.tokenizer)  # the whole config written out
    shown.max_seq_len = 48
    shown.buttons["write"].click()
    assert load_config(shown.config_text).data_configs[0].pre_process_data_config.text_template == template
    from tunecell.widgets.config_text import write_config

    edited = write_config(body, "tones", {"text_template": '{{"text": "{phrase}"}} -> {tone}'}, {})  # in place
    assert load_config(edited).data_configs[0].pre_process_data_config.text_template == \
        '{{"text": "{phrase}"}} -> {tone}'
    export_config(again, tmp_path / "braces.yaml")
    assert load_config(tmp_path / "braces.yaml").data_configs[0].pre_process_data_config.text_template == template


def test_apply_clicked_after_the_cell_ran_waits_for_that_cell(ip: InteractiveShell, body: str,
                                                              monkeypatch) -> None:
    """In Jupyter a button click is a comm message: a set_next_input payload would ride on the reply of whichever
    cell runs next. The text waits for the form's own cell instead."""
    kernel, written = in_a_kernel(ip, monkeypatch)
    form = run_form(ip, "%%finetune --form", body)
    kernel.header = {"msg_type": "comm_msg", "msg_id": "click-1"}  # the Apply button, clicked later
    form.set(R, 2)
    form._apply_button.click()
    assert written == [] and "run this cell again" in form._status_box.value
    kernel.header = {"msg_type": "execute_request", "msg_id": "other-cell"}  # form.apply() in another cell
    form.apply()
    assert written == []
    kernel.header = {"msg_type": "execute_request", "msg_id": "run-2"}
    with capture_output() as captured:
        ip.run_cell("%%finetune --form\n" + body)  # the form's cell, run again
    assert written == [(f"%%finetune\n{form.yaml}", True)]
    assert "the cell now holds the config" in captured.stdout


def test_invalid_body_still_opens_the_form(ip: InteractiveShell, body: str) -> None:
    form = run_form(ip, "%%finetune --form", body.replace("r: 16", "r: 0"))
    assert not form.valid and "greater than or equal to 1" in form.fields[R].error


# ------------------------------------------------------------------------------------------ static fallback
def test_static_summary_where_widgets_cannot_render(body: str, tokenizer) -> None:
    static = config_form(body, tokenizer=tokenizer, widgets=False)
    bundle = static._repr_mimebundle_()
    assert WIDGET_MIME not in bundle and static.widget is None
    assert "r: 16" in bundle["text/plain"] and "trainable" in bundle["text/plain"]
    assert "<table>" in bundle["text/html"] and "1. lora [LoRA]" in bundle["text/html"]
    static.set(R, 0)  # headless edits validate too
    assert "⚠ Input should be greater than or equal to 1" in static.to_text()
    live = config_form(body, tokenizer=tokenizer, estimate=False)
    bundle = live._repr_mimebundle_()
    assert WIDGET_MIME in bundle and "text/plain" in bundle and "text/html" in bundle


def test_a_config_over_a_base_writes_only_the_overlay(tmp_path: Path, body: str, tokenizer) -> None:
    base = tmp_path / "base.yaml"
    base.write_text(body, encoding="utf-8")
    form = config_form("passes:\n  lora: {type: LoRA, r: 4, train_data_config: tones}\n", base=str(base),
                       tokenizer=tokenizer, estimate=False)
    assert form.get(R) == 4 and form.get(MAX_SEQ_LEN) == 64  # shown from the base
    form.set(MAX_SEQ_LEN, 32)
    merged = load_config(form.yaml, base=str(base))
    assert merged.data_configs[0].pre_process_data_config.max_seq_len == 32 and merged.passes["lora"].r == 4
    assert "input_model" not in form.yaml
    assert form.config.model_dump() == merged.model_dump()
