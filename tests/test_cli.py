"""`symbolic-l2o`, the console script, as a user runs it, in a process of its own: its version, and `distill`
end to end. The parser's conventions and refusals run in the test's process (`main(argv)`):
tests/test_cli_names.py."""

import json
import subprocess
import sys
from pathlib import Path


from symbolic_l2o.regression import FittedRule
from symbolic_l2o.cli import _option_comments

EXE = Path(sys.executable).parent / "symbolic-l2o"


def cli(*args, cwd=None):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_version():
    import symbolic_l2o

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"symbolic-l2o {symbolic_l2o.__version__}"


def test_distill_records_fits_selects_and_writes_the_fitted_rule(tmp_path):
    r = cli(
        "distill",
        "--rule",
        "rp_s",
        "--task",
        "quadratic",
        "--steps",
        "20",
        "--record-seeds",
        "4",
        "--eval-seeds",
        "3",
        "--validation-seeds",
        "2",
        "--tune-epochs",
        "0",
        "--lags",
        "5",
        "--search-seeds",
        "2",
        "--generations",
        "3",
        "--max-length",
        "10",
        "--time-limit",
        "10",
        "--no-recurrent",
        "--state-budgets",
        "2",
        "--device",
        "cpu",
        "--out",
        "d",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    fit = FittedRule.load(tmp_path / "d" / "fitted_rule.json")
    assert fit.selection == "closed_loop" and fit.meta["source"] == "rp_s" and fit.expr.free_symbols
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert summary == json.loads(r.stdout) and summary["faithful_seeds"][1] == 2
    # found within the one state budget asked for; no feedback: no free-running R² (it cannot differ)
    assert summary["family"] == "budget 2" and summary["state_per_param"] <= 2
    assert summary["r2_free_running"] is None and set(summary["null_models"]) >= {"sgd", "adam", "lion"}
    assert not any(n.startswith("u_") for n in fit.names)  # --no-recurrent: the window family alone


def _two_line_help(
    rule: str = "rp_si",  # the rule to use: a zoo name or the path of a saved rule,
    # carried onto a second line
    steps: int = 10,  # steps
):
    pass


def test_an_option_comment_carried_onto_the_next_line_is_all_in_the_help():
    assert _option_comments(_two_line_help) == {
        "rule": "the rule to use: a zoo name or the path of a saved rule, carried onto a second line",
        "steps": "steps",
    }
