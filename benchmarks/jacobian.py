"""Exact Jacobian linearisation: our product-based analysis against the full autograd Jacobian.

On the default model (SmolLM2-135M-Instruct, CPU), for 16- and 64-token prompts, the analysis a
user runs (exactness check plus the top 32 singular triplets of the stacked detached Jacobian at
the last position) is timed two ways, in the same dtype (float32), on the same detached network
(`interp.linearise`), round-robin, median of repeats:

- ours: record the frozen factors (one forward pass), the exactness check (the replayed
  forward product J x*, computed in the Krylov space's first batch), and a randomized block
  Krylov SVD from replayed forward products and hand-written adjoint products (block
  128 // n_pos, in [1, 8]: 8 at 16 tokens, 2 at 64; Rayleigh-Ritz on the left space after the
  adjoint products and on the right space after the forward ones; steps until Aitken's
  estimate of the top-32 singular values' remaining error is below 1e-5 relative: about 180
  products at 16 tokens, 160 at 64);
- autograd: `torch.autograd.functional.jacobian(vectorize=True)` of the detached forward, as the
  paper's code does (576 vectorised VJPs), then the exactness check on the dense J and a dense
  SVD (`torch.linalg.svd`) of the d_model × (pos · d_model) matrix.

Results must be equal: the top-32 singular values of both agree to `SIGMA_RTOL` relative (each
value). Peak memory is the largest resident set size above the level before the call, sampled
every 2 ms. `rel_error` is our exactness ‖Σ_i J_i x_i (+ c) − y‖ / ‖y‖ on the default model in
float64 and float32, the worst over the prompts, with the n terms J_i x_i computed as separate
products and summed; `exactness_checks` adds the one-product check and the comparison with the
Hugging Face model's own output (see `exactness`).

Run: `.venv/bin/python benchmarks/jacobian.py [--quick] [--repeats R] [--lengths 16 64]
[--threads N]` (`--quick`: one repeat). The last stdout line is the JSON result; `ratios` are
autograd wall time / our wall time (speed-ups); `ratios_cpu_time` the same in process CPU time,
which other jobs on a shared machine disturb less.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import PeakRSS, json_main, log, machine  # noqa: E402

TEXT = ("The bridge out of Marin is the Golden Gate Bridge, which opened in 1937 and is painted "
        "in a colour called international orange. Visitors often walk across it in the morning, "
        "when the fog rolls in from the Pacific Ocean and covers the towers, so that only the "
        "tops can be seen from the city. On clear days the view reaches from the hills of the "
        "headlands to the islands in the bay and the skyline of")
LENGTHS = (16, 64)
K, TOL = 32, 1e-5
SIGMA_RTOL = 1e-4
TARGET = 5.0


def ours(net, x):
    from interp.linearise.jacobian import DetachedJacobian
    from interp.linearise.svd import krylov_block

    jac = DetachedJacobian(net, x)
    t = jac.svd(k=K, tol=TOL)  # the exactness check's product J x* rides in its first batch
    return {"S": t.S, "rel_error": jac.rel_error(), "products": t.products,
            "block": krylov_block(jac.n_pos)}


def autograd_way(net, x):
    from interp.linearise.jacobian import autograd_jacobian, reconstruction_error
    from interp.models.frozen import FINAL, Frozen, run

    with torch.no_grad():
        y = run(net, x, Frozen("detach"))[FINAL][-1]
    jac = autograd_jacobian(net, x)
    rel = reconstruction_error(jac, x, y)
    s = torch.linalg.svd(jac.reshape(jac.shape[0], -1), full_matrices=False).S
    return {"S": s[:K], "rel_error": rel, "products": jac.shape[0]}


def exactness(hf, net, ids) -> dict[str, float]:
    """Paper eq. 2, y = Σ_i J_i x_i (+ c for biases), three ways, as relative errors:
    `superposition`: the n per-position contributions J_i x_i, each its own product, summed
    (linearity across positions; float rounding only); `replay`: one product J x* (our replay of
    the detached forward, equal to the bit); `hf_model`: against the Hugging Face model's own
    final normed hidden state (it computes RoPE in float32 even in a float64 model, so this one
    bottoms out near 1e-7 in float64). `hf`: the HF module in the net's dtype."""
    from interp.linearise.jacobian import DetachedJacobian

    jac = DetachedJacobian(net, net.embed(ids))
    y, c = jac.y, jac.bias_term

    def rel(v):
        return float((v - y).norm() / y.norm())

    with torch.no_grad():
        y_hf = hf(ids[None], output_hidden_states=True).hidden_states[-1][0, -1]
    one = jac.reconstruct()
    return {"superposition": rel(jac.contributions().sum(0) + c), "replay": rel(one),
            "hf_model": float((one - y_hf).norm() / y_hf.norm())}


