"""The computational graph that circuits live in: nodes (input, heads, MLPs, logits) and edges.

An edge `u -> v<port>` carries node u's output into one input of node v: a head reads its
query, key and value inputs separately (ports q, k, v, as in ACDC and EAP-IG), an MLP and the
logits read one input. The residual stream of a layer is the sum of every earlier node's output,
so an edge is one term of that sum, and "patching an edge" swaps that term for its value on a
corrupted input (or its mean) while every other term keeps its clean value.

A circuit is a boolean mask over the edges (edge level) or over the components (node level:
heads and MLPs; the input and logits are always present). Methods score units; circuits of a
given size are the top-scoring units, with dangling edges pruned as in MIB (arXiv 2504.13151).
A graph without edges (`level == "node"`, e.g. a Hugging Face model patched through hooks) has
components only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from interp.errors import ConfigError

KINDS = ("input", "head", "mlp", "logits")


@dataclass(frozen=True)
class Node:
    """One node: `kind` is input | head | mlp | logits; heads carry their index in the layer."""

    name: str
    kind: str
    layer: int = -1
    head: int | None = None


def head_name(layer: int, head: int) -> str:
    return f"a{layer}.h{head}"


def mlp_name(layer: int) -> str:
    return f"m{layer}"


class CircuitGraph:
    """Nodes and edges of a model; components are the heads and MLPs (circuit candidates)."""

    def __init__(self, nodes: list[Node], edges: list[tuple[int, int, str]]):
        if not nodes or nodes[0].kind != "input" or nodes[-1].kind != "logits":
            raise ConfigError("A circuit graph starts with its input node and ends with logits.")
        self.nodes = list(nodes)
        self.edges = list(edges)
        self.index = {n.name: i for i, n in enumerate(self.nodes)}
        self.components = [i for i, n in enumerate(self.nodes) if n.kind in ("head", "mlp")]
        self.component_names = [self.nodes[i].name for i in self.components]
        self._comp_of_node = {n: c for c, n in enumerate(self.components)}
        self.edge_names = [f"{self.nodes[s].name}->{self.nodes[d].name}" + (f"<{p}>" if p else "")
                           for s, d, p in self.edges]
        src = torch.tensor([s for s, _, _ in self.edges], dtype=torch.long)
        dst = torch.tensor([d for _, d, _ in self.edges], dtype=torch.long)
        self.edge_src, self.edge_dst = src, dst

    # ----------------------------------------------------------------- facts
    @property
    def level(self) -> str:
        """'edge' when the graph has edges to patch, else 'node'."""
        return "edge" if self.edges else "node"

    @property
    def n_edges(self) -> int:
        return len(self.edges)

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def heads(self) -> list[int]:
        """Component indices (into `components`) of the attention heads."""
        return [c for c, i in enumerate(self.components) if self.nodes[i].kind == "head"]

    def component(self, name: str) -> int:
        """Index into `components` of a component name like 'a1.h0' or 'm0'."""
        i = self.index.get(name)
        if i is None or i not in self._comp_of_node:
            from interp.errors import unknown_name_message

            raise ConfigError(unknown_name_message("component", name, self.component_names))
        return self._comp_of_node[i]

    def component_mask(self, names) -> Bool[Tensor, "n_components"]:
        mask = torch.zeros(self.n_components, dtype=torch.bool)
        for n in names:
            mask[self.component(n)] = True
        return mask

    # ----------------------------------------------------------------- edges <-> nodes
    def edges_of_components(self, keep: Bool[Tensor, "... n_components"]
                            ) -> Bool[Tensor, "... n_edges"]:
        """The edges whose two ends are both kept (the input and logits always are): the edge
        circuit of a node circuit."""
        full = torch.ones(*keep.shape[:-1], len(self.nodes), dtype=torch.bool)
        full[..., self.components] = keep.bool()
        return full[..., self.edge_src] & full[..., self.edge_dst]

    def node_scores_from_edges(self, edge_scores: Float[Tensor, "n_edges"]
                               ) -> Float[Tensor, "n_components"]:
        """A component's score: the sum of its outgoing edges' scores. For first-order scores
        (EAP) this is exactly the node's own attribution, since patching a node's output is
        patching all of its outgoing edges."""
        per_node = torch.zeros(len(self.nodes), dtype=edge_scores.dtype)
        per_node.index_add_(0, self.edge_src, edge_scores)
        return per_node[self.components]

    def components_touched(self, edge_mask: Bool[Tensor, "n_edges"]
                           ) -> Bool[Tensor, "n_components"]:
        """Components that a kept edge enters or leaves."""
        per_node = torch.zeros(len(self.nodes), dtype=torch.bool)
        per_node[self.edge_src[edge_mask]] = True
        per_node[self.edge_dst[edge_mask]] = True
        return per_node[self.components]

    def prune(self, edge_mask: Bool[Tensor, "... n_edges"]) -> Bool[Tensor, "... n_edges"]:
        """Drop dangling edges until none is left: an edge out of a component that no kept
        edge enters, or into a component that no kept edge leaves (MIB's `prune=True`). Such
        an edge changes nothing: a component whose inputs are all patched outputs its patched
        value, and one whose output reaches nothing cannot move the logits."""
        mask = edge_mask.clone().bool()
        n = len(self.nodes)
        comp = torch.zeros(n, dtype=torch.bool)
        comp[self.components] = True
        while True:
            flat = mask.reshape(-1, self.n_edges)
            has_in = torch.zeros(flat.shape[0], n, dtype=torch.bool)
            has_out = torch.zeros(flat.shape[0], n, dtype=torch.bool)
            rows = torch.arange(flat.shape[0])[:, None].expand_as(flat)
            has_in[rows[flat], self.edge_dst.expand_as(flat)[flat]] = True
            has_out[rows[flat], self.edge_src.expand_as(flat)[flat]] = True
            alive = ~comp | (has_in & has_out)
            new = flat & alive[:, self.edge_src] & alive[:, self.edge_dst]
            if torch.equal(new, flat):
                return new.reshape(mask.shape)
            mask = new.reshape(mask.shape)

    # ----------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {"nodes": [[n.name, n.kind, n.layer, n.head] for n in self.nodes],
                "edges": [list(e) for e in self.edges]}

    @classmethod
    def from_dict(cls, d: dict) -> CircuitGraph:
        nodes = [Node(name, kind, layer, head) for name, kind, layer, head in d["nodes"]]
        return cls(nodes, [(int(s), int(t), str(p)) for s, t, p in d["edges"]])


def transformer_graph(n_layers: int, n_heads: int, mlp: bool, edges: bool = True) -> CircuitGraph:
    """The graph of a pre-norm transformer: every node reads every earlier node's output; the
    MLP of a layer reads its own layer's heads. Heads have q/k/v ports. `edges=False` gives
    the node-level graph (components only)."""
    nodes = [Node("input", "input")]
    for layer in range(n_layers):
        nodes += [Node(head_name(layer, h), "head", layer, h) for h in range(n_heads)]
        if mlp:
            nodes.append(Node(mlp_name(layer), "mlp", layer))
    nodes.append(Node("logits", "logits", n_layers))
    out: list[tuple[int, int, str]] = []
    if edges:
        for d, dn in enumerate(nodes):
            if dn.kind == "input":
                continue
            srcs = [s for s, sn in enumerate(nodes[:d])
                    if sn.kind == "input" or sn.layer < dn.layer
                    or (dn.kind == "mlp" and sn.kind == "head" and sn.layer == dn.layer)]
            ports = ("q", "k", "v") if dn.kind == "head" else ("",)
            out += [(s, d, p) for p in ports for s in srcs]
    return CircuitGraph(nodes, out)
