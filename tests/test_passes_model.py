"""Merge, ONNX build, inference and metrics on the tiny random Phi-3 (plumbing only: its outputs are noise)."""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tunecell import evaluate
from tunecell.inference import first_label, label_sequences, load_model
from tunecell.passes.merge import merge_adapter
from tunecell.passes import model_builder
from tunecell.passes.model_builder import (build_onnx, k_quant_in_slices, weights_read_into_memory,
                                             weights_released_once_serialized)

LORA_R, LORA_ALPHA = 8, 16
PROMPTS = ["### Text: I lost my dog today\n### The tone is:\n", "Return the sum of", "hello there",
           "### Text: we won the big prize\n### The tone is:\n", "The module provides"]


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory) -> Path:
    """A LoRA adapter on qkv_proj/o_proj whose B matrices are random, so merging changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=["qkv_proj", "o_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def merged(tiny_model, adapter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("merged")
    merge_adapter(tiny_model, adapter, out)
    return out


@pytest.fixture(scope="module")
def onnx_models(merged, tmp_path_factory) -> dict[str, Path]:
    built = {}
    for precision in ("int4", "fp32"):
        out = tmp_path_factory.mktemp(f"onnx-{precision}")
        started = time.perf_counter()
        build_onnx(merged, out, precision=precision, execution_provider="cpu",
                   scratch_dir=tmp_path_factory.mktemp("scratch"))
        print(f"builder {precision}: {time.perf_counter() - started:.2f} s")
        built[precision] = out
    return built


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / next(p.name for p in folder.glob("*.safetensors")))


def test_an_adapter_saved_by_peft_alone_loads_with_its_bases_tokenizer(adapter, merged):
    assert not (adapter / "tokenizer_config.json").exists()
    prompt = "### Text: we won\n### The tone is:\n"
    assert load_model(adapter).generate(prompt, 6) == load_model(merged).generate(prompt, 6)


def test_merge_adds_scaled_lora_product(tiny_model, adapter, merged):
    base, lora, result = _weights(tiny_model), _weights(adapter), _weights(merged)
    assert set(result) == set(base)
    scale = LORA_ALPHA / LORA_R
    targets = [key for key in base if key.endswith(("qkv_proj.weight", "o_proj.weight"))]
    assert len(targets) == 8
    for key in targets:
        prefix = "base_model.model." + key.removesuffix(".weight")
        delta = scale * lora[f"{prefix}.lora_B.weight"] @ lora[f"{prefix}.lora_A.weight"]
        assert (result[key] - base[key]).abs().max() > 1e-3, key
        assert (result[key] - (base[key] + delta)).abs().max() < 1e-5, key
    for key in set(base) - set(targets):
        assert (result[key] == base[key]).all(), key


def test_merged_folder_is_a_plain_model(merged):
    from transformers import AutoModelForCausalLM

    assert not (merged / "adapter_config.json").exists()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (merged / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert not [name for name, _ in model.named_parameters() if "lora" in name]
    assert model.generation_config.eos_token_id == [3, 6]  # the base's list, not only config.eos_token_id
    assert isinstance(load_model(merged).generate(PROMPTS[0], 8), str)


@pytest.mark.parametrize("kind", ["hf", "onnx"])
def test_latency_and_throughput_time_max_new_tokens_even_when_the_model_ends_sooner(merged, onnx_models, tmp_path,
                                                                                    kind):
    """A model that answers and ends is not faster than one that keeps talking: the speed metrics generate
    max_new_tokens every time; plain generation still stops at end-of-text."""
    import json
    import shutil

    folder = shutil.copytree(merged if kind == "hf" else onnx_models["int4"], tmp_path / kind)
    first_token = generated_ids(load_model(folder), PROMPTS[0], 1)[0]
    config_file, key = ("generation_config.json", None) if kind == "hf" else ("genai_config.json", "model")
    config = json.loads((folder / config_file).read_text())
    (config[key] if key else config)["eos_token_id"] = first_token
    (folder / config_file).write_text(json.dumps(config))

    model = TokenCounting(load_model(folder))
    assert model.generate_with_stats(PROMPTS[0], 8)[1] == 1  # it ends after its first token now
    model.counts.clear()
    assert evaluate.latency_ms(model, PROMPTS[:1], max_new_tokens=8) > 0
    assert evaluate.throughput(model, PROMPTS[:1], max_new_tokens=8) > 0
    assert model.counts == [8, 8, 8, 8]  # each: an untimed warm-up request, then the timed one


@pytest.mark.parametrize("kind", ["hf", "onnx"])
def test_a_fixed_length_request_that_does_not_fit_the_context_is_refused(merged, onnx_models, kind):
    """Cut short at the end of the context, such a request would time fewer tokens than the others. Plain
    generation stops at the end of the context on both backends (past it, a PyTorch model writes garbage)."""
    from transformers import AutoConfig, AutoTokenizer

    model = load_model(merged if kind == "hf" else onnx_models["int4"])
    context = AutoConfig.from_pretrained(merged).max_position_embeddings
    tokenizer = AutoTokenizer.from_pretrained(merged)
    prompt = tokenizer.decode(tokenizer(" ".join(["hello"] * context)).input_ids[:context - 4])
    assert model.generate_with_stats(prompt, 16)[1] <= 4
    with pytest.raises(ValueError, match=r"the prompt is \d+ tokens and 1 new one must follow it"):
        model.generate_with_stats(prompt + " hello" * 8, 16)  # no room for one token
    with pytest.raises(ValueError, match=r"and 16 new ones must follow it; the model's context holds"):
        model.generate_with_stats(prompt, 16, fixed_length=True)


class TokenCounting:
    """A loaded model that records how many tokens each generate_with_stats call generated."""

    def __init__(self, model):
        self.model, self.counts = model, []

    def generate_with_stats(self, *args, **kwargs):
        text, tokens, seconds = self.model.generate_with_stats(*args, **kwargs)
        self.counts.append(tokens)
        return text, tokens, seconds


def generated_ids(model, prompt: str, n: int) -> list[int]:
    """The ids of the first n tokens ``model`` generates greedily after ``prompt``."""
    if model.kind == "hf":
        import torch

        inputs = model._tokenizer(prompt, return_tensors="pt")
        with torch.inference_mode():
            out = model._model.generate(**inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False)
        return out[0, inputs["input_ids"].shape[1]:].tolist()
    og = model._og
    params = og.GeneratorParams(model._model)
    ids = model._tokenizer.encode(prompt)
    params.set_search_options(do_sample=False, max_length=len(ids) + n, min_length=len(ids) + n)
    generator = og.Generator(model._model, params)
    generator.append_tokens(ids)
    for _ in range(n):
        generator.generate_next_token()
    return [int(t) for t in generator.get_sequence(0)[len(ids):]]


def test_int4_and_fp32_onnx_load_and_generate(onnx_models):
    for precision, folder in onnx_models.items():
        assert (folder / "genai_config.json").is_file()
        model = load_model(folder)
        assert model.kind == "onnx" and model.path == folder
        text, new_tokens, seconds = model.generate_with_stats(PROMPTS[0], 16)
        assert isinstance(text, str) and text
        assert 1 <= new_tokens <= 16 and seconds > 0
        print(f"onnx {precision}: {new_tokens / seconds:.0f} tokens/s")
    assert evaluate.size_on_disk_mb(onnx_models["int4"]) < 0.5 * evaluate.size_on_disk_mb(onnx_models["fp32"])


def test_fp32_onnx_greedy_output_equals_pytorch(merged, onnx_models):
    hf, onnx = load_model(merged), load_model(onnx_models["fp32"])
    for prompt in PROMPTS:
        hf_text, hf_tokens, _ = hf.generate_with_stats(prompt, 24)
        onnx_text, onnx_tokens, _ = onnx.generate_with_stats(prompt, 24)
        assert (onnx_text, onnx_tokens) == (hf_text, hf_tokens), prompt


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_cpu_is_refused_with_a_reason(merged, tmp_path, precision):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=f"{precision} does not suit the cpu execution provider") as error:
        build_onnx(merged, out, precision=precision, execution_provider="cpu", scratch_dir=tmp_path / "scratch")
    assert "int4" in str(error.value) and "fp32" in str(error.value) and "CUDA" in str(error.value)
    assert not out.exists()


def test_builder_wants_a_local_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a local Hugging Face model folder"):
        build_onnx(Path("someone/some-model"), tmp_path / "out", precision="int4", execution_provider="cpu",
                   scratch_dir=tmp_path / "scratch")


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("shape,bits", [((23 * 32, 64), 4), ((10, 48), 4), ((23 * 32, 64), 8)],
                         ids=["by rows", "by blocks", "by rows, 8 bits"])
def test_k_quant_in_slices_gives_the_same_values(shape, bits, workers):
    """As rtn_quantize calls it: the transposed weight. Blocks of 32 along rows of 736 values (sliced by rows);
    and a 10 x 48 weight whose rows are not whole blocks (sliced by blocks). On one thread and on three."""
    import numpy as np
    from onnxruntime.quantization.neural_compressor import weight_only

    weight = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    whole = weight_only.quant_tensor_k_quant_cpu(weight.T, bits, 32)
    with k_quant_in_slices(blocks_per_slice=5, workers=workers, parallel_min_blocks=1):
        assert weight_only.quant_tensor_k_quant_cpu.__name__ == "sliced"
        sliced = weight_only.quant_tensor_k_quant_cpu(weight.T, bits, 32)
    assert weight_only.quant_tensor_k_quant_cpu.__name__ == "quant_tensor_k_quant_cpu"  # restored on exit
    (q_sliced, *rest_sliced), (q_whole, *rest_whole) = sliced, whole
    assert q_sliced.dtype == np.uint8 and q_sliced.shape == q_whole.shape  # whole gives float64 integers
    np.testing.assert_array_equal(q_sliced, q_whole)
    np.testing.assert_array_equal(q_sliced, q_whole.astype("uint8"))  # what rtn_quantize writes
    for got, expected in zip(rest_sliced, rest_whole):  # scale, zero point
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


def test_serialized_weights_are_released():
    import gc
    import weakref

    import numpy as np
    import onnx_ir
    import torch
    from onnx_ir import serde
    from onnx_ir.tensor_adapters import TorchTensor

    weight = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    alive = weakref.ref(weight)
    value = onnx_ir.Value(name="w", type=onnx_ir.TensorType(onnx_ir.DataType.FLOAT), shape=onnx_ir.Shape([3, 4]))
    value.const_value = TorchTensor(weight, name="w")
    graph = onnx_ir.Graph([], [value], nodes=[], initializers=[value], name="g")
    model = onnx_ir.Model(graph, ir_version=10)
    del weight
    with weights_released_once_serialized():
        lone = onnx_ir.to_proto(TorchTensor(torch.ones(2), name="t"))  # a lone tensor: left alone
        proto = onnx_ir.to_proto(model)
    gc.collect()
    assert value.const_value is None and alive() is None
    np.testing.assert_array_equal(onnx_ir.from_proto(proto.graph.initializer[0]).numpy(),
                                  np.arange(12, dtype=np.float32).reshape(3, 4))
    assert list(onnx_ir.from_proto(lone).numpy()) == [1.0, 1.0]
    assert onnx_ir.to_proto.__name__ == "to_proto" and serde.serialize_tensor_into.__name__ == "serialize_tensor_into"


def test_matmul_weights_are_lent_to_the_quantizer_not_copied():
    """A MatMul weight stays out of the serialized copy: to_array reads the graph's own values, the weight is let
    go once the copy no longer holds it (the quantizer replaced it), and one still held is written in when the
    result is read back."""
    import gc
    import weakref

    import numpy as np
    import onnx
    import onnx_ir
    import torch
    from onnx import numpy_helper
    from onnx_ir.tensor_adapters import TorchTensor

    first, second = torch.arange(12, dtype=torch.float32).reshape(3, 4), torch.ones(4, 2)
    first_alive = weakref.ref(first)
    x = onnx_ir.Value(name="x", type=onnx_ir.TensorType(onnx_ir.DataType.FLOAT), shape=onnx_ir.Shape([1, 3]))
    weights = []
    for name, tensor in (("first", first), ("second", second)):
        weight = onnx_ir.Value(name=name, type=onnx_ir.TensorType(onnx_ir.DataType.FLOAT),
                               shape=onnx_ir.Shape(list(tensor.shape)))
        weight.const_value = TorchTensor(tensor, name=name)
        weights.append(weight)
    hidden = onnx_ir.node("MatMul", [x, weights[0]])
    out = onnx_ir.node("MatMul", [hidden.outputs[0], weights[1]])
    graph = onnx_ir.Graph([x], out.outputs, nodes=[hidden, out], initializers=weights, name="g",
                          opset_imports={"": 21})
    model = onnx_ir.Model(graph, ir_version=10)
    del first, second, weights
    with weights_released_once_serialized():
        proto = onnx_ir.to_proto(model)
        initializers = {tensor.name: tensor for tensor in proto.graph.initializer}
        assert all(tensor.data_location == onnx.TensorProto.EXTERNAL and not tensor.raw_data
                   for tensor in initializers.values())
        np.testing.assert_array_equal(numpy_helper.to_array(initializers["first"]),
                                      np.arange(12, dtype=np.float32).reshape(3, 4))
        proto.graph.initializer.remove(initializers["first"])  # what the quantizer does once it replaced it
        np.testing.assert_array_equal(numpy_helper.to_array(initializers["second"]), np.ones((4, 2), np.float32))
        gc.collect()
        assert first_alive() is None
        back = onnx_ir.from_proto(proto)
    assert [tensor.name for tensor in proto.graph.initializer] == ["second"]
    np.testing.assert_array_equal(numpy_helper.to_array(proto.graph.initializer[0]), np.ones((4, 2), np.float32))
    np.testing.assert_array_equal(back.graph.initializers["second"].const_value.numpy(), np.ones((4, 2), np.float32))
    assert numpy_helper.to_array.__name__ == "to_array" and onnx_ir.from_proto.__name__ == "from_proto"


def test_the_build_writes_onnxruntime_s_cache_files_under_scratch_dir_only(merged, tmp_path):
    """Importing onnxruntime creates its telemetry folder under XDG_CACHE_HOME: a build's first import of it
    happens in scratch_dir's environment, never in the user's cache. In a fresh interpreter: nothing imported yet."""
    script = f"""
