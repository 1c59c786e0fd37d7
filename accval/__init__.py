"""accval: accuracy validation and regression suite for FP8 kernel chains in LLM inference."""

__version__ = "0.1.0"
