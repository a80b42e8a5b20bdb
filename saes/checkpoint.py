"""Training checkpoints that resume bit-exactly: a module's weights, its optimiser's state,
any extra counters (safetensors), and a JSON of the rest (step, scales, config). The tensors
are streamed to the file one at a time from where they live (no copy of the whole state in
memory) and read back onto the devices of the module's parameters, so a run started on one
device resumes on another.

`checkpoint/` is written as a new directory and swapped in with `os.replace`, so a crash at any
moment leaves either the previous checkpoint or the new one, never a mixture.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import torch
from torch import Tensor

from interp.errors import BadFormat, MissingFile
from interp.io import atomic_write_json, load_safetensors, read_json, save_safetensors_atomic

STATE, META = "state.safetensors", "trainer.json"
_FIX = "delete the checkpoint directory to start the run afresh, or restore it."


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


def recover(path: str | Path) -> bool:
    """Finish a swap that a kill interrupted: if `path/` is gone but a complete `.tmp` (the
    new checkpoint) or `.old` (the previous one) is there, move it into place. Returns whether
    a checkpoint is now at `path`. Stray `.tmp`/`.old` directories are removed."""
    final = Path(path)
    tmp, old = final.with_name(final.name + ".tmp"), final.with_name(final.name + ".old")
    if not final.exists():
        for cand in (tmp, old):  # META is written last: its presence means complete
            if (cand / STATE).is_file() and (cand / META).is_file():
                os.replace(cand, final)
                break
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return (final / META).is_file()


def read_meta(path: str | Path) -> dict:
    """The checkpoint's trainer.json, checked: `step` a count, `scale_in`/`scale_out` finite
    numbers, `config` an object (`BadFormat` naming the file otherwise)."""
    f = Path(path) / META
    meta = read_json(f, expect=dict)
    step = meta.get("step")
    scales = [meta.get("scale_in"), meta.get("scale_out")]
    if (isinstance(step, bool) or not isinstance(step, int) or step < 0
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                       and math.isfinite(v) and v > 0 for v in scales)
            or not isinstance(meta.get("config"), dict)):
        raise BadFormat(f"{f} is not a trainer checkpoint (needs an integer step >= 0, positive "
                        f"finite scale_in/scale_out and a config object); {_FIX}")
    return meta


def read_checkpoint(path: str | Path, module: torch.nn.Module, opt: torch.optim.Optimizer,
                    extra_shapes: dict[str, tuple[int, ...]] | None = None
                    ) -> tuple[dict, dict[str, Tensor]]:
    """Load weights and optimiser state in place; returns (meta, the extra tensors).

    Every tensor is checked against the module before anything is loaded: a missing one, an
    unexpected one or a wrong shape (of a weight, an Adam moment, or an `extra_shapes` entry)
    raises `BadFormat` naming the file; an unreadable file raises `CorruptFile`."""
    meta = read_meta(path)
    f = Path(path) / STATE
    try:
        state = load_safetensors(f, _FIX)
    except MissingFile as e:
        raise BadFormat(str(e)) from None
    weights = {k[4:]: v for k, v in state.items() if k.startswith("sae.")}
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    expected_opt = {}
    for pname, p in module.named_parameters():
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            expected_opt[f"opt.{pname}.{key}"] = tuple(p.shape)
    problems = sorted(set(expected) ^ set(weights))
    problems += [k for k in expected if k in weights and tuple(weights[k].shape) != expected[k]]
    problems += [k for k, v in state.items() if k in expected_opt and tuple(v.shape)
                 != expected_opt[k]]
    for k, shape in (extra_shapes or {}).items():
        if k not in state or tuple(state[k].shape) != tuple(shape):
            problems.append(k)
    if problems:
        raise BadFormat(f"{f} does not fit this dictionary (tensor(s) {problems[:6]} missing, "
                        f"unexpected or of the wrong shape); {_FIX}")
    module.load_state_dict(weights)
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

