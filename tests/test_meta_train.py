"""Meta-training behaviour that is not a notebook lesson: resume equivalence, failure handling, data loaders,
the CLI."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from symbolic_l2o.files import atomic_write, file_digest
from symbolic_l2o.tasks import MNIST_FILES, QuadraticTask, check_mnist, find_data_root, install_mnist
from symbolic_l2o.tasks import make_task, mnist_data
from symbolic_l2o.files import load_rule, save_rule
from symbolic_l2o.zoo import ZOO, ZOO_DIR, zoo_rule, pretrained_card
from symbolic_l2o.evaluation import evaluate
from symbolic_l2o.meta_train import meta_train
from symbolic_l2o.meta_train import Curriculum, MetaTrainSettings, train_zoo, zoo_recipe
from symbolic_l2o.optimizers import SGDRule, UpdateRule
from symbolic_l2o.learned_rules import make_rule


def small_run(out, epochs, resume=False, curriculum=None):
    torch.manual_seed(0)
    rule = make_rule("rp_s")
    meta_train(
        rule,
        make_task("digits_mlp"),
        MetaTrainSettings(
            epochs=epochs,
            epoch_len=20,
            unroll=10,
            checkpoint_every=2,
            imitation_ratio=0.3,
            curriculum=curriculum,
        ),
        out_dir=out,
        resume=resume,
        progress=False,
    )
    return rule


@pytest.mark.parametrize(
    "curriculum", [None, Curriculum(horizons=(10, 20, 40), eval_every=1, eval_seeds=2, min_evals=1)]
)
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, curriculum):
    full = small_run(tmp_path / "full", epochs=4, curriculum=curriculum)
    small_run(tmp_path / "split", epochs=2, curriculum=curriculum)  # "interrupted" after epoch 2 (checkpoint)
    resumed = small_run(tmp_path / "split", epochs=4, resume=True, curriculum=curriculum)
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n
    lines = [json.loads(l) for l in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [0, 1, 2, 3]


def test_resume_refuses_a_checkpoint_of_another_rule(tmp_path):
    small_run(tmp_path, epochs=2)
    with pytest.raises(ValueError, match="was written for"):
        meta_train(
            make_rule("rp"),
            make_task("digits_mlp"),
            MetaTrainSettings(epochs=3, epoch_len=20, unroll=10),
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )


class LogStepRule(UpdateRule):
    "u = −exp(log_lr)·g: one meta-learnable (log) step size."

    def __init__(self, lr: float):
        super().__init__()
        self.log_lr = nn.Parameter(torch.tensor(math.log(lr)))

    def step(self, grads, state, t):
        return [-self.log_lr.exp() * g for g in grads], state


def test_nonfinite_meta_loss_is_skipped_and_never_written_into_the_weights():
    rule = LogStepRule(lr=1e6)  # diverges at once on a quadratic: the meta-loss overflows
    before = rule.log_lr.detach().clone()
    history = meta_train(
        rule, QuadraticTask(), MetaTrainSettings(epochs=3, epoch_len=20, unroll=10), progress=False
    )
    assert torch.equal(rule.log_lr.detach(), before)
    assert [h["skipped"] for h in history] == [1, 2, 3]
    assert all(h["nonfinite_window"] == 0 for h in history)


def test_bad_arguments_are_named():
    task = make_task("quadratic")
    with pytest.raises(ValueError, match="no trainable weights"):
        meta_train(SGDRule(), task, MetaTrainSettings(epochs=1))
    with pytest.raises(ValueError, match="invalid unroll=0"):
        meta_train(make_rule("rp_s"), task, MetaTrainSettings(epochs=1, unroll=0))
    with pytest.raises(ValueError, match="imitation_ratio"):
        meta_train(make_rule("rp_s"), task, MetaTrainSettings(epochs=1, imitation_ratio=2.0))
    with pytest.raises(ValueError, match="unknown task"):
        make_task("imagenet")
    with pytest.raises(ValueError, match="invalid init"):
        make_task("digits_mlp", init="xavier")
    with pytest.raises(ValueError, match="arch"):
        make_task("digits_mlp", arch="resnet")


def test_mnist_is_the_real_one_halved_as_the_paper_with_the_test_images_held_out():
    root = find_data_root()
    check_mnist(root)  # the four files of `make data`, MD5-checked
    X_meta, y_meta, X_test, y_test = mnist_data(root)
    X_eval, y_eval, X_test2, _ = mnist_data(root, split="eval")
    assert X_meta.shape == X_eval.shape == (30_000, 784) and X_test.shape == (10_000, 784)
    assert torch.equal(X_test, X_test2)
    full = torchvision.datasets.MNIST(str(root), train=True)
    # reference §1.3: np.random.RandomState(10) shuffles the indices
    perm = np.random.RandomState(10).permutation(60_000)
    assert torch.equal(y_meta, full.targets[perm[:30_000]]) and torch.equal(
        y_eval, full.targets[perm[30_000:]]
    )
    # MNIST's test labels
    assert torch.bincount(y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    assert abs(float(X_meta.mean()) - (float(full.data.float().mean()) / 255 - 0.5)) < 0.01  # pixel − 0.5
    task = make_task("mnist_mlp", split="eval")
    problem = task.problem(0)
    assert task.n_params == 24_380 and abs(problem.eval_loss(problem.params).item() - np.log(10)) < 0.01
    assert 0.0 <= problem.eval_accuracy(problem.params).item() <= 1.0


def test_a_corrupt_or_missing_mnist_file_names_make_data(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="make data"):
        mnist_data(tmp_path)
    for name in MNIST_FILES:
        shutil.copyfile(find_data_root() / "MNIST" / "raw" / name, raw / name)
    check_mnist(tmp_path)
    with open(raw / "t10k-labels-idx1-ubyte", "r+b") as f:  # one flipped byte
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte is corrupt .*make data"):
        mnist_data(tmp_path)
    with pytest.raises(ValueError, match="MD5"):
        install_mnist(raw, tmp_path / "copy")  # nothing corrupt is installed
    assert not (tmp_path / "copy" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").exists()


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "card.json"
    path.write_text("old")

    def crash(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_saved_rule_round_trips_with_weights_only(tmp_path):
    torch.manual_seed(1)
    rule = make_rule("rp_si")
    path = save_rule(rule, tmp_path / "r", {"task": "digits_mlp"})
    loaded, card = load_rule(path)
    assert card["task"] == "digits_mlp" and card["config"]["class"] == "RNNpropRule"
    for a, b in zip(rule.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="no saved rule"):
        load_rule(tmp_path / "missing.pt")


@pytest.mark.parametrize("name", ZOO)
def test_zoo_rules_load_and_beat_their_untrained_selves(name):
    rule, card = zoo_rule(name), pretrained_card(name)
    assert card["task"].startswith(("mnist_mlp", "digits_mlp")) and "eva_loss" in card["evaluation"]
    task = (
        make_task("mnist_mlp", split="eval") if card["task"].startswith("mnist") else make_task("digits_mlp")
    )
    # 50 steps on 2 problems: an untrained rule leaves the loss where it was (2.30 on MNIST); DM+CL+IL, the
    # least trained, is at 2.14
    kw = dict(steps=50, seeds=range(2), eval_every=50, progress=False)
    trained = evaluate(rule, task, **kw).eva_loss[0]
    torch.manual_seed(0)
    untrained = evaluate(make_rule(zoo_recipe(name)[0]), task, **kw).eva_loss[0]
    assert trained < untrained


def test_train_zoo_continues_from_a_saved_rule_and_names_it(tmp_path):
    task = make_task("digits_mlp")
    settings = MetaTrainSettings(epochs=1, epoch_len=10, unroll=10)
    kw = dict(settings=settings, seeds=1, tasks=[task], eval_task=task, progress=False)
    card = train_zoo(["rp_s"], out=tmp_path / "warm", start=ZOO_DIR, **kw)["rp_s"]
    zoo_file = ZOO_DIR / "rp_s.pt"
    assert card["training"]["started_from"] == {
        "path": "zoo/rp_s.pt",
        "sha256": file_digest(zoo_file),
        "zoo": True,
    }
    zoo = zoo_rule("rp_s").state_dict()
    warm = load_rule(tmp_path / "warm" / "rp_s.pt")[0].state_dict()
    cold_card = train_zoo(["rp_s"], out=tmp_path / "cold", **kw)["rp_s"]
    cold = load_rule(tmp_path / "cold" / "rp_s.pt")[0].state_dict()
    assert cold_card["training"]["started_from"] is None
    # one epoch of Adam(1e-3) moves a weight by at most 1 × 1e-3 per meta-step (one step per window here)
    assert max((warm[k] - zoo[k]).abs().max().item() for k in zoo) <= 2e-3
    assert max((cold[k] - zoo[k]).abs().max().item() for k in zoo) > 0.05


def test_unknown_zoo_name_lists_what_exists():
    with pytest.raises(ValueError, match="available"):
        zoo_rule("rp_huge")


def test_cli_meta_trains_continues_and_evaluates_end_to_end(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative paths a user types
    code, out, err = cli(
        "meta-train",
        "--rule",
        "rp_s",
        "--task",
        "quadratic",
        "--epochs",
        "2",
        "--epoch-len",
        "20",
        "--unroll",
        "10",
        "--out",
        "mt",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert (tmp_path / "mt" / "rule.pt").exists() and (tmp_path / "mt" / "checkpoint.pt").exists()
    assert len((tmp_path / "mt" / "metrics.jsonl").read_text().splitlines()) == 2
    code, out, err = cli(
        "meta-train",
        "--start",
        "mt/rule.pt",
        "--task",
        "digits_mlp",
        "--epochs",
        "1",
        "--epoch-len",
        "20",
        "--unroll",
        "10",
        "--out",
        "tuned",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "tuned" / "rule.json").read_text())["continued_from"] == "mt/rule.pt"
    code, out, err = cli(
        "evaluate",
        "--rule",
        "tuned/rule.pt",
        "--task",
        "digits_mlp",
        "--steps",
        "10",
        "--seeds",
        "2",
        "--out",
        "ev",
        "--device",
        "cpu",
    )
    assert code == 0, err
    ev = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert np.array(ev["train_loss"]).shape == (2, 11)
    code, out, err = cli(
        "evaluate",
        "--rule",
        "adam",
        "--lr",
        "0.01",
        "--task",
        "quadratic",
        "--steps",
        "5",
        "--seeds",
        "1",
        "--out",
        "ev2",
    )
    assert code == 0, err
    code, out, err = cli(
        "srgen",
        "--rule",
        "tuned/rule.pt",
        "--task",
        "digits_mlp",
        "--steps",
        "30",
        "--seeds",
        "2",
        "--lags",
        "5",
        "--out",
        "sr/data",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert (tmp_path / "sr" / "data.npz").exists() and json.loads(out)["columns"] == 10  # mt, gt × 5 lags
