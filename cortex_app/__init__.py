"""Cortex: a self-hosted console for LLM inference engines (llama.cpp, vLLM) on GPU hosts."""

__version__ = "0.1.0"
