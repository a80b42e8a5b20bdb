"""Loading pretrained dictionaries by name: ours against SAELens's `SAE.from_pretrained`.

Both read the same files from one Hugging Face cache directory (offline; the files are written
here with random weights at the real releases' shapes), in one process, round-robin, median
of repeats:

- gemma_scope: `gemma-scope-2b-pt-res-canonical` `layer_12/width_16k/canonical` (params.npz,
  2304 x 16384; `--quick`: the `gemma-scope-2b-pt-res` 4k embedding SAE, 2304 x 4096);
- saelens_dir: `pythia-70m-deduped-res-sm` `blocks.3.hook_resid_post` (a SAELens directory,
  512 x 32768);
- llama_scope: `llama_scope_lxr_8x` `l15r_8x` (hyperparams.json + safetensors, 4096 x 8192
  here instead of 32768 to bound disk and memory; the norm scaling factor is folded in);
- registry: the first lookup in a process (ours reads its JSON copy of SAELens's registry,
  SAELens parses `pretrained_saes.yaml`).

After timing, each pair is checked: the same latents and outputs on random inputs (relative
max error). Run: `.venv/bin/python benchmarks/pretrained.py [--quick] [--repeats R]`. The last
stdout line is the JSON result; `ratios` are ours / SAELens in median seconds (below 1: ours
is faster).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import warnings
from pathlib import Path

_CACHE = tempfile.mkdtemp(prefix="pretrained-bench-hf-")
os.environ["HF_HUB_CACHE"] = _CACHE  # before huggingface_hub is imported: both libraries
os.environ["HF_HUB_OFFLINE"] = "1"  # read this cache and never the network
os.environ.setdefault("TQDM_DISABLE", "1")

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from benchmarks.common import Method, json_main, log, machine, round_robin  # noqa: E402

COMMIT = "0" * 40


def _put(repo_id: str, files: dict) -> None:
    root = Path(_CACHE) / f"models--{repo_id.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    for rel, data in files.items():
        path = root / "snapshots" / COMMIT / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            np.savez(path, **{k: v.numpy() for k, v in data.items()})
        elif path.suffix == ".safetensors":
            save_file({k: v.contiguous() for k, v in data.items()}, str(path))
        else:
            import json

            path.write_text(json.dumps(data))


def _mats(d: int, n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"W_enc": torch.randn(d, n, generator=g) / math.sqrt(d),
            "W_dec": torch.randn(n, d, generator=g) / math.sqrt(n),
            "b_enc": torch.randn(n, generator=g) * 0.1, "b_dec": torch.randn(d, generator=g)}


def write_cases(quick: bool) -> list[tuple[str, str, str, int]]:
    """(case, release, id, d_in) for each timed dictionary, its files in the cache."""
    from saes.pretrained.registry import entry

    cases = []
    rel, sid = (("gemma-scope-2b-pt-res", "embedding/width_4k/average_l0_6") if quick else
                ("gemma-scope-2b-pt-res-canonical", "layer_12/width_16k/canonical"))
    e = entry(rel, sid)
    m = _mats(2304, 4096 if quick else 16384, 0)
    m["threshold"] = torch.full((m["b_enc"].numel(),), 0.05)
    _put(e.repo_id, {f"{e.path}/params.npz": m})
    cases.append(("gemma_scope", rel, sid, 2304))

    rel, sid = "pythia-70m-deduped-res-sm", "blocks.3.hook_resid_post"
    e = entry(rel, sid)
    cfg = {"d_in": 512, "d_sae": 32768, "hook_point": sid, "dtype": "float32",
           "model_name": "pythia-70m-deduped", "apply_b_dec_to_input": True}
    _put(e.repo_id, {f"{e.path}/cfg.json": cfg,
                     f"{e.path}/sae_weights.safetensors": _mats(512, 32768, 1)})
    cases.append(("saelens_dir", rel, sid, 512))

    rel, sid, n = "llama_scope_lxr_8x", "l15r_8x", 8192
    e = entry(rel, sid)
    m = _mats(4096, n, 2)
    hp = {"d_model": 4096, "d_sae": n, "hook_point_in": "blocks.15.hook_resid_post",
          "hook_point_out": "blocks.15.hook_resid_post", "jump_relu_threshold": 0.01,
          "dataset_average_activation_norm": {"in": 20.0, "out": 20.0}}
    _put(e.repo_id, {f"{e.path}/hyperparams.json": hp,
                     f"{e.path}/checkpoints/final.safetensors": {
                         "encoder.weight": m["W_enc"].T, "encoder.bias": m["b_enc"],
                         "decoder.weight": m["W_dec"].T, "decoder.bias": m["b_dec"]}})
    cases.append(("llama_scope", rel, sid, 4096))
    return cases


def _agreement(ours, theirs, d: int, scale: float) -> dict:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(64, d, generator=g) * scale
    with torch.no_grad():
        z = theirs.encode(x)
        zo = ours.encode(x)
        y, yo = theirs.decode(z), ours(x)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))  # noqa: E731
    return {"latents_rel_err": rel(zo, z), "output_rel_err": rel(yo, y),
            "active_latents": int((z != 0).sum())}


def run(quick: bool, repeats: int) -> dict:
    warnings.filterwarnings("ignore")
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saes.pretrained.load import load_pretrained
    from saes.pretrained.registry import entry, releases

    releases()  # build our JSON copy of the registry once (a one-off, like a first install)
    log(f"writing files into {_CACHE}")
    cases = write_cases(quick)
    results, ratios = [], {}
    for case, rel, sid, d in cases:
        log(f"{case}: {rel} / {sid}")
        ours = Method("ours", lambda r=rel, s=sid: load_pretrained(r, s))
        theirs = Method("saelens", lambda r=rel, s=sid: SAE.from_pretrained(r, s))
        round_robin([ours, theirs], repeats)
        scale = 1 / (entry(rel, sid).norm_scaling_factor or 1)
        check = _agreement(ours.run(), theirs.run(), d, scale)
        med = {m.name: sorted(m.times)[len(m.times) // 2] for m in (ours, theirs)}
        results.append({"case": case, "release": rel, "sae_id": sid,
                        "seconds_ours": med["ours"], "seconds_saelens": med["saelens"], **check})
        ratios[f"load_{case}"] = med["ours"] / med["saelens"]

    def ours_registry():
        releases.cache_clear()
        return releases()

    def saelens_registry():
        get_pretrained_saes_directory.cache_clear()
        return get_pretrained_saes_directory()

    a, b = Method("ours", ours_registry), Method("saelens", saelens_registry)
    round_robin([a, b], repeats)
    med = {m.name: sorted(m.times)[len(m.times) // 2] for m in (a, b)}
    results.append({"case": "registry", "seconds_ours": med["ours"],
                    "seconds_saelens": med["saelens"]})
    ratios["registry_first_lookup"] = med["ours"] / med["saelens"]
    return {"benchmark": "pretrained", "machine": machine(("torch", "sae-lens")),
            "quick": quick, "results": results, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Smaller Gemma Scope file, 2 repeats.")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    try:
        json_main(lambda: run(args.quick, repeats))
    finally:
        import shutil

        shutil.rmtree(_CACHE, ignore_errors=True)


if __name__ == "__main__":
    main()
