"""gsm8k 5-shot A/B of the bf16 fallback (arm A) against the FP8 chain (arm B), through lm-eval.

* :mod:`.task`: lm-eval's own gsm8k task config, optionally reading local jsonl files;
* :mod:`.engine`: the model with its ``o_a_proj`` site, greedy generation and teacher forcing;
* :mod:`.lm`: the lm-eval model (registered as ``accval-dsv4``) that serves one arm, with a
  per-sample store so a crashed run resumes;
* :mod:`.config`: the A/B's settings and their validation;
* :mod:`.rundir`: the run directory (its lock, ``run.json``, sessions), so a stopped run resumes;
* :mod:`.ab`: the A/B run, its statistics, verdict and report.
"""
