"""The SAE evaluation suite on the default model: wall time and peak memory, against the
straightforward per-metric implementation; and the five-architecture table of the docs.

Setup (cached under `--workspace`, default `benchmarks/out/sae_evals`, reused by later runs):
layer-15 residual activations of SmolLM2-135M-Instruct over 65,536 tokens of the built-in
corpus (`interp.caching.cache_activations`, the demo's hook and corpus), and 4608-latent SAEs
trained on them with `saes.train.Trainer` for 1,048,576 tokens each (top-k k=32 as the demo;
batchtopk k=32; matryoshka_batchtopk k=32 with prefixes 576/1152/2304; jumprelu with an L0
penalty of 0.5; standard with SAELens's recipe: L1 5, lr 1e-3, gradient norm clipped at 1).

Modes:

- default: the full suite (core, probing, absorption, synthetic, autointerp, scr, tpp) on the
  top-k SAE, timed with its peak resident memory, then the same metrics computed the
  straightforward way, the way SAEBench's evals are organised: every metric on every subject
  (the SAE, the random decoder, the neurons, PCA) collects its own model activations (a fresh
  cache per metric and subject), logistic probes by L-BFGS with autograd, SAEBench's SCR/TPP
  probe with `torch.optim.AdamW`. The values must agree (the largest difference of a point value
  is reported) and the ratio is straightforward time / ours. `sae_bench` itself is not run: its
  wheel (0.6.0) pins numpy < 2 and datasets < 4 (this project runs numpy 2 and datasets 5) and its
  evals download their datasets from the Hugging Face Hub when they run, which this machine
  cannot.
- `--table`: the suites on all five architectures (sharing one cache of activations) and a
  Markdown table of value [95% interval] per metric, with the baselines, on stderr.

`--quick` shrinks the data (8k-token store, SAEs trained on 65k tokens, small suites) but keeps
4608 latents; `--suites` runs a subset (comma-separated). The last stdout line is the JSON
result.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import PeakRSS, json_main, log, machine  # noqa: E402

HOOK = "blocks.15.hook_resid_post"
ARCHS = ("topk", "batchtopk", "matryoshka_batchtopk", "jumprelu", "standard")
SUITES = ("core", "probing", "absorption", "synthetic", "autointerp", "scr", "tpp")
FULL = dict(store_tokens=65_536, sae_tokens=1_048_576, d_sae=4608,
            suite=dict(n_windows=384, context_size=64, absorption_words=640,
                       spelling_prompts=128, autointerp_latents=8, autointerp_examples=4,
                       probe_train=800, probe_test=400, lm_windows=8, eval_rows=16_384,
                       synthetic_tokens=1_000_000, synthetic_rows=32_768))
QUICK = dict(store_tokens=8192, sae_tokens=65_536, d_sae=4608,
             suite=dict(n_windows=96, context_size=48, absorption_words=160, spelling_prompts=32,
                        autointerp_latents=3, autointerp_examples=3, probe_train=300,
                        probe_test=150, lm_windows=4, eval_rows=4096, synthetic_tokens=100_000,
                        synthetic_rows=4096, n_bootstrap=200))


def arch_config(arch: str, d_sae: int):
    """(SAEConfig, TrainConfig overrides) of one architecture of the table."""
    from saes.base import SAEConfig

    base = dict(d_in=576, d_sae=d_sae, hook_name=HOOK, model_name="SmolLM2-135M-Instruct")
    extra: dict = {}
    if arch in ("topk", "batchtopk"):
        sae = SAEConfig(architecture=arch, k=32, **base)
    elif arch == "matryoshka_batchtopk":
        sae = SAEConfig(architecture=arch, k=32, matryoshka_widths=(d_sae // 8, d_sae // 4,
                                                                    d_sae // 2), **base)
    elif arch == "jumprelu":
        # thresholds start where ~1% of the (unit-variance) pre-activations pass, with a
        # bandwidth wide enough for them to move within 1M tokens
        sae = SAEConfig(architecture=arch, l0_coefficient=0.5, jumprelu_init_threshold=2.3,
                        jumprelu_bandwidth=0.05, **base)
    else:
        sae = SAEConfig(architecture="standard", l1_coefficient=5.0, **base)
        extra = {"lr": 1e-3, "max_grad_norm": 1.0}
    return sae, extra


def prepare(ws: Path, sizes: dict, archs) -> dict[str, Path]:
    """The store and one trained SAE run per architecture (reused when done)."""
    from interp.caching import cache_activations
    from interp.store import StoreConfig
    from interp.workspace import is_done
    from saes.data import DataConfig
    from saes.runs import train_run
    from saes.train import TrainConfig

    store = ws / "runs" / "activations" / "resid15"
    t0 = time.perf_counter()
    cache_activations(store, StoreConfig(hooks=(HOOK,), n_tokens=sizes["store_tokens"]),
                      progress=False)
    log(f"store: {time.perf_counter() - t0:.0f} s")
    runs = {}
    for arch in archs:
        path = ws / "runs" / "sae" / f"{arch}-{sizes['d_sae']}"
        if not is_done(path):
            sae_cfg, extra = arch_config(arch, sizes["d_sae"])
            cfg = TrainConfig(sae=sae_cfg, total_tokens=sizes["sae_tokens"], batch_size=4096,
                              **extra)
            t0 = time.perf_counter()
            train_run(cfg, DataConfig(activations=str(store)), path, path.name, progress=False,
                      evaluate=False)
            log(f"trained {arch}: {time.perf_counter() - t0:.0f} s")
        runs[arch] = path
    return runs


# --------------------------------------------------------------------------- straightforward
def lbfgs_logistic(x, y, C: float = 1.0, max_iter: int = 200, class_weight=None):
    """scikit-learn's objective by full-batch L-BFGS with autograd (the plain way)."""
    import torch
    import torch.nn.functional as F

    from saes.evals.linear import LinearProbe

    X, t = x.detach().double(), y.detach().double()
    w_row = torch.ones_like(t)
    if class_weight == "balanced":
        n1 = float(t.sum())
        if 0 < n1 < len(t):
            w_row = torch.where(t > 0.5, len(t) / (2 * n1), len(t) / (2 * (len(t) - n1)))
    params = torch.zeros(X.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-9,
                            tolerance_change=1e-12)

    def closure():
        opt.zero_grad()
        z = X @ params[:-1] + params[-1]
        loss = (F.binary_cross_entropy_with_logits(z, t, reduction="none") * w_row).sum()
        loss = loss + (params[:-1] ** 2).sum() / (2 * C)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    p = params.detach()
    return LinearProbe(weight=p[:-1].float(), bias=float(p[-1]))