def measure(fn, *args):
    t0, c0 = time.perf_counter(), time.process_time()
    with PeakRSS() as mem:
        out = fn(*args)
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # all threads; robust to other jobs' load
    out["peak_mib"] = mem.mib
    return out


def run_bench(args) -> dict:
    from interp.models.families import read_net
    from interp.models.loading import load_model

    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    model = load_model()
    ids = model.to_tokens(TEXT)[0][0]
    if len(ids) < max(args.lengths):
        raise SystemExit(f"benchmark text has {len(ids)} tokens, fewer than {max(args.lengths)}")
    net32 = read_net(model, torch.float32)
    net64 = read_net(model, torch.float64)
    hf = {"float32": model.hf_model.float(),
          "float64": copy.deepcopy(model.hf_model).to(torch.float64)}
    results, ratios, cpu_ratios = [], {}, {}
    checks = {"float64": {}, "float32": {}}  # worst over the prompts
    for n in args.lengths:
        x = net32.embed(ids[:n])
        for name, net in (("float64", net64), ("float32", net32)):
            for how, v in exactness(hf[name], net, ids[:n]).items():
                checks[name][how] = max(checks[name].get(how, 0.0), v)
        runs = {"ours": [], "autograd": []}
        for r in range(args.repeats):
            order = ("ours", "autograd") if r % 2 == 0 else ("autograd", "ours")
            for m in order:
                out = measure(ours if m == "ours" else autograd_way, net32, x)
                runs[m].append(out)
                log(f"  {n} tokens, round {r + 1}/{args.repeats}, {m}: {out['seconds']:.2f} s "
                    f"({out['cpu_seconds']:.2f} s CPU), "
                    f"peak +{out['peak_mib']:.0f} MiB, rel_error {out['rel_error']:.2e}")
        s_ours, s_ref = runs["ours"][-1]["S"].double(), runs["autograd"][-1]["S"].double()
        sigma_err = float(((s_ours - s_ref).abs() / s_ref).max())
        t_ours = statistics.median(o["seconds"] for o in runs["ours"])
        t_ref = statistics.median(o["seconds"] for o in runs["autograd"])
        c_ours = statistics.median(o["cpu_seconds"] for o in runs["ours"])
        c_ref = statistics.median(o["cpu_seconds"] for o in runs["autograd"])
        ratios[f"vs_autograd_{n}"] = t_ref / t_ours
        cpu_ratios[f"vs_autograd_{n}"] = c_ref / c_ours
        results.append({
            "tokens": n, "dtype": "float32",
            "ours": {"seconds_median": t_ours, "cpu_seconds_median": c_ours,
                     "peak_mib": max(o["peak_mib"] for o in runs["ours"]),
                     "products": runs["ours"][-1]["products"],
                     "block": runs["ours"][-1]["block"],
                     "rel_error": runs["ours"][-1]["rel_error"],
                     "times": [o["seconds"] for o in runs["ours"]]},
            "autograd": {"seconds_median": t_ref, "cpu_seconds_median": c_ref,
                         "peak_mib": max(o["peak_mib"] for o in runs["autograd"]),
                         "products": runs["autograd"][-1]["products"],
                         "rel_error": runs["autograd"][-1]["rel_error"],
                         "times": [o["seconds"] for o in runs["autograd"]]},
            "sigma_max_rel_diff": sigma_err, "equal": sigma_err <= SIGMA_RTOL,
        })
        log(f"{n} tokens: ours {t_ours:.2f} s, autograd {t_ref:.2f} s, speed-up "
            f"{t_ref / t_ours:.2f}x, top-{K} sigma max rel diff {sigma_err:.1e}")
    return {"benchmark": "jacobian", "machine": machine(), "quick": args.quick,
            "settings": {"k": K, "block": "krylov_block(n_pos): 128 // n_pos in [1, 8]", "tol": TOL,
                         "lengths": list(args.lengths),
                         "repeats": args.repeats, "sigma_rtol": SIGMA_RTOL,
                         "threads": torch.get_num_threads()},
            "results": results, "ratios": ratios, "ratios_cpu_time": cpu_ratios,
            "rel_error": {name: c["superposition"] for name, c in checks.items()},
            "exactness_checks": checks,
            "targets": {"speed_up": TARGET, "rel_error_float64": 1e-10, "rel_error_float32": 1e-4}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="one repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS),
                   help="prompt lengths in tokens (the issue's: 16 64)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: every core)")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats = 1
    json_main(lambda: run_bench(args))


if __name__ == "__main__":
    main()