from pathlib import Path
from tunecell.passes.model_builder import build_onnx
build_onnx(Path({str(merged)!r}), Path({str(tmp_path / "out")!r}), precision="int4", execution_provider="cpu",
           scratch_dir=Path({str(tmp_path / "scratch")!r}))
"""
    user_cache = tmp_path / "user-cache"
    # onnxruntime skips its telemetry folder when it sees a CI service's variable or its own opt-out: unset them, as
    # on a user's machine, so that the folder is written and the test can see where.
    quiet = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI", "CIRCLECI", "TRAVIS", "JENKINS_URL", "CODEBUILD_BUILD_ID",
             "BUILDKITE", "TEAMCITY_VERSION", "APPVEYOR", "BITBUCKET_BUILD_NUMBER", "ORT_DISABLE_TELEMETRY",
             "ORT_RUNNING_UNIT_TESTS"}
    env = {name: value for name, value in os.environ.items() if name not in quiet}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={**env, "XDG_CACHE_HOME": str(user_cache)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "scratch" / "xdg-cache" / "Microsoft").is_dir()
    assert not user_cache.exists()


def test_the_builder_imports_other_model_families_on_first_use():
    """The builder's module-level imports of multimodal and speech model classes leave their modeling code
    unimported; a stand-in's attribute is the class's own, and transformers keeps the real classes. In a fresh
    interpreter: what is imported is process state."""
    script = """
