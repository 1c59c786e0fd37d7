"""What SGLang's DeepSeek-V4 wo_a path did before PR #26766 (deepseek_v4.py @ 000328a8):

    o_fp8, o_s = sglang_per_token_group_quant_fp8(o.reshape(T * G, D).contiguous(), group_size=128)
    o_s = deep_gemm.ceil_to_ue8m0(o_s)          # scales rounded up AFTER the codes were computed

against the order since #26766 (scale_ue8m0=True: round the scale up first, quantize with it), using SGLang's
Triton per-token-group kernel (./upstream, CPU interpreter here) and DeepGEMM's ceil_to_ue8m0, on no accval code
but accval.kernels' import (TRITON_INTERPRET and the interpreter's float8 casts, as the pytest plugin does)."""
import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
import accval.kernels  # noqa: F401,E402
import torch  # noqa: E402

import _upstream_path  # noqa: F401,E402
import deep_gemm  # noqa: E402
from sglang.kernels.ops.quantization import fp8_kernel as sg  # noqa: E402

torch.manual_seed(0)
T, G, D = 64, 2, 512
dev = "cuda" if torch.cuda.is_available() else "cpu"
o = (torch.randn(T, G, D) * 4).bfloat16().to(dev)
x = o.reshape(T * G, D).contiguous()
y = x.double().view(T * G, D // 128, 128)

q0, s0 = sg._per_token_group_quant_8bit_raw(x, 128)            # fp32 scales
s_ceil = deep_gemm.ceil_to_ue8m0(s0)                            # what the model handed to fp8_einsum
q1, s1 = sg._per_token_group_quant_8bit_raw(x, 128, scale_ue8m0=True)  # since #26766


def rel(q, s):
    deq = q.double().view(T * G, D // 128, 128) * s.double()[..., None]
    err = (deq - y).abs()
    return float(err.max() / y.abs().max()), float((err.square().sum() / y.square().sum()).sqrt())


ratio = (s_ceil / s0).flatten()
print(f"device {dev}"); print(f"scale ceil/fp32 ratio: min {ratio.min():.4f} mean {ratio.mean():.4f} max {ratio.max():.4f}")
print(f"codes: ceil_after_quant keeps the codes of the fp32 scales; they differ from the codes at the UE8M0 scales in {(q0.view(torch.uint8) != q1.view(torch.uint8)).float().mean():.1%} of elements")
print("fp32 scales, codes at them        : max |err|/max|y| %.4f, rms rel %.4f" % rel(q0, s0))
print("ceil_to_ue8m0 after quant (defect) : max |err|/max|y| %.4f, rms rel %.4f" % rel(q0, s_ceil))
print("ue8m0 scale first, then quant      : max |err|/max|y| %.4f, rms rel %.4f" % rel(q1, s1))
b = 0
print(f"block 0: amax {y[0, b].abs().max():.4f}; fp32 scale {s0[0, b]:.6g} -> ceil {s_ceil[0, b]:.6g}; "
      f"largest code {q0[0, :128].float().abs().max():.0f} dequantizes to {q0[0, :128].float().abs().max() * s_ceil[0, b]:.4f}")
