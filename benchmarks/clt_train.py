"""Cross-layer transcoder training throughput: ours against a plain PyTorch dense CLT.

No CLT trainer installs here from PyPI (`clt-training` and `crosslayer-coding` have no
distribution on the index), so the reference is a dense CLT written below in plain PyTorch, as
a trainer without sparse kernels would write it: every layer's encoder, top-k per layer by
`topk` + `scatter` into a dense [batch, F] code, every decoder block as a dense matmul, the
summed MSE, `torch.optim.Adam`, unit-norm decoders. Ours is `saes.train.Trainer` with a
`clt` dictionary (its `step_on`: sparse kernels after the selection, fused Adam, dead-latent
and firing counters).

Same data for both: a synthetic set made from a fixed seed (every layer's input x_l Gaussian;
targets from a random sparse "teacher" CLT, so the loss can fall), the same batches in the same
order, the same initial weights, the same steps, lr and k. Both run in this process, timed in
alternating rounds; tokens/s is the median round. "Equal loss": each side's training loss
(summed MSE over layers, mean over rows) on its last steps is reported next to the other's.
The dense-equivalent roofline fraction is each side's dense FLOPs per token (encoder
6*n*F*d, decoder 6*F*d*n(n+1)/2: forward and backward) times tokens/s over the float32
`torch.mm` peak measured in the same run (above 1 where the sparse path skips work).

`--circuit-tracer`: our saved CLT (BatchTopK, written in circuit-tracer's layout) is loaded by
circuit-tracer 0.5.0 in its own venv (`benchmarks/.venvs/circuit-tracer`, the one
`benchmarks/attribution.py` makes), its reconstruction of the same inputs compared with ours;
and a CLT circuit-tracer writes (`to_safetensors`) is loaded by us and compared the same way.

Run: `.venv/bin/python benchmarks/clt_train.py [--quick] [--device D] [--circuit-tracer]`.
The last stdout line is the JSON result with `ratios.vs_dense_pytorch` (ours / reference
tokens/s).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

IN, OUT = "blocks.{layer}.ln2.hook_normalized", "blocks.{layer}.hook_mlp_out"


def make_data(n_layers: int, d: int, rows: int, seed: int = 0):
    """{hook: [rows, d]}: Gaussian inputs, targets from a sparse random teacher CLT."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, n_layers, d, generator=g)
    f_t = 4 * d
    enc = torch.randn(n_layers, f_t, d, generator=g) / d ** 0.5
    dec = torch.randn(n_layers, f_t, n_layers, d, generator=g) / f_t ** 0.5
    pre = torch.einsum("bld,lfd->blf", x, enc)
    a = torch.relu(pre - 1.5)  # sparse
    y = torch.zeros(rows, n_layers, d)
    for l_ in range(n_layers):
        y[:, l_:] += torch.einsum("bf,fmd->bmd", a[:, l_], dec[l_, :, l_:])
    y += 0.05 * torch.randn(rows, n_layers, d, generator=g)
    data = {IN.format(layer=i): x[:, i].contiguous() for i in range(n_layers)}
    data.update({OUT.format(layer=i): y[:, i].contiguous() for i in range(n_layers)})
    return data


class DenseCLT:
    """The reference: a dense top-k CLT in plain PyTorch."""

    def __init__(self, ours, device, lr: float):
        import torch

        n, f, d = ours.n_layers, ours.n_latents, ours.d_in
        self.n, self.f, self.d, self.k = n, f, d, ours.cfg.k
        p = lambda t: torch.nn.Parameter(t.detach().clone().to(device))
        self.W_enc = p(torch.stack(list(ours.encoders)))
        self.b_enc = p(torch.stack(list(ours.enc_biases)))
        self.W_dec = [p(ours.decoder(i)) for i in range(n)]
        self.b_dec = p(ours.b_dec.view(n, d))
        self.params = [self.W_enc, self.b_enc, *self.W_dec, self.b_dec]
        self.opt = torch.optim.Adam(self.params, lr=lr)

    def step(self, x, y):
        import torch

        B = x.shape[0]
        x, y = x.view(B, self.n, self.d), y.view(B, self.n, self.d)
        pre = torch.einsum("bld,lfd->blf", x, self.W_enc) + self.b_enc
        vals, idx = pre.topk(self.k, dim=-1)
        acts = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        recon = self.b_dec.expand(B, self.n, self.d)
        outs = [recon[:, m] for m in range(self.n)]
        for i in range(self.n):
            w = torch.einsum("bf,fmd->bmd", acts[:, i], self.W_dec[i])
            for m in range(i, self.n):
                outs[m] = outs[m] + w[:, m - i]
        loss = (y - torch.stack(outs, 1)).pow(2).sum(-1).sum(-1).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            for w in self.W_dec:
                flat = w.view(self.f, -1)
                flat.div_(flat.norm(dim=1, keepdim=True).clamp_min(1e-8))
        return loss.detach()


