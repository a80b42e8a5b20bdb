"""Hooked language models: one interface over plain PyTorch hooks, TransformerLens and nnsight."""
