"""Language models: one hooked interface over plain PyTorch hooks, TransformerLens and nnsight
(`base`, the backends), one adapter per model family (`families`: the hook table and the reader
of the frozen network), and the frozen network itself (`transformer`, `frozen`, `adjoint`)."""
