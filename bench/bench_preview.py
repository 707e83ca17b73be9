"""How long the preview takes to show its first page over a 100,000-row dataset.

Writes a 100k-row tone jsonl and trains a small byte-level BPE tokenizer in a temp folder (not timed), then times
``tunecell.preview(...)``: loading and checking the rows, building the widget and rendering page one (sample, stats
over a 1,000-row sample, controls). Run: python bench/bench_preview.py [rows]
"""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["my dog", "the old shop", "our team", "the storm", "a letter", "my sister", "the bus", "the garden",
            "a stranger", "the concert", "my phone", "the lake", "grandma", "the exam", "a parcel", "the city"]
EVENTS = {
    "Sad": ["is gone for good", "never came back", "was lost in the move", "closed its doors forever"],
    "Joy": ["won the final", "made everyone laugh", "finally arrived today", "was full of music and friends"],
    "Fear": ["made a noise in the dark", "shook the whole house", "followed me home", "went silent at midnight"],
    "Surprise": ["turned up out of nowhere", "held a secret party", "was suddenly twice as big", "spoke my name"],
}
TEMPLATE = "### Text: {phrase}\n### The tone is:\n{tone}"


def write_rows(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    tones = list(EVENTS)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            tone = tones[i % 4]
            words = " ".join(rng.choice(SUBJECTS) + " " + rng.choice(EVENTS[tone]) for _ in range(rng.randint(1, 3)))
            f.write(json.dumps({"phrase": words, "tone": tone}) + "\n")


def make_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [s + " " + e for s in SUBJECTS for es in EVENTS.values() for e in es] + list(EVENTS) + [TEMPLATE]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus * 5, trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<unk>", "<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HF_HOME", os.path.join(tmp, "hf"))
        path = Path(tmp) / "tones.jsonl"
        write_rows(path, n)
        tokenizer = make_tokenizer()
        t0 = time.perf_counter()
        import ipywidgets  # noqa: F401  (a notebook has these loaded already)
        import tunecell.widgets  # noqa: F401
        from tunecell.config.schema import DataConfig
        t_import = time.perf_counter() - t0
        results = {}
        for strategy in ("line-by-line", "join"):
            dc = DataConfig(name="tones", load_dataset_config={"data_name": "json", "data_files": str(path)},
                            pre_process_data_config={"text_template": TEMPLATE, "strategy": strategy,
                                                     "max_seq_len": 64, "train_on_prompt": False,
                                                     "label_column": "tone"})
            from tunecell.widgets import preview
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                w = preview(dc, tokenizer=tokenizer, stats_sample=1000)
                assert "row 0" in w.sample_box.value and "stats" in w.stats_box.value
                times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            w.buttons["next"].click()
            t_next = time.perf_counter() - t0
            results[strategy] = (times, t_next)
        t0 = time.perf_counter()
        w.buttons["longest"].click()
        t_longest = time.perf_counter() - t0
        print(f"rows: {n:,}  file: {path.stat().st_size / 1e6:.1f} MB  (imports of ipywidgets+tunecell.widgets: "
              f"{t_import:.2f} s, not counted)")
        for strategy, (times, t_next) in results.items():
            print(f"{strategy:>12}: first page {times[0]:.3f} s (repeats {times[1]:.3f} s, {times[2]:.3f} s); "
                  f"next page {t_next * 1000:.0f} ms")
        print(f"     longest: {t_longest:.2f} s (tokenizes every row once, on demand)")
        print(f"first_page_seconds={max(r[0][0] for r in results.values()):.3f}")


if __name__ == "__main__":
    main()
