"""Fixed-size row blocks for float32 matrix products (no model)."""

from __future__ import annotations


def test_fixed_row_blocks_make_a_rows_numbers_independent_of_the_call_size():
    # MKL's float32 sgemm picks its kernel by row count (measured bitwise differences at width
    # 1024/2048 on an Intel Xeon); blocked, a row gets the same bits at every call size.
    import torch

    from icm_cli.backends.fixed_rows import use_fixed_row_blocks

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2048, 640), torch.nn.Linear(640, 1024))
    x = torch.randn(700, 2048)
    assert use_fixed_row_blocks(model) == 2
    with torch.no_grad():
        alone = model(x[:5])
        for n in (16, 64, 130, 700):
            assert torch.equal(model(x[:n])[:5], alone)
        assert torch.equal(model(x[3:300])[10:20], model(x[13:23]))
        plain = torch.nn.functional.linear(torch.nn.functional.linear(x, model[0].weight, model[0].bias),
                                           model[1].weight, model[1].bias)
        assert torch.allclose(model(x), plain, atol=1e-4)
