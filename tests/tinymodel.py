"""A tiny random Phi-3 with its own byte-level BPE tokenizer, built offline in a few seconds.

It exercises the real plumbing (peft, merge, the onnxruntime-genai builder, generation) but has random weights:
never use it to claim quality.
"""
from __future__ import annotations

import ast
import math
import sysconfig
from pathlib import Path

HIDDEN, LAYERS, HEADS, INTERMEDIATE, MAX_POSITIONS = 256, 4, 4, 512, 512
VOCAB_TARGET = 2048
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
TONE_PHRASES = {
    "Sad": ["I lost my dog today", "the shop closed forever", "we said goodbye at the station"],
    "Joy": ["we won the big prize", "she danced all night", "I got the dream job"],
    "Fear": ["footsteps in the dark hallway", "the bridge shook in the storm", "a scream from the basement"],
    "Surprise": ["a party behind the door", "snow in the middle of summer", "the cat opened the fridge"],
}


def _corpus() -> list[str]:
    """Tone examples plus docstrings of the standard library: enough local text for a 2k-token vocabulary."""
    texts = [f"### Text: {phrase}\n### The tone is:\n{tone}" for tone, phrases in TONE_PHRASES.items()
             for phrase in phrases] * 20
    for source in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:60]:
        try:
            tree = ast.parse(source.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        texts += [doc for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and (doc := ast.get_docstring(node))]
    return texts


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Write a loadable HF folder (model, tokenizer, chat template, generation config) to out_dir."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    torch.manual_seed(seed)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(_corpus(), trainers.BpeTrainer(
        vocab_size=VOCAB_TARGET, min_frequency=1, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="<|endoftext|>", unk_token="<unk>",
        pad_token="<|endoftext|>", additional_special_tokens=SPECIAL_TOKENS[4:],
        model_max_length=MAX_POSITIONS, padding_side="left", clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(out_dir)

    vocab = tokenizer.get_vocab()
    eos = vocab["<|endoftext|>"]
    config = Phi3Config(
        vocab_size=math.ceil(len(tokenizer) / 32) * 32,  # int4 block quantization wants multiples of 32
        hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS,
        # equal to max_position_embeddings, or the builder takes the LongRoPE path and fails
        original_max_position_embeddings=MAX_POSITIONS,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=vocab["<s>"], eos_token_id=eos, pad_token_id=eos, tie_word_embeddings=False)
    config.architectures = ["Phi3ForCausalLM"]
    Phi3ForCausalLM(config).eval().save_pretrained(out_dir)
    GenerationConfig(bos_token_id=vocab["<s>"], eos_token_id=[eos, vocab["<|end|>"]], pad_token_id=eos,
                     do_sample=False).save_pretrained(out_dir)
    return out_dir
