"""Issue 22: robust under gradient spikes, low precision, untrusted files and concurrent runs.

One test per case of the issue (what broke, now a correct result or a clear error), then the cases that
already held and must keep holding."""

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
import torch
from torch import nn

import symbolic_l2o.meta_train  # noqa: F401  (the package re-exports a function of the same name: read the module from sys.modules)
import symbolic_l2o.srgen  # noqa: F401
import symbolic_l2o.files as files
from symbolic_l2o.regression import MAX_EQUATION_LENGTH, FittedRule, fit_rule
from symbolic_l2o.files import atomic_write
from symbolic_l2o.tasks import make_task
from symbolic_l2o.files import load_rule, save_rule
from symbolic_l2o.meta_train import MetaTrainSettings, meta_train
from symbolic_l2o.zoo import zoo_rule

from symbolic_l2o.optimizers import AdamRule, SGDRule
from symbolic_l2o.rule_optimizer import RuleOptimizer
from symbolic_l2o.expressions import SymbolicRule, parse_expression, variable
from symbolic_l2o.learned_rules import make_rule
from symbolic_l2o.srgen import SRDataset, record_trajectories

meta_train_module, srgen_module = sys.modules["symbolic_l2o.meta_train"], sys.modules["symbolic_l2o.srgen"]


def small_dataset(rows=30, seed=0):
    rng = np.random.default_rng(seed)
    return SRDataset(
        rng.normal(size=(rows, 2)),
        rng.normal(size=rows),
        ["g_0", "g_1"],
        np.arange(rows) % 3,
        np.arange(rows),
        np.arange(rows),
        {"note": f"seed {seed}"},
    )


# 1. A finite spike poisons a rule silently ------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_gradient_spike_changes_nothing_and_the_next_step_is_finite(policy):
    w = nn.Parameter(torch.ones(2))
    opt = RuleOptimizer([w], zoo_rule("rp_si"), on_nonfinite=policy)
    w.grad = torch.tensor([1e20, 1.0])  # |g|^3 overflows float32 in RP_si's p-means
    if policy == "error":
        with pytest.raises(FloatingPointError, match="non-finite state of parameter 0"):
            opt.step()
    else:
        opt.step()
        assert opt.nonfinite_skips == 1
    assert torch.equal(w.detach(), torch.ones(2)) and opt.state[w]["step"] == 0
    # the state is still the initial one
    assert all(torch.equal(v, torch.zeros_like(v)) for k, v in opt.state[w].items())
    w.grad = torch.tensor([1e-3, 1e-3])
    opt.step()  # the next step is taken, and finite (its direction is the learned rule's first-step bias)
    assert torch.isfinite(w).all() and not torch.equal(w.detach(), torch.ones(2))
    assert opt.state[w]["step"] == 1


def test_an_overflowing_update_is_refused_and_the_parameter_kept():
    w = nn.Parameter(torch.ones(3))
    opt = RuleOptimizer([w], SymbolicRule("1e30*g_0*g_0*g_0", scale=1.0))
    w.grad = torch.full((3,), 1e4)  # 1e30·1e12 = 1e42 > float32's 3.4e38
    with pytest.raises(FloatingPointError, match="non-finite update"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(3))


def test_a_rule_file_with_an_infinite_constant_is_refused():
    with pytest.raises(ValueError, match="outside float64's range"):
        SymbolicRule("1e400*g_0")


# 2. fp16 parameters go NaN on the first step ----------------------------------------------------------------

