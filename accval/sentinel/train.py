"""Train the sentinel: ``python -m accval.sentinel.train --out DIR`` (a GPU; minutes).

What defines a run (all written to ``DIR/train.json``): the generator version and seed of the data,
the model config, the training seed, batch size, learning rate and step count. Each step draws
``batch_size`` sequences of six labelled examples from the training pool (never a test question),
formatted exactly as lm-eval's 5-shot gsm8k context, and minimises next-token cross-entropy over
everything but the questions' own text, with the model's own bf16 eager attention (autocast) and
fp32 master weights. The checkpoint is saved in bf16 as safetensors with its config and tokenizer.

``--steps`` fixes the schedule (linear warm-up, cosine decay to 10%). With ``--minutes``, the step
count is chosen after timing the first steps so the run fits the budget, and the chosen count is
recorded: passing it back as ``--steps`` repeats the schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from . import data, problems
from . import model as smodel


def _batch(tok, pool, encoded, rng: random.Random, batch_size: int, device):
    seqs = [data.sequence(tok, rng.sample(pool, data.SHOTS + 1), encoded) for _ in range(batch_size)]
    width = max(len(ids) for ids, _ in seqs)
    ids = torch.full((batch_size, width), tok.pad_token_id, dtype=torch.long)
    labels = torch.full((batch_size, width), -100, dtype=torch.long)
    attn = torch.zeros((batch_size, width), dtype=torch.long)
    for i, (s, m) in enumerate(seqs):
        t = torch.tensor(s)
        ids[i, :len(s)] = t
        attn[i, :len(s)] = 1
        labels[i, :len(s)] = torch.where(torch.tensor(m, dtype=torch.bool), t, torch.tensor(-100))
    return ids.to(device), attn.to(device), labels.to(device)


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train(out: Path, steps: int | None, minutes: float | None, batch_size: int = 32, lr: float = 1.5e-3,
          seed: int = 0, pool_size: int = 200_000, layers: int = 4, hidden: int = 256, device: str = "cuda",
          init: Path | None = None, log_every: int = 50) -> dict:
    from tqdm import tqdm
    from transformers import DeepseekV4ForCausalLM

    if steps is None and minutes is None:
        raise ValueError("give --steps or --minutes (or both)")
    for name, v in (("steps", steps), ("minutes", minutes)):
        if v is not None and v <= 0:
            raise ValueError(f"--{name}: expected > 0, got {v}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device here (training on a CPU takes hours; pass --device cpu "
                         "only for a smoke run)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = data.build_tokenizer(out, seed=data.SEED)
    pool = data.training_pool(pool_size, seed=data.SEED)
    encoded = data.encode_examples(tok, pool)
    prep_s = time.time() - t0

    torch.manual_seed(seed)
    rng = random.Random(seed)
    cfg = smodel.config(layers=layers, hidden=hidden)
    if init is not None:
        net = DeepseekV4ForCausalLM.from_pretrained(str(init), dtype=torch.float32, attn_implementation="eager")
    else:
        net = DeepseekV4ForCausalLM._from_config(cfg, dtype=torch.float32)
    net.to(device).train()
    n_params = sum(p.numel() for p in net.parameters())
    decay = [p for n, p in net.named_parameters() if p.ndim >= 2 and "embed" not in n]
    no_decay = [p for n, p in net.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.98), fused=device.startswith("cuda"))
    amp = torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    warmup = 100
    total = steps if steps is not None else 10**9
    timed_after = 50  # the first steps include warm-up; time a few dozen
    log_path = out / "train_log.jsonl"
    log = log_path.open("w")
    losses: list[float] = []
    start = time.time()
    step = 0
    bar = tqdm(total=total if steps is not None else None, desc="sentinel train", unit="step", mininterval=5)
    while step < total:
        ids, attn, labels = _batch(tok, pool, encoded, rng, batch_size, device)
        for g in opt.param_groups:
            g["lr"] = _lr(step, total, lr, warmup)
        with amp:
            loss = net(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        bar.update(1)
        if step % 10 == 0 or step == total:
            losses.append(loss.item())
        if step == timed_after and minutes is not None:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_step = (time.time() - start) / step
            fit = int(minutes * 60 / per_step)  # the budget is for the training loop itself
            total = min(total, max(timed_after + 1, fit))
            bar.total = total
            print(f"{per_step * 1e3:.0f} ms/step: schedule fixed at {total} steps for {minutes} min", flush=True)
        if step % log_every == 0 or step == total:
            rec = {"step": step, "loss": loss.item(), "lr": opt.param_groups[0]["lr"],
                   "elapsed_s": round(time.time() - start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
    bar.close()
    log.close()
    train_s = time.time() - start
    net.eval()
    # shards under 10 MB: the checkpoint ships in the package and travels through size-limited channels
    net.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True, max_shard_size="10MB")
    tail = losses[-10:]
    meta = {
        "generator_version": problems.GENERATOR_VERSION, "data_seed": data.SEED, "pool_size": pool_size,
        "shots_per_sequence": data.SHOTS + 1, "seed": seed, "batch_size": batch_size, "lr": lr, "warmup": warmup,
        "steps": step, "layers": layers, "hidden": hidden, "params": n_params, "init": str(init) if init else None,
        "final_loss_mean_last_100_steps": sum(tail) / len(tail), "train_seconds": round(train_s, 1),
        "prep_seconds": round(prep_s, 1),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "torch": torch.__version__,
    }
    (out / "train.json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--minutes", type=float, help="fit the step count to this budget (timed over the first 50 steps)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pool-size", type=int, default=200_000)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--init", type=Path, help="start from this checkpoint (fresh optimizer)")
    args = ap.parse_args(argv)
    try:
        meta = train(args.out, args.steps, args.minutes, args.batch_size, args.lr, args.seed, args.pool_size,
                     args.layers, args.hidden, args.device, args.init)
    except ValueError as e:
        print(f"accval.sentinel.train: {e}")
        return 2
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
