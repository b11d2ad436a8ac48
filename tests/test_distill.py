"""Recording and distillation behaviour that is not a notebook lesson: exact recoveries, safe files, symbolic
rules, engines."""

import json

import numpy as np
import pytest
import sympy as sp
import torch

from symbolic_l2o.regression import FittedRule, fit_rule, evaluate_expression
from symbolic_l2o.sanity import _is_exact, sanity_targets
from symbolic_l2o.tasks import make_task
from symbolic_l2o.optimizers import AdamRule, MomentumRule, SGDRule, rule_config
from symbolic_l2o.rule_optimizer import RuleOptimizer
from symbolic_l2o.expressions import SymbolicRule, variable
from symbolic_l2o.learned_rules import rule_from_config
from symbolic_l2o.srgen import SRDataset, record_trajectories


@pytest.fixture(scope="module")
def gradients():
    "Gradient histories (20 lags of g) recorded while Adam trains the digits MLP."
    return record_trajectories(
        AdamRule(lr=0.01),
        make_task("digits_mlp"),
        steps=60,
        seeds=range(3),
        features=["g"],
        lags=20,
        progress=False,
    )


@pytest.mark.parametrize("target", ["-0.01 g_t", "momentum(0.6)"])
def test_exact_recovery_from_recorded_gradients(gradients, target):
    expr = sanity_targets()[target]
    y = evaluate_expression(expr, gradients.X, gradients.names)
    fit = fit_rule(gradients.X, y, gradients.names, generations=5, max_rows=3000)
    assert _is_exact(fit.expr, expr), fit.expr
    assert fit.r2(gradients.X, y) > 0.999999


def test_fitted_rule_round_trip_gives_identical_predictions(gradients, tmp_path):
    # a budget of generations, not of seconds: the same equation on a loaded machine. A fit holds its
    # equations as their saved text reads back (sympy orders a sum's terms by its floats' precision: a copy
    # read back could otherwise add them in another order, one ulp off)
    y = np.tanh(50 * gradients.X[:, 0]) - 3 * gradients.X[:, 2]
    fit = fit_rule(
        gradients.X, y, gradients.names, generations=20, time_limit=60, max_rows=3000, meta={"scale": 0.1}
    )
    back = FittedRule.load(fit.save(tmp_path / "fit"))
    assert np.array_equal(back.predict(gradients.X), fit.predict(gradients.X))
    assert back.expr == fit.expr and [m["expr"] for m in back.pareto] == [m["expr"] for m in fit.pareto]
    # every member reads back with the same float64 constants (sympy's own text would drop their last digits)
    floats = lambda e: sorted(float(a) for a in e.atoms(sp.Float))
    assert [floats(m["expr"]) for m in back.pareto] == [floats(m["expr"]) for m in fit.pareto]
    assert [m["expr"].free_symbols for m in back.pareto] == [m["expr"].free_symbols for m in fit.pareto]
    assert back.meta["scale"] == 0.1 and back.to_rule().scale == 0.1


@pytest.mark.parametrize(
    "payload",
    [
        "__import__('os').system('touch /tmp/pwned')",
        "g_0.__class__",
        "eval('1')",
        "g_0 if True else g_1",
        "[g_0]",
    ],
)
def test_a_file_carrying_code_is_rejected_before_anything_runs(tmp_path, payload):
    path = tmp_path / "evil.json"
    path.write_text(
        json.dumps(
            {
                "expr": payload,
                "names": ["g_0", "g_1"],
                "engine": "operon",
                "selection": "best",
                "seconds": 0,
                "meta": {},
                "pareto": [],
            }
        )
    )
    with pytest.raises(ValueError):
        FittedRule.load(path)
    path.write_text(
        json.dumps(
            {
                "expr": "g_0",
                "names": ["__import__"],
                "engine": "operon",
                "selection": "best",
                "seconds": 0,
                "meta": {},
                "pareto": [{"expr": payload}],
            }
        )
    )
    with pytest.raises(ValueError):
        FittedRule.load(path)