HALF_RULES = {
    "rp_si": lambda: zoo_rule("rp_si"),
    "rp": lambda: zoo_rule("rp"),
    "symbolic": lambda: SymbolicRule("-1.5*mt_0 - 0.3*tanh(gt_1)", scale=0.03),
    "adam": lambda: AdamRule(lr=1e-2),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", list(HALF_RULES))
def test_half_precision_parameters_stay_finite_and_move(name, dtype):
    w = nn.Parameter(torch.ones(4, dtype=dtype))
    opt = RuleOptimizer([w], HALF_RULES[name]())
    for g in ([1e-3, -1e-3, 0.0, 1e-3], [0.0] * 4, [1e-3] * 4):
        w.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    assert w.dtype == dtype and torch.isfinite(w).all()
    assert all(v.dtype == torch.float32 for k, v in opt.state[w].items() if k != "step")
    reference = nn.Parameter(torch.ones(4))  # the same steps in float32 land close by
    ref_opt = RuleOptimizer([reference], HALF_RULES[name]())
    for g in ([1e-3, -1e-3, 0.0, 1e-3], [0.0] * 4, [1e-3] * 4):
        reference.grad = torch.tensor(g)
        ref_opt.step()
    torch.testing.assert_close(w.detach().float(), reference.detach(), atol=2e-2, rtol=0)
    fresh = RuleOptimizer([w], HALF_RULES[name]())
    fresh.load_state_dict(opt.state_dict())  # the float32 state survives the round trip
    for k, v in opt.state[w].items():
        assert fresh.state[w][k].dtype == v.dtype and torch.equal(fresh.state[w][k], v)


# 3. Untrusted expressions can exhaust the machine -----------------------------------------------------------


@pytest.mark.parametrize(
    "text, limit",
    [
        ("g_0*9**9**9", "its exponent is too large"),
        ("10**10**10", "its exponent is too large"),
        ("1e999999", "outside float64's range"),
        ("1e-999999*g_0", "outside float64's range"),
        ("g_0*" + "9" * 400, "outside float64's range"),
        ("((9**64)**64)**64*g_0", "outside float64's range"),
        ("(" * 300 + "g_0" + ")" * 300, "MAX_EXPRESSION_DEPTH"),
        ("-" * 300 + "g_0", "MAX_EXPRESSION_DEPTH"),
        ("tanh(" * 150 + "g_0" + ")" * 150, "MAX_EXPRESSION_DEPTH"),
        ("g_0^" * 150 + "g_0", "MAX_EXPRESSION_DEPTH"),
        (" + ".join(["g_0"] * 5000), "MAX_EXPRESSION_CHARS"),
        # side doors (issue 40): powers inside pow(), a variable's power, functions and products of numbers
        ("g_0*pow(9, 9**9)", "its exponent is too large"),
        ("(3*g_0)^999999999", "MAX_EXPONENT"),
        ("pow(3*g_0, 9**9)", "MAX_EXPONENT"),
        ("square(" * 25 + "2**1000" + ")" * 25 + "*g_0", "outside float64's range"),
        ("exp(exp(1e300))*g_0", "outside float64's range"),
        ("sinh(sinh(1e300))*g_0", "outside float64's range"),
        ("cube(1e300*g_0)", "outside float64's range"),
        ("1e300*1e300*g_0", "outside float64's range"),
        ("\u0663*g_0", "unexpected character"),  # Arabic-Indic 3: ASCII digits only
        ("\U0001d7d7*g_0", "unexpected character"),  # mathematical bold 9
    ],
)
def test_parser_refuses_what_would_exhaust_the_machine_quickly(text, limit):
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=limit):
        parse_expression(text, ["g_0"])
    assert time.perf_counter() - t0 < 1.0


def test_nesting_up_to_the_limit_parses_without_recursion_errors():
    expr = parse_expression("tanh(" * 98 + "g_0" + ")" * 98, ["g_0"])  # 99 levels: the limit is 100
    assert str(expr).count("tanh") == 98


def test_a_rule_whose_constant_overflows_never_writes_its_parameters():
    w = nn.Parameter(torch.ones(2))
    # a float64 constant past float32's range: the float32 update is inf (1e300*1e300 is refused when parsed)
    opt = RuleOptimizer([w], SymbolicRule("1e300*g_0"))
    w.grad = torch.ones(2)
    with pytest.raises(FloatingPointError, match="non-finite update"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(2))


def test_a_huge_lag_is_refused_before_any_state_is_allocated():
    with pytest.raises(ValueError, match="MAX_LAG"):
        SymbolicRule("-0.01*g_999999999")


