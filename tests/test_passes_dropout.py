"""BitsDropout, the LoRA dropout used on the CPU: torch dropout's distribution, scaling, seeding and gradient."""
from __future__ import annotations

import pytest
import torch

from tunecell.passes.dropout import BitsDropout, use_bits_dropout


def dropped(p: float, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, BitsDropout]:
    torch.manual_seed(seed)
    dropout = BitsDropout(p).train()
    return dropout(torch.ones(shape)), dropout


def test_probability_is_rounded_to_a_16_bit_step():
    assert BitsDropout(0.1).p == 6554 / 65536
    assert BitsDropout(0.5).p == 0.5 and BitsDropout(0.0).p == 0.0


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5])
def test_drops_the_given_fraction_and_scales_the_rest(p):
    y, dropout = dropped(p, (1000, 1000))
    zero = (y == 0).float().mean().item()
    assert abs(zero - dropout.p) < 0.002  # 1M draws: the standard error is at most 0.0005
    assert torch.all((y == 0) | (y == 1 / (1 - dropout.p)))


def test_every_16_bit_lane_of_a_random_word_is_used_alike():
    # four draws come from each int64: a column of a (n, 4) tensor is one lane; each must drop about p
    y, dropout = dropped(0.1, (250_000, 4))
    per_lane = (y == 0).float().mean(dim=0)
    assert torch.all((per_lane - dropout.p).abs() < 0.004), per_lane


def test_shapes_that_are_not_a_multiple_of_four():
    y, _ = dropped(0.5, (3, 5, 7))
    assert y.shape == (3, 5, 7) and 0 < (y == 0).sum() < y.numel()


def test_the_torch_seed_fixes_the_mask():
    first, _ = dropped(0.1, (64, 64), seed=1)
    again, _ = dropped(0.1, (64, 64), seed=1)
    other, _ = dropped(0.1, (64, 64), seed=2)
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(0)
    x = torch.randn(32, 48, requires_grad=True)
    y = BitsDropout(0.2).train()(x)
    y.sum().backward()
    assert torch.equal(x.grad, (y != 0).float() * BitsDropout(0.2).scale)


def test_eval_mode_and_zero_probability_return_the_input():
    x = torch.randn(8, 8)
    assert BitsDropout(0.3).eval()(x) is x
    assert BitsDropout(0.0).train()(x) is x


def test_peft_lora_layers_on_the_cpu_get_bits_dropout(tiny_model):
    import transformers
    from peft import LoraConfig, get_peft_model

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1,
                                            target_modules=["qkv_proj", "o_proj"], task_type="CAUSAL_LM"))
    layers = [m for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)]
    assert use_bits_dropout(model) == len(layers) == 8  # 4 decoder layers x (qkv_proj, o_proj)
    assert all(isinstance(m.lora_dropout["default"], BitsDropout) and m.lora_dropout["default"].p == 6554 / 65536
               for m in layers)
    model.train()
    loss = model(input_ids=torch.tensor([[1, 5, 9, 13]]), labels=torch.tensor([[1, 5, 9, 13]])).loss
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "lora_" in n)


def test_no_dropout_configured_leaves_peft_alone(tiny_model):
    import transformers
    from peft import LoraConfig, get_peft_model

    base = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["o_proj"],
                                            task_type="CAUSAL_LM"))
    assert use_bits_dropout(model) == 0  # peft puts nn.Identity there
