"""A mirror of transformers' DeepSeek-V4 attention: the forward up to the attention output (handed to
the site's arm), and the eager attention with its matmuls in fp32 for :data:`accval.site.fp32.MATMUL`
``fp32``."""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

#: Query rows per chunk of :func:`fp32_matmul_eager_attention` for prompts (measured on a 2-core EPYC,
#: B=8, 16 heads, 900 tokens, window 512: 64 rows 0.40 s, 128 rows 0.48 s, unchunked 1.84 s).
QUERY_CHUNK = 64


def fp32_matmul_eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """transformers' DeepSeek-V4 eager attention (shared KV heads, sinks), its matmuls done in fp32.

    Mirrors ``eager_attention_forward`` line by line (``suites/ab/test_site.py`` compares them); the
    KV heads are not repeated: each KV head's query heads are stacked into one matmul.

    A prompt longer than :data:`QUERY_CHUNK` runs in chunks of query rows, each against only the key
    columns its mask rows allow (a sliding window of 512 over a 900-token prompt leaves about half):
    the columns left out add exact zeros to eager's softmax sums and products, so the result differs
    from the unchunked one by summation order only. Chunked calls return no attention weights (as
    transformers' fused attentions do not).
    """
    sq = query.shape[2]
    if not isinstance(attention_mask, torch.Tensor) or sq <= QUERY_CHUNK:
        return _fp32_eager_attention(module, query, key, value, attention_mask, scaling)
    allowed = attention_mask > torch.finfo(attention_mask.dtype).min if attention_mask.is_floating_point() else attention_mask
    outs = []
    for c0 in range(0, sq, QUERY_CHUNK):
        c1 = min(sq, c0 + QUERY_CHUNK)
        cols = allowed[..., c0:c1, :].flatten(0, -2).any(0).nonzero()
        k0, k1 = (int(cols[0]), int(cols[-1]) + 1) if len(cols) else (0, 1)  # rows with no key: the sink only
        out, _ = _fp32_eager_attention(module, query[:, :, c0:c1], key[:, :, k0:k1], value[:, :, k0:k1],
                                       attention_mask[..., c0:c1, k0:k1], scaling)
        outs.append(out)
    return torch.cat(outs, dim=1), None


def _fp32_eager_attention(module, query, key, value, attention_mask, scaling):
    b, h, sq, d = query.shape
    kvh, sk = key.shape[1], key.shape[2]
    qf = query.float().reshape(b, kvh, (h // kvh) * sq, d)
    kf = key.float()
    vf = kf if value is key else value.float()  # DeepSeek-V4 passes its shared K=V tensor as both
    attn_weights = (qf @ kf.transpose(2, 3)).to(query.dtype).reshape(b, h, sq, sk) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    sinks = module.sinks.reshape(1, -1, 1, 1).expand(b, -1, sq, -1)
    combined_logits = torch.cat([attn_weights, sinks], dim=-1)
    combined_logits = combined_logits - combined_logits.max(dim=-1, keepdim=True).values
    probs = F.softmax(combined_logits, dim=-1, dtype=combined_logits.dtype)
    scores = probs[..., :-1].to(value.dtype)
    out = (scores.float().reshape(b, kvh, (h // kvh) * sq, sk) @ vf).to(value.dtype)
    return out.reshape(b, h, sq, value.shape[-1]).transpose(1, 2).contiguous(), scores


def attention_forward(attn, hidden_states, position_embeddings, position_ids, attention_mask, cache=None, *, site,
                       **kwargs):
    """``DeepseekV4Attention.forward`` up to the attention output, then :meth:`accval.site.oa_proj.OAProjSite.o_proj`.

    Mirrors transformers' forward step by step (checked against the installed modeling file by
    ``suites/ab/test_site.py``: with arm ``native`` the logits are bit-identical to the unpatched model).
    """
    hf = site._hf
    if "past_key_values" in kwargs:
        cache = kwargs.pop("past_key_values")
    input_shape = hidden_states.shape[:-1]
    hidden_shape = (*input_shape, -1, attn.head_dim)
    cos, sin = position_embeddings[attn.rope_layer_type]
    q_residual = attn.q_a_norm(attn.q_a_proj(hidden_states))
    q = attn.q_b_norm(attn.q_b_proj(q_residual).view(*hidden_shape).transpose(1, 2))
    q = hf.apply_rotary_pos_emb(q, cos, sin)
    kv = attn.kv_norm(attn.kv_proj(hidden_states)).view(*hidden_shape).transpose(1, 2)
    kv = hf.apply_rotary_pos_emb(kv, cos, sin)
    if cache is not None:
        kv = cache.update(kv, kv, attn.layer_idx, kwargs=kwargs)[0]
    block_bias = None
    if attn.compressor is not None:
        compressed_kv, block_bias = attn.compressor(hidden_states, q_residual, position_ids, cache, attn.layer_idx)
        kv = torch.cat([kv, compressed_kv], dim=2)
    if isinstance(attention_mask, torch.Tensor) and kv.shape[2] > attention_mask.shape[-1]:
        if block_bias is not None:
            attention_mask = torch.cat([attention_mask, block_bias.to(attention_mask.dtype)], dim=-1)
        else:
            attention_mask = F.pad(attention_mask, (0, kv.shape[2] - attention_mask.shape[-1]), value=0.0)
    interface = hf.ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, hf.eager_attention_forward)
    if site.matmul == "fp32":
        if interface is not hf.eager_attention_forward:
            raise RuntimeError(f"--matmul fp32 mirrors the eager attention implementation; this model runs "
                               f"{attn.config._attn_implementation!r}")
        interface = fp32_matmul_eager_attention
    heads = site.local_heads()
    module, sinks = attn, attn.sinks
    if heads != slice(None):  # TEP over real ranks: this process's heads only (per-head math is unchanged)
        q, sinks = q[:, heads], attn.sinks[heads]
        module = types.SimpleNamespace(num_key_value_groups=q.shape[1] // kv.shape[1], sinks=sinks,
                                       training=attn.training)
    attn_output, attn_weights = interface(module, q, kv, kv, attention_mask, dropout=0.0, scaling=attn.scaling,
                                          sliding_window=attn.sliding_window, s_aux=sinks, **kwargs)
    return site.o_proj(attn, attn_output, position_ids, cos, sin), attn_weights
