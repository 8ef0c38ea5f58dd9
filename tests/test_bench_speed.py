"""eval/bench_speed.py: which plain baseline each contender is compared with, like for like."""

from __future__ import annotations


def test_bench_speed_compares_each_contender_with_the_plain_library_at_its_precision(tmp_path):
    """bf16 contenders against plain bf16, int8 ones against plain int8 (the CrossEncoder with
    PyTorch's dynamic int8 linears: it loads, quantises and predicts), the rest against plain."""
    import numpy as np
    import torch

    from eval.bench_speed import PLAIN, PLAIN_BF16, PLAIN_INT8, like_for_like, plain_int8
    from tests.test_backends import tiny_cross_encoder

    assert [like_for_like(k) for k in ("rkd openvino bf16", "rkd torch bfloat16", "rkd onnx int8-avx512_vnni",
                                       "rkd onnx O3", "rkd openvino fp32", PLAIN_INT8)] == \
        [PLAIN_BF16, PLAIN_BF16, PLAIN_INT8, PLAIN, PLAIN, PLAIN_INT8]
    ce = plain_int8(str(tiny_cross_encoder(tmp_path / "ce")))
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in ce.modules())
    got = ce.predict([("a claim", "an abstract about it"), ("a claim", "another one")],
                     activation_fn=torch.nn.Identity(), show_progress_bar=False)
    assert np.asarray(got).shape == (2,) and np.isfinite(got).all()