def test_long_sums_parse_in_one_pass():
    # 9 KB: 13 s with term-by-term sums at 2,000 terms
    text = " + ".join(f"{i}.5*g_{i % 20}" for i in range(700))
    t0 = time.perf_counter()
    expr = parse_expression(text, [f"g_{i}" for i in range(20)])
    assert time.perf_counter() - t0 < 3.0
    assert expr.coeff(variable("g_0")) == sum(i + 0.5 for i in range(0, 700, 20))


def test_one_pass_sums_build_what_term_by_term_sums_built():
    g0, g1, f = variable("g_0"), variable("g_1"), sp.Float
    built = (
        f("0.1") * g0
        + f("0.2") * g1
        - f("0.3") * g0
        + f("1.5") * (f("0.5") - g1) * sp.tanh(g0) ** 2
        + f("0.7")
    )
    parsed = parse_expression(
        "0.1*g_0 + 0.2*g_1 - 0.3*g_0 + 1.5*(0.5 - g_1)*tanh(g_0)**2 + 0.7", ["g_0", "g_1"]
    )
    assert sp.srepr(parsed) == sp.srepr(built)  # the number 1.5 distributed over (0.5 - g_1) first, as before


# 4. Two-file artifacts are not one unit ---------------------------------------------------------------------


def crash_on_json(real):
    def write(path, fn):
        if Path(path).suffix == ".json":
            raise OSError("killed between the two files")
        return real(path, fn)

    return write


def test_dataset_save_cut_between_its_files_keeps_the_previous_dataset(tmp_path, monkeypatch):
    path = small_dataset(seed=0).save(tmp_path / "sr")
    monkeypatch.setattr(files, "atomic_write", crash_on_json(atomic_write))
    with pytest.raises(OSError, match="killed"):
        small_dataset(rows=40, seed=1).save(path)
    assert SRDataset.load(path).meta["note"] == "seed 0"  # issue 40: a save never loses the last good version


def test_rule_save_cut_between_its_files_keeps_the_previous_rule(tmp_path, monkeypatch):
    path = save_rule(make_rule("rp_s"), tmp_path / "r", {"note": "first"})
    monkeypatch.setattr(files, "write_json_atomic", lambda obj, p: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError, match="killed"):
        save_rule(make_rule("rp_s", hidden=(3,)), path, {"note": "second"})
    assert load_rule(path)[1]["note"] == "first"  # issue 40: a save never loses the last good version


