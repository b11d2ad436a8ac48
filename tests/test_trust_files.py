"""Issue 40, items 3 and 5 and the file caps of item 2: what a file says is checked before anything is built
or allocated (rule configurations, cards, dataset arrays, fitted rules), a card is hashed like its data, and a
save killed at any instant leaves the previous pair or the new one loadable.

Each test is a case that failed before: a hostile value was built (a 57.6 GB LSTM), raised the wrong error
(TypeError, AttributeError, RecursionError) or was loaded as if it were sound."""

import io
import json
import multiprocessing
import os
import signal
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

import symbolic_l2o.srgen  # noqa: F401  (the package re-exports names of the same spelling: use sys.modules)
from symbolic_l2o import learned_rules
from symbolic_l2o.regression import MAX_FIT_NAMES, MAX_PARETO_MEMBERS, FittedRule
from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.files import load_rule, save_rule, write_pair
from symbolic_l2o.learned_rules import RULE_CLASSES, TanhBasisRule, make_rule, rule_from_config
from symbolic_l2o.zoo import ZOO, ZOO_DIR
from symbolic_l2o.optimizers import PowerSignRule, rule_config
from symbolic_l2o.srgen import SRDataset

srgen_module = sys.modules["symbolic_l2o.srgen"]


def dataset(rows=6, seed=0):
    rng = np.random.default_rng(seed)
    return SRDataset(
        rng.normal(size=(rows, 2)),
        rng.normal(size=rows),
        ["g_0", "g_1"],
        np.arange(rows) % 2,
        np.arange(rows),
        np.arange(rows),
        {"note": f"seed {seed}"},
    )


def npz(**arrays) -> bytes:
    "The bytes of an .npz holding a valid 2-row dataset's arrays, with `arrays` in their place."
    buf = io.BytesIO()
    ids = {k: np.arange(2) for k in ("run_ids", "coord_ids", "steps")}
    np.savez(buf, **{"X": np.zeros((2, 2)), "y": np.zeros(2), **ids, **arrays})
    return buf.getvalue()


# Item 3: a rule configuration is checked before anything is built ------------------------------------------


@pytest.mark.parametrize(
    "config, says",
    [
        (
            {"class": "DMRule", "args": {"hidden": [60000, 60000]}},
            r"hidden=\[60000, 60000\].*MAX_LAYER_WIDTH = 256",
        ),
        ({"class": "TanhBasisRule", "args": {"lags": 10**9}}, r"lags=1000000000 .*MAX_LAG = 100"),
        ({"class": "RNNpropRule", "args": {"preproc": [10**9]}}, r"preproc=\[1000000000\].*MAX_LAYER_WIDTH"),
        (
            {"class": "RNNpropRule", "args": {"hidden": [20] * 5}},
            r"hidden=\[20, 20, 20, 20, 20\].*MAX_LAYERS = 4",
        ),
        (
            {"class": "DMRule", "args": {"hidden": [20.5]}},
            r"hidden=\[20.5\] .*expected a list of .* integers",
        ),
        ({"class": "DMRule", "args": {"hidden": ["20"]}}, r"hidden=\['20'\]"),
        ({"class": "DMRule", "args": {"hidden": [True]}}, r"hidden=\[True\]"),
        ({"class": "TanhBasisRule", "args": {"weights": [[0.0] * 200] * 2}}, r"weights=.*MAX_LAG \+ 1 = 101"),
        ({"class": "AdamRule", "args": {"betas": "ab"}}, r"betas='ab' .*expected a list of 2 numbers"),
        ({"class": "DMRule", "args": {"hiden": [20]}}, r"unknown argument\(s\) \['hiden'\].*DMRule takes"),
        ({"class": "SymbolicRule", "args": {}}, r"without \['expr'\]"),
        ({"class": "DMRule", "args": [20]}, r"the args of a DMRule configuration are a mapping"),
        ({"class": "DMRule", "args": {}, "hidden": [20]}, r"a rule configuration is a mapping"),
        ([["class", "DMRule"], ["args", {}]], r"a rule configuration is a mapping"),
        ({"class": ["DMRule"], "args": {}}, r"unknown rule class \['DMRule'\]"),
    ],
)
def test_a_hostile_configuration_is_refused_before_anything_is_built(config, says, monkeypatch):
    name = config.get("class") if isinstance(config, dict) else None
    if isinstance(name, str):

        def refuse(cls, *args, **kwargs):
            raise AssertionError(f"{cls.__name__} built before its configuration was checked")

        base = RULE_CLASSES[name]  # same name and signature, but never built
        monkeypatch.setitem(learned_rules.RULE_CLASSES, name, type(name, (base,), {"__new__": refuse}))
    with pytest.raises(ValueError, match=says):
        rule_from_config(config)


