"""Circuit discovery: exhaustive edge patching and EAP-IG, ours against a straightforward
implementation and against auto-circuit, on the planted-circuit task models.

Per task (the committed model, the same prompt pairs for everyone, resample ablation):
- patching: every edge's effect m(clean) - m(edge patched). Ours: `TinyContext.patch_effects`
  (edges entering the same layer as one batched, factorised forward from that layer). The
  straightforward implementation: the model as a TransformerLens `HookedTransformer` (split
  q/k/v inputs, per-head results) and one forward pass per edge with one hook adding
  (corrupted - clean) sender output to that receiver's input. Scores must agree.
- EAP-IG: the integrated mask gradient (masks k/n, k = 0..n, n = 5), ours
  (`TinyContext.gradient_scores(..., "mask")`) against auto-circuit 1.0.1's
  `mask_gradient_prune_scores(integrated_grad_samples=n)` on the same HookedTransformer (it
  sums the n+1 gradients where we average them, so its scores are (n+1) times ours). auto-
  circuit is installed with `pip install --no-deps --target benchmarks/.venvs/auto_circuit`
  (its PyPI dependencies include unrelated heavy packages) and runs in a subprocess with two
  import shims for transformer-lens 3 (a renamed key-value cache class, and `blobfile`, which
  it imports for its own SAE loader only). Only tasks whose metric auto-circuit can express
  (a logit difference: induction, ioi) are compared with it.

Times: ours and the loop interleaved in one process, `repeats` rounds, median; auto-circuit
in its own process, median of the same number of rounds. `ratios` are speed-ups, their time /
our time. Run: `.venv/bin/python benchmarks/discovery.py [--quick]` (every task, 64 prompt
pairs, 3 rounds, about 2 minutes on 2 busy cores; quick: induction and ioi, 32 pairs, 1 round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("TQDM_DISABLE", "1")

from benchmarks.common import Method, json_main, log, machine, round_robin  # noqa: E402

AC_DIR = HERE / ".venvs" / "auto_circuit"
AC_PINS = ["auto-circuit==1.0.1", "ordered-set==4.1.0"]
STEPS = 5


# --------------------------------------------------------------------------- the loop
def tl_patching(tl, graph, batch, metric) -> list[float]:
    """One TransformerLens forward per edge: the straightforward exhaustive patching."""
    import torch

    cfg = tl.cfg
    with torch.no_grad():
        _, cc = tl.run_with_cache(batch.clean)
        _, kc = tl.run_with_cache(batch.corrupt)
        base = float(metric(tl(batch.clean)[:, -1], batch).mean())

    def sender(cache, node):
        if node.kind == "input":
            return cache["hook_embed"] + cache["hook_pos_embed"]
        if node.kind == "head":
            return cache[f"blocks.{node.layer}.attn.hook_result"][:, :, node.head]
        return cache[f"blocks.{node.layer}.hook_mlp_out"]

    effects = []
    for s, d, port in graph.edges:
        sn, dn = graph.nodes[s], graph.nodes[d]
        delta = sender(kc, sn) - sender(cc, sn)
        if dn.kind == "head":
            name = f"blocks.{dn.layer}.hook_{port}_input"

            def fn(x, hook, delta=delta, h=dn.head):
                x = x.clone()
                x[:, :, h] += delta
                return x
        elif dn.kind == "mlp":
            name = f"blocks.{dn.layer}.hook_mlp_in"

            def fn(x, hook, delta=delta):
                return x + delta
        else:
            name = f"blocks.{cfg.n_layers - 1}.hook_resid_post"

            def fn(x, hook, delta=delta):
                return x + delta
        with torch.no_grad():
            logits = tl.run_with_hooks(batch.clean, fwd_hooks=[(name, fn)])
        effects.append(base - float(metric(logits[:, -1], batch).mean()))
    return effects


def hooked(model):
    tl = model.to_hooked_transformer()
    tl.set_use_split_qkv_input(True)
    tl.set_use_attn_result(True)
    if model.cfg.d_mlp:
        tl.set_use_hook_mlp_in(True)
    return tl


# --------------------------------------------------------------------------- auto-circuit
AC_SCRIPT = r'''
import json, statistics, sys, time, types
import torch
import transformer_lens as tl_mod
from transformer_lens import TransformerLensKeyValueCache
shim = types.ModuleType("transformer_lens.past_key_value_caching")
shim.HookedTransformerKeyValueCache = TransformerLensKeyValueCache
sys.modules["transformer_lens.past_key_value_caching"] = shim
tl_mod.HookedTransformerKeyValueCache = TransformerLensKeyValueCache
blob = types.ModuleType("blobfile"); blob.BlobFile = object; sys.modules["blobfile"] = blob
from auto_circuit.data import PromptDataLoader, PromptDataset
from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
from auto_circuit.utils.graph_utils import patchable_model
from safetensors.torch import load_file
sys.path.insert(0, sys.argv[2])
from circuits.tasks import load_task
spec = json.loads(sys.argv[1])
torch.set_num_threads(1)
loaded = load_task(spec["task"])
data = load_file(spec["data"])
tl = loaded.model.to_hooked_transformer()
tl.set_use_split_qkv_input(True); tl.set_use_attn_result(True)
if loaded.model.cfg.d_mlp:
    tl.set_use_hook_mlp_in(True)
pm = patchable_model(tl, factorized=True, slice_output="last_seq", separate_qkv=True,
                     device=torch.device("cpu"))
n = data["clean"].shape[0]
ds = PromptDataset(list(data["clean"]), list(data["corrupt"]), list(data["answers"]),
                   list(data["wrong"]))
dl = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
times, scores = [], None
for _ in range(spec["repeats"]):
    t0 = time.perf_counter()
    ps = mask_gradient_prune_scores(pm, dl, official_edges=None, grad_function="logit",
                                    answer_function="avg_diff",
                                    integrated_grad_samples=spec["steps"])
    times.append(time.perf_counter() - t0)
    scores = {e.name: float(e.prune_score(ps)) for e in pm.edges}
print(json.dumps({"seconds": times, "scores": scores}))
'''


def ensure_auto_circuit() -> bool:
    if (AC_DIR / "auto_circuit").is_dir():
        return True
    log(f"installing {AC_PINS} into {AC_DIR} (--no-deps)")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--target", str(AC_DIR), *AC_PINS], capture_output=True, text=True)
    if r.returncode:
        log("auto-circuit did not install:", r.stderr[-500:])
        return False
    return True


def ac_name(graph, e: int) -> str:
    s, d, port = graph.edges[e]

    def name(node, dest_port=""):
        if node.kind == "input":
            return "Resid Start"
        if node.kind == "logits":
            return "Resid End"
        if node.kind == "mlp":
            return f"MLP {node.layer}"
        return f"A{node.layer}.{node.head}" + (f".{dest_port.upper()}" if dest_port else "")

    return f"{name(graph.nodes[s])}->{name(graph.nodes[d], port)}"


def run_auto_circuit(task: str, batch, repeats: int) -> dict | None:
    import torch
    from safetensors.torch import save_file

    V = None
    if batch.distractor is not None:
        answers, wrong = batch.answer[:, None], batch.distractor[:, None]
    else:  # answer - mean logit: the wrong answers are every token
        from circuits.tasks import get_task

        V = get_task(task).model_cfg.d_vocab
        answers, wrong = batch.answer[:, None], torch.arange(V).expand(len(batch), V)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.safetensors"
        save_file({"clean": batch.clean.contiguous(), "corrupt": batch.corrupt.contiguous(),
                   "answers": answers.contiguous(), "wrong": wrong.contiguous()}, str(path))
        spec = json.dumps({"task": task, "data": str(path), "repeats": repeats, "steps": STEPS})
        env = {**os.environ, "PYTHONPATH": str(AC_DIR), "OMP_NUM_THREADS": "1"}
        r = subprocess.run([sys.executable, "-c", AC_SCRIPT, spec, str(HERE.parent)],
                           capture_output=True, text=True, env=env)
    if r.returncode:
        log("auto-circuit failed:", r.stderr[-1500:])
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- one task
def bench_task(task: str, n_prompts: int, repeats: int, with_ac: bool) -> tuple[dict, dict]:
    import torch

    from circuits.discovery.context import TinyContext
    from circuits.discovery.eap import ig_alphas
    from circuits.tasks import load_task

    loaded = load_task(task)
    model, t = loaded.model, loaded.task
    batch = t.batch(n_prompts, seed=0)
    graph = model.graph
    tl = hooked(model)
    log(f"{task}: {graph.n_edges} edges, {n_prompts} prompt pairs")

    def ours_patch():
        return TinyContext(model, batch, t.metric).patch_effects("edge")

    def loop_patch():
        return tl_patching(tl, graph, batch, t.metric)

    alphas = ig_alphas(STEPS, "mask")

    def ours_ig():
        return TinyContext(model, batch, t.metric).gradient_scores(alphas, "mask")

    methods = [Method("ours patching", ours_patch), Method("loop patching", loop_patch),
               Method("ours eap-ig", ours_ig)]
    results = {}
    for m in methods:
        m.after = (lambda r, m=m: results.__setitem__(m.name, r))
    round_robin(methods, repeats)
    med = {m.name: statistics.median(m.times) for m in methods}
    ours_p = torch.as_tensor(results["ours patching"])
    loop_p = torch.tensor(results["loop patching"])
    scale = float(loop_p.abs().max())
    out = {"task": task, "n_edges": graph.n_edges, "n_prompts": n_prompts,
           "seconds": med, "patching_max_rel_diff": float((ours_p - loop_p).abs().max()) / scale}
    ratios = {f"patching_vs_loop.{task}": med["loop patching"] / med["ours patching"]}
    if with_ac:
        ac = run_auto_circuit(task, batch, repeats)
        if ac is not None:
            theirs = torch.tensor([ac["scores"][ac_name(graph, e)] for e in range(graph.n_edges)])
            ours = torch.as_tensor(results["ours eap-ig"]) * (STEPS + 1)
            t_ac = statistics.median(ac["seconds"])
            out["seconds"]["auto-circuit eap-ig"] = t_ac
            out["eap_ig_max_rel_diff"] = float((ours - theirs).abs().max() / theirs.abs().max())
            ratios[f"eap_ig_vs_auto_circuit.{task}"] = t_ac / med["ours eap-ig"]
    log(f"  {json.dumps(out)}")
    return out, ratios


def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--tasks", default=None, help="comma-separated (default: every task)")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--prompts", type=int, default=None)
    p.add_argument("--no-auto-circuit", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    from circuits.tasks import TASKS

    tasks = (args.tasks.split(",") if args.tasks
             else ["induction", "ioi"] if args.quick else list(TASKS))
    repeats = args.repeats or (1 if args.quick else 3)
    n_prompts = args.prompts or (32 if args.quick else 64)
    with_ac = not args.no_auto_circuit and ensure_auto_circuit()
    results, ratios = [], {}
    t0 = time.perf_counter()
    for task in tasks:
        out, r = bench_task(task, n_prompts, repeats,
                            with_ac and task in ("induction", "ioi"))
        results.append(out)
        ratios |= r
    return {"benchmark": "discovery", "machine": machine(("torch", "transformer-lens")),
            "results": results, "ratios": ratios, "seconds_total": time.perf_counter() - t0,
            "note": "ratios are speed-ups (their median time / ours) at equal scores "
                    "(max relative score differences in results)"}


if __name__ == "__main__":
    json_main(main)
