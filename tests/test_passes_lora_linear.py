"""MatmulLoRALinear, the LoRA layer trained on the CPU: the same numbers as peft's forward and backward."""
from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from tunecell.passes.dropout import BitsDropout, use_bits_dropout
from tunecell.passes.lora_linear import MatmulLoRALinear, _LoRAMatmuls, use_matmul_lora

TOKENS = torch.tensor([[1, 5, 9, 13, 2, 7, 11, 4]])
BATCH = {"input_ids": TOKENS, "labels": TOKENS}


def peft_model(tiny_model, dropout: float, targets=("qkv_proj", "o_proj", "down_proj"), **lora_options):
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    # init_lora_weights=False: B is random too, so every LoRA gradient is non-zero
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(targets),
                                            init_lora_weights=False, task_type="CAUSAL_LM", **lora_options))
    use_bits_dropout(model)
    return model


def with_matmul_lora(model):
    fused = copy.deepcopy(model)
    use_matmul_lora(fused)
    return fused


def loss_and_grads(model, seed: int = 3):
    model.zero_grad()
    torch.manual_seed(seed)
    embeddings = model.get_input_embeddings()(TOKENS).detach().requires_grad_()
    loss = model(inputs_embeds=embeddings, labels=BATCH["labels"]).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    return loss.item(), grads, embeddings.grad


def assert_same_training_step(fused, model, context=contextlib.nullcontext):
    with context():
        expected_loss, expected_grads, expected_input_grad = loss_and_grads(model)
    with context():
        loss, grads, input_grad = loss_and_grads(fused)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert grads.keys() == expected_grads.keys() and grads
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        assert_close_in_float32(grad, expected_grads[name], name)
    assert_close_in_float32(input_grad, expected_input_grad, "input gradient")


def assert_close_in_float32(actual, expected, name):
    # the two paths sum in different orders: allow float32 rounding at the scale of the tensor's largest value
    tolerance = 1e-4 * expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=tolerance, msg=lambda m: f"{name}: {m}")


def test_backward_matches_autograd_of_the_formula_in_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(7, 6, dtype=torch.float64), torch.randn(7, dtype=torch.float64)
    a = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    dropped = torch.rand(10, 6) < 0.3
    assert torch.autograd.gradcheck(lambda x, a, b: _LoRAMatmuls.apply(x, weight, bias, a, b, 1.7, dropped), (x, a, b))
    kept = x.reshape(10, 6).masked_fill(dropped, 0)
    expected = x @ weight.t() + bias + 1.7 * (kept @ a.t() @ b.t()).view(2, 5, 7)
    assert torch.allclose(_LoRAMatmuls.apply(x, weight, bias, a, b, 1.7, dropped), expected)


@pytest.mark.parametrize("dropout, checkpointing", [(0.0, False), (0.1, False), (0.1, True)])
def test_training_step_gives_peft_loss_and_gradients(tiny_model, dropout, checkpointing):
    model = peft_model(tiny_model, dropout).train()
    if checkpointing:  # the recomputed forward must draw the same dropout masks
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    fused = copy.deepcopy(model)
    assert use_matmul_lora(fused) == 12  # 4 decoder layers x 3 targets
    assert_same_training_step(fused, model)
    if dropout:  # the masks follow torch's seed
        assert loss_and_grads(fused, seed=1)[0] == loss_and_grads(fused, seed=1)[0] != loss_and_grads(fused, seed=2)[0]


def test_eval_gives_peft_logits(tiny_model):
    model = peft_model(tiny_model, 0.1).eval()
    fused = with_matmul_lora(model)
    with torch.no_grad():
        torch.testing.assert_close(fused(**BATCH).logits, model(**BATCH).logits)
        with fused.disable_adapter(), model.disable_adapter():
            torch.testing.assert_close(fused(**BATCH).logits, model(**BATCH).logits)


@pytest.mark.parametrize("options, fuses", [
    ({"use_rslora": True}, True),  # another scaling, which peft keeps in layer.scaling: still the plain case
    ({"use_dora": True}, False),
    ({"lora_bias": True}, False),
])
def test_other_lora_options_give_peft_numbers(tiny_model, options, fuses):
    model = peft_model(tiny_model, 0.1, **options).train()
    fused = with_matmul_lora(model)
    layer = next(m for m in fused.modules() if isinstance(m, MatmulLoRALinear))
    assert (layer._plain_adapter(torch.zeros(2, layer.in_features), (), {}) == "default") is fuses
    assert_same_training_step(fused, model)


def test_autocast_runs_peft_forward(tiny_model):
    model = peft_model(tiny_model, 0.1).train()
    fused = with_matmul_lora(model)
    assert_same_training_step(fused, model, lambda: torch.autocast("cpu", dtype=torch.bfloat16))


def test_cases_it_does_not_fuse(tiny_model):
    fused = with_matmul_lora(peft_model(tiny_model, 0.1))
    layer = next(m for m in fused.modules() if isinstance(m, MatmulLoRALinear))
    x = torch.randn(3, layer.in_features)
    assert layer._plain_adapter(x, (), {}) == "default"
    assert layer._plain_adapter(x.double(), (), {}) is None  # a dtype other than the weights': peft casts
    assert layer._plain_adapter(x, (), {"adapter_names": ["default"] * 3}) is None
    handle = layer.base_layer.register_forward_hook(lambda *args: None)
    assert layer._plain_adapter(x, (), {}) is None
    handle.remove()
    layer.base_layer.bias = torch.nn.Parameter(torch.zeros(layer.out_features))  # bias: "all" trains it
    assert layer._plain_adapter(x, (), {}) is None


def test_saves_and_merges_as_peft_does(tiny_model, tmp_path):
    model = peft_model(tiny_model, 0.1).eval()
    fused = with_matmul_lora(model)
    assert fused.state_dict().keys() == model.state_dict().keys()
    fused.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    with torch.no_grad():
        before = fused(**BATCH).logits
        merged = fused.merge_and_unload()
        assert not any(isinstance(m, MatmulLoRALinear) for m in merged.modules())
        torch.testing.assert_close(merged(**BATCH).logits, before, rtol=1e-4, atol=1e-5)


def test_layers_off_the_cpu_are_left_alone(tiny_model):
    model = peft_model(tiny_model, 0.0, targets=("o_proj",))
    layers = [m for m in model.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    layers[0].base_layer.to("meta")  # stands for a layer on another device
    assert use_matmul_lora(model) == len(layers) - 1
    assert type(layers[0]) is not MatmulLoRALinear and all(type(m) is MatmulLoRALinear for m in layers[1:])


def test_the_lora_pass_trains_with_it(tiny_model):
    import transformers

    from tunecell.config.schema import LoRA
    from tunecell.passes.lora import with_adapter

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    model = with_adapter(base, LoRA(r=4, lora_dropout=0.1, target_modules=["o_proj"], train_data_config="x"))
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert len(layers) == 4 and all(type(m) is MatmulLoRALinear for m in layers)
    assert all(isinstance(m.lora_dropout["default"], BitsDropout) for m in layers)
