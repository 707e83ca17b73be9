"""What the runner's evaluation asks a model and how it judges the answers: labels as the template renders them,
prompts tokenized as training tokenizes them, chat prompts for latency, goals met exactly."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tunecell
from tunecell import evaluate
from tunecell.config import schema
from tunecell.data import eval_examples, render
from tunecell.inference import LoadedModel
from tunecell.passes.base import Artifact
from tunecell.runner import evaluation

STARS = "Review: {text}\nStars: {stars:.0f}"


class Answering(LoadedModel):
    """Generates what the training text says after each prompt; notes how it was asked to tokenize."""
    kind, path = "fake", Path(".")

    def __init__(self, answers: dict[str, str]):
        self.answers, self.tokenized = answers, []

    def generate_many(self, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
        self.tokenized.append(self.add_special_tokens)
        return [self.answers[prompt] for prompt in prompts]

    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64, *, fixed_length: bool = False):
        self.tokenized.append(self.add_special_tokens)
        return "", max_new_tokens, 0.01


class Likely(LoadedModel):
    """Finds each prompt's continuation in the training text likely, and any other continuation unlikely."""
    kind, path = "fake", Path(".")

    def __init__(self, answers: dict[str, str]):
        self.answers = answers

    def label_logprobs(self, prompt: str, labels: list[str]) -> list[float]:
        return [0.0 if label == self.answers[prompt] else -10.0 for label in labels]


def stars_config(tmp_path: Path, **pre) -> tunecell.WorkflowConfig:
    rows = [{"text": f"review {i}", "stars": float(1 + i % 5)} for i in range(20)]
    data = tmp_path / "stars.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    return tunecell.load_config({
        "input_model": {"model_path": str(tmp_path / "model")},
        "data_configs": [{"name": "stars", "load_dataset_config": {"data_name": "json", "data_files": str(data)},
                          "pre_process_data_config": {"text_template": STARS, "label_column": "stars", **pre}}],
        "evaluators": {"ev": {"metrics": [{"name": "accuracy", "type": "accuracy", "data_config": "stars"},
                                          {"name": "latency", "type": "latency", "max_new_tokens": 2}]}},
        "evaluator": "ev"})


def trained_answers(config: tunecell.WorkflowConfig) -> dict[str, str]:
    """Each prompt and the answer that follows it in the training text."""
    pre = config.data_configs[0].pre_process_data_config
    rendered = [render(row, pre) for row in evaluation.eval_rows(config, "stars")[0]]
    return {r.prompt: r.text[len(r.prompt):] for r in rendered}


def test_the_expected_label_is_the_label_as_the_template_renders_it():
    pre = schema.PreProcessDataConfig(text_template=STARS, label_column="stars")
    rows = [{"text": "great", "stars": 5.0}, {"text": "bad", "stars": 1.0}]
    assert [render(row, pre).text for row in rows] == ["Review: great\nStars: 5", "Review: bad\nStars: 1"]
    assert eval_examples(rows, pre, "stars") == [("Review: great\nStars: ", "5"), ("Review: bad\nStars: ", "1")]
    conversion = schema.PreProcessDataConfig(text_template="{text} -> {stars!r}", label_column="stars")
    assert eval_examples([{"text": "ok", "stars": "3"}], conversion, "stars") == [("ok -> ", "'3'")]


def test_a_model_that_answers_as_it_was_trained_scores_every_row(tmp_path):
    config = stars_config(tmp_path)
    accuracy = config.evaluators["ev"].metrics[0]
    assert evaluation.candidate_labels(accuracy, config) == ["1", "2", "3", "4", "5"]
    model = Answering(trained_answers(config))
    assert evaluation._one(accuracy, model, Artifact("hf", tmp_path, "x"), config, evaluate) == 1.0


