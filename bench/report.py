"""The results table of bench/README.md from bench/results/<row>-latest.json: `python -m bench report`."""
from __future__ import annotations

import json
from typing import Any, Optional

from bench.common import DEFAULT_VARIANT, RESULTS


def _load(row: str) -> Optional[dict]:
    path = RESULTS / f"{row}-latest.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _f(x: Any, fmt: str = "{:.1f}") -> str:
    return "n/a" if x is None else fmt.format(x)


def table() -> str:
    lines = ["| # | measure | tunecell | anchor | ratio | target | met |", "|---|---|---|---|---|---|---|"]
    machine = None
    e2e = _load("e2e")
    if e2e:
        machine = e2e["machine"]
        for workload, s in e2e["summary"].items():
            if workload == "training_throughput":
                continue
            t, o, p = s.get("tunecell", {}), s.get("olive", {}), s.get("plain", {})
            to, tp = s.get("tunecell/olive", {}), s.get("tunecell/plain", {})
            n = min(t.get("runs_ok", 0), o.get("runs_ok", 0) or 99, p.get("runs_ok", 0) or 99)
            lines.append(f"| 1 | {workload} end to end, wall (median of {n}) | {_f(t.get('wall_s'))} s | "
                         f"Olive {_f(o.get('wall_s'))} s; plain {_f(p.get('wall_s'))} s | "
                         f"{_f(to.get('wall'), '{:.2f}')}x Olive; {_f(tp.get('wall'), '{:.2f}')}x plain | <= 0.45x Olive | "
                         f"{'yes' if to.get('wall') and to['wall'] <= 0.45 else 'no'} |")
            lines.append(f"| 1 | {workload} end to end, peak RSS | {_f(t.get('peak_rss_mb'), '{:.0f}')} MB | "
                         f"Olive {_f(o.get('peak_rss_mb'), '{:.0f}')} MB; plain {_f(p.get('peak_rss_mb'), '{:.0f}')} MB | "
                         f"{_f(to.get('peak_rss'), '{:.2f}')}x Olive | <= 0.8x Olive | "
                         f"{'yes' if to.get('peak_rss') and to['peak_rss'] <= 0.8 else 'no'} |")
            acc_ok = t.get("accuracy") is not None and o.get("accuracy") is not None and t["accuracy"] >= o["accuracy"]
            lines.append(f"| 1 | {workload} held-out accuracy of the int4 model | {_f(t.get('accuracy'), '{:.3f}')} | "
                         f"Olive {_f(o.get('accuracy'), '{:.3f}')}; plain {_f(p.get('accuracy'), '{:.3f}')} | | "
                         f">= Olive's | {'yes' if acc_ok else 'no'}{' (random model)' if workload == 'tinyphi3' else ''} |")
        for workload, tt in e2e["summary"].get("training_throughput", {}).items():
            lines.append(f"| 2 | {workload} training, real tokens/s (same runs) | {_f(tt.get('tunecell'), '{:.0f}')} | "
                         f"plain {_f(tt.get('plain'), '{:.0f}')} | {_f(tt.get('ratio'), '{:.2f}')}x | >= 1.0x | "
                         f"{'yes' if (tt.get('ratio') or 0) >= 1 else 'no'} |")
            if tt.get("gemm_gflops"):
                lines.append(f"| 2 | {workload} achieved FLOP/s (4 x {tt['params'] / 1e6:.1f}M params x tokens/s) "
                             f"/ fp32 GEMM {tt['gemm_gflops']:.0f} GFLOP/s | "
                             f"{_f(100 * tt['tunecell_fraction_of_gemm'], '{:.0f}')}% | "
                             f"plain {_f(100 * tt['plain_fraction_of_gemm'], '{:.0f}')}% | | >= 55% | "
                             f"{'yes' if tt['tunecell_fraction_of_gemm'] >= 0.55 else 'no'} |")
    train = _load("train")
    if train:
        s = train["summary"]
        lines.append(f"| 2 | training alone, real tokens/s | {_f(s['tunecell_tokens_per_s'], '{:.0f}')} | "
                     f"plain {_f(s['plain_tokens_per_s'], '{:.0f}')} | {_f(s['tunecell/plain'], '{:.2f}')}x | >= 1.0x | "
                     f"{'yes' if s['tunecell/plain'] >= 1 else 'no'} |")
    cached = _load("cached")
    if cached:
        s = cached["summary"]
        lines.append(f"| 3 | cached rerun in process | {_f(1000 * s['inprocess_repeat_s'], '{:.0f}')} ms | | | < 1 s | "
                     f"{'yes' if s['inprocess_repeat_s'] < 1 else 'no'} |")
        lines.append(f"| 3 | cached rerun, `tunecell run --config` | {_f(s['cli_wall_s'], '{:.2f}')} s, "
                     f"{_f(s['cli_peak_rss_mb'], '{:.0f}')} MB; heavy imports: {', '.join(s['cli_heavy_modules']) or 'none'} "
                     f"| | | report; no torch | {'yes' if 'torch' not in s['cli_heavy_modules'] else 'no'} |")
    loadext = _load("loadext")
    if loadext:
        s = loadext["summary"]
        lines.append(f"| 4 | `%load_ext tunecell` | {_f(1000 * s['seconds'], '{:.0f}')} ms, {s['new_modules']} new modules "
                     f"({', '.join(s['new_top_level'])}) | | | < 0.3 s, no torch | "
                     f"{'yes' if s['seconds'] < 0.3 and not s['torch_imported'] else 'no'} |")
    gen = _load("gen")
    if gen:
        s = gen["summary"]
        for name, v in s.items():
            if not isinstance(v, dict):
                continue
            mark = " (tunecell's default)" if name == DEFAULT_VARIANT else ""
            lines.append(f"| 5 | int4 {name}{mark}: tokens/s, x PyTorch fp32 ({_f(s['pytorch_tok_per_s'])} tok/s) | "
                         f"{_f(v['tok_per_s'])} | | {_f(v['speedup'], '{:.2f}')}x | >= 6.5x | "
                         f"{'yes' if v['speedup'] >= 6.5 else 'no'} |")
            lines.append(f"| 5 | int4 {name}: {v['weight_mb_per_token']:.1f} MB/token x tokens/s / copy bandwidth "
                         f"{s['copy_gbs']:.1f} GB/s | {_f(100 * v['fraction_of_copy_bw'], '{:.0f}')}% | | | >= 40% | "
                         f"{'yes' if v['fraction_of_copy_bw'] >= 0.4 else 'no'} |")
    preview = _load("preview")
    if preview:
        s = preview["summary"]
        lines.append(f"| 6 | preview, first page of 100k rows | {_f(s['first_page_s'], '{:.3f}')} s | | | < 1 s | "
                     f"{'yes' if s['first_page_s'] < 1 else 'no'} |")
    acc = _load("accuracy")
    if acc:
        d = acc["direct"]
        lines.append(f"| 7 | held-out accuracy: merged fp32 {d['merged_pytorch']:.3f} -> int4 {d['int4_onnx']:.3f} | "
                     f"{acc['drop_points']:.1f} points | | | <= 2 points | {'yes' if acc['drop_points'] <= 2 else 'no'} |")
    head = ""
    if machine:
        head = (f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['mem_mib'] / 1024:.0f} GiB, Python "
                f"{machine['python']}; e2e measured {machine['date']} (load average at start "
                f"{machine['load_avg_at_start'][0]:.2f}).\n\n")
    return head + "\n".join(lines)


def main() -> None:
    print(table())


if __name__ == "__main__":
    main()