def test_symbolic_rule_reproduces_hand_rules_to_1e_6():
    torch.manual_seed(0)
    grads = [[torch.randn(6, 5), torch.randn(7)] for _ in range(40)]
    cases = [
        (SymbolicRule("-g_0", scale=0.05), SGDRule(lr=0.05)),
        (SymbolicRule("-mt_0", scale=3e-3), AdamRule(lr=3e-3, betas=(0.95, 0.95), eps=1e-12)),
        (SymbolicRule("0.9*u_1 - g_0", scale=0.1), MomentumRule(lr=0.1, momentum=0.9)),
    ]  # recurrent: reads its own past
    for sym, hand in cases:
        for grad_mode in (False, True):
            s1, s2 = sym.init(grads[0]), hand.init(grads[0])
            with torch.set_grad_enabled(grad_mode):
                for t, g in enumerate(grads, 1):
                    (u1, s1), (u2, s2) = sym.step(g, s1, t), hand.step(g, s2, t)
                    for a, b in zip(u1, u2):
                        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)


def test_to_sympy_returns_changed_constants_and_the_config_round_trips():
    rule = SymbolicRule("0.02 - 0.5*tanh(1.99*mt_0)", scale=0.01)
    with torch.no_grad():
        rule.constants[rule.constants.tolist().index(-0.5)] = -0.75
    expr = rule.to_sympy()
    assert sorted(float(a) for a in expr.atoms(sp.Float)) == [-0.75, 0.02, 1.99]
    rebuilt = rule_from_config(rule_config(rule))
    assert torch.equal(rebuilt.constants, rule.constants.detach())


def test_symbolic_rule_constants_are_meta_trainable_and_history_uses_lags():
    rule = SymbolicRule("-1.0*g_0 - 0.5*g_2", scale=0.1)
    assert rule.lags == 3 and rule.features == ("g",)
    w = torch.zeros(4, requires_grad=True)
    state, total = rule.init([w]), 0
    for t in range(1, 5):
        (u,), state = rule.step([torch.full((4,), float(t))], state, t)
        total = total + u.sum()
    total.backward()
    assert rule.constants.grad is not None and torch.isfinite(rule.constants.grad).all()
    # step 4: -1·4 - 0.5·2 (lag 2 = step 2), times 0.1
    torch.testing.assert_close(u.detach(), torch.full((4,), -0.5))


def test_a_recurrent_rule_meta_trains_through_its_own_past_outputs():
    """u_t = a·u_{t−1} − g_t: with g = 1, 2, 3 and a = 0.5, u_3 = a²u_1 − a·g_2 − g_3 and ∂u_3/∂a = 2a·u_1 −
    g_2 = −3."""
    rule = SymbolicRule("0.5*u_1 - 1.0*g_0", scale=0.1)
    assert rule.lags == 2 and rule.features == ("g", "u")
    state = rule.init([torch.zeros(2)])
    for t in range(1, 4):
        (u,), state = rule.step([torch.full((2,), float(t))], state, t)
    u[0].backward()
    torch.testing.assert_close(u.detach(), torch.full((2,), 0.1 * (0.25 * -1 - 0.5 * 2 - 3)))
    assert rule.constants.grad[rule.constants.detach().tolist().index(0.5)].item() == pytest.approx(0.1 * -3)


def test_a_recorded_recurrent_rule_satisfies_its_own_equation():
    """Recording a deployed recurrent equation gives rows on which that equation is exact: u is the rule's own
    output / scale."""
    rule = SymbolicRule("0.5*u_1 - tanh(30*g_0)", scale=0.1)
    ds = record_trajectories(
        rule, make_task("digits_mlp"), steps=40, seeds=range(2), features=["g", "u"], lags=2, progress=False
    )
    assert ds.meta["scale"] == 0.1 and ds.names == ["g_0", "g_1", "u_1"]
    pred = evaluate_expression(rule.to_sympy(), ds.X, ds.names)
    np.testing.assert_allclose(pred, ds.y, atol=1e-6)


