"""DeepSeek-V4 for the A/B: the built-in seeded model and checkpoint loading.

* :mod:`accval.model.builtin`: a small seeded ``DeepseekV4ForCausalLM`` with a tokenizer shipped in
  the package, and the checks a ``--model PATH`` checkpoint must pass.

The ``o_a_proj`` site that arms A and B replace in such a model is :mod:`accval.site`.
"""
