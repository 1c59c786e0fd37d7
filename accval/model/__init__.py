"""DeepSeek-V4 for the A/B: the built-in seeded model, checkpoint loading, and the ``o_a_proj`` site.

* :mod:`accval.model.builtin`: a small seeded ``DeepseekV4ForCausalLM`` with a tokenizer shipped in
  the package, and the checks a ``--model PATH`` checkpoint must pass.
* :mod:`accval.model.site`: replaces each layer's attention output path by arm A (bf16 fallback) or
  arm B (FP8 chain), emulating DEP/TEP sharding at that site.
"""
