"""The sentinel model's configuration and where its shipped checkpoint lives."""

from __future__ import annotations

from pathlib import Path

from .data import VOCAB_SIZE

SENTINEL = "sentinel"
CHECKPOINT_DIR = Path(__file__).parent / "assets" / "checkpoint"


def config(layers: int = 4, hidden: int = 256, sliding_window: int = 512):
    """DeepseekV4 at head_dim 128 (64 nope + 64 RoPE), 16 heads in o_groups 8, o_lora_rank 128: the
    layout of the producer/consumer chain at a size that trains in minutes and runs on a CPU."""
    from transformers import DeepseekV4Config

    rope = {"rope_type": "default", "partial_rotary_factor": 0.5}
    cfg = DeepseekV4Config(
        vocab_size=VOCAB_SIZE, hidden_size=hidden, num_attention_heads=16, head_dim=128, qk_rope_head_dim=64,
        partial_rotary_factor=0.5, q_lora_rank=256, o_groups=8, o_lora_rank=128, num_hidden_layers=layers,
        layer_types=["sliding_attention"] * layers, mlp_layer_types=["moe"] * layers, n_routed_experts=4,
        num_experts_per_tok=2, moe_intermediate_size=hidden, sliding_window=sliding_window,
        max_position_embeddings=4096, bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False,
        rope_parameters={"main": {**rope, "rope_theta": 10000.0}, "compress": {**rope, "rope_theta": 160000.0}},
    )
    cfg._attn_implementation = "eager"
    return cfg