def test_every_rule_the_library_writes_passes_its_checks():
    hand = ("sgd", "momentum", "nesterov", "adam", "rmsprop", "lion", "addsign")
    rules = [make_rule(n) for n in (*hand, "dm", "rp", "rp_si")]
    rules += [
        PowerSignRule(decay="linear", decay_steps=100.0),  # a float step count, as a user may give it
        SymbolicRule("-0.01*mt_0 + 0.1*u_1", clip=[-1, 1]),
        TanhBasisRule(features=("mt", "gt", "mom5"), lags=3, weights=np.ones((3, 4)).tolist()),
    ]
    assert {type(r).__name__ for r in rules} == set(RULE_CLASSES)
    for rule in rules:
        assert rule_config(rule_from_config(rule_config(rule))) == rule_config(rule)


# Item 2: cards are hashed; every JSON read is bounded -------------------------------------------------------


def test_an_edited_card_is_refused_until_it_is_saved_again(tmp_path):
    path = save_rule(SymbolicRule("-0.01*mt_0"), tmp_path / "r")
    card_path, text = path.with_suffix(".json"), path.with_suffix(".json").read_text()
    card_path.write_text(text.replace("-0.01*mt_0", "-0.01*gt_0"))  # same constants, another feature
    with pytest.raises(ValueError, match=r"r.json is not the card its save wrote .* save it again"):
        load_rule(path)
    card = json.loads(text)
    del card["card_sha256"]  # a card written before cards were hashed
    card_path.write_text(json.dumps(card))
    with pytest.raises(ValueError, match="r.json is not the card its save wrote"):
        load_rule(path)
    card_path.write_text(text)
    assert str(load_rule(path)[0].expr) == "-0.01*mt_0"
    ds = dataset().save(tmp_path / "sr")
    info = json.loads(ds.with_suffix(".json").read_text())
    ds.with_suffix(".json").write_text(json.dumps({**info, "names": ["g_1", "g_0"]}))  # columns swapped
    with pytest.raises(ValueError, match="sr.json is not the card its save wrote"):
        SRDataset.load(ds)


def test_the_shipped_zoo_carries_hashed_cards():
    for name in ZOO:
        rule, card = load_rule(ZOO_DIR / f"{name}.pt")
        assert len(card["card_sha256"]) == 64 and card["config"] == rule_config(rule)


def test_weights_that_declare_more_than_the_cap_are_not_loaded(tmp_path):
    path, config = tmp_path / "r.pt", {"config": rule_config(make_rule("sgd"))}
    buf = io.BytesIO()  # 40 MB of zeros in a 40 KB zip: torch.load would inflate what its members declare
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", bytes(40 << 20))
    write_pair(path, buf.getvalue(), config, "weights_sha256")
    with pytest.raises(ValueError, match="r.pt declares more than MAX_RULE_BYTES = 33554432 bytes"):
        load_rule(path)
    write_pair(path, b"not a zip", config, "weights_sha256")
    with pytest.raises(ValueError, match="r.pt is not a file torch.save wrote"):
        load_rule(path)


def test_deeply_nested_json_is_a_value_error_not_a_recursion_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = save_rule(make_rule("sgd"), tmp_path / "r")
    path.with_suffix(".json").write_text('{"config": ' + deep + "}")
    with pytest.raises(ValueError, match=r"r.json nests deeper than MAX_JSON_DEPTH = 32"):
        load_rule(path)
    ds = dataset().save(tmp_path / "sr")
    ds.with_suffix(".json").write_text(deep)
    with pytest.raises(ValueError, match="MAX_JSON_DEPTH"):
        SRDataset.load(ds)
    (tmp_path / "fit.json").write_text(deep)
    with pytest.raises(ValueError, match="MAX_JSON_DEPTH"):
        FittedRule.load(tmp_path / "fit.json")


def fitted(pareto, names=("g_0",)) -> dict:
    return {
        "expr": "g_0",
        "names": list(names),
        "engine": "operon",
        "selection": "best",
        "seconds": 0,
        "meta": {},
        "pareto": pareto,
    }


def test_a_fitted_rule_file_is_counted_before_it_is_parsed(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text(json.dumps(fitted([{"expr": "g_0"}] * 300_000)))  # took 11.5 s to load
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="MAX_JSON_BYTES"):
        FittedRule.load(path)
    assert time.perf_counter() - t0 < 1.0
    path.write_text(json.dumps(fitted([{"expr": "g_0"}] * (MAX_PARETO_MEMBERS + 1))))
    with pytest.raises(ValueError, match=r"holds 401 members: expected .* MAX_PARETO_MEMBERS = 400"):
        FittedRule.load(path)
    path.write_text(json.dumps(fitted([], names=["g_0"] * (MAX_FIT_NAMES + 1))))
    with pytest.raises(ValueError, match="MAX_FIT_NAMES = 1515"):
        FittedRule.load(path)
    path.write_text(json.dumps(fitted([], names=["g" * 33])))
    with pytest.raises(ValueError, match="MAX_NAME_LENGTH = 32"):
        FittedRule.load(path)
    path.write_text(json.dumps(fitted([{"expr": "g_0"}] * MAX_PARETO_MEMBERS)))
    assert len(FittedRule.load(path).pareto) == MAX_PARETO_MEMBERS


