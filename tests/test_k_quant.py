"""tunecell.passes.k_quant against onnxruntime's own k-quant search: every output bit the same."""
import numpy as np
import pytest
from onnxruntime.quantization.neural_compressor import weight_only

from tunecell.passes.k_quant import _block_sums, quantize


def awkward_weight(rows: int, group_size: int, scale: float, seed: int) -> np.ndarray:
    """Random values with the blocks a real weight can hold: all zero, all -0.0, signed zeros mixed, constant
    (no range: its scale stays 1), one outlier, tiny values next to zeros."""
    w = (np.random.default_rng(seed).standard_normal((rows, 4 * group_size)) * scale).astype(np.float32)
    w[0, :group_size] = 0.0
    w[1, :group_size] = -0.0
    w[2, :group_size:2], w[2, 1:group_size:2] = -0.0, 0.0
    w[3, :group_size] = 0.5
    w[4, 0] = 1000 * scale
    w[5, :3], w[5, 3:group_size] = 0.0, 1e-30
    return w


@pytest.mark.parametrize("group_size", [16, 32, 64, 128, 256])
@pytest.mark.parametrize("bits", [4, 8])
def test_the_same_values_as_onnxruntime(group_size, bits):
    for seed, scale in enumerate([1e-4, 0.02, 300.0]):
        weight = awkward_weight(24, group_size, scale, seed).T  # transposed, as rtn_quantize passes it
        with np.errstate(all="ignore"):  # onnxruntime's search divides by zero on constant blocks
            expected = weight_only.quant_tensor_k_quant_cpu(weight, bits, group_size)
        q, scale_got, zero_point = quantize(weight, bits, group_size)
        assert q.dtype == np.uint8 and q.shape == expected[0].shape
        np.testing.assert_array_equal(q, expected[0])  # onnxruntime's are float64 integers
        for got, want in zip((scale_got, zero_point), expected[1:]):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n", [1, 5, 8, 13, 32, 64, 100, 128, 129, 256, 300])
def test_block_sums_add_in_numpys_order(n):
    """Sums of float32 values depend on the order they are added in: these match np.sum's to the bit, signs of
    zero included."""
    values = (np.random.default_rng(n).standard_normal((n, 400)) * 1e3).astype(np.float32)
    values[:, 0], values[:, 1] = -0.0, 0.0
    values[::2, 2], values[1::2, 2] = -0.0, 0.0
    expected = np.sum(np.ascontiguousarray(values.T), axis=1)
    got = _block_sums(values)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))