def test_loglikelihood_scores_each_label_with_the_text_the_template_puts_after_it(tmp_path):
    config = stars_config(tmp_path, text_template="Review: {text}\nStars: {stars:.0f}/5\n")
    accuracy = config.evaluators["ev"].metrics[0].model_copy(update={"scoring": "loglikelihood"})
    model = Likely(trained_answers(config))  # trained on "5/5\n": "5" alone, then the end of text, is unlikely
    assert evaluation._one(accuracy, model, Artifact("hf", tmp_path, "x"), config, evaluate) == 1.0


@pytest.mark.parametrize("add", [True, False])
def test_accuracy_and_latency_prompts_are_tokenized_as_the_data_config_says(tmp_path, add):
    config = stars_config(tmp_path, add_special_tokens=add)
    model = Answering(trained_answers(config))
    for metric in config.evaluators["ev"].metrics:
        evaluation._one(metric, model, Artifact("hf", tmp_path, "x"), config, evaluate)
    assert set(model.tokenized) == {add}
    assert model.add_special_tokens is True  # as it was, once measured


def test_latency_on_a_chat_data_config_times_each_conversation_up_to_its_last_answer(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    rows = [{"messages": [{"role": "user", "content": f"say {i}"}, {"role": "assistant", "content": f"ok {i}"}]}
            for i in range(3)]
    rows.append({"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]})
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    config = tunecell.load_config({
        "input_model": {"model_path": str(tiny_model)},
        "data_configs": [{"name": "chat", "load_dataset_config": {"data_name": "json",
                                                                  "data_files": str(tmp_path / "chat.jsonl")},
                          "pre_process_data_config": {"use_chat_template": True}}],
        "evaluators": {"ev": {"metrics": [{"name": "latency", "type": "latency"}]}}, "evaluator": "ev"})
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert evaluation.speed_prompts(config.evaluators["ev"].metrics[0], config) == [
        tokenizer.apply_chat_template(row["messages"][:1], tokenize=False, add_generation_prompt=True)
        for row in rows[:3]] + [tokenizer.apply_chat_template(rows[3]["messages"], tokenize=False)]  # assistant first


def test_a_relative_goal_met_exactly_is_met():
    def failures(goal: str, before: float, after: float, kind: str = "accuracy") -> list[str]:
        metric = schema.Metric(name="m", type=kind, goal={"type": goal, "value": 0.05})
        return evaluation.goal_failures(None, schema.Evaluator(metrics=[metric]),
                                        {"input": {"m": before}, "final": {"m": after}}, "final")

    assert failures("min-improvement", 0.1, 0.15) == []
    assert failures("max-degradation", 0.8, 0.75) == []
    assert failures("min-improvement", 0.3, 0.25, kind="latency") == []
    assert failures("min-improvement", 0.1, 0.1499) == [
        "m = 0.1499, goal: min-improvement 0.05 against the input model's 0.1"]
    assert failures("max-degradation", 0.8, 0.7499) != []


def test_max_samples_takes_rows_spread_over_a_file_sorted_by_label(tmp_path):
    rows = [{"text": f"review {i}", "stars": float(1 + i // 10)} for i in range(50)]  # 10 of each, sorted
    data = tmp_path / "sorted.jsonl"
    data.write_text("\n".join(json.dumps(row) for row in rows))
    config = tunecell.load_config({
        "input_model": {"model_path": str(tmp_path / "model")},
        "data_configs": [{"name": "stars", "load_dataset_config": {"data_name": "json", "data_files": str(data)},
                          "pre_process_data_config": {"text_template": STARS, "label_column": "stars"}}],
        "evaluators": {"ev": {"metrics": [{"name": "accuracy", "type": "accuracy", "data_config": "stars",
                                           "max_samples": 10}]}},
        "evaluator": "ev"})
    examples = evaluation._examples(config.evaluators["ev"].metrics[0], config)
    assert len(examples) == 10 and sorted({label for _, label in examples}) == ["1", "2", "3", "4", "5"]
    assert [label for _, label in examples] == sorted(label for _, label in examples)  # in file order
