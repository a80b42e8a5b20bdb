"""The small TokFSM transformer with codebooks, trained from scratch (arXiv 2310.17230, sec. 3).

Paper model: GPT-NeoX, hidden 128, MLP 512, 4 layers, 4 heads, context 128, codebooks at every
layer's head outputs (one per head, k=1) and MLP output (k=1), C=1000 codes; AdamW lr 1e-3.
Here the model is a Hugging Face GPT-2 (learned absolute positions instead of rotary; a design
choice: with one token per digit the model must know a position's parity, which absolute
positions give at once) wrapped as a `HookedModel`, so the codebooks sit at canonical hooks
(`blocks.L.attn.hook_z`, `blocks.L.hook_mlp_out`). `arch="llama"` gives a rotary model instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from interp.config import Config
from interp.errors import ConfigError, InterpError
from saes.codebook.bottleneck import CodebookConfig
from saes.codebook.fsm import TokFSM
from saes.codebook.insert import CodebookModel, insert_codebooks, load_codebooks
from saes.codebook.train import CodebookTrainConfig, init_codebooks_from_data, train_codebooks

PLACEMENTS = ("attn+mlp", "attn", "mlp")


@dataclass(frozen=True)
class FSMConfig(Config):
    """Everything that defines a TokFSM run (defaults: the paper's, scaled for a CPU)."""

    n_states: int = 100
    n_edges: int = 10
    base: int = 10
    fsm_seed: int = 42
    arch: str = "gpt2"  # "gpt2" | "llama"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    d_mlp: int = 512
    seq_len: int = 128
    codebooks_at: str = "attn+mlp"  # "attn+mlp" | "attn" | "mlp" (every layer)
    n_codes: int = 1000
    k: int = 1
    layer_norm: bool = True  # paper: snap LayerNorm(x)
    train_model: bool = True  # False: after pre-training only the codebooks learn
    pretrain_steps: int = 0  # steps without codebooks first (then k-means init), for a CPU
    steps: int = 3000  # steps with the codebooks in place
    batch_size: int = 64
    lr: float = 1e-3
    finetune_lr: float = 0.0  # lr of the codebook phase after pre-training (0: lr)
    warmup_steps: int = 100
    kmeans_iters: int = 10
    replace_every: int = 0
    seed: int = 0
    device: str = "auto"  # where the model trains (interp.devices)

    def __post_init__(self):
        from interp.devices import check_device

        object.__setattr__(self, "device", check_device(self.device))
        if self.codebooks_at not in PLACEMENTS:
            raise ConfigError(f"codebooks_at must be one of {PLACEMENTS}, not "
                              f"{self.codebooks_at!r}.")
        if self.arch not in ("gpt2", "llama"):
            raise ConfigError(f"arch must be 'gpt2' or 'llama', not {self.arch!r}.")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model ({self.d_model}) must be divisible by n_heads "
                              f"({self.n_heads}).")

    @property
    def fsm(self) -> TokFSM:
        return TokFSM(self.n_states, self.n_edges, self.base, self.fsm_seed)

    def hooks(self) -> list[str]:
        out = []
        for L in range(self.n_layers):
            if "attn" in self.codebooks_at:
                out.append(f"blocks.{L}.attn.hook_z")
            if "mlp" in self.codebooks_at:
                out.append(f"blocks.{L}.hook_mlp_out")
        return out

    def codebook_config(self) -> CodebookConfig:
        return CodebookConfig(n_codes=self.n_codes, k=self.k, layer_norm=self.layer_norm,
                              seed=self.seed)

    def train_config(self, pretrain: bool = False) -> CodebookTrainConfig:
        steps = self.pretrain_steps if pretrain else self.steps
        lr = self.finetune_lr if (self.pretrain_steps and self.finetune_lr and not pretrain) \
            else self.lr
        return CodebookTrainConfig(steps=steps, lr=lr, warmup_steps=self.warmup_steps,
                                   train_model=self.train_model or pretrain,
                                   decay="cosine", replace_every=self.replace_every,
                                   seed=self.seed, log_every=max(1, min(100, steps // 10)))


def build_fsm_model(cfg: FSMConfig):
    """A randomly initialised HookedModel (torch backend) sized for the FSM's vocabulary."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    from interp.models.torch_backend import TorchHookedModel

    fsm = cfg.fsm
    common = dict(vocab_size=fsm.vocab_size, bos_token_id=fsm.bos_id, eos_token_id=fsm.bos_id,
                  pad_token_id=fsm.bos_id, tie_word_embeddings=True)
    if cfg.arch == "gpt2":
        hf_cfg = GPT2Config(n_embd=cfg.d_model, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                            n_inner=cfg.d_mlp, n_positions=cfg.seq_len, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, **common)
    else:
        hf_cfg = LlamaConfig(hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                             num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
                             intermediate_size=cfg.d_mlp, max_position_embeddings=cfg.seq_len,
                             rope_theta=1e4, **common)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(cfg.seed)
        hf = AutoModelForCausalLM.from_config(hf_cfg, attn_implementation="sdpa")
    finally:
        torch.random.set_rng_state(state)
    return TorchHookedModel(hf, fsm.tokenizer(), f"tokfsm-{cfg.arch}")


def fsm_batches(cfg: FSMConfig, start: int = 0) -> Iterator[torch.Tensor]:
    """Endless training batches of FSM sequences (a fresh seed per batch: no data reuse)."""
    fsm = cfg.fsm
    i = start
    while True:
        yield fsm.sample(cfg.batch_size, cfg.seq_len, seed=1_000_003 * (cfg.seed + 1) + i)
        i += 1


def train_fsm_model(cfg: FSMConfig, callback=None, progress: bool = True
                    ) -> tuple[CodebookModel, list[dict]]:
    """Train the TokFSM transformer from scratch with its codebooks in place (on
    `cfg.device`)."""
    from interp.devices import resolve_device

    model = build_fsm_model(cfg)
    model.hf_model.to(resolve_device(cfg.device))
    cb = insert_codebooks(model, cfg.hooks(), cfg.codebook_config())
    batches = fsm_batches(cfg)
    records = []
    if cfg.pretrain_steps:
        records = train_codebooks(cb, batches, cfg.train_config(pretrain=True), callback=callback,
                                  progress=progress, use_codebooks=False)
        for r in records:
            r["phase"] = "pretrain"
        init = torch.cat([next(batches) for _ in range(max(1, 4096 // cfg.batch_size
                                                              // cfg.seq_len * 8))])
        init_codebooks_from_data(cb, init, cfg.kmeans_iters, cfg.seed)
    more = train_codebooks(cb, batches, cfg.train_config(), callback=callback, progress=progress)
    for r in more:
        r["phase"] = "codebooks"
        r["step"] += cfg.pretrain_steps
    return cb, records + more


def save_fsm_model(cb: CodebookModel, cfg: FSMConfig, path: str | Path) -> Path:
    """Write the HF model (`model/`, safetensors + tokenizer) and its codebooks to `path`."""
    from interp.io import atomic_write_json

    path = Path(path)
    cb.model.hf_model.save_pretrained(str(path / "model"))
    cfg.fsm.tokenizer(path / "model")
    cb.save(path)
    atomic_write_json(path / "fsm_config.json", cfg.to_dict())
    return path


def load_fsm_model(path: str | Path) -> tuple[CodebookModel, FSMConfig]:
    """A TokFSM model and its codebooks written by `save_fsm_model` (e.g. a run directory)."""
    from transformers import AutoModelForCausalLM

    from interp.io import read_json
    from interp.models.torch_backend import TorchHookedModel

    path = Path(path)
    if not (path / "fsm_config.json").is_file():
        raise InterpError(f"{path} holds no TokFSM model (no fsm_config.json); train one with "
                          "`interp codebook fsm`.")
    from interp.errors import BadFormat

    try:
        cfg = FSMConfig.from_dict(read_json(path / "fsm_config.json", expect=dict))
        hf = AutoModelForCausalLM.from_pretrained(str(path / "model"), attn_implementation="sdpa")
    except InterpError:
        raise
    except (OSError, ValueError, TypeError, KeyError, RuntimeError) as e:  # transformers' own
        raise BadFormat(f"{path} does not hold a readable TokFSM model ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); train it again with "
                        "`interp codebook fsm`.") from e
    model = TorchHookedModel(hf, cfg.fsm.tokenizer(), f"tokfsm-{cfg.arch}")
    return load_codebooks(model, path), cfg
