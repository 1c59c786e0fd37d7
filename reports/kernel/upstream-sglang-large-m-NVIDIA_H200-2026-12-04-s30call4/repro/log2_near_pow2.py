"""SGLang's UE8M0 rule is exp2(ceil(log2(absmax / 448))) in fp32, not the exponent-bit rule (DeepGEMM's
ceil_to_ue8m0, accval's ue8m0 recipe). For a scale one fp32 ulp above a power of two, log2 rounds to the integer
and the kernel picks the power of two BELOW the scale (sglang #29954's concern). A bf16 input cannot get there
(its absmax / 448 is either exactly 2**k or >= 2**k * (1 + 2**-8)); an fp32 input can. Runs SGLang's Triton
kernels (CPU interpreter here, lg2.approx / ex2.approx on a GPU)."""
import sys

sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.dirname(__import__("os").path.abspath(__file__))))
import accval.kernels  # noqa: F401,E402
import torch  # noqa: E402

import _upstream_path  # noqa: F401,E402
import deep_gemm  # noqa: E402
from sglang.kernels.ops.quantization import fp8_kernel as sg  # noqa: E402

dev = "cuda" if torch.cuda.is_available() else "cpu"
rows = []
for k in (-20, -10, -3, 0, 5):
    for ulps in (0, 1, 2, 8):
        s = torch.tensor(2.0 ** k, dtype=torch.float32)
        for _ in range(ulps):
            s = torch.nextafter(s, torch.tensor(float("inf")))
        amax = s * 448  # fp32 product, may round; recompute the scale the kernel sees
        rows.append((k, ulps, float(amax)))
x = torch.zeros(len(rows), 128, dtype=torch.float32)
for i, (_, _, a) in enumerate(rows):
    x[i, 0] = a
    x[i, 1:] = a / 3
x = x.to(dev)
_, s_row = sg._per_token_group_quant_8bit_raw(x, 128, scale_ue8m0=True)
s_col_buf = torch.zeros(1, len(rows) + (-len(rows)) % 4, device=dev)
q, s_col = sg._per_token_group_quant_8bit_raw(x, 128, column_major_scales=True, scale_tma_aligned=True, scale_ue8m0=True,
                                              output_s=s_col_buf.transpose(0, 1)[: len(rows)])
exact = deep_gemm.ceil_to_ue8m0((x.abs().amax(1, keepdim=True) / 448).cpu())
bad = 0
for i, (k, ulps, a) in enumerate(rows):
    sr, sc, se = float(s_row[i, 0]), float(s_col[i, 0]), float(exact[i, 0])
    flag = "" if sr == se and sc == se else "  <- differs from the exponent-bit rule"
    bad += bool(flag)
    print(f"k={k:4d} +{ulps} ulp  amax/448={a / 448:.10g}  row-major {sr:.6g}  col-major {sc:.6g}  exact {se:.6g}  "
          f"top code {float(q[i, 0].float()):.0f}{flag}")
print(f"{bad} of {len(rows)} differ ({dev})")
