"""Backends: llama_cpp (embedded model) and openai (any OpenAI-compatible server)."""