def test_readers_never_pair_files_of_two_concurrent_saves(tmp_path):
    path = tmp_path / "sr.npz"
    small_dataset(rows=20, seed=0).save(path)
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import numpy as np, time
        from symbolic_l2o.srgen import SRDataset
        t0 = time.time()
        while time.time() - t0 < 2:
            for rows, seed in ((20, 0), (40, 1)):
                rng = np.random.default_rng(seed)
                SRDataset(rng.normal(size=(rows, 2)), rng.normal(size=rows), ["g_0", "g_1"],
                          np.arange(rows) % 3, np.arange(rows), np.arange(rows),
                          {{"note": f"seed {{seed}}"}}).save({str(path)!r})
        """),
        ]
    )
    loads, refused = 0, 0
    try:
        while writer.poll() is None:
            try:
                ds = SRDataset.load(path)
            except ValueError as e:
                assert "is not the file" in str(e)
                refused += 1
                continue
            # the arrays and the metadata of one save
            assert ds.meta["note"] == f"seed {0 if len(ds) == 20 else 1}"
            loads += 1
    finally:
        writer.wait(timeout=60)
    assert writer.returncode == 0 and loads > 0


# 5. Resume checks only the rule's config --------------------------------------------------------------------


def tiny_run(out_dir, **kw):
    torch.manual_seed(0)
    task, resume = kw.pop("task", make_task("quadratic")), kw.pop("resume", False)
    settings = MetaTrainSettings(**{"epochs": 2, "epoch_len": 4, "unroll": 2, "checkpoint_every": 1, **kw})
    rule = make_rule("rp_s")
    return rule, meta_train(rule, task, settings, out_dir=out_dir, resume=resume, progress=False)


@pytest.mark.parametrize(
    "changed, says",
    [
        ({"seed": 1}, "seed=0 there, 1 here"),
        ({"unroll": 4}, "unroll=2 there, 4 here"),
        ({"epoch_len": 6}, "epoch_len=4 there, 6 here"),
        ({"meta_lr": 1e-4}, "meta_lr=0.001 there, 0.0001 here"),
        ({"task": make_task("quadratic", dim=3)}, "tasks="),
    ],
)
def test_resume_refuses_other_settings_naming_which(tmp_path, changed, says):
    tiny_run(tmp_path)
    if "task" in changed:
        changed["task"].name = "quadratic3"
    with pytest.raises(ValueError, match=says.replace("(", r"\(")):
        tiny_run(tmp_path, resume=True, epochs=3, **changed)
    tiny_run(tmp_path, resume=True, epochs=3)  # the checkpoint's own settings still resume


# 6. Run directories are not locked --------------------------------------------------------------------------


def test_a_second_writer_of_a_run_directory_gets_a_clear_error(tmp_path):
    # the first writer: a process holding the run directory's lock as `run_lock` takes it (flock on
    # out_dir/.lock)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import fcntl, time
        with open({str(tmp_path / ".lock")!r}, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep(300)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    second = textwrap.dedent(f"""
        from symbolic_l2o.tasks import make_task
        from symbolic_l2o.meta_train import MetaTrainSettings, meta_train
        from symbolic_l2o.learned_rules import make_rule
        settings = MetaTrainSettings(epochs=2, epoch_len=4, unroll=2)
        out = {str(tmp_path)!r}
        meta_train(make_rule("rp_s"), make_task("quadratic"), settings, out_dir=out, progress=False)
        """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = subprocess.run([sys.executable, "-c", second], capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "is being written by another process" in r.stderr
        assert not (tmp_path / "metrics.jsonl").exists()
    finally:
        # a killed writer releases its lock: the kernel drops it with the process
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    tiny_run(tmp_path)  # with the holder gone the directory is free
    assert [json.loads(l)["epoch"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]


# 7. Unvalidated knobs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", [float("nan"), -1.0, 0.0, float("inf")])
def test_meta_train_refuses_a_bad_clip(clip):
    with pytest.raises(ValueError, match=f"invalid clip={clip}.*clip > 0"):
        meta_train(
            make_rule("rp_s"),
            make_task("quadratic"),
            MetaTrainSettings(epochs=1, epoch_len=2, unroll=2, clip=clip),
            progress=False,
        )


@pytest.mark.parametrize(
    "kw, says",
    [
        ({"seeds": [1, 1]}, r"seeds \[1\] repeat"),
        ({"coords_per_tensor": -1}, "invalid coords_per_tensor=-1"),
        ({"coords_per_tensor": 0}, "invalid coords_per_tensor=0"),
        ({"coords_per_tensor": 2.5}, "invalid coords_per_tensor=2.5"),
    ],
)
def test_record_trajectories_refuses_bad_knobs(kw, says):
    with pytest.raises(ValueError, match=says):
        record_trajectories(SGDRule(), make_task("quadratic"), steps=10, lags=2, progress=False, **kw)


@pytest.mark.parametrize("max_length", [10**9, MAX_EQUATION_LENGTH + 1, 0, 2.5, True])
def test_fit_rule_refuses_a_bad_max_length(max_length):
    X = np.random.default_rng(0).normal(size=(50, 2))
    with pytest.raises(
        ValueError,
        match=f"invalid max_length={max_length!r}: expected an integer from 1 to MAX_EQUATION_LENGTH",
    ):
        fit_rule(X, X[:, 0], ["a", "b"], max_length=max_length)


@pytest.mark.parametrize(
    "group, says",
    [
        ({"lr": -1.0}, "invalid lr=-1.0"),
        ({"lr": float("nan")}, "invalid lr=nan"),
        ({"weight_decay": -1.0}, "invalid weight_decay"),
        ({"decoupled_weight_decay": "yes"}, "invalid decoupled_weight_decay"),
    ],
)
def test_a_refused_param_group_is_not_kept(group, says):
    opt = RuleOptimizer([nn.Parameter(torch.ones(2))], AdamRule())
    with pytest.raises(ValueError, match=says):
        opt.add_param_group({"params": [nn.Parameter(torch.ones(2))], **group})
    assert len(opt.param_groups) == 1


# 8. Small ---------------------------------------------------------------------------------------------------


def test_a_torn_last_metrics_line_is_skipped_with_a_warning(tmp_path):
    tiny_run(tmp_path)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "mode": "tr')
    with pytest.warns(UserWarning, match="torn last line"):
        _, history = tiny_run(tmp_path, resume=True, epochs=3)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [0, 1, 2]
    # damage in the middle is no tear
    (tmp_path / "metrics.jsonl").write_text(lines[0] + "\n{oops\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="line 2, is not JSON"):
        tiny_run(tmp_path, resume=True, epochs=4)


def test_temporaries_of_killed_writers_are_removed_and_data_is_synced_before_the_rename(
    tmp_path, monkeypatch
):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".card.json.{dead.stdout.strip()}.ab12cd.tmp"
    # a writer still at work (this process) is left alone
    live = tmp_path / f".card.json.{os.getpid()}.ef34gh.tmp"
    # another file's temporaries are not ours
    other = tmp_path / f".other.json.{dead.stdout.strip()}.ij56kl.tmp"
    for p in (stale, live, other):
        p.write_text("half")
    calls, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "card.json", lambda tmp: Path(tmp).write_text("{}"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["card.json", live.name, other.name])
    assert calls[:2] == ["fsync", "replace"]


def test_fitted_rule_save_and_load_agree_on_the_name(tmp_path):
    fit = FittedRule(
        parse_expression("-0.5*g_0 + 0.1*g_1", ["g_0", "g_1"]),
        ["g_0", "g_1"],
        [{"expr": parse_expression("-0.5*g_0", ["g_0", "g_1"]), "loss": 1.0}],
    )
    written = fit.save(tmp_path / "fit")
    assert written == tmp_path / "fit.json"
    for name in ("fit", "fit.json"):
        assert FittedRule.load(tmp_path / name).expr == fit.expr


def test_missing_keys_in_loaded_files_are_named(tmp_path):
    path = save_rule(make_rule("rp_s"), tmp_path / "r")
    card = json.loads(path.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in card.items() if k != "config"}))
    with pytest.raises(ValueError, match=r"r.json lacks \['config'\]"):
        load_rule(path)
    ds = small_dataset().save(tmp_path / "sr")
    info = json.loads(ds.with_suffix(".json").read_text())
    ds.with_suffix(".json").write_text(json.dumps({"meta": info["meta"]}))
    with pytest.raises(ValueError, match=r"sr.json lacks \['names', 'npz_sha256'\]"):
        SRDataset.load(ds)
    (tmp_path / "fit.json").write_text(
        json.dumps(
            {
                "expr": "g_0",
                "names": ["g_0"],
                "pareto": [{}],
                "engine": "operon",
                "selection": "best",
                "seconds": 0,
                "meta": {},
            }
        )
    )
    with pytest.raises(ValueError, match=r"a Pareto member lacks \['expr'\]"):
        FittedRule.load(tmp_path / "fit.json")
    tiny_run(tmp_path / "run")
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    del ck["meta_lr"]
    torch.save(ck, tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(ValueError, match=r"checkpoint.pt lacks \['meta_lr'\]"):
        tiny_run(tmp_path / "run", resume=True, epochs=3)


# What already held, and must keep holding -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "g_0.real",
        "open('f')",
        "g_0; g_1",
        "lambda: 1",
        "exec('1')",
        "g_0 if g_0 else g_1",
        "[g_0]",
        "ｇ_0",
        "g\u200b_0",
        "е*g_0",
    ],
)
def test_the_parser_refuses_code(text):
    with pytest.raises(ValueError):
        parse_expression(text, ["g_0", "g_1"])


class Payload:
    def __reduce__(self):
        return (os.system, ("true",))


def test_rule_weights_load_only_tensors(tmp_path):
    path = save_rule(make_rule("rp_s"), tmp_path / "r")
    buf = io.BytesIO()
    torch.save({"x": Payload()}, buf)
    card = json.loads(path.with_suffix(".json").read_text())
    # a consistent pair (data and card hashes): the loader reaches torch.load
    files.write_pair(path, buf.getvalue(), {"config": card["config"]}, "weights_sha256")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_rule(path)


def test_datasets_refuse_pickled_arrays(tmp_path):
    path = small_dataset().save(tmp_path / "sr")
    buf = io.BytesIO()
    np.savez(
        buf,
        X=np.array([Payload()], dtype=object),
        y=np.zeros(1),
        run_ids=np.zeros(1),
        coord_ids=np.zeros(1),
        steps=np.zeros(1),
    )
    info = json.loads(path.with_suffix(".json").read_text())
    files.write_pair(path, buf.getvalue(), {"names": info["names"], "meta": info["meta"]}, "npz_sha256")
    with pytest.raises(ValueError, match="allow_pickle"):
        SRDataset.load(path)


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_nonfinite_gradients_change_nothing(policy):
    w = nn.Parameter(torch.ones(3))
    opt = RuleOptimizer([w], AdamRule(), on_nonfinite=policy)
    w.grad = torch.ones(3)
    opt.step()
    before = (w.detach().clone(), {k: v.clone() for k, v in opt.state[w].items()})
    w.grad = torch.tensor([1.0, float("nan"), 1.0])
    if policy == "error":
        with pytest.raises(FloatingPointError, match="non-finite gradient"):
            opt.step()
    else:
        opt.step()
        assert opt.nonfinite_skips == 1
    assert torch.equal(w.detach(), before[0]) and all(
        torch.equal(opt.state[w][k], v) for k, v in before[1].items()
    )


def test_sigkill_during_meta_train_then_resume_gives_the_uninterrupted_weights(tmp_path):
    script = textwrap.dedent(f"""
        import torch
        from symbolic_l2o.tasks import make_task
        from symbolic_l2o.meta_train import MetaTrainSettings, meta_train
        from symbolic_l2o.learned_rules import make_rule
        torch.manual_seed(0)
        settings = MetaTrainSettings(epochs=12, epoch_len=4, unroll=2, checkpoint_every=1)
        meta_train(make_rule("rp_s"), make_task("quadratic"), settings,
                   out_dir={str(tmp_path / "killed")!r}, progress=False, resume=True)
        """)
    child = subprocess.Popen([sys.executable, "-c", script])
    metrics, t0 = tmp_path / "killed" / "metrics.jsonl", time.time()
    while (
        (not metrics.exists() or len(metrics.read_text().splitlines()) < 3)
        and time.time() - t0 < 120
        and child.poll() is None
    ):
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    resumed, _ = tiny_run(tmp_path / "killed", epochs=12, resume=True)
    whole, _ = tiny_run(tmp_path / "whole", epochs=12)
    for a, b in zip(resumed.state_dict().values(), whole.state_dict().values()):
        assert torch.equal(a, b)


# 9. Numerics as torch.optim (issue 40) ---------------------------------------------------------------------


def test_complex_parameters_are_refused_with_the_real_view_named():
    w = torch.tensor([1 + 1j, 2 + 0j], requires_grad=True)
    with pytest.raises(ValueError, match="view_as_real"):
        RuleOptimizer([w], AdamRule(lr=0.1))


@pytest.mark.parametrize("fused", [False, True])
def test_a_huge_lr_is_checked_on_the_final_update_and_changes_no_counter(fused):
    """A finite update times a huge lr overflows float32: the step is refused before anything is written (the
    parameter, its state, its step counter), on the checked and on the fused path."""
    w = torch.ones(3, requires_grad=True)
    opt = RuleOptimizer([w], SymbolicRule("-0.5*g_0"), lr=1e38, fused=fused)
    w.grad = torch.full((3,), 1e3)
    with pytest.raises(FloatingPointError, match="lr"):
        opt.step()
    assert torch.equal(w.detach(), torch.ones(3))
    assert not opt.state[w] or int(opt.state[w]["step"]) == 0


def test_a_tensor_lr_steps_as_torch_optim_does():
    torch.manual_seed(0)
    a, b = torch.randn(5, requires_grad=True), None
    b = a.detach().clone().requires_grad_()
    ours = RuleOptimizer([a], AdamRule(), lr=torch.tensor(0.01))
    theirs = torch.optim.Adam([b], lr=torch.tensor(0.01))
    for _ in range(5):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        ours.step(), theirs.step()
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (
            lambda ps: RuleOptimizer(ps, SGDRule(lr=0.1), maximize=True, weight_decay=0.1),
            lambda ps: torch.optim.SGD(ps, lr=0.1, maximize=True, weight_decay=0.1),
        ),
        (
            lambda ps: RuleOptimizer(ps, AdamRule(lr=0.01), maximize=True),
            lambda ps: torch.optim.Adam(ps, lr=0.01, maximize=True),
        ),
    ],
)
def test_maximize_steps_as_torch_optim_does(ours, theirs):
    torch.manual_seed(0)
    a = torch.randn(5, requires_grad=True)
    b = a.detach().clone().requires_grad_()
    oa, ob = ours([a]), theirs([b])
    for _ in range(5):
        g = torch.randn(5)
        a.grad, b.grad = g.clone(), g.clone()
        oa.step(), ob.step()
    torch.testing.assert_close(a, b)


def test_loading_another_rules_state_is_refused_naming_both():
    w = torch.ones(3, requires_grad=True)
    adam = RuleOptimizer([w], AdamRule())
    w.grad = torch.ones(3)
    adam.step()
    symbolic = RuleOptimizer([w], SymbolicRule("-0.5*mt_0"))
    with pytest.raises(ValueError, match="AdamRule.*SymbolicRule"):
        symbolic.load_state_dict(adam.state_dict())
    legacy = adam.state_dict()
    del legacy["rule"]  # a state_dict of torch.optim's own shape: the buffers still tell
    with pytest.raises(ValueError, match="another rule"):
        symbolic.load_state_dict(legacy)
    assert not symbolic.state  # nothing was loaded


def test_the_docs_table_of_limits_states_every_limit_with_its_value():
    """nbs/00d_files.ipynb's table of limits names every MAX_* constant of the package with its value, and no
    other."""
    import importlib
    import re

    nb = json.loads((Path(__file__).parents[1] / "nbs" / "00d_files.ipynb").read_text())
    text = "".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    rows = re.findall(r"^\| `(MAX_[A-Z_]+)` \| (\d+) \| `(\w+)` \|", text, re.M)
    stated = {name: (int(value), module) for name, value, module in rows}
    package = Path(__file__).parents[1] / "symbolic_l2o"
    defined = {}
    for path in package.glob("*.py"):
        for name in re.findall(r"^(MAX_[A-Z_]+) = ", path.read_text(), re.M):
            defined[name] = (getattr(importlib.import_module(f"symbolic_l2o.{path.stem}"), name), path.stem)
    assert stated == defined


def test_a_computed_number_that_underflows_is_written_as_zero_so_the_text_reads_back():
    """Operon's text can hold exp(-850.0), 0 in float64: it is folded to 0 when parsed, so a saved equation
    never holds a literal like 8e-371 that the literal check refuses (a fitted-rule file that cannot load)."""
    expr = parse_expression("0.5*g_0 + exp(-850.0)*g_0", ["g_0"])
    assert expr == parse_expression("0.5*g_0", ["g_0"])
    assert parse_expression(str(expr), ["g_0"]) == expr
