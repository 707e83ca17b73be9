"""MatmulLoRALinear, the LoRA layer trained on the CPU: the same numbers as peft's forward and backward."""
from __future__ import annotations

import copy

import pytest
import torch

from tunecell.passes.dropout import use_bits_dropout
from tunecell.passes.lora_linear import MatmulLoRALinear, _LoRAMatmuls, use_matmul_lora

BATCH = {"input_ids": torch.tensor([[1, 5, 9, 13, 2, 7, 11, 4]]), "labels": torch.tensor([[1, 5, 9, 13, 2, 7, 11, 4]])}


def peft_model(tiny_model, dropout: float, targets=("qkv_proj", "o_proj", "down_proj")):
    import transformers
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    # init_lora_weights=False: B is random too, so every LoRA gradient is non-zero
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=list(targets),
                                            init_lora_weights=False, task_type="CAUSAL_LM"))
    use_bits_dropout(model)
    return model


def loss_and_grads(model, seed: int = 3):
    model.zero_grad()
    torch.manual_seed(seed)
    embeddings = model.get_input_embeddings()(BATCH["input_ids"]).detach().requires_grad_()
    loss = model(inputs_embeds=embeddings, labels=BATCH["labels"]).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "lora_" in n}
    return loss.item(), grads, embeddings.grad


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


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_training_step_gives_peft_loss_and_gradients(tiny_model, dropout):
    model = peft_model(tiny_model, dropout).train()
    fused = copy.deepcopy(model)
    assert use_matmul_lora(fused) == 12  # 4 decoder layers x 3 targets
    expected_loss, expected_grads, expected_input_grad = loss_and_grads(model)
    loss, grads, input_grad = loss_and_grads(fused)
    assert loss == pytest.approx(expected_loss, rel=1e-6)
    assert grads.keys() == expected_grads.keys() and len(grads) == 24
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(grad, expected_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    torch.testing.assert_close(input_grad, expected_input_grad, rtol=1e-4, atol=1e-6)


def test_dropout_draws_follow_the_seed(tiny_model):
    model = peft_model(tiny_model, 0.3).train()
    use_matmul_lora(model)
    first, again, other = loss_and_grads(model, seed=1)[0], loss_and_grads(model, seed=1)[0], loss_and_grads(model, seed=2)[0]
    assert first == again and first != other


def test_cases_it_does_not_fuse_run_peft_forward(tiny_model):
    model = peft_model(tiny_model, 0.1).eval()
    fused = copy.deepcopy(model)
    use_matmul_lora(fused)
    with torch.no_grad():
        plain = fused(**BATCH).logits
        torch.testing.assert_close(plain, model(**BATCH).logits)
        with fused.disable_adapter(), model.disable_adapter():
            without = fused(**BATCH).logits
            torch.testing.assert_close(without, model(**BATCH).logits)
        assert not torch.allclose(without, plain)
        layer = next(m for m in fused.modules() if isinstance(m, MatmulLoRALinear))
        x = torch.randn(3, layer.in_features, dtype=torch.float64)
        assert layer._plain_adapter(x, (), {}) is None  # a dtype other than the weights': peft casts
        assert layer._plain_adapter(x.float(), (), {}) == "default"
        assert layer._plain_adapter(x.float(), (), {"adapter_names": ["default"] * 3}) is None
        layer.base_layer.bias = torch.nn.Parameter(torch.zeros(layer.out_features))  # bias: "all" trains it
        assert layer._plain_adapter(x.float(), (), {}) is None


def test_saves_and_merges_as_peft_does(tiny_model, tmp_path):
    model = peft_model(tiny_model, 0.1).eval()
    fused = copy.deepcopy(model)
    use_matmul_lora(fused)
    assert fused.state_dict().keys() == model.state_dict().keys()
    fused.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    with torch.no_grad():
        before = fused(**BATCH).logits
        merged = fused.merge_and_unload()
        assert not any(isinstance(m, MatmulLoRALinear) for m in merged.modules())
        torch.testing.assert_close(merged(**BATCH).logits, before, rtol=1e-4, atol=1e-5)


def test_layers_off_the_cpu_or_of_other_kinds_are_left_alone(tiny_model):
    model = peft_model(tiny_model, 0.0, targets=("o_proj",))
    layers = [m for m in model.modules() if type(m).__name__ == "Linear" and hasattr(m, "lora_A")]
    layers[0].base_layer.to("meta")  # stands for a layer on another device
    assert use_matmul_lora(model) == len(layers) - 1
    assert type(layers[0]) is not MatmulLoRALinear and all(type(m) is MatmulLoRALinear for m in layers[1:])
