"""onnxruntime's k-quant search (``quant_tensor_k_quant_cpu``) with the blocks laid out column-wise: the same
arithmetic, operation for operation, in less time.

onnxruntime keeps a weight as (blocks, group_size) and reduces each block along its short rows. numpy pays for that
layout twice: a row-wise sum of 32 values costs five times an elementwise product, and every (blocks, 1) x (blocks,
group_size) broadcast takes 2.6 times an elementwise product (4096 blocks, this project's machine). Here the weight
is (group_size, blocks): the per-block values are rows, broadcasts run along contiguous memory, and a block's sum
is built from whole rows in the order numpy's pairwise summation adds a block's values, so every sum, and with it
every scale, zero point and quantized value, comes out bit for bit the same (tests/test_k_quant.py compares them
on random, constant, all-zero and signed-zero blocks). The quantized values a search step picks are never returned
(the result is recomputed from the final scale and minimum), so they are not kept.

On 4096 blocks on one thread: 10-12 ms against onnxruntime's 19-21. In the int4 build of SmolLM2 (k_quant_mixed,
two threads, which contend for the GIL more often here: more, smaller numpy calls) the search took 22-25
thread-seconds against 25-33, and the build 20-22 s against 21-26 (three alternating pairs, the same bytes written).
"""
from __future__ import annotations

import numpy as np

_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE: up to this many values are summed with 8 accumulators


def quantize(data: np.ndarray, num_bits: int = 4, group_size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As ``quant_tensor_k_quant_cpu(data, num_bits, group_size)``: (quantized values as uint8 (blocks, group_size),
    scale float64 (blocks, 1), zero point uint8 (blocks, 1)). onnxruntime returns the quantized values as float64
    integers; its one caller converts them to uint8."""
    x = np.ascontiguousarray(np.reshape(data, (-1, group_size)).astype(np.float32, copy=False).T)  # (group, blocks)
    maxq, minq = 2**num_bits - 1, 0
    with np.errstate(divide="ignore", invalid="ignore"):  # blocks whose search divides by zero keep their scale
        av_x = np.sqrt(_block_sums(x**2) / group_size)
        weights = np.add(av_x, np.abs(x))
        rmin, rmax = np.min(x, axis=0), np.max(x, axis=0)
        sum_w = _block_sums(weights)
        sum_x = _block_sums(weights * x)
        iscale = _inverse_scale(maxq - minq, rmin, rmax)
        scale = 1 / iscale
        best_mad = _mad(scale, _quantized(x, rmin, iscale, minq, maxq), rmin, x, weights)
        sums = np.empty((group_size, 3, x.shape[1]), np.float32)  # per value: w * l, w * l * l, w * l * x
        for step in range(20):
            factor = np.array([-1 + 0.1 * step + maxq - minq]).astype(np.float32)[0]
            levels = _quantized(x, rmin, _inverse_scale(factor, rmin, rmax), minq, maxq)
            np.multiply(weights, levels, out=sums[:, 0])
            np.multiply(sums[:, 0], levels, out=sums[:, 1])
            np.multiply(sums[:, 0], x, out=sums[:, 2])
            sum_l, sum_l2, sum_xl = _block_sums(sums)
            d = np.subtract(sum_w * sum_l2, sum_l**2)
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / d
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d
            mad = _mad(this_scale, levels, this_min, x, weights)
            better = mad < best_mad
            for kept, found in ((best_mad, mad), (scale, this_scale), (rmin, this_min)):
                np.copyto(kept, found, where=better)

    zero_point = np.clip(((-rmin) / scale).round(), 0, maxq).astype(np.uint8)
    scale = scale.astype(np.float64)
    q = np.divide(x, scale)  # float64, as onnxruntime computes it
    np.add(q, zero_point, out=q)
    np.round(q, out=q)
    np.clip(q, minq, maxq, out=q)
    return q.T.astype(np.uint8), scale[:, None], zero_point[:, None]


def _inverse_scale(levels, rmin, rmax):
    """levels / (rmax - rmin), and 1 for a block without a range."""
    iscale = np.ones_like(rmax)
    np.divide(levels, rmax - rmin, out=iscale, where=rmin != rmax)
    return iscale


def _quantized(x, rmin, iscale, minq, maxq):
    return np.clip(np.round(iscale * (x - rmin)), minq, maxq)


def _mad(scale, levels, minimum, x, weights):
    diff = scale * levels + minimum - x
    return _block_sums(weights * diff**2)


def _block_sums(rows: np.ndarray) -> np.ndarray:
    """The sum over the first axis, added in the order of numpy's pairwise summation (np.sum along a block of that many
    values, which then adds the result to 0.0: a sum of only -0.0 values is 0.0)."""
    return _pairwise(rows) + 0.0


def _pairwise(rows: np.ndarray) -> np.ndarray:
    n = len(rows)
    if n < 8:
        total = np.full(rows.shape[1:], -0.0, rows.dtype)
        for row in rows:
            total += row
        return total
    if n > _PAIRWISE_BLOCK:
        half = n // 2
        half -= half % 8
        return _pairwise(rows[:half]) + _pairwise(rows[half:])
    whole = n - n % 8
    r = rows[:8].copy()
    for start in range(8, whole, 8):
        r += rows[start:start + 8]
    pairs = r[0::2] + r[1::2]  # (r0 + r1), (r2 + r3), ...
    quads = pairs[0::2] + pairs[1::2]
    total = quads[0] + quads[1]
    for row in rows[whole:]:
        total += row
    return total
