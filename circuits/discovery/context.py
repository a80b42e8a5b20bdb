"""A model, a batch of prompt pairs and an ablation, ready to be patched: what every method uses.

`PatchContext` answers the questions circuit-discovery methods ask: the metric with a circuit
(edge or component mask) kept clean and everything else ablated, every single unit's patching
effect, first-order (EAP) and integrated-gradient (EAP-IG) scores, and each component's output
vector (for the discrete-code method). Two implementations: `TinyContext` for the task models
(exact edge-level patching, many masks per forward pass) and `circuits.discovery.hooked.
HookedContext` for any Hugging Face model through canonical hooks (component level).

Ablations: "resample" replaces a unit's output by its value on the counterfactual prompt (MIB's
"patching"); "mean" by its mean over the clean prompts at the same position.
Signs: an effect or score estimates m(clean) - m(unit ablated), positive when the unit helps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from circuits.discovery.graph import CircuitGraph
from interp.errors import ConfigError

ABLATIONS = ("resample", "mean")
MetricFn = Callable[[Tensor, object], Tensor]  # (logits [..., batch, vocab], batch) -> [..., batch]


def check_ablation(ablation: str) -> None:
    if ablation not in ABLATIONS:
        raise ConfigError(f"ablation must be one of {ABLATIONS}, not {ablation!r}.")


class PatchContext:
    """The interface methods use (see the module docstring)."""

    graph: CircuitGraph
    batch: object
    metric_fn: MetricFn
    ablation: str

    @property
    def level(self) -> str:
        """The finest level this context patches at: 'edge' or 'node'."""
        return self.graph.level

    def logits(self, masks: Tensor, level: str) -> Float[Tensor, "n_masks batch vocab"]:
        raise NotImplementedError

    def metric(self, masks: Tensor, level: str) -> Float[Tensor, "n_masks"]:
        """The batch-mean metric with each mask's units clean and the rest ablated."""
        return self.metric_fn(self.logits(masks, level), self.batch).mean(-1)

    def n_units(self, level: str) -> int:
        return self.graph.n_edges if level == "edge" else self.graph.n_components

    @property
    def full_metric(self) -> float:
        """m(M): the model itself."""
        if not hasattr(self, "_full"):
            self._full = float(self.metric(torch.ones(1, self.graph.n_components), "node")[0])
        return self._full

    @property
    def empty_metric(self) -> float:
        """m(empty circuit): every unit at the finest level ablated (with edges, the input's
        direct edge to the logits too, as MIB's `apply_topn(0)`)."""
        if not hasattr(self, "_empty"):
            self._empty = float(self.metric(torch.zeros(1, self.n_units(self.level)),
                                            self.level)[0])
        return self._empty

    def faithfulness(self, masks: Tensor, level: str) -> Float[Tensor, "n_masks"]:
        """MIB's f(C) = (m(C) - m(empty)) / (m(M) - m(empty)) for each mask."""
        gap = self.full_metric - self.empty_metric
        if abs(gap) < 1e-12:
            raise ConfigError("The model's metric is the same with and without ablation, so "
                              "faithfulness is undefined; check the prompts and counterfactuals.")
        return (self.metric(masks, level) - self.empty_metric) / gap

    def patch_effects(self, level: str) -> Float[Tensor, "n_units"]:
        """m(M) - m(M with one unit ablated), for every unit (exhaustive activation patching)."""
        n = self.n_units(level)
        masks = torch.ones(n, n) - torch.eye(n)
        return self.full_metric - self.metric(masks, level)

    def gradient_scores(self, alphas, interpolate: str) -> Float[Tensor, "n_units"]:
        raise NotImplementedError

    def component_vectors(self, which: str, position: str) -> Float[Tensor, "batch n_vec d"]:
        """Output vectors of the components listed in `vector_components`."""
        raise NotImplementedError

    @property
    def vector_components(self) -> list[int]:
        """Which components `component_vectors` returns (indices into `graph.components`)."""
        return list(range(self.graph.n_components))


