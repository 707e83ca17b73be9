"""Load a model folder and generate from it: onnxruntime-genai for ONNX folders, transformers for HF folders.

Generation is greedy everywhere, so runs are reproducible and the two backends can be compared token for token.
Side effect to know about: onnxruntime writes a device id and telemetry database under
$XDG_CACHE_HOME/Microsoft (~/.cache/Microsoft by default) the first time a session is created. Callers that must
not touch the home folder (tests, sandboxed runs) should point XDG_CACHE_HOME elsewhere before loading.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Optional, Union

from .cpus import usable_cpus
from .data.tokenize import repeated_bos

if TYPE_CHECKING:
    import torch

Scoring = Literal["generate", "loglikelihood"]


def first_label(generated: str, labels: list[str]) -> Optional[str]:
    """The label word that comes first in the generated text (case-insensitive, whole words), or None.

    ' **Sad**.' gives 'Sad', 'It sounds like fear' gives 'Fear'; at the same position a longer label wins over
    its own prefix ('very sad' over 'very').
    """
    import re

    best: Optional[tuple[int, int, str]] = None
    for label in labels:
        match = re.search(r"(?<![\w])" + re.escape(label) + r"(?![\w])", generated, re.IGNORECASE)
        if match and (best is None or (match.start(), -len(label)) < best[:2]):
            best = (match.start(), -len(label), label)
    return best[2] if best else None


def first_id(ids: Union[int, list[int], None]) -> Optional[int]:
    """The token id of a config field that holds one id or a list of them (eos_token_id, say), the first if many."""
    return ids[0] if isinstance(ids, list) else ids


def label_sequences(encode: Callable[[str], list[int]], prompt: str, labels: list[str],
                    end: Optional[int] = None) -> tuple[int, list[list[int]]]:
    """The tokens of prompt + label for each label, encoded whole as in training, followed by ``end`` (the
    end-of-text token training puts after each answer, which keeps "Sad" from winning over "Sadness" on its
    prefix); and how many leading tokens all of them share with the prompt's. Every label is scored on the tokens
    after those, so a label that merges with the prompt's last token pays for that token like the others."""
    if not labels or not all(labels):
        raise ValueError(f"labels must be non-empty words (got {labels!r})")
    prompt_ids = encode(prompt)
    sequences = [encode(prompt + label) + ([end] if end is not None else []) for label in labels]
    shared = min(next((i for i, (a, b) in enumerate(zip(prompt_ids, ids)) if a != b),
                      min(len(prompt_ids), len(ids) - 1))  # at least one token of each label is scored
                 for ids in sequences)
    if shared == 0:
        raise ValueError("the prompt has no token to predict a label from")
    return shared, sequences