def straightforward(run: Path, model, settings: dict, suites, work: Path) -> tuple[list, float]:
    """Every (metric, subject) computed on its own: own activations, plain optimisers."""
    from saes.evals import run_suite
    from saes.evals.baselines import make_baseline, mean_l0
    from saes.evals.context import SuiteConfig
    from saes.evals.data import EvalDataConfig, eval_data
    from saes.evals.linear import fit_probe_sgd
    from saes.evals.metrics import absorption, probing, scr_tpp
    from saes.features.runs import load_dictionary

    patches = [(probing, "fit_logistic", lbfgs_logistic),
               (absorption, "fit_logistic", lbfgs_logistic),
               (scr_tpp, "fit_probe_sgd", functools.partial(fit_probe_sgd, reference=True))]
    saved = [(m, n, getattr(m, n)) for m, n, _ in patches]
    for m, n, f in patches:
        setattr(m, n, f)
    rows = []
    t0 = time.perf_counter()
    try:
        sae = load_dictionary(run)[0]
        cfg = dataclasses.replace(SuiteConfig(), **settings)
        dcfg = EvalDataConfig(n_windows=cfg.n_windows, context_size=cfg.context_size, seed=cfg.seed)
        # the baselines are fitted on the same rows as in ours (their own pass of the model)
        data = eval_data(model, HOOK, dcfg, cache=work / "baseline-fit")
        x = data.rows(cfg.eval_rows)
        subjects = {"sae": sae}
        for b in cfg.baselines:
            subjects[b] = make_baseline(b, sae.cfg, x, mean_l0(sae, x), seed=cfg.seed)
        for suite in suites:
            for name, sub in subjects.items():
                if name != "sae" and suite == "synthetic":
                    continue  # the synthetic suite makes its own baselines
                out = work / f"{suite}-{name}"
                kw = {**settings, "data_dir": str(out / "data"), "baselines": ()}
                store = None
                if suite == "core":
                    from interp.store import ActivationStore
                    store = ActivationStore(load_dictionary(run)[1]["activations"])
                    if name in ("neurons", "pca"):
                        kw["lm_windows"] = 0  # exact reconstructions: no spliced model
                if suite == "synthetic":
                    kw["baselines"] = cfg.baselines
                rep = run_suite(sub, suites=(suite,), out=out, model=model, store=store,
                                progress=False, **kw)
                for r in rep["rows"]:
                    if r.get("source") == "synthetic":
                        # absorption fell back to the synthetic hierarchy: like the synthetic
                        # suite it trains its own dictionary and makes its own baselines, so
                        # only the SAE's run counts, under the subjects it names
                        if name == "sae":
                            rows.append(r)
                        continue
                    if r["subject"] == "sae" and suite != "synthetic":
                        r = {**r, "subject": name}
                    rows.append(r)
    finally:
        for m, n, f in saved:
            setattr(m, n, f)
    return rows, time.perf_counter() - t0


