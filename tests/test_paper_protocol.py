"Issue 38: the paper's evaluation protocol, the six zoo recipes of numbers.png and the budget curve."

import json

import numpy as np
import pytest
import torch

from symbolic_l2o.learned_rules import make_rule
from symbolic_l2o.evaluation import PAPER_EVA, Evaluation, paper_comparison, paper_tf_task
from symbolic_l2o.meta_train import MetaTrainSettings, budget_curve, meta_train, train_zoo, zoo_recipe
from symbolic_l2o.runs import write_summary
from symbolic_l2o.tasks import QuadraticTask, make_task

PROTOCOL_KEYS = ["horizon", "last_mean", "last_std", "min_mean", "sum_mean"]


def _evaluation(train_loss):
    train_loss = np.asarray(train_loss, float)
    return Evaluation(train_loss, [0], np.zeros((len(train_loss), 1)), list(range(len(train_loss))))


def test_paper_protocol_is_the_authors_statistics_on_known_numbers():
    # 3 runs of 4 recorded steps (+ the point after the last update); the protocol at horizon 4 reads the
    # first 4 points: the last one recorded before the 4th update
    ev = _evaluation([[2.3, 1.0, 0.5, 0.4, 9.0], [2.3, 1.2, 0.3, 0.6, 9.0], [2.3, 0.8, 0.7, 0.2, 9.0]])
    pp = ev.paper_protocol(4)
    assert sorted(pp) == PROTOCOL_KEYS and pp["horizon"] == 4
    assert pp["last_mean"] == pytest.approx(0.4)
    assert pp["last_std"] == pytest.approx(np.std([0.4, 0.6, 0.2]))  # over runs, ddof 0 as numpy's default
    assert pp["min_mean"] == pytest.approx((0.4 + 0.3 + 0.2) / 3)
    assert pp["sum_mean"] == pytest.approx((4.2 + 4.4 + 4.0) / 3)
    assert ev.paper_protocol(5)["last_mean"] == pytest.approx(9.0)
    # our late loss is another measure (all 5 points here) and keeps its name
    assert ev.eva_loss[0] == pytest.approx(np.mean([13.2, 13.4, 13.0]) / 5)


def test_paper_protocol_marks_a_diverged_run_and_refuses_a_horizon_past_the_curves():
    ev = _evaluation([[2.3, 1.0, np.nan], [2.3, 1.0, 0.5]])
    assert np.isnan(ev.paper_protocol(3)["last_mean"]) and np.isnan(ev.paper_protocol(3)["min_mean"])
    with pytest.raises(ValueError, match="evaluate with steps >= horizon - 1"):
        ev.paper_protocol(4)
    with pytest.raises(ValueError, match="invalid horizon=0"):
        ev.paper_protocol(0)


def test_paper_comparison_keys_and_the_summary_rules():
    quad = QuadraticTask()
    table = paper_comparison({"rp_s": make_rule("rp_s")}, quad, (6, 12), range(3), lrs=(1e-1, 1.0))
    assert list(table) == ["6", "12"]
    row = table["12"]["rules"]["rp_s"]
    assert sorted(row["paper_protocol"]) == PROTOCOL_KEYS and row["paper_protocol"]["horizon"] == 12
    vs = row["vs_best_baseline"]
    assert vs["baseline"] == table["12"]["best_baseline"] and vs["ci"][0] <= vs["difference"] <= vs["ci"][1]
    assert sorted(table["12"]["baselines"]) == ["adam", "lion", "momentum", "nesterov", "rmsprop", "sgd"]