import sys
import transformers
from tunecell.passes.model_builder import builder_imported_without_other_models
builder_imported_without_other_models()
base, qwen = sys.modules["builders.base"], sys.modules["builders.qwen"]  # the builder's own module names
modeling = ["transformers.models.qwen3_vl.modeling_qwen3_vl", "transformers.models.qwen2.modeling_qwen2"]
assert not [m for m in modeling if m in sys.modules], [m for m in modeling if m in sys.modules]
assert not isinstance(base.Qwen3VLForConditionalGeneration, type)
real = transformers.Qwen3VLForConditionalGeneration  # transformers' own attribute: the class
assert isinstance(real, type) and real.__name__ == "Qwen3VLForConditionalGeneration"
assert base.Qwen3VLForConditionalGeneration.from_pretrained == real.from_pretrained
assert qwen.Qwen2ForCausalLM.from_pretrained == transformers.Qwen2ForCausalLM.from_pretrained
assert all(m in sys.modules for m in modeling)
builder_imported_without_other_models()  # the builder imported already: no stand-in is made
assert "Gemma3ForConditionalGeneration" not in vars(transformers)  # none was left behind either
assert isinstance(transformers.Gemma3ForConditionalGeneration, type)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_onnx_reference_schemas_are_read_on_first_use():
    """The int4 build's imports leave the schema table of onnx's reference evaluator unread (9-10 MiB); the
    evaluator's first lookup reads it, whole. In a fresh interpreter: the table is module state."""
    script = """
import numpy as np
import onnx.defs
from onnx import TensorProto, helper

reads = []
read_all = onnx.defs.get_all_schemas_with_history
onnx.defs.get_all_schemas_with_history = lambda: reads.append(1) or read_all()

from tunecell.passes.model_builder import reference_schemas_read_on_use
reference_schemas_read_on_use()
import onnxruntime.quantization  # what imports onnx.reference in a build
from onnx.reference import ReferenceEvaluator, op_run
table = op_run._schemas
assert reads == [], reads
reference_schemas_read_on_use()  # onnx.reference imported already: left as it is
assert op_run._schemas is table

floats = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [2]) for name in "xyz"]
add = helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g", floats[:2],
                                          floats[2:]))
one = np.ones(2, np.float32)
assert ReferenceEvaluator(add).run(None, {"x": one, "y": one})[0].tolist() == [2.0, 2.0]
assert reads == [1], reads
expected = op_run._build_schemas()
assert sorted(table) == sorted(expected) and len(table) == len(expected)
assert all(table[name].since_version == expected[name].since_version for name in expected)
assert reads == [1, 1], reads  # the table is read once; the second read was _build_schemas above
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_weights_read_into_memory_maps_no_file(merged):
    import gc

    import torch
    import transformers.modeling_utils
    from transformers import AutoModelForCausalLM

    def mapped() -> bool:
        return str(merged / "model.safetensors") in Path("/proc/self/maps").read_text()

    def weights(model) -> dict:
        return {name: tensor.clone() for name, tensor in model.state_dict().items()}

    with weights_read_into_memory():
        read = weights(AutoModelForCausalLM.from_pretrained(merged))
    gc.collect()
    assert not mapped()
    assert transformers.modeling_utils.safe_open.__name__ == "safe_open"  # restored on exit
    model = AutoModelForCausalLM.from_pretrained(merged)
    assert mapped()  # transformers' own way: the file is memory-mapped while its weights live
    expected = weights(model)
    assert read.keys() == expected.keys()
    assert all(torch.equal(read[name], expected[name]) for name in read)


@pytest.mark.parametrize("precision,slicing,algo", [
    ("int4", {"workers": 2}, "k_quant_mixed"),  # default slices: the tiny model's larger weights go to two threads
    ("int4", {"blocks_per_slice": 64, "workers": 1}, "k_quant_mixed"),
    ("int4", {}, None),  # the builder's own method: lent weights are written back before it runs
    ("fp32", {}, "k_quant_mixed"),
], ids=["int4 on two threads", "int4 in 64-block slices", "int4 builder default", "fp32"])
def test_lean_build_writes_the_same_bytes(merged, tmp_path, monkeypatch, precision, slicing, algo):
    """The builder with k_quant in slices (the default method, k_quant_mixed: 4- and 8-bit weights), pread
    weights released once serialized or lent to the quantizer, against the builder left as it is."""
    import concurrent.futures

    pools = []

    class CountedPool(concurrent.futures.ThreadPoolExecutor):
        def __init__(self, *args, **kwargs):
            pools.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", CountedPool)
    monkeypatch.setattr(model_builder, "k_quant_in_slices", functools.partial(k_quant_in_slices, **slicing))
    lean = tmp_path / "lean"
    build_onnx(merged, lean, precision=precision, execution_provider="cpu", int4_algo_config=algo,
               scratch_dir=tmp_path / "scratch")
    assert bool(pools) == (slicing.get("workers") == 2 and precision == "int4")  # the threads ran where meant to
    for name in ("k_quant_in_slices", "weights_read_into_memory", "weights_released_once_serialized"):
        monkeypatch.setattr(model_builder, name, contextlib.nullcontext)
    plain = tmp_path / "plain"
    build_onnx(merged, plain, precision=precision, execution_provider="cpu", int4_algo_config=algo,
               scratch_dir=tmp_path / "scratch")
    for name in ("model.onnx", "model.onnx.data"):
        assert (lean / name).read_bytes() == (plain / name).read_bytes(), name


def test_builder_leaves_root_logging_alone(merged, tmp_path):
    root = logging.getLogger()
    before = (root.level, root.handlers[:])
    build_onnx(merged, tmp_path / "out", precision="int4", execution_provider="cpu", int4_block_size=64,
               int4_accuracy_level=4, int4_is_symmetric=False, scratch_dir=tmp_path / "scratch")
    assert (root.level, root.handlers) == before
    assert (tmp_path / "out" / "model.onnx").is_file()


def test_the_builder_s_own_int4_names_in_extra_options_win_over_the_int4_fields(merged, tmp_path):
    import onnx

    from tunecell.config import schema

    built = schema.ModelBuilder(precision="int4", int4_block_size=32, extra_options={"block_size": 128})
    assert built.int4_option("block_size") == 128 and built.int4_option("algo_config") == "k_quant_mixed"
    build_onnx(merged, tmp_path / "out", precision="int4", execution_provider="cpu", int4_block_size=32,
               int4_algo_config="rtn", extra_options={"block_size": 128}, scratch_dir=tmp_path / "scratch")
    graph = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False).graph
    sizes = {next(a.i for a in node.attribute if a.name == "block_size")
             for node in graph.node if node.op_type == "MatMulNBits"}
    assert sizes == {128}


def test_the_builder_s_former_int4_names_in_extra_options_take_effect(merged, tmp_path):
    """onnxruntime-genai 0.18 reads extra_options' int4_block_size no more (the model had block size 32)."""
    import onnx

    import tunecell

    result = tunecell.run({"input_model": {"model_path": str(merged)},
                           "passes": {"mb": {"type": "ModelBuilder", "precision": "int4", "int4_algo_config": "rtn",
                                             "extra_options": {"int4_block_size": 128}}},
                           "cache_dir": str(tmp_path / "cache"), "output_dir": str(tmp_path / "out")}, progress="none")
    graph = onnx.load(str(tmp_path / "out" / "model" / "model.onnx"), load_external_data=False).graph
    sizes = {next(a.i for a in node.attribute if a.name == "block_size")
             for node in graph.node if node.op_type == "MatMulNBits"}
    assert result.status == "succeeded" and sizes == {128}


