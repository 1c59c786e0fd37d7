"""How often a cheaper quotient could round to another fp8 code than the producer's ``div_rn`` (CPU).

The producer quantizes ``q = RN(y / scale)`` to float8_e4m3fn. ``y * RN(1 / scale)`` is within
2**-22 of q (relative), so it can round to another fp8 code only when it lies that close to an fp8
rounding boundary (the midpoint of two neighbouring fp8 values). This counts, for bf16 blocks:

* how many elements ``y * (1/scale)`` actually maps to another code than ``y / scale``;
* how many lie within 8 fp32 ulps of a boundary (the elements an exact fix-up would have to redo;
  every element that differs must be among them, checked here);
* how many 128-element blocks and 8192-element tiles (the straight kernel's tile at DSv4-Pro DEP8)
  hold at least one such element: a kernel that redoes a whole tile exactly when it holds one
  would redo that fraction of the work.

    python scripts/fp8_boundary_rate.py
"""

from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn


def near_boundary(q: torch.Tensor, ulps: int = 8) -> torch.Tensor:
    """|q| within ``ulps`` fp32 ulps of an e4m3 rounding boundary. Below 2**-6 (e4m3's subnormals,
    spacing 2**-9) ``|q| + 2**-6`` has the same boundaries at the same spacing."""
    a = q.abs()
    b = torch.where(a < 2.0**-6, a + 2.0**-6, a)
    low = b.view(torch.int32) & 0xFFFFF  # fp32 mantissa bits below e4m3's three
    return (low - 0x80000).abs() <= ulps


def count(y: torch.Tensor) -> dict:
    """``y [blocks, 128]`` fp32 values of bf16 inputs."""
    scale = y.abs().amax(1, keepdim=True) / torch.full_like(y[:, :1], 448.0)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    exact = (y / safe).clamp(-448, 448).to(FP8).view(torch.uint8)
    fast_q = y * (1.0 / safe)
    fast = fast_q.clamp(-448, 448).to(FP8).view(torch.uint8)
    near = near_boundary(fast_q)
    differ = exact != fast
    if (differ & ~near).any():
        raise AssertionError("an element maps to another code without being near a boundary")
    return {"elements": y.numel(), "differ": int(differ.sum()), "near": int(near.sum()),
            "blocks_with_near": float(near.any(1).double().mean()),
            "tiles_8192_with_near": float(near.reshape(-1, 8192).any(1).double().mean())}


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    for name, y in (("gaussian bf16 blocks", torch.randn(1 << 16, 128, generator=gen)),
                    ("heavy-tailed bf16 blocks (t, 3 dof)",
                     torch.randn(1 << 16, 128, generator=gen) / (torch.randn(1 << 16, 128, 3, generator=gen) ** 2).mean(-1).sqrt())):
        c = count(y.to(torch.bfloat16).float())
        print(f"{name}: {c['elements']} elements; y*(1/scale) gives another fp8 code for {c['differ']} "
              f"({c['differ'] / c['elements']:.1e}); near a boundary: {c['near'] / c['elements']:.2%} of elements, "
              f"{c['blocks_with_near']:.0%} of 128-blocks, {c['tiles_8192_with_near']:.0%} of 8192-element tiles")


if __name__ == "__main__":
    main()