def test_summary_writes_rules_beside_its_own_keys(tmp_path):
    rules = {
        n: {"paper_protocol": dict.fromkeys(PROTOCOL_KEYS, 0.1), "paper": {"last_mean": PAPER_EVA[n][0]}}
        for n in PAPER_EVA
    }
    path = write_summary(tmp_path, "01_meta_train", extra={"rules": rules})
    back = json.loads(path.read_text())
    assert sorted(back["rules"]) == ["dm", "dm_cl_il", "rp", "rp_cl_il", "rp_s", "rp_si"]
    assert back["rules"]["rp_si"]["paper"]["last_mean"] == 0.08 and back["stage"] == "01_meta_train"
    with pytest.raises(ValueError, match="would replace the summary's own"):
        write_summary(tmp_path, "01_meta_train", extra={"notes": []})


def test_zoo_recipes_are_the_six_columns_of_numbers_png():
    assert zoo_recipe("dm") == ("dm", {}, {})  # the paper's plain DM
    arch, _, recipe = zoo_recipe("dm_cl_il")
    assert arch == "dm" and recipe["imitation_ratio"] == 0.3 and recipe["curriculum"] is not None
    arch, _, recipe = zoo_recipe("rp_cl_il")
    assert (
        arch == "rp" and recipe["imitation_ratio"] == 0.3 and recipe["curriculum"].horizons == (100, 200, 500)
    )
    for name in ("rp", "rp_s", "rp_si"):
        assert zoo_recipe(name) == (name, {}, {})
    with pytest.raises(ValueError, match="use one of"):
        zoo_recipe("dm+cl")


def test_train_zoo_builds_a_recipe_by_its_architecture_and_records_it(tmp_path):
    task = make_task("digits_mlp")
    settings = MetaTrainSettings(epochs=1, epoch_len=2, unroll=2)
    card = train_zoo(["rp_s"], tmp_path, settings, seeds=1, tasks=[task], eval_task=task, progress=False)[
        "rp_s"
    ]
    assert card["training"]["architecture"] == "rp_s"
    assert card["evaluation"]["paper_protocol"] == {}  # 10 steps reach none of PAPER_HORIZONS
    with pytest.raises(ValueError, match="no zoo recipe 'lstm'"):
        train_zoo(["lstm"], tmp_path, settings, seeds=1, tasks=[task], eval_task=task, progress=False)


def test_budget_curve_resumes_one_run_through_its_milestones(tmp_path):
    quad = QuadraticTask()
    settings = MetaTrainSettings(epoch_len=4, unroll=2)
    kw = {"tasks": [quad], "settings": settings, "eval_task": quad, "horizon": 4, "seeds": range(2)}
    curve = budget_curve("rp_s", (1, 3), tmp_path / "curve", **kw)
    assert [(p["epochs"], p["horizon"]) for p in curve] == [(1, 4), (3, 4)]
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"]
    assert all(sorted(p) == sorted(["epochs", "seconds", *PROTOCOL_KEYS]) for p in curve)
    # the milestone of 3 epochs is an uninterrupted run of 3 epochs, bit for bit
    torch.manual_seed(settings.seed)
    straight = make_rule("rp_s")
    meta_train(straight, [quad], MetaTrainSettings(epochs=3, epoch_len=4, unroll=2), progress=False)
    kept = torch.load(tmp_path / "curve" / "epoch_0003.pt", weights_only=True)["rule"]
    assert all(torch.equal(kept[k], v) for k, v in straight.state_dict().items())
    # kept checkpoints are evaluated again, never retrained
    assert budget_curve("rp_s", (1, 3), tmp_path / "curve", **kw) == curve


def test_budget_curve_refuses_unordered_milestones():
    with pytest.raises(ValueError, match="list them increasing"):
        budget_curve("rp_s", (3, 1), "unused")
    with pytest.raises(ValueError, match="expected epoch counts >= 1"):
        budget_curve("rp_s", (), "unused")


def test_paper_tf_task_is_the_tf_codes_mnist_mlp():
    task = paper_tf_task()
    assert task.name == "mnist_mlp[sigmoid-20x1]" and task.batch_size == 128 and task.init == "normal"
    assert task.n_params == 784 * 20 + 20 + 20 * 10 + 10
