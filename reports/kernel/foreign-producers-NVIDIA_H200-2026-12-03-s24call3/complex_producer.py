"""A user's producer, written without looking at accval's kernels: GPT-J rotation by complex
multiplication in fp32 (never rounded to bf16), TensorRT-LLM-style scales amax * (1/448) with
an amax floor of 1e-10, codes by multiplying with 448/amax, returned as [M, G, K] views."""
import torch

def quant(o, positions, cos_sin_cache, n_groups, heads_per_group, nope_dim, rope_dim,
          quant_group_size=128, is_neox=False):
    if is_neox:
        raise NotImplementedError("GPT-J only")
    m, h, d = o.shape
    cs = cos_sin_cache[positions.long()].float().reshape(m, 2, rope_dim // 2)
    rot = torch.complex(cs[:, 0], -cs[:, 1])[:, None, :]          # e^{-i theta}
    x = o.float().clone()
    pairs = torch.view_as_complex(x[..., nope_dim:].reshape(m, h, rope_dim // 2, 2).contiguous())
    x[..., nope_dim:] = torch.view_as_real(pairs * rot).reshape(m, h, rope_dim)
    k = heads_per_group * d
    blocks = x.reshape(m, n_groups, k // 128, 128)
    amax = blocks.abs().amax(-1).clamp_min(1e-10)
    scale = amax * torch.tensor(1.0 / 448.0, dtype=torch.float32)
    q = (blocks * (448.0 / amax)[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn)
    rows = (m + 3) // 4 * 4
    fp8_buf = torch.empty((n_groups, m, k), dtype=torch.float8_e4m3fn, device=o.device)
    s_buf = torch.zeros((n_groups, k // 128, rows), dtype=torch.float32, device=o.device)
    fp8_buf.copy_(q.reshape(m, n_groups, k).transpose(0, 1))
    s_buf[:, :, :m] = scale.permute(1, 2, 0)
    return fp8_buf.transpose(0, 1), s_buf[:, :, :m].permute(2, 0, 1)

quant.accval_recipe = "fp32-rcp"
quant.accval_rope_layouts = ("gptj",)
quant.accval_output = "mgk-view"
