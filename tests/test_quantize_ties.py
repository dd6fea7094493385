"""int8 mode: the quantizer rounds exact ties half to even (docs/packing.md,
"int8 mode"), the case random activations almost never hit."""
import numpy as np
import pytest

import bitnn
from bitnn import _core


@pytest.mark.parametrize("kernel", _core.kernels_supported())
@pytest.mark.parametrize("threads", [1, 2])
def test_ties_round_half_to_even(kernel, threads):
    # amax 127 makes the quantizer's scale exactly 1: q = round(x)
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.5, 126.5, -126.5]], np.float32)
    K = x.shape[1]
    W = np.eye(K, dtype=np.uint8)  # output n is q[n] * scale
    z = _core.binary_gemm(x, bitnn.pack_bits(W), K, threads=threads, kernel=kernel,
                          precision="int8")
    assert z[0].tolist() == [127.0, 0.0, 2.0, 2.0, 0.0, -2.0, -2.0, 4.0, 126.0, -126.0]
