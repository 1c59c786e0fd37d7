"""Upstream's fake vs real on a 3-d activation (outside accval's contract mapping: the plug passes 2-d a[g]).

The launcher takes A of any leading dims (M = A.numel() // K, C = A.shape[:-1] + (N,)); the fake returns
(qx.size(0), weight.size(0)). Run: TRITON_INTERPRET=1 python fake_ndim3.py (CPU) or python fake_ndim3.py (GPU).
"""
import os, sys
import torch
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import accval.kernels  # noqa: F401  (interpreter casts, as in the suite)
import vllm_consumer_plug as plug
from torch._subclasses.fake_tensor import FakeTensorMode

dev = "cuda" if torch.cuda.is_available() else "cpu"
b_, s_, n, k = 2, 5, 128, 256
a = torch.randn(b_, s_, k).to(torch.float8_e4m3fn).to(dev)
a_s = torch.rand(b_, s_, k // 128, device=dev) + 0.01
w = torch.randn(n, k).to(torch.float8_e4m3fn).to(dev)
w_s = torch.rand(n // 128, k // 128, device=dev) + 0.01
args = (a, w, a_s, w_s, [128, 128], torch.bfloat16)
real = plug.OP(*args)
with FakeTensorMode() as mode:
    fake = plug.OP(*[mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args])
print("2-d a[g] (what the plug passes): see the suite; 3-d A:")
print("  real", tuple(real.shape), real.stride(), " fake", tuple(fake.shape), fake.stride())
try:
    torch.library.opcheck(plug.OP, args, test_utils=("test_faketensor",))
    print("  opcheck test_faketensor: passed")
except Exception as e:
    print("  opcheck test_faketensor:", type(e).__name__, str(e).splitlines()[0][:300])
