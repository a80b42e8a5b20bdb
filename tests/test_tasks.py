"""The planted-circuit tasks: committed models reach their accuracy, their stored circuits pass
the ablation check on fresh prompts, the Othello rules, and a tiny training smoke test."""

from __future__ import annotations

import pytest

from circuits.discovery.context import ABLATIONS, TinyContext
from circuits.tasks import TASKS, get_task, load_task
from circuits.tasks.base import evaluate_accuracy

TRAINED = [n for n in TASKS if get_task(n).info_path.is_file()]


@pytest.fixture(scope="module", params=TRAINED)
def loaded(request):
    return load_task(request.param)


def test_every_task_has_a_committed_model():
    assert TRAINED == list(TASKS)


def test_model_reaches_its_accuracy_on_fresh_prompts(loaded):
    acc = evaluate_accuracy(loaded.task, loaded.model, n=512, seed=777)
    assert acc["accuracy"] >= loaded.task.accuracy_target
    assert acc["metric_clean"] > acc["metric_corrupt"]
    assert loaded.info["accuracy"] >= loaded.task.accuracy_target


def test_stored_circuit_passes_its_ablation_check_on_fresh_prompts(loaded):
    gt = loaded.info["ground_truth"]
    assert gt["passes"]
    batch = loaded.task.batch(96, seed=31_337)  # not the prompts the truth was found on
    truth = loaded.truth_components
    for ab in ABLATIONS:
        ctx = TinyContext(loaded.model, batch, loaded.task.metric, ab)
        kept = float(ctx.faithfulness(truth[None], "node")[0])
        removed = float(ctx.faithfulness((~truth)[None], "node")[0])
        assert kept >= gt["keep"] - 0.05, (ab, kept)
        assert removed <= gt["remove"], (ab, removed)
        edges = float(ctx.faithfulness(loaded.truth_edges[None].float(), "edge")[0])
        assert edges >= gt["keep"] - 0.1, (ab, edges)


def test_ground_truth_contains_the_planted_circuit(loaded):
    """Training planted these components and exhaustive ablation found them (planting is
    approximate: some truths hold more, listed in docs/circuit_discovery.md), while some
    components stay outside every truth."""
    truth = set(loaded.info["ground_truth"]["components"])
    assert set(loaded.task.planted) <= truth
    assert len(truth) < loaded.model.graph.n_components


def test_othello_rules():
    from circuits.tasks.othello import BLACK, WHITE, flips, legal_moves, start_board

    b = start_board()
    # on 6x6 the centre is C3 D3 / C4 D4 (indices 14, 15, 20, 21); black moves first
    assert (b[14], b[15], b[20], b[21]) == (WHITE, BLACK, BLACK, WHITE)
    # black flanks a white piece: C2 (8) over C3, B3 (13) over C3, E4 (22) over D4, D5 (27)
    assert sorted(legal_moves(b, BLACK)) == [8, 13, 22, 27]
    assert flips(b, 8, BLACK) == [14] and flips(b, 22, BLACK) == [21]
    assert flips(b, 14, BLACK) == [] and flips(b, 0, BLACK) == []
    b2 = list(b)
    for f in flips(b2, 8, BLACK) + [8]:
        b2[f] = BLACK
    assert sorted(legal_moves(b2, WHITE)) == sorted(
        sq for sq in range(36) if flips(b2, sq, WHITE))


def test_othello_prompts_know_their_legal_moves():
    from circuits.tasks.othello import TASK

    b = TASK.batch(8, seed=3)
    assert b.clean.shape == b.corrupt.shape == (8, 16)
    assert (b.good.sum(-1) >= 1).all() and not b.good[:, 0].any()
    # a move already played is never legal again
    for row, legal in zip(b.clean, b.good):
        assert not legal[row[1:]].any()


def test_training_smoke(tmp_path):
    """A few steps of the real trainer and ground-truth search on a tiny induction model."""
    import dataclasses

    from circuits.tasks.base import TrainSettings, train_task_model
    from circuits.tasks.ground_truth import find_ground_truth
    from circuits.tasks.induction import Induction
    from circuits.tasks.model import TinyConfig

    task = Induction(model_cfg=TinyConfig(n_layers=2, n_heads=2, d_model=32, d_head=8,
                                          d_vocab=64, n_ctx=17),
                     train_settings=TrainSettings(steps=40, batch_size=32, lr=3e-3, warmup=5),
                     planted=("a0.h0", "a1.h1"))
    model, history = train_task_model(task)
    assert history[-1]["loss"] < history[0]["loss"]
    gt = find_ground_truth(model, task, n_prompts=16, keep=0.5)
    assert set(gt) >= {"components", "edges", "faithfulness_kept", "faithfulness_removed", "passes"}
    assert set(gt["components"]) <= set(model.graph.component_names)
    assert dataclasses.asdict(task.train_settings)["steps"] == 40