def compare(ours: list[dict], theirs: list[dict]) -> dict:
    key = lambda r: (r["suite"], r["metric"], r["subject"], r.get("k"), r.get("top_n"))  # noqa
    a = {key(r): r["value"] for r in ours if r["value"] is not None}
    b = {key(r): r["value"] for r in theirs if r["value"] is not None}
    common = sorted(set(a) & set(b), key=str)
    diffs = {str(k): abs(a[k] - b[k]) for k in common}
    worst = max(diffs, key=diffs.get) if diffs else None
    return {"n_compared": len(common), "max_abs_diff": diffs.get(worst, 0.0), "worst": worst,
            "only_ours": len(set(a) - set(b)), "only_theirs": len(set(b) - set(a))}


# --------------------------------------------------------------------------- table
def fmt(r: dict | None) -> str:
    if r is None or r["value"] is None:
        return "n/a"
    v = f"{r['value']:.3f}"
    if r.get("ci_low") is not None and r["ci_high"] is not None and r["ci_high"] > r["ci_low"]:
        v += f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]"
    return v


TABLE_METRICS = [("core", "explained_variance"), ("core", "l0"), ("core", "ce_loss_score"),
                 ("probing", "top_1_accuracy"), ("probing", "top_5_accuracy"),
                 ("absorption", "mean_absorption_fraction"),
                 ("absorption", "full_absorption_rate"), ("synthetic", "recovery"),
                 ("synthetic", "absorption_fraction"), ("autointerp", "detection_accuracy"),
                 ("autointerp", "fuzzing_accuracy"), ("scr", "scr_top_20"),
                 ("tpp", "tpp_top_20")]