class LoadedModel:
    """A model ready to generate. kind is "onnx" or "hf"."""

    kind: str
    path: Path
    add_special_tokens = True  # prompts tokenized with the tokenizer's special tokens (a bos), as HF does by default
    _bos: Optional[int] = None  # the tokenizer's bos, and its text
    _bos_text: Optional[str] = None

    @contextmanager
    def special_tokens(self, add: bool) -> Iterator[None]:
        """Inside the block, prompts are tokenized with the tokenizer's special tokens or without: evaluation
        tokenizes them as training did (the data config's add_special_tokens)."""
        before, self.add_special_tokens = self.add_special_tokens, add
        try:
            yield
        finally:
            self.add_special_tokens = before

    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64, *,
                            fixed_length: bool = False) -> tuple[str, int, float]:
        """Greedy generation: (the new text only, number of new tokens, seconds spent). ``fixed_length``: the
        end-of-text token does not stop it, so every model generates max_new_tokens (what latency and throughput
        time: the model's speed, not how long its answers are)."""
        raise NotImplementedError

    def generate(self, prompt: str, max_new_tokens: int = 64) -> str:
        return self.generate_with_stats(prompt, max_new_tokens)[0]

    def generate_many(self, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
        """generate() for each prompt, in order; a backend that can batch them does."""
        return [self.generate(prompt, max_new_tokens) for prompt in prompts]

    def label_logprobs(self, prompt: str, labels: list[str]) -> list[float]:
        """Each label's log-probability after the prompt: the sum over its tokens and the end-of-text token that
        training puts after each answer (label_sequences)."""
        raise NotImplementedError

    def label_logprobs_many(self, prompts: list[str], labels: list[str]) -> list[list[float]]:
        """label_logprobs() for each prompt, in order; a backend that can batch them does."""
        return [self.label_logprobs(prompt, labels) for prompt in prompts]

    def classify(self, text: str, labels: list[str], prompt_template: Optional[str] = None,
                 max_new_tokens: int = 4, scoring: Scoring = "generate", after_label: str = "") -> Optional[str]:
        """The label for ``text``, after the prompt (prompt_template with {text} filled, or text itself).

        scoring "generate": greedy generation of max_new_tokens, then its first label word (None when it names
        none). "loglikelihood": the label the model finds most likely after the prompt, always one of ``labels``:
        what a model that never answers in the label words yet (before fine-tuning) still knows. Each label is
        scored with ``after_label`` after it, the text training put between the label and its end of text.
        """
        return self.classify_many([text], labels, prompt_template, max_new_tokens, scoring, after_label)[0]

    def classify_many(self, texts: list[str], labels: list[str], prompt_template: Optional[str] = None,
                      max_new_tokens: int = 4, scoring: Scoring = "generate",
                      after_label: str = "") -> list[Optional[str]]:
        """classify() for each text, in order, the generations batched where the backend can."""
        prompts = [prompt_template.format(text=text) if prompt_template else text for text in texts]
        if scoring == "loglikelihood":
            answers = [label + after_label for label in labels]
            return [labels[scores.index(max(scores))] for scores in self.label_logprobs_many(prompts, answers)]
        return [first_label(text, labels) for text in self.generate_many(prompts, max_new_tokens)]

    def _encode(self, text: str) -> list[int]:
        """The prompt's tokens, as training tokenizes it: a text that writes its own bos keeps one."""
        ids = self._token_ids(text)
        return ids[1:] if repeated_bos(ids, text, self._bos, self._bos_text) else ids

    def _token_ids(self, text: str) -> list[int]:
        """The tokenizer's ids for text, with its special tokens as add_special_tokens says."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.path}>"


class ContextFull(ValueError):
    """A generation request that does not fit the model's context."""


def check_room(prompt_tokens: int, new_tokens: int, context: int) -> None:
    """A request that cannot fit the model's context is refused: cut short, it would time fewer tokens."""
    if prompt_tokens + new_tokens > context:
        raise ContextFull(f"the prompt is {prompt_tokens} tokens and {new_tokens} new "
                         f"{'ones' if new_tokens > 1 else 'one'} must follow it; the model's context holds {context}")


def session_threads(model_config: dict) -> Optional[int]:
    """The intra-op threads to give onnxruntime when genai_config.json sets none: every CPU this process may run
    on. Left to itself the session ran the demo's int4 SmolLM2 at 102-128 tokens/s on this project's 2-core
    machine, and at 147-169 with intra_op_num_threads=2 (bench/README.md, row 5)."""
    options = (model_config.get("decoder") or {}).get("session_options") or {}
    return None if "intra_op_num_threads" in options else usable_cpus()


class OnnxModel(LoadedModel):
    kind = "onnx"
    add_special_tokens = False  # onnxruntime-genai's default: a chat template's prompt carries its own bos

    def __init__(self, path: Path):
        import onnxruntime_genai as og

        self._og = og
        self.path = path
        config = json.loads((path / "genai_config.json").read_text())["model"]
        og_config = og.Config(str(path))
        threads = session_threads(config)
        if threads:
            og_config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        self._model = og.Model(og_config)
        self._tokenizer = og.Tokenizer(self._model)
        self._tokenizer_adds: Optional[bool] = None  # the add_special_tokens option last given to the tokenizer
        self._context_length = config.get("context_length")
        settings = path / "tokenizer_config.json"
        settings = json.loads(settings.read_text()) if settings.is_file() else {}
        # The token training puts after each answer: the tokenizer's eos_token. genai_config.json's eos_token_id
        # is no substitute: the builder keeps generation_config's order, where the tokenizer's eos need not be
        # first (Llama-3.1-Instruct: [<|end_of_text|>, <|eom_id|>, <|eot_id|>], its tokenizer's eos <|eot_id|>).
        self._end_of_text = self._special_token(settings, "eos_token")[1]
        self._bos_text, self._bos = self._special_token(settings, "bos_token")
        if self._end_of_text is None:
            self._end_of_text = first_id(config.get("eos_token_id"))
        # og's decode gives up at the first invalid UTF-8 byte (a random or truncated output can end mid
        # character) and drops the rest, so decode with the tokenizers library when tokenizer.json is there
        self._decoder = None
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._decoder = Tokenizer.from_file(str(path / "tokenizer.json"))

    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64, *,
                            fixed_length: bool = False) -> tuple[str, int, float]:
        og = self._og
        start = time.perf_counter()
        ids = self._encode(prompt)
        max_length = len(ids) + max_new_tokens
        if self._context_length:
            check_room(len(ids), max_new_tokens if fixed_length else 1, self._context_length)
            max_length = min(max_length, self._context_length)
        params = og.GeneratorParams(self._model)
        params.set_search_options(do_sample=False, max_length=max_length,
                                  **({"min_length": max_length} if fixed_length else {}))
        generator = og.Generator(self._model, params)
        generator.append_tokens(ids)
        new: list[int] = []
        while not generator.is_done():
            generator.generate_next_token()
            new.append(int(generator.get_next_tokens()[0]))
        text = self._decode(new)
        return text, len(new), time.perf_counter() - start

    def label_logprobs(self, prompt: str, labels: list[str]) -> list[float]:
        # The shared prompt runs once; each label's tokens then extend that state one at a time (each step's
        # logits score the next token) and the generator is rewound to the prompt for the next label.
        import numpy as np

        shared, sequences = label_sequences(self._encode, prompt, labels, self._end_of_text)
        longest = max(len(ids) for ids in sequences)
        if self._context_length and longest > self._context_length:
            raise ValueError(f"the prompt and label are {longest} tokens; the model's context holds "
                             f"{self._context_length}")
        params = self._og.GeneratorParams(self._model)
        params.set_search_options(max_length=longest)
        generator = self._og.Generator(self._model, params)
        generator.append_tokens(sequences[0][:shared])
        after_shared = generator.get_logits().reshape(-1).astype(np.float64)
        scores = []
        for ids in sequences:
            logits, total = after_shared, 0.0
            for position in range(shared, len(ids)):
                total += float(logits[ids[position]] - np.logaddexp.reduce(logits))
                if position + 1 < len(ids):
                    generator.append_tokens(ids[position:position + 1])
                    logits = generator.get_logits().reshape(-1).astype(np.float64)
            generator.rewind_to(shared)
            scores.append(total)
        return scores

    def _token_ids(self, text: str) -> list[int]:
        if self._tokenizer_adds != self.add_special_tokens:
            self._tokenizer.update_options(add_special_tokens=str(self.add_special_tokens).lower())
            self._tokenizer_adds = self.add_special_tokens
        return self._tokenizer.encode(text).tolist()

    def _special_token(self, settings: dict, name: str) -> tuple[Optional[str], Optional[int]]:
        """tokenizer_config.json's token for name ("eos_token", "bos_token") and its id; None for a name the
        tokenizer does not know."""
        token = settings.get(name)
        if isinstance(token, dict):  # an AddedToken written out
            token = token.get("content")
        found = self._tokenizer.to_token_id(token) if token else None
        return token, found if found is not None and found >= 0 else None  # -1: a name the tokenizer does not know

    def _decode(self, ids: list[int]) -> str:
        if self._decoder is not None:
            return self._decoder.decode(ids, skip_special_tokens=True)
        import numpy as np

        return self._tokenizer.decode(np.array(ids, dtype=np.int32)) if ids else ""


