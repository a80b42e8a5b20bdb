"""Training checkpoints that resume bit-exactly: a module's weights, its optimiser's state,
any extra counters (safetensors), and a JSON of the rest (step, scales, config). The tensors
are streamed to the file one at a time from where they live (no copy of the whole state in
memory) and read back onto the devices of the module's parameters, so a run started on one
device resumes on another.

`checkpoint/` is written as a new directory and swapped in with `os.replace`, so a crash at any
moment leaves either the previous checkpoint or the new one, never a mixture.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from interp.io import atomic_write_json, read_json, save_safetensors_atomic

STATE, META = "state.safetensors", "trainer.json"


def write_checkpoint(path: str | Path, module: torch.nn.Module, opt: torch.optim.Optimizer,
                     extra: dict[str, Tensor], meta: dict) -> Path:
    """Write `path/` (STATE: `sae.*` weights, `opt.<param>.<key>` optimiser state, `extra`;
    META: `meta`) atomically, replacing any checkpoint there."""
    final = Path(path)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = {f"sae.{k}": v.detach() for k, v in module.state_dict().items()}
    names = {id(p): n for n, p in module.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                tensors[f"opt.{names[id(p)]}.{key}"] = torch.as_tensor(value).detach()
    tensors.update(extra)
    save_safetensors_atomic(tensors, tmp / STATE)
    atomic_write_json(tmp / META, meta)
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def read_meta(path: str | Path) -> dict:
    return read_json(Path(path) / META)


def read_checkpoint(path: str | Path, module: torch.nn.Module, opt: torch.optim.Optimizer
                    ) -> tuple[dict, dict[str, Tensor]]:
    """Load weights and optimiser state in place; returns (meta, the extra tensors)."""
    from safetensors.torch import load_file

    meta = read_meta(path)
    state = load_file(str(Path(path) / STATE))
    module.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("sae.")})
    on_device = {id(p): g.get("fused") or g.get("capturable")
                 for g in opt.param_groups for p in g["params"]}
    for pname, p in module.named_parameters():
        entries = {k.rsplit(".", 1)[1]: v for k, v in state.items()
                   if k.startswith(f"opt.{pname}.")}
        if entries:  # moments on the parameter's device; Adam's step count where torch keeps
            # it: on the device for the fused and capturable kernels, else on the host
            opt.state[p] = {k: v.to(p.device) if k != "step" or on_device[id(p)] else v
                            for k, v in entries.items()}
    extra = {k: v for k, v in state.items() if not k.startswith(("sae.", "opt."))}
    return meta, extra

