"""Search over candidate values with goals (issue 8): ranking, goals, cache reuse, outputs, config errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import tunecell
from tunecell.errors import ConfigError
from tunecell.events import PassFinished

DATA = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"

SEARCH = """
input_model: {{model_path: {model}}}
data_configs:
  - name: tones
    load_dataset_config: {{data_name: json, data_files: {data}}}
    pre_process_data_config: {{text_template: "### Text: {{phrase}}\\n### The tone is:\\n{{tone}}", strategy: line-by-line, max_seq_len: 48}}
passes:
  lora: {{type: LoRA, r: 4, alpha: 8, target_modules: [qkv_proj, o_proj], train_data_config: tones, eval_dataset_size: 0.2,
          training_args: {{max_steps: 3, per_device_train_batch_size: 8}}}}
  merge: {{type: MergeAdapterWeights}}
  mb: {{type: ModelBuilder, precision: [int4, fp32], int4_block_size: [32, 64]}}
evaluators:
  ev:
    metrics:
      - {{name: accuracy, type: accuracy, data_config: tones, label_column: tone, max_new_tokens: 2, max_samples: 4}}
      - {{name: latency, type: latency, max_new_tokens: 2, priority: 2}}
      - {{name: size, type: size_on_disk, priority: 3, goal: {{type: threshold, value: 10}}}}
evaluator: ev
search_strategy: {{execution_order: joint, sampler: sequential, output_model_num: 2}}
cache_dir: {tmp}/cache
output_dir: {tmp}/out
"""


@pytest.fixture(scope="module")
def searched(tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("search")
    events = []
    result = tunecell.run(SEARCH.format(model=tiny_model, data=DATA, tmp=tmp), progress="none",
                          subscribers=[events.append])
    return result, events, tmp


def test_every_candidate_is_ranked_and_the_fp32_ones_miss_the_size_goal(searched):
    result, _, _ = searched
    assert len(result.candidates) == 4
    by_options = {(c["options"]["mb"]["precision"], c["options"]["mb"]["int4_block_size"]): c
                  for c in result.candidates}
    assert set(by_options) == {("int4", 32), ("int4", 64), ("fp32", 32), ("fp32", 64)}
    for (precision, _), c in by_options.items():
        assert c["goals_met"] is (precision == "int4")
        if precision == "fp32":
            assert any("size" in text for text in c["failed_goals"])
    ranks = sorted(c["rank"] for c in result.candidates)
    assert ranks == [1, 2, 3, 4]
    best = next(c for c in result.candidates if c["index"] == result.best)
    assert best["rank"] == 1 and best["options"]["mb"]["precision"] == "int4"
    assert result.status == "succeeded"


def test_candidates_share_the_training_through_the_cache(searched):
    _, events, _ = searched
    lora = [e for e in events if isinstance(e, PassFinished) and e.name == "lora"]
    assert len(lora) == 4
    assert [e.cache_hit for e in lora] == [False, True, True, True]
    mb = [e for e in events if isinstance(e, PassFinished) and e.name == "mb"]
    # (int4, 32), (int4, 64), (fp32, 32), (fp32, 64): an fp32 build has no int4 block size to differ by
    assert [e.cache_hit for e in mb] == [False, False, False, True]


def test_output_dir_holds_the_best_and_the_top_n_and_a_manifest(searched):
    result, _, tmp = searched
    out = tmp / "out"
    assert (out / "model" / "genai_config.json").is_file()
    assert (out / "top-2" / "genai_config.json").is_file()
    assert not (out / "top-3").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["best"] == result.best and len(manifest["candidates"]) == 4
    assert tunecell.load_model(out / "model").generate("### Text: hi\n### The tone is:\n", 2) is not None


def test_a_search_whose_candidates_all_fail_publishes_nothing(searched, tiny_model):
    result, _, tmp = searched
    identity = (tmp / "out" / "model" / ".tunecell-identity").read_text()
    failing = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp).replace("[qkv_proj, o_proj]", "[nope_proj]")
    again = tunecell.run(failing, progress="none")
    assert again.status == "failed" and not any(c["published"] for c in again.candidates)
    assert "model" not in again.artifacts
    assert (tmp / "out" / "model" / ".tunecell-identity").read_text() == identity  # the first search's best


def test_clean_cache_cleans_once_before_the_candidates(tiny_model, tmp_path):
    text = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp_path).replace(
        "int4_block_size: [32, 64]", "int4_block_size: 32") + "clean_cache: true\n"
    events = []
    tunecell.run(text, progress="none", subscribers=[events.append])
    lora = [e.cache_hit for e in events if isinstance(e, PassFinished) and e.name == "lora"]
    assert lora == [False, True]  # trained for the first candidate, then shared


def test_the_summary_shows_a_table_and_a_pareto_plot(searched):
    result, _, _ = searched
    html = result._repr_html_()
    assert "<svg" in html and "tunecell-pareto" in html and html.count("<circle") == 4
    assert "goal missed" in repr(result) and "candidates (best:" in repr(result)


def test_a_second_search_is_all_cache_hits(searched, tiny_model):
    _, _, tmp = searched
    events = []
    tunecell.run(SEARCH.format(model=tiny_model, data=DATA, tmp=tmp), progress="none", subscribers=[events.append])
    assert all(e.cache_hit for e in events if isinstance(e, PassFinished))


def test_a_ctrl_c_outside_training_ends_the_search_as_interrupted(tiny_model, tmp_path, monkeypatch):
    """The first candidate's build is interrupted: the search tries no other candidate and says so."""
    from tunecell.passes import model_builder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(model_builder, "build_onnx", interrupted)
    result = tunecell.run(f"""
input_model: {{model_path: {tiny_model}}}
passes:
  mb: {{type: ModelBuilder, precision: [int4, fp32]}}
evaluators:
  ev: {{metrics: [{{name: size, type: size_on_disk}}]}}
evaluator: ev
search_strategy: {{execution_order: joint, sampler: sequential}}
cache_dir: {tmp_path}/cache
output_dir: {tmp_path}/out
""", progress="none")
    assert result.status == "interrupted"
    assert [(c["index"], c["status"]) for c in result.candidates] == [(1, "interrupted")]