def test_recording_with_a_teacher_labels_the_rule_s_states_with_the_teacher_s_outputs():
    """Momentum drives (its outputs are u, its trajectory the states); plain SGD labels: y = −g_t, u_1 =
    0.6·u_2 − g_1."""
    ds = record_trajectories(
        MomentumRule(lr=0.1, momentum=0.6),
        make_task("digits_mlp"),
        steps=40,
        seeds=range(2),
        features=["g", "u"],
        lags=3,
        progress=False,
        teacher=SGDRule(lr=0.5),
    )
    col = lambda n: ds.X[:, ds.names.index(n)]
    np.testing.assert_allclose(ds.y, -col("g_0"), atol=1e-7)
    np.testing.assert_allclose(col("u_1"), 0.6 * col("u_2") - col("g_1"), atol=1e-6)
    assert ds.meta["teacher"]["class"] == "SGDRule" and ds.meta["scale"] == 0.1


def test_to_rule_clips_a_recurrent_equation_to_its_fitted_target_range():
    X = np.random.default_rng(0).normal(size=(200, 2))
    y = 0.5 * X[:, 1] - X[:, 0]
    fit = fit_rule(X, y, ["g_0", "u_1"], generations=2)
    assert fit.meta["target_range"] == [y.min(), y.max()]
    assert fit.to_rule().clip == (y.min(), y.max())
    # nothing fed back: nothing to bound
    assert fit_rule(X, y, ["g_0", "g_1"], generations=2).to_rule().clip is None
    # outputs all positive
    drifting = fit_rule(X, 0.05 + 0.01 * X[:, 0] + 0.01 * X[:, 1], ["g_0", "u_1"], generations=2)
    assert drifting.to_rule().clip[0] == 0.0  # rest (0) stays inside the clip: it cannot force a drift
    with pytest.raises(ValueError, match="clip"):
        SymbolicRule("g_0", clip=(1.0, -1.0))


def test_a_censored_fit_aims_past_the_bound_where_the_target_saturates_and_deploys_clipped():
    X = np.random.default_rng(0).normal(size=(400, 1))
    y = np.tanh(3 * X[:, 0])  # a tanh output: saturated (|y| > 0.99) for |g| > 0.88
    saturated = np.abs(y) > 0.99
    fit = fit_rule(X, y, ["g_0"], generations=5, censor=0.99)
    raw = evaluate_expression(fit.expr, X, ["g_0"])
    assert np.abs(raw[saturated]).mean() > 1.1  # fitted to 1.2·y there, not to the bound
    # the range of the target itself
    assert fit.meta["censor"] == 0.99 and fit.meta["target_range"] == [
        y.min(),
        y.max(),
    ]
    assert fit.to_rule().clip == (y.min(), y.max())  # censored: clipped although nothing is fed back
    # R² is that of the deployed outputs
    np.testing.assert_array_equal(fit.predict(X), np.clip(raw, y.min(), y.max()))
    plain = fit_rule(X, y, ["g_0"], generations=5)
    assert (
        np.abs(evaluate_expression(plain.expr, X, ["g_0"])[saturated]).mean() < 1.05
        and plain.to_rule().clip is None
    )


def test_symbolic_rule_deploys_through_rule_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = RuleOptimizer([p], SymbolicRule("-g_0", scale=0.1))
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, 0.8, 0.7]))


def test_bad_inputs_to_fit_rule_and_symbolic_rule():
    X = np.random.default_rng(0).normal(size=(100, 2))
    with pytest.raises(ValueError, match="unknown engine"):
        fit_rule(X, X[:, 0], ["a", "b"], engine="gplearn")
    with pytest.raises(ValueError, match="invalid selection"):
        fit_rule(X, X[:, 0], ["a", "b"], selection="fastest")
    with pytest.raises(ValueError, match="rows but y"):
        fit_rule(X, X[:50, 0], ["a", "b"])
    with pytest.raises(ValueError, match="unknown feature"):
        SymbolicRule("velocity_0 + g_0")
    with pytest.raises(ValueError, match="no variable"):
        SymbolicRule("1.5")