def test_default_int4_keeps_the_lm_head_and_some_layers_in_int8_as_the_estimate_says(merged, tmp_path):
    import onnx

    from tunecell import estimate
    from tunecell.config import load_config, schema

    method = schema.ModelBuilder(precision="int4").int4_algo_config
    assert method == "k_quant_mixed"
    build_onnx(merged, tmp_path / "out", precision="int4", execution_provider="cpu", int4_algo_config=method,
               scratch_dir=tmp_path / "scratch")
    graph = onnx.load(str(tmp_path / "out" / "model.onnx"), load_external_data=False).graph
    int8 = {node.name for node in graph.node if node.op_type == "MatMulNBits"
            and next(a.i for a in node.attribute if a.name == "bits") == 8}
    # the builder's rule for 4 layers: the first eighth (layer 0) and every third layer after it (layer 2)
    assert int8 == {"/lm_head/MatMul_Q8"} | {f"/model/layers.{i}/{proj}/MatMul_Q8"
                                            for i in (0, 2) for proj in ("attn/qkv_proj", "mlp/down_proj")}
    skel = estimate.model_skeleton(load_config(f"input_model: {{model_path: {merged}}}\n").input_model)

    def onnx_node(name: str) -> str:  # model.layers.0.self_attn.qkv_proj -> /model/layers.0/attn/qkv_proj/MatMul_Q8
        if name == "lm_head":
            return "/lm_head/MatMul_Q8"
        layer, module, proj = re.fullmatch(r"model\.layers\.(\d+)\.(\w+)\.(\w+)", name).groups()
        return f"/model/layers.{layer}/{'attn' if module == 'self_attn' else module}/{proj}/MatMul_Q8"

    assert {onnx_node(name) for name in estimate.int8_matmuls(skel, method)} == int8
    size = (tmp_path / "out" / "model.onnx.data").stat().st_size
    assert estimate.onnx_bytes(skel, "int4", "cpu", algo=method) == size