# Item 3: a dataset's arrays are checked from their headers before any is read ---------------------------


def test_an_array_declaring_gigabytes_is_refused_from_its_header(tmp_path):
    header = io.BytesIO()  # 6 GB of float64 declared in a 2 KB file
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f8", "fortran_order": False, "shape": (375_000_000, 2)}
    )
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X.npy", header.getvalue() + bytes(1 << 20))
    write_pair(tmp_path / "sr.npz", buf.getvalue(), {"names": ["g_0", "g_1"], "meta": {}}, "npz_sha256")
    with pytest.raises(
        ValueError, match=r"MAX_DATASET_BYTES = 1073741824 bytes \(X.npy has shape \(375000000, 2\)"
    ):
        SRDataset.load(tmp_path / "sr.npz")


@pytest.mark.parametrize(
    "arrays, names, says",
    [
        ({"X": np.array([["a", "b"], ["c", "d"]])}, ["g_0", "g_1"], r"X.npy in .* holds <U1 values"),
        ({"y": np.array([b"a", b"b"])}, ["g_0", "g_1"], r"y.npy in .* holds \|S1 values"),
        ({"X": np.array([[None, 1], [2, 3]], dtype=object)}, ["g_0", "g_1"], r"holds object values"),
        ({}, "ab", r"names='ab' .* expected a list of column names"),
        ({}, [1, 2], r"names=\[1, 2\]"),
    ],
)
def test_strings_objects_and_malformed_names_are_refused(tmp_path, arrays, names, says):
    write_pair(tmp_path / "sr.npz", npz(**arrays), {"names": names, "meta": {}}, "npz_sha256")
    with pytest.raises(ValueError, match=says):
        SRDataset.load(tmp_path / "sr.npz")


def test_a_dataset_file_larger_than_the_cap_is_not_read(tmp_path, monkeypatch):
    path = dataset(rows=200).save(tmp_path / "sr")
    monkeypatch.setattr(srgen_module, "MAX_DATASET_BYTES", 1000)
    with pytest.raises(ValueError, match="holds more than 1000 bytes"):
        SRDataset.load(path)


# Item 5: a save killed at any instant leaves the previous pair or the new one ------------------------------

RULES = [make_rule("rp_s"), make_rule("rp_s", hidden=(3,))]
DATASETS = [dataset(rows=300, seed=0), dataset(rows=500, seed=1)]


def save_version(kind, path, i):
    if kind == "rule":
        save_rule(RULES[i], path, {"version_index": i})
    else:
        DATASETS[i].save(path)


def load_version(kind, path) -> int:
    "Which of the two versions the pair at `path` holds (it must load, whole, as one of them)."
    if kind == "rule":
        rule, card = load_rule(path)
        i = card["version_index"]
        assert all(
            torch.equal(a, b) for a, b in zip(rule.state_dict().values(), RULES[i].state_dict().values())
        )
        return i
    ds = SRDataset.load(path)
    i = int(ds.meta["note"][-1])
    assert np.array_equal(ds.X, DATASETS[i].X) and ds.names == DATASETS[i].names
    return i


def save_forever(kind, path, first):
    i = first
    while True:
        save_version(kind, path, i)
        i = 1 - i


@pytest.mark.parametrize("kind", ["rule", "dataset"])
def test_a_save_killed_at_random_points_leaves_a_loadable_pair(tmp_path, kind):
    path = tmp_path / ("r.pt" if kind == "rule" else "sr.npz")
    save_version(kind, path, 0)
    rng, seen, fork = np.random.default_rng(0), set(), multiprocessing.get_context("fork")
    t0 = time.perf_counter()
    for _ in range(25):
        writer = fork.Process(target=save_forever, args=(kind, path, int(rng.integers(2))))
        writer.start()
        time.sleep(rng.uniform(0.0, 0.2))
        os.kill(writer.pid, signal.SIGKILL)
        writer.join()
        seen.add(load_version(kind, path))
    assert seen == {0, 1}  # the saves did switch between the two versions
    assert time.perf_counter() - t0 < 60
    save_version(kind, path, 1)  # a save after the kills sweeps up what they left
    assert load_version(kind, path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, path.with_suffix(".json").name])