def test_sr_dataset_split_is_by_run_and_save_is_atomic(gradients, tmp_path):
    train, test = gradients.split_by_run(test_fraction=0.34)
    assert not set(train.run_ids) & set(test.run_ids) and len(train) + len(test) == len(gradients)
    path = gradients.save(tmp_path / "sr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.json", "sr.npz"]
    back = SRDataset.load(path)
    assert np.array_equal(back.X, gradients.X) and back.names == gradients.names
    with pytest.raises(FileNotFoundError, match="no SR dataset"):
        SRDataset.load(tmp_path / "missing")
    with pytest.raises(ValueError, match="expected"):
        SRDataset(np.zeros((3, 2)), np.zeros(3), ["a"], np.zeros(3), np.zeros(3), np.zeros(3))


def test_pysr_engine_runs_where_julia_is_present_and_says_why_elsewhere():
    X = np.random.default_rng(0).normal(size=(200, 2))
    y = -0.5 * X[:, 0] * X[:, 1]  # not linear: the engine must run (an exact linear fit skips it)
    try:
        fit = fit_rule(X, y, ["g_0", "g_1"], engine="pysr", operators=["add", "mul"], time_limit=60)
    except RuntimeError as e:
        assert "Julia" in str(e)
        pytest.skip(f"PySR engine unavailable here: {e}")
    assert fit.r2(X, y) > 0.999


def test_fit_rule_is_reproducible_for_a_seed_and_reports_what_stopped_it(gradients):
    y = np.tanh(50 * gradients.X[:, 0]) + 20 * gradients.X[:, 1]
    fits = [
        fit_rule(gradients.X, y, gradients.names, generations=5, search_rows=500, time_limit=120, seed=3)
        for _ in range(2)
    ]
    assert [str(m["expr"]) for m in fits[0].pareto] == [str(m["expr"]) for m in fits[1].pareto]
    assert fits[0].meta["stopped_by_time"] is False and fits[0].meta["search_rows"] == 500
    assert fits[0].meta["engine_skipped"] is False
    linear = fit_rule(
        gradients.X,
        3 * gradients.X[:, 0] - gradients.X[:, 2],
        gradients.names,
        generations=10**6,
        time_limit=60,
    )
    assert (
        linear.meta["engine_skipped"] is True
        and linear.seconds < 5
        and linear.r2(gradients.X, 3 * gradients.X[:, 0] - gradients.X[:, 2]) == pytest.approx(1)
    )
    # no exact fit to converge to, no patience stop: the clock
    noisy = y + np.random.default_rng(0).normal(size=len(y))
    cut = fit_rule(
        gradients.X, noisy, gradients.names, generations=10**6, time_limit=1, seed=3, patience=10**6
    )
    assert cut.meta["stopped_by_time"] is True
    for bad, message in (
        ({"generations": 0}, "generations"),
        ({"search_rows": 2.5}, "search_rows"),
        ({"time_limit": 0}, "time_limit"),
    ):
        with pytest.raises(ValueError, match=message):
            fit_rule(gradients.X, y, gradients.names, **bad)


def test_eva_ratio_is_the_ratio_of_late_mean_losses_with_a_paired_bootstrap_interval():
    from symbolic_l2o.fidelity import eva_ratio, faithful, verdict

    rng = np.random.default_rng(0)
    source = rng.uniform(0.5, 1.5, size=40)
    # every resample keeps the factor 2
    assert eva_ratio(source, 2 * source) == pytest.approx((2.0, 2.0, 2.0))
    noisy = source * rng.uniform(0.5, 1.5, size=40)
    ratio, lo, hi = eva_ratio(source, noisy)
    assert ratio == pytest.approx(noisy.mean() / source.mean()) and lo < ratio < hi and hi - lo > 0.05
    # two-sided
    assert faithful((1.0, 0.86, 1.14)) and not faithful((1.0, 0.84, 1.1)) and not faithful((0.8, 0.7, 0.9))
    assert (
        verdict((0.8, 0.7, 0.9)) == "trains better than its rule"
        and verdict((1.5, 1.2, 1.8)) == "trains worse than its rule"
    )


