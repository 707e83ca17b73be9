"""tunecell.estimate on the tiny random Phi-3 and the example data: exact counts (peft's trainable parameters, the data
pipeline's tokens, the Trainer's steps), the output sizes, and the calibration store (calibrate, record_run).

The time estimate itself is checked against a measured run in bench/bench_estimate.py, not here.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tunecell import estimate as E
from tunecell.config import load_config

DATA = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"

CONFIG = """\
input_model: {{model_path: {model}}}
data_configs:
  - name: tones
    load_dataset_config: {{data_name: json, data_files: {data}}}
    pre_process_data_config:
      text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}"
      strategy: {strategy}
      max_seq_len: {max_seq_len}
      train_on_prompt: false
passes:
  lora:
    type: LoRA
    r: {r}
    alpha: 16
    target_modules: {targets}
    train_data_config: tones
    eval_dataset_size: 0.2
    training_args: {{max_steps: {steps}, per_device_train_batch_size: {batch}, seed: 0}}
  merge: {{type: MergeAdapterWeights}}
  mb: {{type: ModelBuilder, precision: int4}}
cache_dir: {cache}
output_dir: {out}
"""


def config(model: Path, tmp: Path, *, strategy: str = "line-by-line", max_seq_len: int = 64, r: int = 8,
           targets: str = "[qkv_proj, o_proj]", steps: int = 20, batch: int = 8):
    return load_config(CONFIG.format(model=model, data=DATA, strategy=strategy, max_seq_len=max_seq_len, r=r,
                                     targets=targets, steps=steps, batch=batch, cache=tmp / "cache",
                                     out=tmp / "out"))


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def skel(tiny_model: Path):
    cfg = load_config(f"input_model: {{model_path: {tiny_model}}}\n")
    return E.model_skeleton(cfg.input_model)


# ------------------------------------------------------------------------------------------- tokens: exact
@pytest.mark.parametrize("strategy,max_seq_len", [("line-by-line", 64), ("line-by-line", 24), ("join", 128)])
def test_tokens_per_epoch_equal_the_data_pipeline(tiny_model, tmp_path, tokenizer, strategy, max_seq_len):
    from tunecell.data import Collator, build_training_data
    from tunecell.passes.lora import split_seed

    cfg = config(tiny_model, tmp_path, strategy=strategy, max_seq_len=max_seq_len)
    lora = cfg.passes["lora"]
    est = E.estimate(cfg, tokenizer=tokenizer, learn=False)
    data = build_training_data(cfg.data_config("tones"), tokenizer, eval_dataset_size=lora.eval_dataset_size,
                               seed=split_seed(lora))
    stats = data.stats
    assert est.tokens_per_epoch == stats.tokens
    assert est.non_pad_tokens_per_epoch == stats.non_pad_tokens
    assert est.loss_tokens_per_epoch == stats.loss_tokens
    assert (est.sequences_per_epoch, est.train_rows, est.eval_rows) == \
        (stats.train_sequences, stats.train_rows, stats.eval_rows)
    # the tokens a run counts (Collator.tokens) over one epoch
    collator = Collator.for_tokenizer(tokenizer)
    rows = [data.train[i] for i in range(len(data.train))]
    for k in range(0, len(rows), 8):
        collator(rows[k:k + 8])
    assert E.count_tokens(cfg, lora, tokenizer).counted_tokens == collator.tokens


def test_changing_max_seq_len_repacks_without_retokenizing(tiny_model, tmp_path, tokenizer, monkeypatch):
    cfg = config(tiny_model, tmp_path, max_seq_len=64)
    E.count_tokens(cfg, cfg.passes["lora"], tokenizer)
    calls = []
    monkeypatch.setattr(sys.modules["tunecell.data.tokenize"], "encode", lambda *a, **k: calls.append(1) or [])
    shorter = config(tiny_model, tmp_path, max_seq_len=24)
    counts = E.count_tokens(shorter, shorter.passes["lora"], tokenizer)
    assert not calls and counts.truncated_rows > 0


def test_a_data_file_written_again_is_counted_again(tiny_model, tmp_path, tokenizer):
    data = tmp_path / "tones.jsonl"
    data.write_text(DATA.read_text())
    cfg = load_config(CONFIG.format(model=tiny_model, data=data, strategy="line-by-line", max_seq_len=64, r=8,
                                    targets="[qkv_proj, o_proj]", steps=20, batch=8, cache=tmp_path / "cache",
                                    out=tmp_path / "out"))
    before = E.count_tokens(cfg, cfg.passes["lora"], tokenizer)
    data.write_text("\n".join(DATA.read_text().splitlines()[:50]) + "\n")
    after = E.count_tokens(cfg, cfg.passes["lora"], tokenizer)
    assert (before.train_rows, after.train_rows) == (394, 40)


# --------------------------------------------------------------------------------- parameters: exact, as peft
@pytest.mark.parametrize("targets,modules_to_save", [
    (["qkv_proj", "o_proj"], None), (["qkv_proj"], None), ("all-linear", None), (["down_proj"], ["lm_head"]),
    (["model.layers.0.self_attn.qkv_proj"], None)])
def test_trainable_params_equal_peft(tiny_model, skel, targets, modules_to_save):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunecell.config.schema import LoRA

    lora = LoRA(r=4, target_modules=targets, modules_to_save=modules_to_save, train_data_config="x")
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert skel.total_params == sum(p.numel() for p in model.parameters())
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                  modules_to_save=modules_to_save, task_type="CAUSAL_LM"))
    expected = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert E.trainable_params(skel, lora) == expected


def test_the_shape_comes_from_the_config_alone(tiny_model, tmp_path, skel):
    """No weights are read: a folder with config.json only gives the same skeleton."""
    only_config = tmp_path / "config-only"
    only_config.mkdir()
    shutil.copy(tiny_model / "config.json", only_config / "config.json")
    cfg = load_config(f"input_model: {{model_path: {only_config}}}\n")
    bare = E.model_skeleton(cfg.input_model)
    assert bare.key == skel.key and bare.total_params == skel.total_params
    assert list(skel.linear_names) == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]
    assert skel.output_embedding == "lm_head"


# ------------------------------------------------------------------------------------------ steps and sizes
@pytest.mark.parametrize("n,batch,accum,max_steps,epochs,expected", [
    (394, 8, 1, -1, 2.0, (100, 100, 788, 788)),  # 50 batches per epoch
    (394, 8, 1, 20, 1.0, (20, 20, 160, 168)),
    (394, 8, 4, -1, 1.0, (13, 50, 394, 394)),  # the last step takes the 2 remaining batches
    (10, 4, 2, -1, 1.0, (2, 3, 10, 10)),
    # measured with transformers' Trainer (10 rows, batch 4): the collator sees 10, 10 and 28 rows
    (10, 4, 1, 2, 1.0, (2, 2, 8, 10)),  # stops before the last (partial) batch, which was fetched ahead
    (10, 4, 1, 3, 1.0, (3, 3, 10, 10)),
    (10, 4, 1, 7, 1.0, (7, 7, 24, 28)),  # two epochs of 3 batches, then one batch (and one fetched ahead)
])
def test_training_steps_follow_the_trainer(n, batch, accum, max_steps, epochs, expected):
    steps = E.training_steps(n, batch, accum, max_steps, epochs)
    assert (steps.steps, steps.micro_batches, steps.sequences_seen, steps.sequences_collated) == expected


def test_output_sizes(tiny_model, skel):
    # merged: every parameter in fp32, as MergeAdapterWeights saves it (the tiny model is saved in fp32 too)
    weights = (tiny_model / "model.safetensors").stat().st_size
    assert abs(E.merged_bytes(skel) - weights) / weights < 0.002
    assert E.onnx_bytes(skel, "fp32", "cpu") == skel.total_params * 4 + skel.max_positions * skel.head_dim * 4
    assert E.adapter_bytes(1000) == 4000 + 4096


# model.onnx.data as the onnxruntime-genai 0.18 builder wrote it (block 32, CPU), for the tiny Phi-3 (untied
# embeddings, 4 layers) and for SmolLM2-135M (tied embeddings: one quantized matrix serves both, 30 layers)
@pytest.mark.parametrize("algo,symmetric,tiny_bytes,smollm2_bytes", [
    ("default", None, 4_203_520, 86_287_616),  # 4-bit weights + an fp32 scale per block
    ("rtn", None, 4_203_520, 86_287_616),
    ("rtn", False, 4_252_672, None),  # + a 4-bit zero point per block
    ("k_quant", None, 4_252_672, 88_388_864),  # k_quant is always asymmetric
    ("k_quant", True, 4_252_672, None),
    ("k_quant_last", None, 4_523_008, None),  # the lm_head in int8
    ("k_quant_mixed", None, 4_860_928, 113_365_376),  # + q/k/v and down_proj of some layers in int8
])
def test_int4_size_is_the_builders(skel, algo, symmetric, tiny_bytes, smollm2_bytes):
    assert E.onnx_bytes(skel, "int4", "cpu", 32, symmetric, algo) == tiny_bytes
    if smollm2_bytes is not None:
        assert E.onnx_bytes(smollm2_skeleton(), "int4", "cpu", 32, symmetric, algo) == smollm2_bytes


def test_the_builders_command_line_forms_in_extra_options_are_read_as_it_reads_them():
    from tunecell.config.schema import ModelBuilder

    builder = ModelBuilder(extra_options={"is_symmetric": "false", "block_size": "64", "accuracy_level": "4"})
    assert [builder.int4_option(k) for k in ("is_symmetric", "block_size", "accuracy_level")] == [False, 64, 4]
    assert ModelBuilder(extra_options={"is_symmetric": "1"}).int4_option("is_symmetric") is True
    assert ModelBuilder(int4_is_symmetric=False).int4_option("is_symmetric") is False


def test_fp32_size_of_a_tied_model_counts_the_shared_matrix_once():
    assert E.onnx_bytes(smollm2_skeleton(), "fp32", "cpu") == 540_157_184  # the builder's model.onnx.data


def test_mixed_precision_picks_the_builders_layers(skel):
    # layers_to_upgrade of onnxruntime-genai's builder: the first and last eighth, and every third between
    assert E.int8_matmuls(skel, "k_quant") == set()
    assert E.int8_matmuls(skel, "rtn_last") == {"lm_head"}
    assert E.int8_matmuls(skel, "k_quant_mixed") == {"lm_head"} | {
        f"model.layers.{i}.{leaf}" for i in (0, 2) for leaf in ("self_attn.qkv_proj", "mlp.down_proj")}
    smollm2 = {name.split(".")[2] for name in E.int8_matmuls(smollm2_skeleton(), "k_quant_mixed") if "layers" in name}
    assert sorted(map(int, smollm2)) == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29]


def smollm2_skeleton() -> E.Skeleton:
    from transformers import LlamaConfig

    return E.skeleton(LlamaConfig(hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                                  num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                  max_position_embeddings=8192, tie_word_embeddings=True))


def test_estimate_for_a_model_that_is_not_here_says_why(tmp_path):
    cfg = load_config("input_model: {model_path: nobody/not-a-model}\n"
                      f"cache_dir: {tmp_path}\n")
    est = E.estimate(cfg)
    assert est.total_params is None and est.pass_name is None
    assert any("not on this machine" in n for n in est.notes)


# -------------------------------------------------------------------------------- time: calibration store
def test_measured_runs_drive_the_time_estimate(tiny_model, tmp_path, tokenizer):
    cfg = config(tiny_model, tmp_path, steps=20)
    before = E.estimate(cfg, tokenizer=tokenizer, learn=False)
    assert before.seconds is None and "not calibrated" in before.describe()
    assert before.steps == 20 and before.tokens > 0 and before.trainable_params > 0
    stats = {"train_runtime_s": 6.0, "tokens": 3000, "steps": 20}
    result = SimpleNamespace(run_id="r1", config=cfg, passes=[
        SimpleNamespace(name="lora", type="LoRA", status="done", stats=stats),
        SimpleNamespace(name="merge", type="MergeAdapterWeights", status="done", stats={})])
    [comparison] = E.record_run(result)
    assert comparison.estimated_s is None and comparison.measured_s == 6.0 and comparison.measured_tokens == 3000
    after = E.estimate(cfg, tokenizer=tokenizer, learn=False)
    assert after.s_per_token == pytest.approx(6.0 / 3000)
    assert after.seconds == pytest.approx(after.tokens * 6.0 / 3000)
    assert "measured" in after.time_source
    # a second run of the same shape: the median of the measured rates
    result.run_id, stats["train_runtime_s"] = "r2", 12.0
    [second] = E.record_run(result)
    assert second.ratio == pytest.approx(12.0 / after.seconds)
    assert E.estimate(cfg, tokenizer=tokenizer, learn=False).s_per_token == pytest.approx(9.0 / 3000)
    # another batch size: the nearest shape's rate, flagged
    other = config(tiny_model, tmp_path, steps=20, batch=4)
    approx = E.estimate(other, tokenizer=tokenizer, learn=False)
    assert approx.s_per_token == pytest.approx(9.0 / 3000) and "nearest shape" in approx.time_source
    stored = json.loads(next((tmp_path / "cache" / "estimates").glob("phi3-*.json")).read_text())
    assert stored["machine"] == E.machine() and len(stored["shapes"]) == 1


def test_a_rate_measured_with_another_attn_implementation_is_only_the_nearest_shape(tiny_model, tmp_path, tokenizer):
    eager = config(tiny_model, tmp_path, steps=20)
    eager.input_model.load_kwargs.attn_implementation = "eager"  # the LoRA pass trains with it
    E.record_run(SimpleNamespace(run_id="r", config=eager, passes=[SimpleNamespace(
        name="lora", type="LoRA", status="done", stats={"train_runtime_s": 6.0, "tokens": 3000})]))
    assert "measured" in E.estimate(eager, tokenizer=tokenizer, learn=False).time_source
    default = E.estimate(config(tiny_model, tmp_path, steps=20), tokenizer=tokenizer, learn=False)
    assert "nearest shape" in default.time_source


def test_calibrate_runs_real_steps_and_is_cached(tiny_model, tmp_path, tokenizer):
    cfg = config(tiny_model, tmp_path, max_seq_len=32, batch=2, steps=10)
    cal = E.calibrate(cfg, steps=2, warmup=1)
    assert cal.tokens > 0 and cal.seconds > 0 and cal.s_per_token > 0 and cal.steps == 3
    assert cal.overhead_s == pytest.approx(max(0.0, cal.seconds - cal.s_per_token * cal.tokens), abs=1e-3)
    assert cal.path.is_file() and cal.path.parent == tmp_path / "cache" / "estimates"
    est = E.estimate(cfg, tokenizer=tokenizer, learn=False)
    assert est.s_per_token == pytest.approx(cal.s_per_token) and est.time_source.startswith("calibrated")
    assert est.seconds == pytest.approx(cal.overhead_s + cal.s_per_token * est.tokens, rel=1e-3)
    # a measured run then counts beyond the calibrated overhead
    seconds = cal.overhead_s + 10.0
    E.record_run(SimpleNamespace(run_id="r", config=cfg, passes=[SimpleNamespace(
        name="lora", type="LoRA", status="done", stats={"train_runtime_s": seconds, "tokens": 5000})]))
    after = E.estimate(cfg, tokenizer=tokenizer, learn=False)
    assert after.s_per_token == pytest.approx(10.0 / 5000, rel=1e-3) and "measured" in after.time_source


def test_runs_recorded_in_the_cache_are_learned_once(tiny_model, tmp_path, tokenizer):
    """A run's manifest (config without defaults, pass records with stats): the next estimate learns its rate."""
    cfg = config(tiny_model, tmp_path, steps=20)
    manifest = tmp_path / "out" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({
        "run_id": "run-1", "status": "succeeded",
        "config": cfg.model_dump(mode="json", exclude_defaults=True),
        "passes": [{"name": "lora", "type": "LoRA", "status": "done",
                    "stats": {"train_runtime_s": 4.0, "tokens": 2000, "steps": 20}},
                   {"name": "merge", "type": "MergeAdapterWeights", "status": "done", "stats": {}},
                   {"name": "mb", "type": "ModelBuilder", "status": "done", "stats": {}}]}))
    from tunecell.runner.history import record_run

    record_run(tmp_path / "cache", {"run_id": "run-1", "status": "succeeded", "manifest": str(manifest)})
    est = E.estimate(cfg, tokenizer=tokenizer)
    assert est.s_per_token == pytest.approx(4.0 / 2000) and "measured" in est.time_source
    assert E.learn_from_runs(cfg) == []  # learned once
