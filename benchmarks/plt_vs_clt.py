"""Per-layer transcoders against a cross-layer transcoder on the default model (SmolLM2-135M),
at equal total latents and equal training tokens (`circuits.plt_vs_clt`).

Both sets cover the same layers, train on the same captured rows (one pass of the model over the
corpus, in memory) with the same latents per layer, TopK k, batch, learning rate, steps and seed,
and are scored by `circuits.quality.replacement_quality` on the same prompts: replacement and
completeness scores of each prompt's attribution graph, top-1 agreement and KL of the
replacement model, per-layer normalised MSE. Layers the sets do not cover keep their MLPs (and
are all-error nodes in the graphs), so the graph scores are low for both; compare them between
the two sets, not with the papers' whole-model figures.

Run: `.venv/bin/python benchmarks/plt_vs_clt.py [--layers 0-3] [--tokens N] [--width W]
[--k K] [--prompts N] [--out DIR] [--figure FILE.html] [--quick]`.
The last stdout line is the JSON result: the configuration, the timings and one row per set.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

#: prompts in the training corpus's domain (Python source) and a few of plain English
PROMPTS = [
    "def add(a, b):\n    return a +",
    "import os\nimport sys\n\nif __name__ == \"__main__\":\n    main(",
    "for i in range(len(items)):\n    total +=",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
    "        self.items.",
    "try:\n    value = int(text)\nexcept ValueError:\n    value =",
    "with open(path) as f:\n    lines = f.",
    "def is_even(n):\n    return n % 2 ==",
    "    raise TypeError(\"expected a string, got %s\" %",
    "The capital of France is",
    "One, two, three, four,",
    "The opposite of hot is",
    "She opened the door and walked into the",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", default="0-3")
    ap.add_argument("--tokens", type=int, default=131_072)
    ap.add_argument("--width", type=int, default=1024, help="latents per layer (both sets)")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS))
    ap.add_argument("--out", default="", help="where the two runs go (default: a temp dir)")
    ap.add_argument("--figure", default="", help="write the side-by-side figure here (.html)")
    ap.add_argument("--model", default="", help="default: SmolLM2-135M-Instruct")
    ap.add_argument("--quick", action="store_true", help="a smoke run: few tokens and prompts")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    import torch

    from circuits.plots import fig_replacement_quality
    from circuits.plt_vs_clt import ComparisonConfig, compare_sets, train_pair
    from circuits.quality import QualityConfig
    from circuits.transcoders import parse_layers
    from interp.models.loading import load_model

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    t0 = time.perf_counter()
    model = load_model(args.model or None)
    layers = tuple(parse_layers(args.layers, model.cfg.n_layers))
    tokens, n_prompts = (8192, 2) if args.quick else (args.tokens, args.prompts)
    cfg = ComparisonConfig(layers=layers, tokens=tokens, width=args.width, k=args.k,
                           batch_size=args.batch_size, lr=args.lr)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="plt-vs-clt-"))
    pair = train_pair(model, cfg, out, model_name=args.model or model.name)
    prompts = PROMPTS[:n_prompts]
    qcfg = QualityConfig(batch_size=256)
    res = compare_sets(model, {"PLT": pair.plt, "CLT": pair.clt}, prompts, qcfg,
                       tokens=pair.tokens)
    if args.figure:
        fig = fig_replacement_quality([res["reports"]["PLT"], res["reports"]["CLT"]],
                                      names=[f"PLT ({layers[0]}-{layers[-1]})",
                                             f"CLT ({layers[0]}-{layers[-1]})"])
        fig.write_html(args.figure, include_plotlyjs=True)
    result = {"model": model.name, "config": cfg.to_dict(), "n_prompts": len(prompts),
              "seconds": {**pair.seconds, "total": round(time.perf_counter() - t0, 1)},
              "threads": torch.get_num_threads(), "runs": str(out), "table": res["table"]}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
