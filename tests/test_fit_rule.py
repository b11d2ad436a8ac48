"""`fit_rule` as users meet it: the front as a table, any member deployed, a search that stops when it has
converged, dropped rows said aloud, a recording passed whole, column names checked against the features a rule
can compute."""

import numpy as np
import pytest

from symbolic_l2o.regression import FittedRule, ParetoTable, fit_rule
from symbolic_l2o.features import FEATURE_NAMES, OUTPUT_FEATURE
from symbolic_l2o.srgen import SRDataset

NAMES = ["g_0", "g_1", "g_2"]


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(0).normal(size=(2000, 3))


@pytest.fixture(scope="module")
def exact(rows):
    "An exact target the linear path cannot fit: the engine runs, and should stop as soon as it has it."
    return fit_rule(rows, 0.5 * rows[:, 0] - 2 * rows[:, 1] * rows[:, 2], NAMES)


def test_an_exact_target_stops_the_search_when_converged_not_at_the_cap(exact, rows):
    assert exact.meta["stopped_by"] == "converged" and exact.meta["stopped_by_time"] is False
    assert 0 < exact.meta["generations_run"] < exact.meta["generations"]
    assert exact.r2(rows, 0.5 * rows[:, 0] - 2 * rows[:, 1] * rows[:, 2]) > 0.999999


def test_the_cap_and_the_clock_are_reported_as_what_stopped_the_search(rows):
    y = (
        np.tanh(3 * rows[:, 0]) * np.abs(rows[:, 1])
        + 0.3 * rows[:, 2] ** 3
        + 0.1 * np.random.default_rng(1).normal(size=len(rows))
    )
    capped = fit_rule(rows, y, NAMES, generations=2, search_rows=300)
    assert (capped.meta["stopped_by"], capped.meta["generations_run"], capped.meta["stopped_by_time"]) == (
        "generations",
        2,
        False,
    )
    with pytest.raises(ValueError, match="patience"):
        fit_rule(rows, y, NAMES, patience=0)


def test_a_linear_target_skips_the_engine_and_counts_as_converged(rows):
    fit = fit_rule(rows, 3 * rows[:, 0] - rows[:, 2], NAMES)
    assert (
        fit.meta["engine_skipped"]
        and fit.meta["stopped_by"] == "converged"
        and fit.meta["generations_run"] == 0
    )


def test_the_front_as_a_table_and_any_member_as_a_rule(exact):
    table = exact.table()
    assert isinstance(table, ParetoTable) and len(table) == len(exact.pareto) >= 2
    assert [r["index"] for r in table] == list(range(len(table)))
    assert [r["nodes"] for r in table] == [m["complexity"] for m in exact.pareto]
    assert [r["r2"] for r in table] == [m["r2"] for m in exact.pareto]
    assert [r["selected"] for r in table].count(True) == 1
    assert "0.5*g_0 - 2.0*g_1*g_2" in table[-1]["equation"]  # constants to 3 significant digits
    text = str(table)
    assert text.splitlines()[0].split() == ["index", "nodes", "loss", "r2", "equation"]
    assert len(text.splitlines()) == len(table) + 2 and "*" in text
    assert table._repr_markdown_().startswith("| index | nodes | loss | r2 | equation |")
    for i in (0, 1, -1, -len(table)):
        member = exact.member(i)
        assert isinstance(member, FittedRule) and member.expr == exact.pareto[i]["expr"]
        assert (member.names, member.pareto, member.meta) == (exact.names, exact.pareto, exact.meta)
        assert member.to_rule().to_sympy().free_symbols  # deployable
    assert exact.member(-1).selection == f"member {len(table) - 1}"
    for bad in (len(table), -len(table) - 1, 1.5, "0", True):
        with pytest.raises(ValueError, match=f"front has {len(table)} member"):
            exact.member(bad)


def test_a_fitted_rule_from_a_file_shows_its_table(exact, tmp_path):
    back = FittedRule.load(exact.save(tmp_path / "fit"))
    assert [r["equation"] for r in back.table()] == [r["equation"] for r in exact.table()]
    assert str(FittedRule(exact.expr, NAMES, []).table()) == "index  nodes  loss  r2  equation"


def test_dropped_rows_are_announced(rows):
    X = rows.copy()
    X[:7, 1] = np.nan
    y = 3 * rows[:, 0] - rows[:, 2]
    y[10] = np.inf
    with pytest.warns(UserWarning, match=r"dropped 8 of 2000 rows: they hold a non-finite value"):
        fit = fit_rule(X, y, NAMES)
    assert fit.meta["dropped_rows"] == 8


def _recording(X, y, names, **meta):
    n = len(y)
    return SRDataset(X, y, names, np.arange(n) % 2, np.arange(n), np.ones(n, int), meta)


def test_a_recording_is_fitted_whole_and_deploys_at_its_scale(rows):
    data = _recording(
        rows, -0.5 * rows[:, 0] + rows[:, 2], NAMES, scale=0.1, betas=[0.9, 0.99], task="digits_mlp"
    )
    fit = fit_rule(data, meta={"source": "test"})
    assert fit.names == NAMES and fit.meta["task"] == "digits_mlp" and fit.meta["source"] == "test"
    rule = fit.to_rule()
    assert (rule.scale, rule.beta1, rule.beta2) == (0.1, 0.9, 0.99)
    assert fit_rule(data.X, data.y, data.names).to_rule().scale == 1.0  # arrays carry no scale
    with pytest.raises(ValueError, match="takes the target and the column names from the SRDataset"):
        fit_rule(data, data.y)
    with pytest.raises(ValueError, match="takes the target and the column names from the SRDataset"):
        fit_rule(data, names=NAMES)
    with pytest.raises(ValueError, match=r"fit_rule\(X, y, names\)"):
        fit_rule(rows)
    with pytest.raises(ValueError, match=r"fit_rule\(X, y, names\)"):
        fit_rule(rows, rows[:, 0])


@pytest.mark.parametrize(
    "names",
    [
        ["x0", "x1", "x2"],
        ["g_0", "g_1", "velocity_0"],
        ["g_0", "g_1", "g"],
        ["g_0", "g_1", "u_0"],
        ["g_0", "g_1", "g_101"],
        ["g_0", "g_1", "mt_x"],
    ],
)
def test_a_column_that_is_not_a_known_feature_at_a_lag_is_refused_with_the_valid_names(rows, names):
    with pytest.raises(ValueError, match="not <feature>_<lag>") as error:
        fit_rule(rows, 3 * rows[:, 0] - rows[:, 2], names)
    assert str(list(FEATURE_NAMES + (OUTPUT_FEATURE,))) in str(error.value)
    assert names[-1] in str(error.value)


def test_every_feature_and_the_past_outputs_are_accepted(rows):
    for feature in FEATURE_NAMES:
        fit_rule(rows, 3 * rows[:, 0] - rows[:, 2], [f"{feature}_0", "u_1", "g_100"])


def test_an_engine_member_that_overflows_float64_is_dropped_not_fatal():
    # operon's arithmetic is unchecked: a member like sinh(exp(exp(1000))) must not stop a search (03's chain
    # once failed on one); any other parse error still raises
    from symbolic_l2o.regression import _finite_parse

    assert _finite_parse("sinh(exp(exp(1000.0)))*g_0", ["g_0"]) is None
    assert str(_finite_parse("2*g_0", ["g_0"])) == "2*g_0"
    with pytest.raises(ValueError, match="unknown"):
        _finite_parse("2*h_0", ["g_0"])
