"""The model an A/B runs: the built-in seeded DeepSeek-V4, or a checkpoint directory.

The built-in model is ``DeepseekV4ForCausalLM`` at a small configuration
(hidden 256, 16 heads of 128 = 64 nope + 64 rope, o_groups 8, o_lora_rank 128, 2 layers, 4 experts
top-2, vocab 512), initialised by transformers from a fixed seed on the CPU (so the same seed gives
the same weights on every machine), in bf16, eager attention. Its weights are random: gsm8k accuracy
is near zero, so its A/B verdict rests on agreement between the arms (the report says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from .build_tokenizer import ASSET_DIR, VOCAB_SIZE

BUILTIN = "builtin"


def builtin_config():
    from transformers import DeepseekV4Config

    rope = {"rope_type": "default", "partial_rotary_factor": 0.5}
    cfg = DeepseekV4Config(
        vocab_size=VOCAB_SIZE, hidden_size=256, num_attention_heads=16, head_dim=128, qk_rope_head_dim=64,
        partial_rotary_factor=0.5, q_lora_rank=256, o_groups=8, o_lora_rank=128, num_hidden_layers=2,
        layer_types=["sliding_attention"] * 2, mlp_layer_types=["moe"] * 2, n_routed_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=256, max_position_embeddings=16384, bos_token_id=0, eos_token_id=1, pad_token_id=2,
        rope_parameters={"main": {**rope, "rope_theta": 10000.0}, "compress": {**rope, "rope_theta": 160000.0}},
    )
    cfg._attn_implementation = "eager"
    return cfg


@dataclasses.dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    model_id: str  # "builtin-seed<seed>" or the checkpoint path
    weights_sha256: str  # of the state dict as loaded (before the A/B touches o_a_proj)
    description: str


def state_dict_sha256(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_tokenizer(path: Path | str = ASSET_DIR):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def build_builtin(seed: int = 0, device: str | torch.device = "cpu") -> LoadedModel:
    from transformers import DeepseekV4ForCausalLM

    cfg = builtin_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DeepseekV4ForCausalLM._from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    sha = state_dict_sha256(model)
    model.to(device)
    n = sum(p.numel() for p in model.parameters())
    return LoadedModel(model, load_tokenizer(), f"builtin-seed{seed}", sha,
                       f"built-in DeepseekV4ForCausalLM, {n / 1e6:.2f}M random parameters (seed {seed}), bf16")


def check_head_layout(cfg) -> None:
    """The producer's layout rule for a checkpoint: D = nope + rope with ``nope % 128 == 128 - rope``,
    heads split evenly into ``o_groups``, and ``hpg * D`` and ``o_lora_rank`` multiples of 128."""
    d, rope = cfg.head_dim, cfg.qk_rope_head_dim
    nope = d - rope
    problems = []
    if rope <= 0 or rope % 2 or rope > 128 or nope % 128 != (128 - rope) % 128:
        problems.append(f"head_dim {d} = nope {nope} + rope {rope} (the producer needs nope % 128 == 128 - rope)")
    if cfg.num_attention_heads % cfg.o_groups:
        problems.append(f"{cfg.num_attention_heads} heads do not split into o_groups={cfg.o_groups}")
    elif (cfg.num_attention_heads // cfg.o_groups * d) % 128:
        problems.append(f"heads_per_group * head_dim = {cfg.num_attention_heads // cfg.o_groups * d} is not a multiple of 128")
    if cfg.o_lora_rank % 128:
        problems.append(f"o_lora_rank {cfg.o_lora_rank} is not a multiple of 128")
    if problems:
        raise ValueError("model: head layout the FP8 chain cannot take: " + "; ".join(problems))


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """A DeepSeek-V4 checkpoint directory (config.json, weights, tokenizer) in bf16, eager attention."""
    from transformers import AutoConfig, DeepseekV4ForCausalLM

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"--model: expected a checkpoint directory with config.json, got {path}")
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001  (transformers' validation errors have their own types; the user needs which file)
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise ValueError(f"--model: {path / 'config.json'} is not a valid DeepSeek-V4 config: {first} "
                         f"({type(e).__name__})") from e
    if getattr(cfg, "model_type", None) != "deepseek_v4":
        raise ValueError(f"--model: expected a DeepSeek-V4 checkpoint (model_type 'deepseek_v4'), got "
                         f"model_type {getattr(cfg, 'model_type', None)!r} in {path / 'config.json'}")
    check_head_layout(cfg)
    model = DeepseekV4ForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16, attn_implementation="eager")
    model.eval()
    sha = state_dict_sha256(model)
    model.to(device)
    tok_dir = path if (path / "tokenizer_config.json").is_file() or (path / "tokenizer.json").is_file() else None
    if tok_dir is None:
        raise ValueError(f"--model: no tokenizer (tokenizer.json / tokenizer_config.json) in {path}")
    n = sum(p.numel() for p in model.parameters())
    return LoadedModel(model, load_tokenizer(tok_dir), str(path), sha,
                       f"DeepseekV4ForCausalLM from {path}, {n / 1e6:.1f}M parameters, bf16")


def load_sentinel(device: str | torch.device = "cpu") -> LoadedModel:
    """The trained sentinel shipped in the package (``accval/sentinel``)."""
    import json

    from accval.sentinel.model import CHECKPOINT_DIR, SENTINEL

    if not (CHECKPOINT_DIR / "config.json").is_file():
        raise ValueError(f"--model {SENTINEL}: no checkpoint at {CHECKPOINT_DIR} (train one with "
                         "python -m accval.sentinel.train and copy it there)")
    loaded = load_checkpoint(CHECKPOINT_DIR, device)
    meta = json.loads((CHECKPOINT_DIR / "train.json").read_text())
    n = sum(p.numel() for p in loaded.model.parameters())
    loaded.model_id = SENTINEL
    loaded.description = (f"sentinel DeepseekV4ForCausalLM, {n / 1e6:.2f}M parameters trained on accval's synthetic "
                          f"gsm8k-format problems (generator v{meta['generator_version']}, {meta['steps']} steps on "
                          f"{meta['device']}), bf16")
    return loaded


def load(spec: str, seed: int = 0, device: str | torch.device = "cpu") -> LoadedModel:
    if spec == BUILTIN:
        return build_builtin(seed, device)
    if spec == "sentinel":
        return load_sentinel(device)
    return load_checkpoint(spec, device)