@pytest.mark.parametrize("generated, labels, expected", [
    (" **Sad**.", ["Sad", "Joy"], "Sad"),
    ("joy! what a day", ["Sad", "Joy"], "Joy"),
    ("Very sad indeed", ["very", "Very sad"], "Very sad"),
    ("sadness", ["Sad"], None),
    ("The tone is Sad", ["Sad"], "Sad"),  # the first label word anywhere in the answer
    ("not joy, fear", ["Fear", "Joy"], "Joy"),
    ("", ["Sad"], None),
])
def test_first_label(generated, labels, expected):
    assert first_label(generated, labels) == expected


def test_accuracy_is_the_fraction_classify_gets_right(onnx_models):
    model = load_model(onnx_models["int4"])
    generated = {prompt: model.generate(prompt, 4) for prompt in PROMPTS}
    usable = [prompt for prompt, text in generated.items() if text.strip()[:1].isalnum()]
    assert usable, generated
    # labels the model does produce (the first word it generates) and one it never does
    labels = sorted({generated[prompt].split()[0] for prompt in usable}) + ["Neverword"]
    examples = [(prompt, generated[prompt].split()[0]) for prompt in usable] + [(p, "Neverword") for p in PROMPTS]

    predictions = [model.classify(prompt, labels, max_new_tokens=4) for prompt, _ in examples]
    fraction = sum(p is not None and p.lower() == e.lower() for p, (_, e) in zip(predictions, examples)) / len(examples)
    value = evaluate.accuracy(model, examples, labels, max_new_tokens=4)
    assert value == pytest.approx(fraction)
    assert 0 < value < 1


