"""The attribution graph of one prompt, and our compact file format.

Nodes, in circuit-tracer's order: [active features | error nodes (layer-major, layer*pos + p) |
token embeddings | output logits]. Edges are direct effects A[target, source] in the frozen
replacement model, kept sparse as COO triples sorted by target (only the causal cone is ever
computed). Each target's input (a feature's pre-activation, a logit minus the mean logit) equals
the sum of its incoming edges plus its fixed term (biases, positions, the BOS position): the
completeness property tested in tests/test_circuits.py.

Compact format: `graph.safetensors` (every tensor) + `graph.json` (prompt, token strings,
settings). No pickle: both load without executing code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float, Int
from torch import Tensor

from interp.errors import BadFormat, InterpError, MissingFile
from interp.io import atomic_write_json, load_safetensors, read_json, save_safetensors_atomic

FORMAT = "interp-attribution-graph"
VERSION = 1


@dataclass
class Graph:
    prompt: str
    tokens: list[int]
    token_strs: list[str]
    n_layers: int
    feat_layer: Int[Tensor, "n_feat"]
    feat_pos: Int[Tensor, "n_feat"]
    feat_index: Int[Tensor, "n_feat"]
    activation: Float[Tensor, "n_feat"]
    logit_tokens: Int[Tensor, "n_logits"]
    logit_probs: Float[Tensor, "n_logits"]
    logit_strs: list[str]
    edge_target: Int[Tensor, "nnz"]
    edge_source: Int[Tensor, "nnz"]
    edge_weight: Float[Tensor, "nnz"]
    node_input: Float[Tensor, "n_nodes"]  # NaN for sources that are never targets
    node_fixed: Float[Tensor, "n_nodes"]
    metadata: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- node index ranges
    @property
    def n_pos(self) -> int:
        return len(self.tokens)

    @property
    def n_features(self) -> int:
        return int(self.feat_layer.numel())

    @property
    def n_errors(self) -> int:
        return self.n_layers * self.n_pos

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.numel())

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_errors + self.n_pos + self.n_logits

    @property
    def error_start(self) -> int:
        return self.n_features

    @property
    def token_start(self) -> int:
        return self.n_features + self.n_errors

    @property
    def logit_start(self) -> int:
        return self.token_start + self.n_pos

    def node_kind(self, i: int) -> str:
        if i < self.error_start:
            return "feature"
        if i < self.token_start:
            return "error"
        return "token" if i < self.logit_start else "logit"

    def error_node(self, layer: int, pos: int) -> int:
        return self.error_start + layer * self.n_pos + pos

    def feature_node(self, layer: int, pos: int, index: int) -> int:
        m = (self.feat_layer == layer) & (self.feat_pos == pos) & (self.feat_index == index)
        hits = m.nonzero().flatten()
        if not len(hits):
            raise InterpError(f"Feature {index} is not active at layer {layer}, position {pos}.")
        return int(hits[0])

    # ----------------------------------------------------------------- matrices
    def dense(self, dtype=torch.float32) -> Float[Tensor, "n_nodes n_nodes"]:
        """The full adjacency [target, source] (circuit-tracer's layout); small graphs only."""
        A = torch.zeros(self.n_nodes, self.n_nodes, dtype=dtype)
        A[self.edge_target, self.edge_source] = self.edge_weight.to(dtype)
        return A

    def in_sum(self) -> Float[Tensor, "n_nodes"]:
        """Sum of incoming edge weights per node (float64)."""
        return torch.zeros(self.n_nodes, dtype=torch.float64).index_add_(
            0, self.edge_target.long(), self.edge_weight.double())

    def completeness_error(self) -> float:
        """max |input - (sum of incoming edges + fixed term)| over every target node."""
        m = ~torch.isnan(self.node_input)
        resid = self.node_input.double()[m] - self.in_sum()[m] - self.node_fixed.double()[m]
        return float(resid.abs().max()) if resid.numel() else 0.0

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> Path:
        """Write `graph.safetensors` + `graph.json` into directory `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).contiguous() for k in _TENSORS}
        tensors["edge_target"] = tensors["edge_target"].to(torch.int32)
        tensors["edge_source"] = tensors["edge_source"].to(torch.int32)
        save_safetensors_atomic(tensors, path / "graph.safetensors")
        atomic_write_json(path / "graph.json", {
            "format": FORMAT, "version": VERSION, "prompt": self.prompt, "tokens": self.tokens,
            "token_strs": self.token_strs, "n_layers": self.n_layers,
            "logit_strs": self.logit_strs, "metadata": self.metadata})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        """Read a graph written by `save`. Every field is checked before use: the JSON's types,
        each tensor's presence and length against the node counts the JSON implies, and edge
        indices inside the node range (`BadFormat` / `CorruptFile` naming the file)."""
        path = Path(path)
        meta_path = path / "graph.json"
        if not meta_path.is_file():
            raise MissingFile(f"{path} holds no graph.json; write graphs with Graph.save or "
                              "`interp attribute`.")
        meta = read_json(meta_path, expect=dict)
        if meta.get("format") != FORMAT:
            raise BadFormat(f"{meta_path} is not an {FORMAT} file (format={meta.get('format')!r}).")
        fix = "run `interp attribute` again to rewrite the graph."
        prompt, tokens, strs = meta.get("prompt"), meta.get("tokens"), meta.get("token_strs")
        logit_strs, n_layers = meta.get("logit_strs"), meta.get("n_layers")
        if not (isinstance(prompt, str) and _list_of(tokens, int) and _list_of(strs, str)
                and _list_of(logit_strs, str) and len(strs) == len(tokens) >= 1
                and isinstance(n_layers, int) and not isinstance(n_layers, bool)
                and n_layers >= 0 and isinstance(meta.get("metadata", {}), dict)):
            raise BadFormat(f"{meta_path}: prompt, tokens, token_strs, logit_strs or n_layers "
                            f"are missing, empty or of the wrong type; {fix}")
        st_path = path / "graph.safetensors"
        try:
            t = load_safetensors(st_path, fix)
        except MissingFile as e:
            raise BadFormat(str(e)) from None
        missing = [k for k in _TENSORS if k not in t]
        if missing:
            raise BadFormat(f"{st_path}: tensor(s) {missing} missing; {fix}")
        n_feat, n_logits = t["feat_layer"].numel(), len(logit_strs)
        n_pos = len(tokens)
        n_nodes = n_feat + n_layers * n_pos + n_pos + n_logits
        lengths = {"feat_layer": n_feat, "feat_pos": n_feat, "feat_index": n_feat,
                   "activation": n_feat, "logit_tokens": n_logits, "logit_probs": n_logits,
                   "edge_target": t["edge_weight"].numel(), "edge_source": t["edge_weight"].numel(),
                   "edge_weight": t["edge_weight"].numel(), "node_input": n_nodes,
                   "node_fixed": n_nodes}
        for k, n in lengths.items():
            if t[k].dim() != 1 or t[k].numel() != n:
                raise BadFormat(f"{st_path}: tensor {k!r} has shape {list(t[k].shape)}, but "
                                f"{meta_path} implies [{n}]; the two files do not belong "
                                f"together. {fix}")
        for k in ("edge_target", "edge_source"):
            v = t[k]
            if v.is_floating_point() or (v.numel() and (int(v.min()) < 0
                                                        or int(v.max()) >= n_nodes)):
                raise BadFormat(f"{st_path}: {k} holds node indices outside [0, {n_nodes}); "
                                f"{fix}")
        t["edge_target"] = t["edge_target"].long()
        t["edge_source"] = t["edge_source"].long()
        return cls(prompt=prompt, tokens=tokens, token_strs=strs, n_layers=n_layers,
                   logit_strs=logit_strs, metadata=meta.get("metadata", {}),
                   **{k: t[k] for k in _TENSORS})


def _list_of(x, typ) -> bool:
    return isinstance(x, list) and all(isinstance(v, typ) and not isinstance(v, bool) for v in x)


_TENSORS = ("feat_layer", "feat_pos", "feat_index", "activation", "logit_tokens", "logit_probs",
            "edge_target", "edge_source", "edge_weight", "node_input", "node_fixed")