def test_random_sampler_with_max_samples_tries_that_many(tiny_model, tmp_path):
    text = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp_path).replace(
        "sampler: sequential, output_model_num: 2", "sampler: random, max_samples: 2, seed: 3")
    result = tunecell.run(text, progress="none")
    assert len(result.candidates) == 2


def test_a_candidate_with_a_misspelt_training_choice_is_ranked_last_and_the_search_goes_on(tiny_model, tmp_path):
    text = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp_path).replace(
        "mb: {type: ModelBuilder, precision: [int4, fp32], int4_block_size: [32, 64]}",
        "mb: {type: ModelBuilder, precision: int4}").replace(
        "per_device_train_batch_size: 8}", "per_device_train_batch_size: 8, lr_scheduler_type: [cosien, constant]}")
    result = tunecell.run(text, progress="none")
    assert [c["label"] for c in sorted(result.candidates, key=lambda c: c["rank"])][-1].endswith("cosien")
    assert result.candidates[0]["status"] == "failed" and result.candidates[1]["status"] == "succeeded"
    assert any("candidate 1 failed" in line and "did you mean 'cosine'?" in line for line in result.logs)


@pytest.mark.parametrize("edit, message, path", [
    (("search_strategy: {execution_order: joint, sampler: sequential, output_model_num: 2}", ""),
     "need a search_strategy", ("passes", "mb", "precision")),
    (("evaluator: ev\n", ""), "needs an evaluator", ("search_strategy",)),
    (("[int4, fp32]", "[int4, fp64]"), "candidate 'fp64'", ("passes", "mb", "precision", 1)),
    (("sampler: sequential", "sampler: tpe"), "sampler", ("search_strategy", "sampler")),
])
def test_search_config_errors_name_the_keys(edit, message, path, tmp_path):
    text = SEARCH.format(model="m", data=DATA, tmp=tmp_path).replace(*edit)
    with pytest.raises(ConfigError) as e:
        tunecell.load_config(text)
    assert message in str(e.value)
    assert e.value.path[:len(path)] == path
    assert e.value.line is not None


def test_search_space_round_trips_through_export(tmp_path):
    from tunecell.config.export import export_config

    config = tunecell.load_config(SEARCH.format(model="m", data=DATA, tmp=tmp_path))
    assert export_config(config, tmp_path / "c.yaml") == []
    again = tunecell.load_config(tmp_path / "c.yaml")
    assert again.search_space == config.search_space == {"mb": {"precision": ["int4", "fp32"],
                                                                 "int4_block_size": [32, 64]}}
    # Olive's form of candidates where Olive 0.13 searches the option (bench/olive_export_check.py loads the file
    # in a real Olive), and a strategy it can run: it has no default execution order nor sampler
    notes = export_config(config, tmp_path / "olive.json")
    olive = json.loads((tmp_path / "olive.json").read_text())
    assert olive["passes"]["mb"]["int4_block_size"] == {"olive_parameter_type": "SearchParameter",
                                                        "type": "Categorical", "support": [32, 64]}
    assert olive["passes"]["mb"]["precision"] == "int4"
    assert any(n.startswith("passes.mb.precision: Olive 0.13 searches no such option") for n in notes)
    assert olive["search_strategy"] == {"execution_order": "joint", "sampler": "sequential", "seed": 0,
                                        "output_model_num": 2}
    back = tunecell.load_config(tmp_path / "olive.json")
    assert back.search_space == {"mb": {"int4_block_size": [32, 64]}}
    assert back.search_strategy == config.search_strategy
    methods = tunecell.load_config(SEARCH.format(model="m", data=DATA, tmp=tmp_path).replace(
        "int4_block_size: [32, 64]", "int4_algo_config: [k_quant_mixed, rtn]"))
    export_config(methods, tmp_path / "methods.json")
    assert json.loads((tmp_path / "methods.json").read_text())["passes"]["mb"]["int4_algo_config"]["support"] == \
        ["k_quant_mixed", "rtn"]


def test_a_smaller_search_into_the_same_output_dir_names_the_folder_it_left(searched, tiny_model):
    _, _, tmp = searched  # last in this module: it rewrites the search's manifest
    text = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp).replace("output_model_num: 2", "output_model_num: 1")
    result = tunecell.run(text, progress="none")  # every pass and metric from the cache
    assert result.status == "succeeded" and (tmp / "out" / "top-2").is_dir()
    assert f"warning: output_dir {tmp / 'out'} also holds top-2/ from an earlier run, not this search" in \
        "\n".join(result.logs)


def test_a_search_whose_candidates_all_fail_keeps_the_record_of_what_output_dir_holds(searched, tiny_model):
    _, _, tmp = searched
    before = json.loads((tmp / "out" / "manifest.json").read_text())
    text = SEARCH.format(model=tiny_model, data=DATA, tmp=tmp).replace("[qkv_proj, o_proj]", "[nope_proj]")
    result = tunecell.run(text, progress="none")
    assert result.status == "failed" and result.best is None and "model" not in result.artifacts
    manifest = json.loads((tmp / "out" / "manifest.json").read_text())
    assert manifest["best"] is None and all(c["status"] == "failed" for c in manifest["candidates"])
    assert manifest["published"]["status"] == before["status"] == "succeeded"
    assert manifest["published"]["best"] == before["best"]