def markdown(reports: dict[str, dict]) -> str:
    from saes.evals.report import find_rows

    cols = list(reports)
    lines = ["| metric | " + " | ".join(cols) + " | random | neurons | pca |",
             "|---" * (len(cols) + 4) + "|"]
    first = reports[cols[0]]
    for suite, metric in TABLE_METRICS:
        cells = [fmt(next(iter(find_rows(rep, suite, metric, "sae")), None))
                 for rep in reports.values()]
        base = [fmt(next(iter(find_rows(first, suite, metric, b)), None))
                for b in ("random", "neurons", "pca")]
        lines.append(f"| {suite} {metric} | " + " | ".join(cells + base) + " |")
    ceiling = next(iter(find_rows(first, "probing", "dense_accuracy", "model")), None)
    spell = next(iter(find_rows(first, "absorption", "spelling_accuracy", "model")), None)
    lines.append(f"\nprobing ceiling (dense probe): {fmt(ceiling)}; model first-letter "
                 f"accuracy: {fmt(spell)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def run() -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--table", action="store_true", help="the five-architecture table")
    ap.add_argument("--no-reference", action="store_true", help="skip the straightforward run")
    ap.add_argument("--reuse", action="store_true",
                    help="--table: reuse a run's report made with the same settings")
    ap.add_argument("--workspace", default=str(Path(__file__).parent / "out" / "sae_evals"))
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--suites", default=",".join(SUITES),
                    help="suites to run, comma-separated (default: all seven)")
    args = ap.parse_args()
    suites = tuple(s.strip() for s in args.suites.split(",") if s.strip())
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from interp.models.loading import load_model
    from saes.evals import run_suite

    sizes = QUICK if args.quick else FULL
    ws = Path(args.workspace) / ("quick" if args.quick else "full")
    archs = ARCHS if args.table else ("topk",)
    runs = prepare(ws, sizes, archs)
    model = load_model()
    settings = dict(sizes["suite"])
    settings["data_dir"] = str(ws / "eval-data")
    result = {"benchmark": "sae_evals", "machine": machine(), "results": [], "ratios": {},
              "settings": {**sizes, "suites": list(suites)}}
    if args.table:
        from saes.evals import SuiteConfig, read_report

        want = dataclasses.replace(SuiteConfig(), suites=suites, **settings).to_dict()
        reports = {}
        for arch, path in runs.items():
            t0 = time.perf_counter()
            if args.reuse and (path / "evals" / "report.json").is_file() and \
                    read_report(path)["config"] == want:
                reports[arch] = read_report(path)
                log(f"{arch}: report of the same settings reused")
            else:
                reports[arch] = run_suite(path, suites=suites, model=model, progress=False,
                                          **settings)
            log(f"{arch}: suite {time.perf_counter() - t0:.0f} s {reports[arch]['timing']}")
            result["results"].append({"architecture": arch, "timing": reports[arch]["timing"],
                                      "rows": reports[arch]["rows"]})
        table = markdown(reports)
        log(table)
        result["table"] = table
        return result

    path = runs["topk"]
    shutil.rmtree(ws / "eval-data", ignore_errors=True)  # time the activations pass too
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        ours = run_suite(path, suites=suites, model=model, progress=False, **settings)
        t_ours = time.perf_counter() - t0
    log(f"ours: {t_ours:.0f} s, peak +{mem.mib:.0f} MiB, {ours['timing']}")
    result["results"].append({"method": "ours", "seconds": t_ours, "peak_rss_mib": mem.mib,
                              "timing": ours["timing"]})
    if not args.no_reference:
        work = ws / "straightforward"
        shutil.rmtree(work, ignore_errors=True)
        with PeakRSS() as mem2:
            rows, t_ref = straightforward(path, model, settings, suites, work)
        log(f"straightforward: {t_ref:.0f} s, peak +{mem2.mib:.0f} MiB")
        result["results"].append({"method": "straightforward", "seconds": t_ref,
                                  "peak_rss_mib": mem2.mib})
        result["values"] = compare(ours["rows"], rows)
        result["ratios"]["vs_straightforward"] = t_ref / t_ours
        log(f"values: {result['values']}")
    return result


if __name__ == "__main__":
    json_main(run)
