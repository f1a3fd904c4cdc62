"""Fixed-size row blocks for CPU matrix products (no model)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fixed_row_blocks_make_a_rows_numbers_independent_of_the_call_size(dtype):
    # MKL's float32 sgemm picks its kernel by row count (measured bitwise differences at width
    # 1024/2048 on an Intel Xeon), and so does oneDNN's bfloat16 on AMX (640 -> 2048 -> 640);
    # blocked, a row gets the same bits at every call size and at every place in a call.
    import torch

    from icm_cli.backends.fixed_rows import BLOCK_ROWS, use_fixed_row_blocks

    torch.manual_seed(0)
    kind = getattr(torch, dtype)
    model = torch.nn.Sequential(torch.nn.Linear(640, 2048), torch.nn.Linear(2048, 640)).to(kind)
    rows = BLOCK_ROWS
    x = torch.randn(rows * 3 + 60, 640).to(kind)
    plain = model(x).detach()
    assert use_fixed_row_blocks(model) == 2
    with torch.no_grad():
        alone = model(x[:5])
        for n in (16, 64, rows + 2, len(x)):
            assert torch.equal(model(x[:n])[:5], alone)
        assert torch.equal(model(x[3:rows * 2 + 40])[10:20], model(x[13:23]))
        tolerance = 1e-4 if dtype == "float32" else 5e-2
        assert torch.allclose(model(x).float(), plain.float(), atol=tolerance)