def matmul_peak(device, n: int = 2048, repeats: int = 5) -> float:
    """Measured float32 matmul FLOP/s on `device`."""
    import torch

    from benchmarks.common import device_clock

    clock = device_clock(device)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    torch.mm(a, b, out=out)
    best = math.inf
    for _ in range(repeats):
        t = clock()
        torch.mm(a, b, out=out)
        best = min(best, clock() - t)
    return 2 * n ** 3 / best


def run(args) -> dict:
    import torch

    from benchmarks.common import device_clock, log, machine
    from saes.base import SAEConfig
    from saes.train import TrainConfig, Trainer

    device = torch.device(args.device)
    n, d, f, k, B = args.layers, args.d_model, args.latents, args.k, args.batch
    steps = args.steps
    data = make_data(n, d, B * steps, seed=0)
    x_all = torch.cat([data[IN.format(layer=i)] for i in range(n)], 1)
    y_all = torch.cat([data[OUT.format(layer=i)] for i in range(n)], 1)
    scale_in = math.sqrt(n * d) / float(x_all.norm(dim=1).mean())
    scale_out = math.sqrt(n * d) / float(y_all.norm(dim=1).mean())
    batches = [((x_all[s * B:(s + 1) * B] * scale_in).to(device),
                (y_all[s * B:(s + 1) * B] * scale_out).to(device)) for s in range(steps)]
    sae = SAEConfig(architecture="clt", d_in=d, d_sae=f * n, k=k, transcoder=True,
                    clt_layers=tuple(range(n)), hook_name=IN, hook_name_out=OUT)
    cfg = TrainConfig(sae=sae, total_tokens=B * steps, batch_size=B, lr=args.lr,
                      checkpoint_every=0, log_every=10 ** 9, normalise=False,
                      b_dec_init="zeros", device=str(device))
    clock = device_clock(device)
    tmp = Path(tempfile.mkdtemp(prefix="clt-bench-"))
    losses: dict[str, list[float]] = {"ours": [], "dense_pytorch": []}

    def ours():
        t = Trainer(cfg, tmp / f"ours-{len(losses['ours'])}", data, progress=False,
                    check_memory=False)
        t.begin()
        try:
            start = clock()
            out = [t.step_on(x, y).parts["mse"] for x, y in batches]
            dt = clock() - start
        finally:
            t.close()
        losses["ours"].append(float(torch.stack(out[-max(1, steps // 5):]).mean()))
        return dt

    def ref():
        from saes.architectures import create_sae

        m = DenseCLT(create_sae(sae, seed=0), device, args.lr)
        start = clock()
        out = [m.step(x, y) for x, y in batches]
        dt = clock() - start
        losses["dense_pytorch"].append(float(torch.stack(out[-max(1, steps // 5):]).mean()))
        return dt

    # the timed quantity is the training loop alone (each function returns its seconds);
    # the two alternate round by round so background load falls on both alike
    methods = {"ours": ours, "dense_pytorch": ref}
    for fn in methods.values():
        fn()  # warm-up (allocations, kernels), not counted
    for v in losses.values():
        v.clear()
    loop_s = {name: [] for name in methods}
    for r in range(args.repeats):
        for name in (list(methods) if r % 2 == 0 else list(methods)[::-1]):
            loop_s[name].append(methods[name]())
            log(f"  round {r + 1}: {name} {B * steps / loop_s[name][-1]:,.0f} tok/s")
    import statistics

    tps = {k: B * steps / statistics.median(v) for k, v in loop_s.items()}
    flops_per_token = 6 * n * f * d + 6 * f * d * n * (n + 1) / 2
    peak = matmul_peak(device)
    result = {
        "benchmark": "clt_train", "device": str(device), "machine": machine(),
        "config": {"layers": n, "d_model": d, "latents_per_layer": f, "k": k, "batch": B,
                   "steps": steps, "lr": args.lr, "repeats": args.repeats},
        "tokens_per_s": {k_: round(v, 1) for k_, v in tps.items()},
        "final_loss": {k_: round(statistics.median(v), 4) for k_, v in losses.items() if v},
        # dense-equivalent FLOPs per second over the matmul peak: above 1 where the sparse
        # path skips work the dense computation does
        "dense_equivalent_roofline_fraction": {k_: round(v * flops_per_token / peak, 4)
                                               for k_, v in tps.items()},
        "matmul_peak_gflops": round(peak / 1e9, 1),
        "ratios": {"vs_dense_pytorch": round(tps["ours"] / tps["dense_pytorch"], 3)},
        "reference_note": "clt-training and crosslayer-coding do not install from PyPI; the "
                          "reference is the plain PyTorch dense CLT in this file",
    }
    if args.circuit_tracer:
        result["circuit_tracer"] = circuit_tracer_check(tmp, n, d, f)
    return result


# --------------------------------------------------------------------------- circuit-tracer
def circuit_tracer_check(tmp: Path, n: int, d: int, f: int) -> dict:
    """Our CLT -> circuit-tracer, and circuit-tracer's CLT -> us: reconstructions compared."""
    import torch
    from safetensors.torch import load_file, save_file

    from benchmarks.attribution import ensure_venv
    from saes.architectures import create_sae
    from saes.base import SAEConfig
    from saes.formats.clt import load_clt, save_clt

    py = ensure_venv()
    cfg = SAEConfig(architecture="clt", d_in=d, d_sae=f * n, k=8, transcoder=True,
                    clt_layers=tuple(range(n)), clt_activation="batchtopk",
                    hook_name=IN, hook_name_out=OUT)
    clt = create_sae(cfg, seed=1)
    with torch.no_grad():
        clt.threshold.copy_(torch.linspace(0.2, 0.4, n))
        clt.b_dec.normal_(0, 0.1, generator=torch.Generator().manual_seed(2))
        for b in clt.enc_biases:
            b.normal_(0, 0.1, generator=torch.Generator().manual_seed(3))
    save_clt(clt, tmp / "ours")
    x = torch.randn(n, 16, d, generator=torch.Generator().manual_seed(4))
    save_file({"x": x}, str(tmp / "x.safetensors"))
    spec = {"ours": str(tmp / "ours"), "theirs": str(tmp / "theirs"),
            "x": str(tmp / "x.safetensors"),
            "out": str(tmp / "ct.safetensors"), "n": n, "d": d, "f": f}
    (tmp / "spec.json").write_text(json.dumps(spec))
    t0 = time.perf_counter()
    res = subprocess.run([str(py), __file__, "--worker", str(tmp / "spec.json")],
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        return {"ok": False, "error": res.stderr[-2000:]}
    got = load_file(spec["out"])
    with torch.no_grad():
        mine = clt(x.transpose(0, 1)).transpose(0, 1)
        theirs_clt = load_clt(spec["theirs"])
        mine_of_theirs = theirs_clt(x.transpose(0, 1)).transpose(0, 1)
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max())
    return {"ok": True, "seconds": round(time.perf_counter() - t0, 1),
            "ours_in_circuit_tracer_max_rel_err": rel(got["recon_ours"], mine),
            "theirs_in_ours_max_rel_err": rel(mine_of_theirs, got["recon_theirs"]),
            "active_fraction": float((clt.encode(x.transpose(0, 1)) > 0).float().mean())}


def worker(spec_path: str) -> None:
    """Runs inside the circuit-tracer venv."""
    import torch
    from safetensors.torch import load_file, save_file

    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt

    spec = json.loads(Path(spec_path).read_text())
    x = load_file(spec["x"])["x"]
    cpu = torch.device("cpu")
    ours = load_clt(spec["ours"], feature_input_hook="mlp.hook_in",
                    feature_output_hook="hook_mlp_out", device=cpu, dtype=torch.float32,
                    lazy_decoder=False)
    n, d, f = spec["n"], spec["d"], spec["f"]
    theirs = CrossLayerTranscoder(n, f, d, activation_function="jump_relu", lazy_decoder=False,
                                  device=cpu, dtype=torch.float32)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, generator=g) / d ** 0.5)
        theirs.activation_function.threshold.copy_(
            torch.rand(theirs.activation_function.threshold.shape, generator=g) * 0.3)
        theirs.to_safetensors(spec["theirs"])
        save_file({"recon_ours": ours(x).float().contiguous(),
                   "recon_theirs": theirs(x).float().contiguous()}, spec["out"])


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, a few steps")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--latents", type=int, default=4096, help="per layer")
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--circuit-tracer", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.d_model, args.latents, args.batch, args.steps, args.repeats = (
            3, 128, 1024, 512, 8, 2)
    from benchmarks.common import json_main

    json_main(lambda: run(args))


if __name__ == "__main__":
    main()
