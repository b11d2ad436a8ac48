"""04_finetune_resnet: DDP equivalence with real torchrun processes, tuned-rule files, CIFAR files, the
protocol's search, and the notebook end to end (chained to a 03 equation, writing summary/finetune.json)."""

import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import symbolic_l2o.finetune as finetune
from symbolic_l2o.vision import cifar, digits32
from symbolic_l2o.finetune import lr_search, _rule_source_fit
from symbolic_l2o.meta_train import meta_tune
from symbolic_l2o.files import file_digest, load_rule, save_rule
from symbolic_l2o.tasks import make_task
from symbolic_l2o.zoo import ZOO_DIR
from symbolic_l2o.meta_train import MetaTrainSettings
from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.learned_rules import TanhBasisRule

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "ddp_train_script", Path(__file__).parent / "ddp_train_script.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ddp_with_two_gloo_processes_matches_one_process_on_the_combined_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).parent / "ddp_train_script.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    initial, single, record = _script().run()
    assert record["world_size"] == 1
    moved = False
    for k, v in single.items():
        assert torch.equal(r0["params"][k], r1["params"][k]), f"{k} differs between the ranks"
        torch.testing.assert_close(
            r0["params"][k], v, rtol=1e-4, atol=1e-6, msg=f"{k}: DDP run != single-process run"
        )
        moved |= not torch.allclose(v, initial[k], atol=1e-4)
    assert moved, "training did not move the parameters: the comparison would be vacuous"
    ddp_record = json.loads((tmp_path / "run.json").read_text())  # written by rank 0 only
    assert ddp_record["world_size"] == 2 and len(ddp_record["epochs"]) == 2
    np.testing.assert_allclose(
        [e["train_loss"] for e in ddp_record["epochs"]],
        [e["train_loss"] for e in record["epochs"]],
        rtol=1e-4,
    )
    assert [e["test_acc"] for e in ddp_record["epochs"]] == [e["test_acc"] for e in record["epochs"]]


def _same_updates(a, b, steps=6):
    torch.manual_seed(0)
    grads = [[torch.randn(5, 3) * 0.01, torch.randn(4) * 0.01] for _ in range(steps)]
    sa, sb = a.init(grads[0]), b.init(grads[0])
    with torch.no_grad():
        for t, g in enumerate(grads, 1):
            ua, sa = a.step(g, sa, t)
            ub, sb = b.step(g, sb, t)
            for x, y in zip(ua, ub):
                torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-9)


def test_tuned_rule_json_round_trips_to_the_same_updates(tmp_path):
    rule = SymbolicRule("-1.3*mt_0 + 0.2*tanh(0.7*gt_1)", scale=0.02)
    settings = MetaTrainSettings(epochs=2, epoch_len=10, unroll=5, meta_lr=1e-2)
    rule, card = meta_tune(rule, make_task("digits_mlp"), settings, progress=False)
    assert card["before"] != card["after"]  # the constants moved
    back, back_card = load_rule(save_rule(rule, tmp_path / "tuned", card))
    assert back_card["after"] == card["after"] and back.scale == rule.scale
    torch.testing.assert_close(back.constants, rule.constants, rtol=1e-15, atol=0)
    _same_updates(rule, back)
    tanh_rule = TanhBasisRule(weights=[[0.9, -0.1], [0.2, 0.05]], gamma=0.5, scale=0.03)
    back_tanh, _ = load_rule(save_rule(tanh_rule, tmp_path / "tanh"))
    assert isinstance(back_tanh, TanhBasisRule)
    _same_updates(tanh_rule, back_tanh)
    _same_updates(tanh_rule, SymbolicRule(back_tanh.to_sympy(), scale=back_tanh.scale))  # ψ is its equation


def test_a_tuned_rule_file_carrying_code_is_rejected(tmp_path):
    rule = SymbolicRule("-1.3*mt_0", scale=0.02)
    card = save_rule(rule, tmp_path / "tuned").with_suffix(".json")
    d = json.loads(card.read_text())
    d["config"]["args"]["expr"] = "__import__('os').system('touch " + str(tmp_path / "pwned") + "')"
    card.write_text(json.dumps(d))
    with pytest.raises(ValueError):
        load_rule(card)
    assert not (tmp_path / "pwned").exists()


