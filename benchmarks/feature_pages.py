"""Feature-page latency: write the feature tables of a 16,384-latent dictionary (random data,
20 contexts of 20 tokens per latent, 160 histogram bins, 10+10 logit tokens, a 49,152-token vocab)
and time `FeatureIndex.page` on random latents and a token search (DuckDB over Parquet).

No anchor library serves feature pages from files, so there are no ratios; the issue's target is
"well under a second" per page. `--quick` times 10 pages instead of 50.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import json_main, log, machine  # noqa: E402


def run() -> dict:
    import numpy as np
    import torch

    from saes.features.index import FeatureIndex, write_feature_tables
    from saes.features.stats import FeatureStatsConfig

    quick = "--quick" in sys.argv
    N, n, C, V = 16_384, 20, 20, 49_152
    cfg = FeatureStatsConfig()
    rng = np.random.default_rng(0)
    stats = {"count": rng.integers(0, 1000, N), "density": rng.random(N) * 0.01,
             "mean_act": rng.random(N), "mean_act_all": rng.random(N), "max_act": rng.random(N),
             "q50": rng.random(N), "q90": rng.random(N), "q99": rng.random(N),
             "hist": rng.integers(0, 50, (N, cfg.hist_bins)),
             "top_vals": np.sort(rng.random((N, n)))[:, ::-1].copy(),
             "top_window": rng.integers(0, 1000, (N, n)), "top_pos": rng.integers(0, 128, (N, n)),
             "ctx_tokens": rng.integers(0, V, (N, n, C)).astype(np.int32),
             "ctx_acts": rng.random((N, n, C)).astype(np.float32), "n_tokens": np.int64(10**6)}
    g = torch.Generator().manual_seed(0)
    logits = (torch.randint(0, V, (N, 10), generator=g), torch.randn(N, 10, generator=g),
              torch.randint(0, V, (N, 10), generator=g), torch.randn(N, 10, generator=g))
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        write_feature_tables(d, stats, [f"t{i}" for i in range(V)],
                             {"config": cfg.to_dict(), "hist_edges_log10": cfg.hist_edges()}, logits)
        write_s = time.perf_counter() - t
        t = time.perf_counter()
        idx = FeatureIndex(d)
        _ = idx.vocab
        open_s = time.perf_counter() - t
        pages = []
        for latent in rng.integers(0, N, 10 if quick else 50):
            t = time.perf_counter()
            idx.page(int(latent))
            pages.append(time.perf_counter() - t)
        t = time.perf_counter()
        idx.search("t123")
        search_s = time.perf_counter() - t
        idx.close()
    log(f"write {write_s:.2f}s, open {open_s:.3f}s, page median {statistics.median(pages):.4f}s")
    return {"benchmark": "feature_pages", "machine": machine(("duckdb", "pyarrow")),
            "results": [{"d_sae": N, "write_s": round(write_s, 3), "open_s": round(open_s, 3),
                         "page_median_s": round(statistics.median(pages), 4),
                         "page_max_s": round(max(pages), 4), "search_s": round(search_s, 3)}],
            "ratios": {}}


if __name__ == "__main__":
    json_main(run)
