"""The SAEBench parity script: a clear skip without the Pythia-70M model and SAE on disk, and
the same code run end to end on a tiny local word-level model with a letter-aligned SAE."""

from __future__ import annotations

import pytest
import torch

from benchmarks import saebench_parity
from saes.architectures import architecture_class
from saes.base import SAEConfig
from saes.formats import save_saelens


def test_parity_skips_with_a_clear_message_when_nothing_is_on_disk(tmp_path):
    why = saebench_parity.missing(None, str(tmp_path))
    assert "--model" in why and "--sae" in why and "pythia-70m" in why
    assert saebench_parity.missing(str(tmp_path), None).count("--") >= 2


def test_parity_code_runs_on_a_tiny_local_model(tmp_path):
    from interp.models.loading import load_model
    from test_sae_evals_suite import HOOK, _word_model

    path, letters = _word_model(tmp_path / "words")
    assert saebench_parity.missing(str(path), str(tmp_path / "sae")) is not None
    cfg = SAEConfig(architecture="standard", d_in=64, d_sae=64, hook_name=HOOK,
                    model_name=str(path))
    sae = architecture_class("standard")(cfg).initialise(0)
    with torch.no_grad():
        sae.W_dec[:26] = letters
        sae.enc_weight[:26] = letters
        sae.b_enc[:26] = -1.0
    save_saelens(sae, tmp_path / "sae")
    assert saebench_parity.missing(str(path), str(tmp_path / "sae")) is None
    load_model(path)  # loads like any local model
    res = saebench_parity.parity(str(path), str(tmp_path / "sae"), quick=True,
                                 out=tmp_path / "out")
    rows = {r["metric"]: r for r in res["rows"]}
    assert set(rows) == set(saebench_parity.REFERENCE)
    for name in ("ce_loss_score", "explained_variance", "mean_absorption_fraction"):
        assert rows[name]["ours"] is not None, name
        assert rows[name]["within_tolerance"] in (True, False)
        assert rows[name]["diff"] == pytest.approx(rows[name]["ours"] - rows[name]["saebench"])
    assert rows["autointerp"]["ours"] is None  # no explainer given
    assert rows["tpp"]["within_tolerance"] is None and "datasets" in rows["tpp"]["note"]
    assert res["absorption_source"] == "model"
    assert (tmp_path / "out" / "report.json").is_file()