def _write_cifar100(root, n_train=6, n_test=4):
    (root / "cifar-100-python").mkdir(parents=True)
    rng, written = np.random.default_rng(0), {}
    for f, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = rng.integers(0, 100, n).tolist()
        with open(root / "cifar-100-python" / f, "wb") as fh:
            pickle.dump({"data": data, "fine_labels": labels, "batch_label": f}, fh)
        written[f] = (data, labels)
    return written


def test_cifar100_loader_reads_the_python_files(tmp_path):
    # CIFAR-10 is read from its binary version instead (tests/test_cifar_data.py)
    written = _write_cifar100(tmp_path)
    data = cifar("cifar100", root=tmp_path)
    assert data.X_train.shape == (6, 3, 32, 32) and data.X_test.shape == (4, 3, 32, 32)
    first = written["train"]
    assert torch.equal(data.X_train[0], torch.from_numpy(first[0][0].reshape(3, 32, 32)))  # CHW order kept
    assert data.y_train.tolist() == first[1] and data.num_classes == 100


def test_cifar_file_with_code_is_refused(tmp_path):
    _write_cifar100(tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    with open(tmp_path / "cifar-100-python" / "test", "wb") as fh:
        pickle.dump({"data": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        cifar("cifar100", root=tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_missing_cifar_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=True"):
        cifar("cifar100", root=tmp_path)


def test_lr_search_extends_the_grid_past_the_edge_that_holds_the_best(monkeypatch):
    """The validation accuracy peaks at lr 1e-3, two grid steps below the grid around 0.1: the search must
    walk down to it."""

    def fake_train(
        model,
        factory,
        epochs,
        data,
        schedule,
        batch_size,
        device,
        seed,
        out,
        label,
        eval_every_epoch,
        progress,
    ):
        lr = factory(model).param_groups[0]["lr"]
        return {"final_test_acc": 100 - abs(np.log10(lr) + 3), "epochs": [{"train_loss": 1.0}]}

    monkeypatch.setattr(finetune, "train", fake_train)
    make = lambda ps, lr: torch.optim.SGD(ps, lr=lr)
    data = digits32().subset(64, 16)
    found = lr_search(make, 0.1, "resnet10_w4", data, 1, points=3, max_extensions=6)
    np.testing.assert_allclose(found["best_lr"], 1e-3)
    np.testing.assert_allclose(
        found["lr_grid"], [10 ** (-3.5), 1e-3, 10 ** (-2.5), 1e-2, 10 ** (-1.5), 0.1, 10 ** (-0.5)]
    )
    assert np.isclose(found["val_metric"], 100.0) and len(found["val_acc"]) == len(found["lr_grid"])
    capped = lr_search(make, 0.1, "resnet10_w4", data, 1, points=3, max_extensions=1)
    np.testing.assert_allclose(capped["lr_grid"], [1e-2, 10 ** (-1.5), 0.1, 10 ** (-0.5)])
    # the budget ran out at the edge: the best seen, not the true optimum
    np.testing.assert_allclose(capped["best_lr"], 1e-2)


def test_rule_source_takes_a_run_directory_a_file_or_a_zoo_name(tmp_path):
    zoo = ZOO_DIR / "rp_si_distilled.json"
    (tmp_path / "fitted_rp_si.json").write_bytes(zoo.read_bytes())
    for source in (tmp_path, tmp_path / "fitted_rp_si.json", "rp_si_distilled", None):
        fit, path = _rule_source_fit(source)
        assert file_digest(path) == file_digest(zoo) and fit.expr is not None
    assert _rule_source_fit(tmp_path)[1] == str(tmp_path / "fitted_rp_si.json")
    with pytest.raises(ValueError, match="distilled rules"):
        _rule_source_fit("dm")
