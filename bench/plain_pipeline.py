"""The anchor: one plain script doing the demo's work with peft + transformers Trainer + the onnxruntime-genai builder.

What a careful user writes without tunecell: tokenize each row (bos + text + eos, cut at max_seq_len), loss on the
answer only (labels -100 on the prompt; on the whole text with loss_on "text"), DataCollatorForSeq2Seq (pads each
batch to its longest row), LoRA with peft, Trainer (seeded), save the adapter, merge_and_unload in memory, save the
merged folder, run the builder in process.

python bench/plain_pipeline.py SPEC.json  (SPEC: base, train, out, target_modules, steps, batch, lr, r, alpha,
dropout, seed, max_seq_len, precision, loss_on, merge, build). Prints one line "BENCH_JSON {...}" with timings and
throughput.
"""
import json
import os
import sys
import time

T0 = time.perf_counter()
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,  # noqa: E402
                          TrainerCallback, TrainingArguments)

spec = json.load(open(sys.argv[1]))
out = spec["out"]
merged_dir = os.path.join(out, "merged")
os.makedirs(out, exist_ok=True)
times = {"imports": time.perf_counter() - T0}
torch.manual_seed(spec["seed"])

t = time.perf_counter()
tok = AutoTokenizer.from_pretrained(spec["base"])
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
tok.padding_side = "right"
model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.float32)
times["load"] = time.perf_counter() - t

t = time.perf_counter()
rows = [json.loads(line) for line in open(spec["train"]) if line.strip()]
prompt_template, answer_field = spec["template"].rsplit("{", 1)
features = {"input_ids": [], "attention_mask": [], "labels": []}
for row in rows:
    prompt = prompt_template.format(**row)
    text = spec["template"].format(**row)
    ids = tok(text)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(tok(prompt)["input_ids"])
    ids = ids[:spec["max_seq_len"]]
    labels = ids if spec.get("loss_on", "answer") == "text" else ([-100] * n_prompt + ids[n_prompt:])[:len(ids)]
    if all(x == -100 for x in labels):
        continue
    features["input_ids"].append(ids)
    features["attention_mask"].append([1] * len(ids))
    features["labels"].append(labels)
ds = Dataset.from_dict(features)
times["tokenize"] = time.perf_counter() - t

model = get_peft_model(model, LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], lora_dropout=spec["dropout"],
                                         target_modules=spec["target_modules"], bias="none", task_type="CAUSAL_LM"))


class Counting(DataCollatorForSeq2Seq):
    tokens = 0
    padded = 0

    def __call__(self, features, return_tensors=None):
        batch = super().__call__(features, return_tensors)
        Counting.tokens += int(batch["attention_mask"].sum())
        Counting.padded += int(batch["attention_mask"].numel())
        return batch


class Clock(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        self.t0, self.tok0 = time.perf_counter(), Counting.tokens

    def on_train_end(self, args, state, control, **kw):
        self.seconds, self.tokens = time.perf_counter() - self.t0, Counting.tokens - self.tok0


clock = Clock()
args = TrainingArguments(output_dir=os.path.join(out, "trainer"), per_device_train_batch_size=spec["batch"],
                         max_steps=spec["steps"], learning_rate=spec["lr"], lr_scheduler_type="constant",
                         warmup_steps=0, logging_steps=10, save_strategy="no", report_to="none", use_cpu=True,
                         disable_tqdm=True, seed=spec["seed"], remove_unused_columns=False)
trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[clock],
                  data_collator=Counting(tok, padding=True, label_pad_token_id=-100))
t = time.perf_counter()
result = trainer.train()
model.save_pretrained(os.path.join(out, "adapter"))
times["train"] = time.perf_counter() - t
info = {"train_loss": result.training_loss, "train_s": clock.seconds, "tokens": clock.tokens,
        "padded_positions": Counting.padded, "tokens_per_s": clock.tokens / clock.seconds,
        "rows": len(ds)}
info["params"] = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)

if spec.get("merge", True):
    t = time.perf_counter()
    merged = model.merge_and_unload()
    merged.save_pretrained(merged_dir)
    AutoTokenizer.from_pretrained(spec["base"]).save_pretrained(merged_dir)
    if os.path.exists(os.path.join(spec["base"], "generation_config.json")):
        import shutil
        shutil.copy(os.path.join(spec["base"], "generation_config.json"), merged_dir)
    times["merge_save"] = time.perf_counter() - t
    del merged, model, trainer
if spec.get("build", True):
    t = time.perf_counter()
    from onnxruntime_genai.models.builder import create_model, parse_extra_options

    onnx_dir = os.path.join(out, "onnx")
    cache_dir = os.path.join(out, "builder-cache")
    args = (None, merged_dir, onnx_dir, spec["precision"], "cpu", cache_dir)
    create_model(*args, **parse_extra_options(*args, ["hf_token=false"]))
    times["builder"] = time.perf_counter() - t
times["total_in_process"] = time.perf_counter() - T0
info["times"] = {k: round(v, 2) for k, v in times.items()}
print("BENCH_JSON " + json.dumps(info), flush=True)
