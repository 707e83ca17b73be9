"""Small measurements, each run in a fresh process by bench/run.py: `python -m bench.probes <probe> ...`.

Each prints one line "BENCH_JSON {...}".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path


def emit(data) -> None:
    print("BENCH_JSON " + json.dumps(data, default=str), flush=True)


# ----------------------------------------------------------------------------------------- hardware
def timed_reps(fn, reps: int):
    """fn() once to warm up, then reps timed calls: (the last result, the seconds of each)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def gemm(args) -> None:
    """fp32 GEMM FLOP/s with torch.matmul on `threads` threads (median of reps, after a warm-up)."""
    import torch

    torch.set_num_threads(args.threads)
    n = args.n
    a, b = torch.randn(n, n), torch.randn(n, n)
    c = torch.empty(n, n)
    torch.matmul(a, b, out=c)
    rates = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=c)
        rates.append(2 * n ** 3 / (time.perf_counter() - t0))
    emit({"threads": args.threads, "n": n, "gflops_median": statistics.median(rates) / 1e9,
          "gflops_max": max(rates) / 1e9})


def copy_bandwidth(threads: int = 2, mb: int = 512, reps: int = 7) -> dict:
    """Copy bandwidth, STREAM convention (bytes read + bytes written per second), torch copy_ on `threads`
    threads and numpy (one thread); buffers far larger than the caches."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    n = mb * (1 << 20) // 4
    src, dst = torch.ones(n), torch.empty(n)
    dst.copy_(src)
    t_torch = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        t_torch.append(time.perf_counter() - t0)
    a, b = np.ones(n, dtype=np.float32), np.empty(n, dtype=np.float32)
    np.copyto(b, a)
    t_np = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        t_np.append(time.perf_counter() - t0)
    bytes_moved = 2 * n * 4
    return {"torch_gbs": bytes_moved / statistics.median(t_torch) / 1e9,
            "numpy_gbs": bytes_moved / statistics.median(t_np) / 1e9, "buffer_mb": mb, "threads": threads}


def bandwidth(args) -> None:
    emit(copy_bandwidth(args.threads))


# ----------------------------------------------------------------------------------------- tunecell
def train_tunecell(args) -> None:
    """The LoRA pass of a config, alone, in process; the rate over the whole training from its TrainStep events."""
    import tunecell
    from tunecell.events import TrainStep

    steps = []
    t0 = time.perf_counter()
    result = tunecell.run(args.config, only={"lora"}, progress="none",
                          subscribers=[lambda e: steps.append(e) if isinstance(e, TrainStep) else None])
    wall = time.perf_counter() - t0
    stats = result.passes[-1].stats
    emit({"wall_s": wall, "steps": len(steps), "tokens_per_s": steps[-1].tokens_per_s, "stats": stats})


def cached_inprocess(args) -> None:
    """An unchanged config rerun in one process: first call (imports and all) and `reps` more calls."""
    t0 = time.perf_counter()
    import tunecell

    result = tunecell.run(args.config, progress="none")
    first = time.perf_counter() - t0
    assert all(p.cache_hit for p in result.passes), [(p.name, p.status) for p in result.passes]
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        result = tunecell.run(args.config, progress="none")
        times.append(time.perf_counter() - t0)
    emit({"first_call_s": first, "repeat_s": times, "repeat_median_s": statistics.median(times),
          "torch_imported": "torch" in sys.modules, "transformers_imported": "transformers" in sys.modules,
          "status": result.status, "metrics": result.metrics})


def cached_cli(args) -> None:
    """`tunecell run --config` (tunecell.cli.main, which the console script's entry() calls) on a cached config;
    which heavy modules it imported."""
    from tunecell.cli import main

    code = main(["run", "--config", args.config, "--progress", "none"])
    heavy = [m for m in ("torch", "transformers", "peft", "datasets", "onnxruntime", "onnxruntime_genai", "pyarrow")
             if m in sys.modules]
    emit({"rc": code, "heavy_modules_imported": heavy, "modules": len(sys.modules)})


def loadext(args) -> None:
    """%load_ext tunecell in a fresh IPython shell: its time and the modules it added."""
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    before = set(sys.modules)
    t0 = time.perf_counter()
    shell.run_line_magic("load_ext", "tunecell")
    seconds = time.perf_counter() - t0
    new = sorted(set(sys.modules) - before)
    top = sorted({m.split(".")[0] for m in new})
    emit({"seconds": seconds, "new_modules": len(new), "new_top_level": top,
          "torch_imported": "torch" in sys.modules})


# ----------------------------------------------------------------------------------------- models
def accuracy(args) -> None:
    """Held-out accuracy of a model folder (ONNX or HF) with tunecell's evaluator functions."""
    from tunecell.config.schema import PreProcessDataConfig
    from tunecell.data import eval_examples
    from tunecell.evaluate import accuracy as acc
    from tunecell.inference import load_model

    rows = [json.loads(line) for line in open(args.eval) if line.strip()]
    pre = PreProcessDataConfig(text_template=args.template, label_column="tone")
    examples = eval_examples(rows, pre, "tone")
    model = load_model(Path(args.model))
    t0 = time.perf_counter()
    value = acc(model, examples, args.labels.split(","), max_new_tokens=4)
    emit({"model": args.model, "kind": model.kind, "accuracy": value, "n": len(examples),
          "seconds": time.perf_counter() - t0})


def build(args) -> None:
    """tunecell's builder call (passes/model_builder.build_onnx) with given int4 options."""
    from tunecell.passes.model_builder import build_onnx

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    extra = dict(kv.split("=", 1) for kv in args.extra)
    sym = {"": None, "true": True, "false": False}[args.sym]
    build_onnx(Path(args.hf), out, precision=args.precision, execution_provider="cpu",
               int4_block_size=args.block, int4_accuracy_level=args.acc if args.acc >= 0 else None,
               int4_is_symmetric=sym, extra_options=extra, scratch_dir=out.parent / f".scratch-{out.name}")
    emit({"out": str(out), "seconds": time.perf_counter() - t0})


def weight_bytes_per_token(onnx_path: Path) -> dict:
    """Bytes of weights one decode step reads: the initializers of the matmuls (MatMulNBits packed weights, scales,
    zero points; plain MatMul/Gemm weights) and the norms, read whole; one row of a table that a Gather or
    GatherBlockQuantized indexes (the embedding) unless a matmul reads that table whole too (a shared lm_head).
    Position tables (GroupQueryAttention's cos/sin caches: one row a step) and constant-folded inputs (Reshape) are
    left out."""
    import numpy as np
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    bits = {onnx.TensorProto.UINT8: 8, onnx.TensorProto.INT8: 8, onnx.TensorProto.FLOAT16: 16,
            onnx.TensorProto.BFLOAT16: 16, onnx.TensorProto.INT64: 64, onnx.TensorProto.DOUBLE: 64,
            onnx.TensorProto.UINT4: 4, onnx.TensorProto.INT4: 4}
    sizes = {}
    for init in model.graph.initializer:
        n = int(np.prod(init.dims)) if init.dims else 1
        sizes[init.name] = (n * bits.get(init.data_type, 32) + 7) // 8, list(init.dims)
    whole_ops = ("MatMulNBits", "MatMul", "Gemm", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization",
                 "LayerNormalization", "SkipLayerNormalization", "Add", "Mul")
    whole, rows, by_op = set(), {}, {}
    for node in model.graph.node:
        used = [x for x in node.input if x in sizes]
        if node.op_type in ("Gather", "GatherBlockQuantized"):
            for x in used:
                dims = sizes[x][1]
                rows[x] = sizes[x][0] // dims[0] if dims and dims[0] else sizes[x][0]
        elif node.op_type in whole_ops:
            for x in used:
                if x not in whole:
                    by_op[node.op_type] = by_op.get(node.op_type, 0) + sizes[x][0]
                whole.add(x)
    read = sum(sizes[x][0] for x in whole) + sum(v for k, v in rows.items() if k not in whole)
    return {"bytes_per_token": read, "all_initializer_bytes": sum(s for s, _ in sizes.values()), "bytes_by_op": by_op}


def generation(args) -> None:
    """PyTorch fp32 generate vs onnxruntime-genai, greedy, `new` new tokens, `threads` threads; the copy bandwidth
    measured in the same process."""
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    prompt = args.prompt
    results = {"threads": args.threads, "new_tokens": args.new, "reps": args.reps, "prompt": prompt}
    results["copy_bandwidth"] = copy_bandwidth(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.merged)
    model = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32).eval()
    enc = tok(prompt, return_tensors="pt")
    plen = enc["input_ids"].shape[1]

    def pt_gen():
        with torch.inference_mode():
            return model.generate(**enc, max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False,
                                  num_beams=1, pad_token_id=tok.pad_token_id or tok.eos_token_id)

    out, times = timed_reps(pt_gen, args.reps)
    pt_tokens = out[0, plen:].tolist()
    results["pytorch"] = {"tok_per_s": args.new / statistics.median(times), "times": times}
    del model
    import gc

    gc.collect()
    import onnxruntime_genai as og

    for d in args.onnx:
        name, path = d.split("=", 1) if "=" in d else (Path(d).name, d)
        if name.endswith("via-load_model"):  # the session as tunecell.load_model / the evaluator create it
            from tunecell.inference import OnnxModel

            m = OnnxModel(Path(path))._model
        else:
            m = og.Model(path)
        otok = og.Tokenizer(m)
        ids = otok.encode(prompt)

        def og_gen():
            p = og.GeneratorParams(m)
            p.set_search_options(do_sample=False, max_length=len(ids) + args.new, min_length=len(ids) + args.new)
            g = og.Generator(m, p)
            g.append_tokens(ids)
            toks = []
            while not g.is_done():
                g.generate_next_token()
                toks.append(int(g.get_next_tokens()[0]))
            return toks

        toks, times = timed_reps(og_gen, args.reps)
        rate = len(toks) / statistics.median(times)
        wb = weight_bytes_per_token(Path(path) / "model.onnx")
        entry = {"tok_per_s": rate, "times": times, "n_tokens": len(toks),
                 "speedup_vs_pytorch": rate / results["pytorch"]["tok_per_s"],
                 "weight_bytes_per_token": wb["bytes_per_token"], "bytes_by_op": wb["bytes_by_op"],
                 "weight_gbs": wb["bytes_per_token"] * rate / 1e9,
                 "greedy_match_pytorch": sum(a == b for a, b in zip(toks, pt_tokens))}
        bw = max(results["copy_bandwidth"]["torch_gbs"], results["copy_bandwidth"]["numpy_gbs"])
        entry["fraction_of_copy_bw"] = entry["weight_gbs"] / bw
        results[name] = entry
        del m, otok
        gc.collect()
    emit(results)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probes")
    sub = parser.add_subparsers(dest="probe", required=True)
    p = sub.add_parser("gemm"); p.add_argument("--threads", type=int, default=2); p.add_argument("--n", type=int, default=2048); p.add_argument("--reps", type=int, default=10)  # noqa: E702
    p = sub.add_parser("bandwidth"); p.add_argument("--threads", type=int, default=2)  # noqa: E702
    p = sub.add_parser("train-tunecell"); p.add_argument("config")  # noqa: E702
    p = sub.add_parser("cached-inprocess"); p.add_argument("config"); p.add_argument("--reps", type=int, default=5)  # noqa: E702
    p = sub.add_parser("cached-cli"); p.add_argument("config")  # noqa: E702
    sub.add_parser("loadext")
    p = sub.add_parser("accuracy"); p.add_argument("model"); p.add_argument("eval")  # noqa: E702
    p.add_argument("--template", default="### Text: {phrase}\n### The tone is:\n{tone}")
    p.add_argument("--labels", default="Sad,Joy,Fear,Surprise")
    p = sub.add_parser("build"); p.add_argument("hf"); p.add_argument("out")  # noqa: E702
    p.add_argument("--precision", default="int4"); p.add_argument("--block", type=int, default=32)  # noqa: E702
    p.add_argument("--acc", type=int, default=-1)
    p.add_argument("--sym", default="", choices=["", "true", "false"])
    p.add_argument("--extra", nargs="*", default=[], help="builder extra options KEY=VALUE")
    p = sub.add_parser("generation"); p.add_argument("merged"); p.add_argument("onnx", nargs="+")  # noqa: E702
    p.add_argument("--threads", type=int, default=2); p.add_argument("--new", type=int, default=64)  # noqa: E702
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prompt", default="### Text: I lost my dog today\n### The tone is:\n")
    args = parser.parse_args(argv)
    {"gemm": gemm, "bandwidth": bandwidth, "train-tunecell": train_tunecell, "cached-inprocess": cached_inprocess,
     "cached-cli": cached_cli, "loadext": loadext, "accuracy": accuracy, "build": build,
     "generation": generation}[args.probe](args)


if __name__ == "__main__":
    main()