SMALL = dict(
    steps=40,
    record_seeds=4,
    lags=5,
    coords_per_tensor=5,
    generations=10,
    validation_seeds=4,
    eval_seeds=4,
    tune_epochs=0,
)


def test_free_running_feeds_the_equation_its_own_outputs_step_by_step():
    from symbolic_l2o.distill import DistillSettings, record
    from symbolic_l2o.fidelity import free_running

    data = record(
        MomentumRule(lr=0.01, momentum=0.9), make_task("quadratic"), DistillSettings(**{**SMALL, "stride": 2})
    )
    half = FittedRule(
        sp.sympify("0.5*u_1 - g_0", locals={"u_1": variable("u_1"), "g_0": variable("g_0")}), data.names, []
    )
    out = free_running(half, data)
    for run, coord in [(data.run_ids[0], data.coord_ids[0]), (data.run_ids[-1], data.coord_ids[-1])]:
        rows = np.flatnonzero((data.run_ids == run) & (data.coord_ids == coord))
        # g_{t-1}: with stride 2, every step
        g = {int(t) - 1: x for t, x in zip(data.steps[rows], data.X[rows, data.names.index("g_1")])}
        g.update({int(t): x for t, x in zip(data.steps[rows], data.X[rows, data.names.index("g_0")])})
        u, expected = 0.0, {}
        for t in range(1, int(data.steps[rows].max()) + 1):  # the recursion by hand, from a zero history
            u = 0.5 * u - g[t]
            expected[t] = u
        assert np.allclose(out[rows], [expected[int(t)] for t in data.steps[rows]])
    exact = FittedRule(
        sp.sympify("0.9*u_1 - g_0", locals={"u_1": variable("u_1"), "g_0": variable("g_0")}), data.names, []
    )
    # momentum: its own equation (recorded in float32)
    assert np.allclose(free_running(exact, data), data.y, rtol=1e-4, atol=1e-5 * np.abs(data.y).max())
    with pytest.raises(ValueError, match="stride=5 exceeds lags=3"):
        DistillSettings(lags=3)


def test_the_canonical_form_is_the_deployed_rule_and_zero_gradients_move_nothing(tmp_path):
    from symbolic_l2o.distill import DistillSettings, record
    from symbolic_l2o.canonical import canonical_form
    from symbolic_l2o.expressions import parse_expression

    data = record(MomentumRule(lr=0.01, momentum=0.9), make_task("quadratic"), DistillSettings(**SMALL))
    found = FittedRule(
        parse_expression("0.0123456*tanh(300*g_0) + 0.5*tanh(0.01*g_1) + 0.002", data.names),
        data.names,
        [],
        meta={"scale": 0.01},
    )
    canon = canonical_form(found, data)
    assert str(canon.expr) == "0.5*tanh(0.01*g_1) + 0.0123*sign(g_0)"  # the unsaturated tanh stays a tanh
    assert canon.meta["canonical"][-1] == "zero_drift"
    # what is printed is what runs
    assert str(FittedRule.load(canon.save(tmp_path / "c")).expr) == str(canon.expr)
    p = torch.zeros(4, requires_grad=True)
    opt = RuleOptimizer([p], canon.to_rule())
    for _ in range(3):
        p.grad = torch.zeros(4)
        opt.step()
    assert torch.equal(p.detach(), torch.zeros(4))
    kept = canonical_form(found, data, zero_drift=False)
    assert "0.002" in str(kept.expr) and "zero_drift" not in kept.meta["canonical"]