class TinyContext(PatchContext):
    """A task model (`TinyTransformer`) on a `TaskBatch`, patched at the edge level."""

    def __init__(self, model, batch, metric_fn: MetricFn, ablation: str = "resample",
                 max_elements: int = 1 << 24):
        check_ablation(ablation)
        self.model, self.batch, self.metric_fn, self.ablation = model, batch, metric_fn, ablation
        self.graph = model.graph
        self.max_elements = max_elements
        with torch.no_grad():
            self.clean = model.sender_outputs(batch.clean)
            if ablation == "resample":
                self.corrupt = model.sender_outputs(batch.corrupt)
            else:
                self.corrupt = self.clean.mean(1, keepdim=True).expand_as(self.clean).contiguous()
        self._cache: dict = {}  # the factorised forward's mask-independent work

    # ----------------------------------------------------------------- masked runs
    def edge_masks(self, masks: Tensor, level: str) -> Tensor:
        if level == "edge":
            return masks.float()
        if level == "node":
            return self.graph.edges_of_components(masks.bool()).float()
        raise ConfigError(f"level must be 'edge' or 'node', not {level!r}.")

    def _start_layer(self, edge_masks: Tensor) -> int:
        off = (edge_masks < 1).any(0)
        if not off.any():
            return self.model.cfg.n_layers
        return min(self.model.first_layer_of(int(e)) for e in off.nonzero()[:, 0].unique())

    def _chunk(self) -> int:
        per_mask = self.clean.numel() * self.model.n_senders
        return max(1, self.max_elements // max(1, per_mask))

    @torch.no_grad()
    def logits(self, masks: Tensor, level: str) -> Tensor:
        em = self.edge_masks(masks, level)
        out = []
        step = self._chunk()
        for i in range(0, em.shape[0], step):
            chunk = em[i:i + step]
            out.append(self.model.masked_logits(chunk, self.corrupt, self.clean,
                                                start_layer=self._start_layer(chunk),
                                                cache=self._cache))
        return torch.cat(out)

    def patch_effects(self, level: str) -> Tensor:
        """Exhaustive patching, one batched run per layer: the units entering a layer share
        the clean run up to it."""
        if level == "node":
            return super().patch_effects(level)
        E = self.graph.n_edges
        full = self.full_metric
        effects = torch.empty(E)
        first = torch.tensor([self.model.first_layer_of(e) for e in range(E)])
        for layer in first.unique().tolist():
            idx = (first == layer).nonzero()[:, 0]
            masks = torch.ones(len(idx), E)
            masks[torch.arange(len(idx)), idx] = 0
            effects[idx] = full - self.metric(masks, "edge")
        return effects

    # ----------------------------------------------------------------- gradients
    def gradient_scores(self, alphas=(1.0,), interpolate: str = "inputs") -> Tensor:
        """Edge scores (clean_s - C_s) . mean_alpha dm/d(in_r) (EAP for alphas = (1,), EAP-IG
        for a grid), with the gradient taken where the input embedding is interpolated
        between its ablated and clean values ("inputs", Hanna et al. 2024, arXiv 2403.17806),
        or as the mask gradient dm/d(mask_e) averaged over masks set to alpha ("mask", the
        integrated mask gradient of auto-circuit's mask_gradient_prune_scores)."""
        m, g = self.model, self.graph
        alphas = torch.as_tensor(alphas, dtype=self.clean.dtype)
        A = len(alphas)
        if interpolate == "mask":
            masks = alphas[:, None].expand(A, g.n_edges).clone().requires_grad_(True)
            logits = m.masked_logits(masks, self.corrupt, self.clean, cache=self._cache)
            total = self.metric_fn(logits, self.batch).mean(-1).sum()
            (grad,) = torch.autograd.grad(total, masks)
            return grad.mean(0).detach()
        if interpolate != "inputs":
            raise ConfigError(f"interpolate must be 'inputs' or 'mask', not {interpolate!r}.")
        c0, x0 = self.corrupt[0], self.clean[0]
        embed = c0 + alphas[:, None, None, None] * (x0 - c0)
        inputs: list = []
        logits = m.masked_logits(torch.ones(A, g.n_edges), self.corrupt, self.clean,
                                 embed=embed, inputs=inputs)
        total = self.metric_fn(logits, self.batch).mean(-1).sum()
        grads = torch.autograd.grad(total, [x for _, x, _ in inputs])
        delta = self.clean - self.corrupt
        dense = torch.zeros(m.n_receivers, m.n_senders)
        for (recv, x, pos), gr in zip(inputs, grads):
            dense[recv] = torch.einsum("rbpd,sbpd->rs", gr.mean(0), delta[:, :, pos])
        return dense[m.edge_recv, m.edge_send].detach()

    # ----------------------------------------------------------------- vectors
    @torch.no_grad()
    def component_vectors(self, which: str = "clean", position: str = "mean") -> Tensor:
        """Each component's output on the clean or counterfactual prompts, averaged over
        positions ("mean", the paper's choice) or at the last position: [batch, comp, d]."""
        tokens = self.batch.clean if which == "clean" else self.batch.corrupt
        outs = self.model.sender_outputs(tokens)[1:]  # drop the input node
        outs = outs.mean(2) if position == "mean" else outs[:, :, -1]
        return outs.transpose(0, 1)
