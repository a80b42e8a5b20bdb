"""Activation capture throughput: our store against HF, TransformerLens and SAELens.

On the default model (SmolLM2-135M-Instruct, fp32, CPU) every method caches
`blocks.15.hook_resid_post` for the same token windows (the default corpus, 128-token windows
with BOS, batches of 16), in one process, round-robin, median of repeats:

- ours: `interp.caching.cache_activations`, end to end: corpus text tokenised, forward stopped
  after layer 15, safetensors shards + manifest written to a fresh temp dir;
- (a) full_forward: a bare HF forward of the whole model (`use_cache=False`), no hooks;
- (b) transformer_lens: `TransformerBridge.run_with_cache(names_filter=["blocks.15.hook_out"])`,
  full forward, activations kept in memory;
- (c) saelens: `CacheActivationsRunner` (its own caching to an Arrow dataset on disk) on
  SAELens's `AutoModelForCausalLM` wrapper of the same weights, fed the same windows as a
  pretokenized dataset (so it does not pay for tokenising);
- (d) truncated_forward: the HF base model stopped right after layer 15, no hooks, no disk:
  the limit for capturing that layer.

`--device cuda` runs every method on the GPU (the same weights, the windows copied there once;
each timed call ends with a device synchronisation); the issue's GPU targets are >= 0.9x the
truncated forward and >= 1.3x SAELens.

Run: `.venv/bin/python benchmarks/capture.py [--quick] [--tokens N] [--repeats R] [--device D]`
(`--quick`: 4k tokens, 2 repeats, under a minute once the model is cached; default: 65,536
tokens, 3 repeats, about 15 minutes on 2 idle cores). The last stdout line is the JSON result;
`ratios` are ours / theirs in median tokens/s; `ratios_best_of` use each method's fastest
repeat (on a shared machine, bursts of background load hit single repeats hard).
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")  # SAELens's and transformers' bars; we log rounds

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks.common import (Method, add_device_arg, json_main, log, machine,  # noqa: E402
                               round_robin, summary, synced)

HOOK = "blocks.15.hook_resid_post"  # ours
TL_HOOK = "blocks.15.hook_out"  # the bridge's canonical name for the same point
SL_HOOK = "model.layers.15"  # SAELens's HookedProxyLM names HF modules
LAYER = 15
CTX, BATCH, SHARD_WINDOWS = 128, 16, 128
ATOL = 1e-5
TARGETS = {"vs_truncated_forward": 0.9, "vs_transformer_lens": 1.5, "vs_saelens": 1.5}
TARGETS_GPU = {"vs_truncated_forward": 0.9, "vs_saelens": 1.3}


class _Stop(Exception):
    """Raised by the pre-hook that ends the truncated forward."""


def _raise_stop(module, args):
    raise _Stop


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="4k tokens, 2 repeats (< 1 min)")
    p.add_argument("--tokens", type=int, default=None,
                   help="tokens per method per repeat (rounded up to whole batches of 16x128)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (quick 2, full 3)")
    p.add_argument("--budget-s", type=float, default=900.0,
                   help="max seconds of timed runs per method; a slower one gets fewer repeats")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    add_device_arg(p)
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    import datasets
    import sae_lens
    import sae_lens.cache_activations_runner as sl_runner
    from sae_lens.load_model import load_model as sl_load_model
    from transformer_lens.model_bridge import TransformerBridge

    from interp.caching import cache_activations
    from interp.data import CorpusSpec, token_windows
    from interp.devices import device_name, resolve_device
    from interp.models.loading import default_model_dir, load_model
    from interp.store import ActivationStore, StoreConfig

    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    targets = TARGETS_GPU if device.type == "cuda" else TARGETS
    load_start = [round(x, 2) for x in os.getloadavg()]
    datasets.disable_progress_bars()
    torch.set_num_threads(args.threads)
    per_batch = CTX * BATCH
    n_tokens = args.tokens or (4096 if args.quick else 65_536)
    n_tokens = -(-n_tokens // per_batch) * per_batch
    repeats = args.repeats or (2 if args.quick else 3)
    n_windows = n_tokens // CTX

    log(f"capture benchmark: {n_tokens:,} tokens ({n_windows} windows of {CTX}), "
        f"{repeats} repeats, {torch.get_num_threads()} threads, on {device} "
        f"({device_name(device)})")
    hooked = load_model(None, device=device)  # torch-hooks backend
    hf, tok = hooked.hf_model, hooked.tokenizer
    windows = token_windows(CorpusSpec(), tok, CTX, n_tokens, prepend_bos=True)
    if windows.shape[0] != n_windows:
        raise SystemExit(f"The default corpus gave {windows.shape[0]} windows, not {n_windows}.")
    batches = [b.to(device) for b in windows.split(BATCH)]  # on the device once, for the others

    log("booting TransformerBridge on a copy of the model ...")
    bridge = TransformerBridge.boot_transformers(hooked.name, hf_model=copy.deepcopy(hf),
                                                 tokenizer=tok)
    bridge.eval()
    log("loading the model through SAELens (AutoModelForCausalLM -> HookedProxyLM) ...")
    model_dir = str(default_model_dir())
    sl_model = sl_load_model("AutoModelForCausalLM", model_dir, device=str(device),
                             model_from_pretrained_kwargs={"dtype": torch.float32,
                                                           "attn_implementation": "eager"})

    tmp = Path(tempfile.mkdtemp(prefix="bench-capture-"))
    datasets.Dataset.from_dict({"input_ids": windows.tolist()}).save_to_disk(str(tmp / "pretok"))
    counter = iter(range(10**9))

    # ------------------------------------------------------------------ the methods
    def ours(n: int = n_tokens) -> Path:
        out = tmp / f"ours-{next(counter)}"
        cfg = StoreConfig(hooks=(HOOK,), n_tokens=n, context_size=CTX, batch_size=BATCH,
                          shard_windows=SHARD_WINDOWS, drop_bos=False, outlier_ratio=None,
                          device=str(device))
        cache_activations(out, cfg, model=hooked, progress=False)
        return out

    def ours_after(out: Path) -> dict:
        store = ActivationStore(out)
        facts = {"rows": len(store), "bytes": _dir_bytes(out),
                 "tokens_match": bool(torch.equal(store.tokens().long(), windows))}
        shutil.rmtree(out)
        return facts

    @torch.no_grad()
    def full_forward(bs=batches) -> None:
        for b in bs:
            hf(b, use_cache=False)

    @torch.no_grad()
    def truncated_forward(bs=batches) -> None:
        handle = hf.model.layers[LAYER + 1].register_forward_pre_hook(_raise_stop)
        try:
            for b in bs:
                try:
                    hf.model(b, use_cache=False)
                except _Stop:
                    pass
        finally:
            handle.remove()

    @torch.no_grad()
    def transformer_lens(bs=batches) -> list[torch.Tensor]:
        acts = []
        for b in bs:
            _, cache = bridge.run_with_cache(b, names_filter=[TL_HOOK])
            acts.append(cache[TL_HOOK])
        return acts

    def tl_after(acts) -> dict:
        return {"rows": sum(a.shape[0] * a.shape[1] for a in acts)}

    def sl_config(n: int, out: Path):
        buffer_tokens = min(n, SHARD_WINDOWS * CTX)  # one Arrow shard per 128 windows, as ours
        d_in = hf.config.hidden_size
        cfg = sae_lens.CacheActivationsRunnerConfig(
            dataset_path=str(tmp / "pretok"), model_name=model_dir,
            model_class_name="AutoModelForCausalLM", hook_name=SL_HOOK, d_in=d_in,
            model_batch_size=BATCH, training_tokens=n, context_size=CTX, prepend_bos=True,
            new_cached_activations_path=str(out), shuffle=False, dtype="float32",
            device=str(device),
            buffer_size_gb=(buffer_tokens * d_in * 4 + 0.5) / 1e9)
        # SAELens silently wraps around the dataset if the buffers ask for more tokens than n.
        assert cfg.n_tokens_in_buffer == buffer_tokens and cfg.n_buffers * buffer_tokens == n, (
            cfg.n_tokens_in_buffer, cfg.n_buffers)
        return cfg

    def saelens(n: int = n_tokens) -> Path:
        out = tmp / f"saelens-{next(counter)}"
        cfg = sl_config(n, out)
        pretok = datasets.Dataset.load_from_disk(str(tmp / "pretok"))
        # The runner loads its model in __init__; hand it the one loaded above, once.
        with mock.patch.object(sl_runner, "load_model", lambda **kw: sl_model):
            runner = sl_runner.CacheActivationsRunner(cfg, override_dataset=pretok)
        runner.run()
        return out

    def sl_after(out: Path) -> dict:
        ds = datasets.Dataset.load_from_disk(str(out)).with_format("torch")
        facts = {"rows": len(ds) * CTX, "bytes": _dir_bytes(out),
                 "tokens_match": bool(torch.equal(ds[:]["token_ids"].long(), windows))}
        del ds
        shutil.rmtree(out)
        return facts

    # ------------------------------------------------------------------ warm-up + checks
    log("warm-up (one batch each) and correctness check on window 0 ...")
    with torch.no_grad():
        ref = hf(batches[0], use_cache=False,
                 output_hidden_states=True).hidden_states[LAYER + 1].cpu()
    full_forward(batches[:1])
    truncated_forward(batches[:1])
    warm_ours = ActivationStore(ours(per_batch))
    s0 = warm_ours.shard(0)
    tl_acts = transformer_lens(batches[:1])[0]
    warm_sl = datasets.Dataset.load_from_disk(str(saelens(per_batch))).with_format("torch")
    checks = {
        "atol": ATOL,
        "ours_max_abs_diff": float((s0[warm_ours.hooks[0]][:CTX] - ref[0]).abs().max()),
        "ours_tokens_match": bool(torch.equal(s0["tokens"][0].long(), windows[0])),
        "ours_positions_match": bool(torch.equal(s0["positions"][:CTX].long(), torch.arange(CTX))),
        "transformer_lens_max_abs_diff": float((tl_acts[0].cpu() - ref[0]).abs().max()),
        "saelens_max_abs_diff": float((warm_sl[0][SL_HOOK].cpu() - ref[0]).abs().max()),
        "saelens_tokens_match": bool(torch.equal(warm_sl[0]["token_ids"].long(), windows[0])),
    }
    del warm_ours, s0, warm_sl, tl_acts
    for p in tmp.iterdir():
        if p.name != "pretok":
            shutil.rmtree(p)
    log("  " + ", ".join(f"{k}={v}" for k, v in checks.items()))

    # ------------------------------------------------------------------ timed rounds
    methods = [
        Method("ours", synced(ours, device), ours_after),
        Method("truncated_forward", synced(truncated_forward, device)),
        Method("full_forward", synced(full_forward, device)),
        Method("transformer_lens", synced(transformer_lens, device), tl_after),
        Method("saelens", synced(saelens, device), sl_after),
    ]
    log(f"timing {len(methods)} methods round-robin ...")
    try:
        round_robin(methods, repeats, budget_s=args.budget_s, work=n_tokens)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    results = [summary(m, n_tokens) for m in methods]
    def ratios_of(key: str) -> dict[str, float]:
        rate = {r["method"]: r[key] for r in results}
        return {"vs_truncated_forward": rate["ours"] / rate["truncated_forward"],
                "vs_transformer_lens": rate["ours"] / rate["transformer_lens"],
                "vs_saelens": rate["ours"] / rate["saelens"],
                "vs_full_forward": rate["ours"] / rate["full_forward"]}

    ratios = ratios_of("tokens_per_s")  # medians: the contract's numbers
    best = ratios_of("max")  # fastest repeat of each: less hurt by bursts of background load
    for m in methods:  # every repeat of every method covered all the tokens
        for f in m.facts:
            checks.setdefault(f"{m.name}_rows_ok", True)
            checks[f"{m.name}_rows_ok"] &= f["rows"] == n_tokens and f.get("tokens_match", True)
        if m.facts and "bytes" in m.facts[0]:
            checks[f"{m.name}_bytes_on_disk"] = m.facts[0]["bytes"]
    diffs_ok = all(checks[k] <= ATOL for k in checks if k.endswith("max_abs_diff"))
    checks["pass"] = diffs_ok and all(v for k, v in checks.items()
                                      if k.endswith(("_match", "_ok")))

    for r in results:
        log(f"{r['method']:>18}: {r['tokens_per_s']:8,.0f} tok/s "
            f"(min {r['min']:,.0f}, max {r['max']:,.0f}, {r['repeats']} repeats)")
    for k, v in ratios.items():
        target = f" (target >= {targets[k]})" if k in targets else ""
        log(f"{k:>22}: {v:.2f}x (best-of: {best[k]:.2f}x){target}")

    return {
        "benchmark": "capture",
        "machine": machine(("torch", "transformers", "transformer-lens", "sae-lens",
                            "datasets", "safetensors")),
        "device": {"spec": args.device, "resolved": str(device), "name": device_name(device)},
        "config": {
            "mode": "quick" if args.quick else "full", "model": hooked.name, "dtype": "float32",
            "n_tokens": n_tokens, "n_windows": n_windows, "context_size": CTX,
            "batch_size": BATCH, "shard_windows": SHARD_WINDOWS, "repeats": repeats,
            "warmup": f"1 call per method on one batch ({per_batch} tokens)",
            "budget_s_per_method": args.budget_s, "loadavg_at_start": load_start, "threads": torch.get_num_threads(),
            "corpus": "interp.data.CorpusSpec() (cpython docs + stdlib), BOS per window",
            "hooks": {"ours": HOOK, "transformer_lens": TL_HOOK, "saelens": SL_HOOK},
            "saelens_method": "CacheActivationsRunner.run() (Arrow dataset on disk, "
                              "shuffle=False, 128-window buffers) on sae_lens.load_model("
                              "'AutoModelForCausalLM') = HookedProxyLM, pretokenized windows via "
                              "override_dataset=Dataset.load_from_disk(...); model load untimed",
            "truncated_forward": "hf.model (no lm_head) with a pre-hook on layers[16] that "
                                 "raises; no capture hooks",
            "ours_includes": "tokenising the corpus text, forward to layer 15, writing shards",
        },
        "results": results,
        "ratios": ratios,
        "ratios_best_of": best,
        "targets": targets,
        "meets_targets": {k: ratios[k] >= t for k, t in targets.items()},
        "checks": checks,
    }


if __name__ == "__main__":
    json_main(lambda: run(_parse()))