class HfModel(LoadedModel):
    kind = "hf"

    def __init__(self, path: Path, trust_remote_code: bool = False, base: Optional[Union[str, Path]] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.path = path
        kwargs = {"local_files_only": True, "trust_remote_code": trust_remote_code}
        adapter = path / "adapter_config.json"
        if not adapter.is_file():
            base = None
        elif base is None:
            base = json.loads(adapter.read_text())["base_model_name_or_path"]
        # an adapter saved by peft alone has no tokenizer files: its base's tokenizer is the one
        has_tokenizer = any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
        self._tokenizer = AutoTokenizer.from_pretrained(path if has_tokenizer or base is None else base, **kwargs)
        self._bos, self._bos_text = self._tokenizer.bos_token_id, self._tokenizer.bos_token
        if base is not None:  # a LoRA adapter: its base, with the adapter merged in memory
            from peft import PeftModel

            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, **kwargs)
            self._model = PeftModel.from_pretrained(model, str(path)).merge_and_unload().eval()
        else:
            self._model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs).eval()
        generation = self._model.generation_config
        self._eos = generation.eos_token_id if generation.eos_token_id is not None else self._tokenizer.eos_token_id
        pad = generation.pad_token_id if generation.pad_token_id is not None else self._tokenizer.pad_token_id
        pad = first_id(pad if pad is not None else self._eos)
        self._pad = pad if pad is not None else 0  # padded positions are masked: any id does
        # remote code may predate the cache= / logits_to_keep= arguments that prefix sharing passes
        self._share_prefix = not trust_remote_code
        self._end_of_text = self._tokenizer.eos_token_id  # what training appends after each answer

    def generate_with_stats(self, prompt: str, max_new_tokens: int = 64, *,
                            fixed_length: bool = False) -> tuple[str, int, float]:
        start = time.perf_counter()
        ids = self._torch.tensor([self._encode(prompt)])
        inputs = {"input_ids": ids, "attention_mask": self._torch.ones_like(ids)}
        context = getattr(self._model.config, "max_position_embeddings", None)
        if context:  # as onnxruntime-genai: generation stops at the end of the context (past it: garbage)
            prompt_tokens = inputs["input_ids"].shape[1]
            check_room(prompt_tokens, max_new_tokens if fixed_length else 1, context)
            max_new_tokens = min(max_new_tokens, context - prompt_tokens)
        with self._torch.inference_mode():
            output = self._model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                                          eos_token_id=self._eos, pad_token_id=self._pad,
                                          min_new_tokens=max_new_tokens if fixed_length else None)
        new = output[0, inputs["input_ids"].shape[1]:].tolist()
        text = self._tokenizer.decode(new, skip_special_tokens=True)
        return text, len(new), time.perf_counter() - start

    def generate_many(self, prompts: list[str], max_new_tokens: int = 64, batch_size: int = 32) -> list[str]:
        # Prompts of similar length go together, padded on the left; generate() takes the positions from the
        # attention mask, so each row continues its prompt as it would alone (within float rounding).
        encoded = [self._encode(prompt) for prompt in prompts]
        stops = set(self._eos if isinstance(self._eos, list) else [self._eos])
        texts = [""] * len(prompts)
        by_length = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        for start in range(0, len(by_length), batch_size):
            rows = by_length[start:start + batch_size]
            ids, mask = self._padded([encoded[i] for i in rows], left=True)
            with self._torch.inference_mode():
                output = self._model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                              do_sample=False, num_beams=1, eos_token_id=self._eos,
                                              pad_token_id=self._pad)
            for row, i in enumerate(rows):
                new = output[row, ids.shape[1]:].tolist()
                end = next((at + 1 for at, token in enumerate(new) if token in stops), len(new))  # then padding
                texts[i] = self._tokenizer.decode(new[:end], skip_special_tokens=True)
        return texts

    def label_logprobs(self, prompt: str, labels: list[str]) -> list[float]:
        return self.label_logprobs_many([prompt], labels)[0]

    def label_logprobs_many(self, prompts: list[str], labels: list[str], batch_rows: int = 64) -> list[list[float]]:
        # batch_rows bounds the prompt-and-label rows of one forward pass, so memory does not grow with the labels
        per_batch = max(1, batch_rows // max(1, len(labels)))
        scores: list[list[float]] = []
        for start in range(0, len(prompts), per_batch):
            batch = [label_sequences(self._encode, prompt, labels, self._end_of_text)
                     for prompt in prompts[start:start + per_batch]]
            scored = self._scores_sharing_prefixes(batch) if self._share_prefix else None
            scores.extend(scored if scored is not None else [self._scores_whole(*split) for split in batch])
        return scores

    def _token_ids(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=self.add_special_tokens).input_ids

    def _scores_sharing_prefixes(self, batch: list[tuple[int, list[list[int]]]]) -> Optional[list[list[float]]]:
        # Two forward passes. First the tokens each prompt shares with all its labels, padded on the left so that
        # every prompt's last logits are in the last column. Then each label's own tokens, one row per prompt and
        # label, padded on the right, over copies of that prompt's cached state. Positions are given explicitly:
        # with padding they no longer follow the columns. None when the cache cannot be copied row by row (the
        # recurrent states of hybrid models such as LFM2).
        from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

        torch = self._torch
        n_labels = len(batch[0][1])
        ids, mask = self._padded([sequences[0][:shared] for shared, sequences in batch], left=True)
        tails = [seq[shared:] for shared, sequences in batch for seq in sequences]  # prompt by prompt, each label
        with torch.inference_mode():
            out = self._model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                              use_cache=True, logits_to_keep=1)
            if not all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in out.cache.layers):
                self._share_prefix = False
                return None
            first = out.logits[:, -1].double().log_softmax(-1)
            scores = [first[row // n_labels, tail[0]].item() for row, tail in enumerate(tails)]
            fed = [tail[:-1] for tail in tails]  # a label's last token is scored, never fed
            if any(fed):
                tail_ids, tail_mask = self._padded(fed, left=False)
                out.cache.batch_repeat_interleave(n_labels)
                prompt_mask = mask.repeat_interleave(n_labels, 0)
                positions = prompt_mask.sum(-1, keepdim=True) + torch.arange(tail_ids.shape[1])
                logprobs = self._model(input_ids=tail_ids, attention_mask=torch.cat([prompt_mask, tail_mask], -1),
                                       position_ids=positions, cache=out.cache).logits.double().log_softmax(-1)
                scores = [score + sum(logprobs[row, t, tail[t + 1]].item() for t in range(len(tail) - 1))
                          for row, (score, tail) in enumerate(zip(scores, tails))]
        return [scores[at:at + n_labels] for at in range(0, len(scores), n_labels)]

    def _scores_whole(self, shared: int, sequences: list[list[int]]) -> list[float]:
        """One prompt's labels scored without a cache: every prompt + label sequence whole, in one batch."""
        ids, mask = self._padded(sequences, left=False)
        with self._torch.inference_mode():
            logprobs = self._model(input_ids=ids, attention_mask=mask).logits.double().log_softmax(-1)
        return [sum(logprobs[row, t - 1, seq[t]].item() for t in range(shared, len(seq)))
                for row, seq in enumerate(sequences)]

    def _padded(self, sequences: list[list[int]], left: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask of sequences padded to the longest, on the left or the right."""
        torch = self._torch
        width = max(len(seq) for seq in sequences)
        ids = torch.full((len(sequences), width), self._pad)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):
            columns = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, columns], mask[row, columns] = torch.tensor(seq, dtype=ids.dtype), 1
        return ids, mask


def load_model(path: Union[str, Path], *, trust_remote_code: bool = False,
               base: Optional[Union[str, Path]] = None) -> LoadedModel:
    """An ONNX folder (genai_config.json) loads with onnxruntime-genai; an HF folder, or a LoRA adapter over
    one, with transformers in fp32. An adapter's base model is ``base``, else the one its adapter_config.json
    names (where it was when the adapter was trained)."""
    path = Path(path)
    if (path / "genai_config.json").is_file():
        return OnnxModel(path)
    if (path / "config.json").is_file() or (path / "adapter_config.json").is_file():
        return HfModel(path, trust_remote_code=trust_remote_code, base=base)
    raise FileNotFoundError(f"{path} holds neither an ONNX model (genai_config.json), an HF model (config.json) "
                            "nor a LoRA adapter (adapter_config.json)")