def test_batched_generation_continues_each_prompt_as_alone(merged):
    """The HF backend generates prompts of different lengths together, padded on the left: each row must get the
    tokens it gets alone (in batches smaller than the list, so it also splits them). Rows that end early are
    checked on the trained model (tests/test_runner_embedded.py)."""
    model = load_model(merged)
    assert model.generate_many(PROMPTS, 6, batch_size=3) == [model.generate(prompt, 6) for prompt in PROMPTS]


@pytest.fixture(scope="module", params=["gpt2", "lfm2"])
def other_architecture(request, tiny_model, tmp_path_factory) -> Path:
    """A tiny random model of another kind, with the tiny Phi-3's tokenizer: GPT-2 learns a vector per absolute
    position (so a wrong position shows, where rotary embeddings forgive a constant shift); LFM2 mixes
    convolution layers, whose state a cache cannot copy row by row, with attention."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, Lfm2Config, Lfm2ForCausalLM

    torch.manual_seed(0)
    ids = {"vocab_size": 2048, "bos_token_id": 1, "eos_token_id": 3, "pad_token_id": 3}
    if request.param == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_positions=128, n_embd=128, n_layer=2, n_head=4, **ids))
    else:
        model = Lfm2ForCausalLM(Lfm2Config(hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                           num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                           layer_types=["conv", "full_attention", "conv", "full_attention"], **ids))
    out = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_batched_scores_and_answers_on_other_architectures(other_architecture):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(other_architecture)
    reference = AutoModelForCausalLM.from_pretrained(other_architecture).eval()
    model = load_model(other_architecture)
    prompts = PROMPTS + [UNEVEN]
    expected = [_full_forward_logprobs(tokenizer, reference, prompt, LABELS) for prompt in prompts]
    for scores, want in zip(model.label_logprobs_many(prompts, LABELS, batch_rows=4 * len(LABELS)), expected):
        assert scores == pytest.approx(want, abs=1e-4)
    assert model.generate_many(prompts, 6, batch_size=4) == [model.generate(prompt, 6) for prompt in prompts]


def test_classify_fills_the_prompt_template(onnx_models):
    model = load_model(onnx_models["int4"])
    template = "### Text: {text}\n### The tone is:\n"
    prompt = template.format(text="I lost my dog today")
    labels = model.generate(prompt, 4).split()[:1] + ["Neverword"]
    with_template = model.classify("I lost my dog today", labels, prompt_template=template)
    assert with_template == model.classify(prompt, labels)
    assert with_template == first_label(model.generate(prompt, 4), labels)


def _merge_ab(text: str) -> list[int]:
    """A toy tokenizer: one token per character, but "ab" is one token (999), as BPE merges pairs."""
    ids, i = [], 0
    while i < len(text):
        ids.append(999 if text.startswith("ab", i) else ord(text[i]))
        i += 2 if ids[-1] == 999 else 1
    return ids


def test_label_sequences_score_what_follows_the_tokens_every_label_shares_with_the_prompt():
    end = 0
    assert label_sequences(_merge_ab, "x:", ["yes", "no"], end) == (2, [_merge_ab("x:yes") + [end],
                                                                       _merge_ab("x:no") + [end]])
    # "b" merges with the prompt's last character: every label is scored from the first token that differs
    assert label_sequences(_merge_ab, "xa", ["b", "c"]) == (1, [[ord("x"), 999], [ord("x"), ord("a"), ord("c")]])
    with pytest.raises(ValueError, match="no token to predict a label from"):
        label_sequences(_merge_ab, "", ["yes"])
    with pytest.raises(ValueError, match="non-empty"):
        label_sequences(_merge_ab, "x:", ["yes", ""])


def _full_forward_logprobs(tokenizer, model, prompt: str, labels: list[str]) -> list[float]:
    """The reference: each prompt + label + end of text run whole through the model, no cache, the log-probs of the
    tokens after the shared prefix summed."""
    import torch

    shared, sequences = label_sequences(lambda text: tokenizer(text).input_ids, prompt, labels, tokenizer.eos_token_id)
    scores = []
    for ids in sequences:
        with torch.no_grad():
            logprobs = model(torch.tensor([ids])).logits[0].double().log_softmax(-1)
        scores.append(sum(logprobs[t - 1, ids[t]].item() for t in range(shared, len(ids))))
    return scores


LABELS = ["Sad", "Joy", "Fear", "Surprise", "Neverword"]
UNEVEN = "hello there "  # the tiny tokenizer merges the trailing space with some labels, not with "Joy"


def test_label_logprobs_are_the_model_s_own_probabilities(merged, onnx_models):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(merged), AutoModelForCausalLM.from_pretrained(merged).eval()
    prompt_length = len(tokenizer(UNEVEN).input_ids)
    assert label_sequences(lambda text: tokenizer(text).input_ids, UNEVEN, LABELS)[0] < prompt_length
    hf, fp32 = load_model(merged), load_model(onnx_models["fp32"])
    prompts = PROMPTS + [UNEVEN]
    expected = [_full_forward_logprobs(tokenizer, model, prompt, LABELS) for prompt in prompts]
    for prompt, reference in zip(prompts, expected):
        assert hf.label_logprobs(prompt, LABELS) == pytest.approx(reference, abs=1e-4)
        assert fp32.label_logprobs(prompt, LABELS) == pytest.approx(reference, abs=1e-3)
    # prompts of different lengths batched together (left-padded), in batches smaller than the list
    batched = hf.label_logprobs_many(prompts, LABELS, batch_rows=4 * len(LABELS))
    assert len(batched) == len(prompts)
    for scores, reference in zip(batched, expected):
        assert scores == pytest.approx(reference, abs=1e-4)


def test_loglikelihood_classify_and_accuracy_use_the_label_logprobs(onnx_models):
    """Plumbing: classify picks the label of the highest label_logprobs, and accuracy counts those picks."""
    model = load_model(onnx_models["int4"])
    best = {}
    for prompt in PROMPTS:
        scores = model.label_logprobs(prompt, LABELS)
        best[prompt] = LABELS[scores.index(max(scores))]
        assert model.classify(prompt, LABELS, scoring="loglikelihood") == best[prompt]
    # half the examples expect the model's choice, half another label: accuracy counts the first half
    examples = [(p, best[p]) for p in PROMPTS] + [(p, next(l for l in LABELS if l != best[p])) for p in PROMPTS]
    assert evaluate.accuracy(model, examples, LABELS, max_new_tokens=4, scoring="loglikelihood") == 0.5


def test_speed_and_size_metrics(merged, onnx_models):
    for folder in (merged, onnx_models["int4"]):
        model = load_model(folder)
        assert evaluate.latency_ms(model, PROMPTS[:2], max_new_tokens=8) > 0
        assert evaluate.throughput(model, PROMPTS[:2], max_new_tokens=8) > 0
        assert evaluate.size_on_disk_mb(folder) > 0
    merged_mb = evaluate.size_on_disk_mb(merged)
    assert merged_mb == pytest.approx((merged / "model.safetensors").stat().st_size / 1e6)


def test_a_model_with_its_own_code_trains_and_merges_when_load_kwargs_trust_it(tiny_model, tmp_path):
    import json
    import shutil

    import tunecell
    from tunecell.errors import PassFailed

    model = tmp_path / "remote-model"  # the tiny Phi-3 as a model type transformers does not know: code of its own
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(model_type="tinyremote", auto_map={
        "AutoConfig": "configuration_tinyremote.TinyRemoteConfig",
        "AutoModelForCausalLM": "modeling_tinyremote.TinyRemoteForCausalLM"})
    (model / "config.json").write_text(json.dumps(config))
    (model / "configuration_tinyremote.py").write_text(
        "from transformers import Phi3Config\n\n\nclass TinyRemoteConfig(Phi3Config):\n    model_type = 'tinyremote'\n")
    (model / "modeling_tinyremote.py").write_text(
        "from transformers import Phi3ForCausalLM\n\nfrom .configuration_tinyremote import TinyRemoteConfig\n\n\n"
        "class TinyRemoteForCausalLM(Phi3ForCausalLM):\n    config_class = TinyRemoteConfig\n")
    tones = Path(__file__).resolve().parents[1] / "example_notebooks" / "data" / "tones.jsonl"

    def workflow(trust: bool) -> dict:
        data = {"name": "tones", "load_dataset_config": {"data_name": "json", "data_files": str(tones)},
                "pre_process_data_config": {"text_template": "{phrase}\n{tone}", "max_seq_len": 32}}
        lora = {"type": "LoRA", "r": 4, "target_modules": ["qkv_proj"], "train_data_config": "tones",
                "training_args": {"max_steps": 2, "per_device_train_batch_size": 4}}
        return {"input_model": {"model_path": str(model), "load_kwargs": {"trust_remote_code": trust}},
                "data_configs": [data], "passes": {"lora": lora, "merge": {"type": "MergeAdapterWeights"}},
                "cache_dir": str(tmp_path / f"cache-{trust}"), "output_dir": str(tmp_path / f"out-{trust}")}

    assert tunecell.run(workflow(True), progress="none").status == "succeeded"
    with pytest.raises(PassFailed, match="custom code"):  # not trusted: transformers refuses, and says why
        tunecell.run(workflow(False), progress="none")