def test_the_screen_runs_the_simplest_eligible_member_first_and_drops_one_at_the_first_chunk_it_fails():
    from symbolic_l2o.distill import DistillSettings, screen
    from symbolic_l2o.expressions import parse_expression

    fit = lambda e: FittedRule(parse_expression(e, ["g_0"]), ["g_0"], [], meta={"scale": 0.01})
    members = [
        {"fit": fit("-1000*g_0"), "nodes": 3, "r2": 0.95},  # diverges
        {"fit": fit("-g_0"), "nodes": 4, "r2": 0.94},
        {"fit": fit("-g_0 + 0.001*sign(g_0)"), "nodes": 9, "r2": 0.99},  # longer: never run
        {"fit": fit("-0.9*g_0"), "nodes": 2, "r2": 0.5},
    ]  # outside the R² tolerance
    settings, task = DistillSettings(**{**SMALL, "validation_seeds": 30}), make_task("quadratic")
    picked = screen(members, SGDRule(lr=0.01), task, settings)
    assert picked["chosen"] == 1 and picked["faithful"]
    assert [(s["index"], s["problems"]) for s in picked["screened"]] == [(0, 10), (1, 30)]
    strict = screen(members, SGDRule(lr=0.01), task, settings, source_losses=np.full(30, 1e-30))
    assert not strict["faithful"] and len(strict["screened"]) == 3  # none within tolerance: all eligible ran
    with pytest.raises(ValueError, match="none can be deployed"):
        screen([], SGDRule(lr=0.01), task, settings)


def test_distill_reports_the_equation_as_found_with_stage_three_apart():
    from symbolic_l2o.distill import DistillSettings, distill

    d = distill(
        MomentumRule(lr=0.01, momentum=0.9),
        make_task("quadratic"),
        "momentum",
        DistillSettings(**{**SMALL, "tune_epochs": 2, "tune_lr": 0.05}),
    )
    s = d.summary()
    # within Adam's budget: momentum's own buffer, one state value, exact on the held-out runs
    assert s["equation"] == "-10*mom9_0" and s["state_budget"] == 2 and s["state_per_param"] == 1
    assert s["r2"] == pytest.approx(1) and s["r2_free_running"] is None and s["recurrence"] is None
    # the momentum null model is the same rule: the margin is 0, and the verdict does not say faithful
    assert s["beyond_null"]["best_null"] == "momentum" and s["beyond_null"]["margin"] == pytest.approx(
        0, abs=1e-9
    )
    assert not s["faithful"] and s["null_models"]["momentum"]["r2"] == pytest.approx(1)
    # unconstrained, the recurrence: its free-running R² is shown, and persistence is far below it
    free = s["budgets"][-1]
    assert free["budget"] is None and free["equation"] == "-g_0 + 0.9*u_1"
    assert free["r2_free_running"] == pytest.approx(1)
    assert s["persistence"]["r2_free_running"] < s["persistence"]["r2_teacher_forced"]
    # tuned apart (here nothing to tune: its one constant is the integer the canonical form rounded it to)
    assert s["tuned_equation"] is None and str(d.fit.expr) == s["equation"]
    json.dumps(s, default=float)


def test_a_rule_that_does_not_train_gets_no_faithful_equation():
    from symbolic_l2o.distill import DistillSettings, distill

    with pytest.warns(UserWarning, match="does not train"):
        d = distill(
            SGDRule(lr=1e-9),
            make_task("quadratic"),
            "frozen",
            DistillSettings(**{**SMALL, "search_seeds": (0,)}),
        )
    s = d.summary()
    assert s["eva_ratio"] == pytest.approx(1, abs=1e-3)  # the equation copies it exactly...
    # ...and that says nothing
    assert not s["source_trains"] and not s["faithful"] and s["faithful_seeds"] == [0, 1]
    assert s["verdict"].startswith("the rule does not train")
