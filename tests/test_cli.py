"""`symbolic-l2o`, the console script, as a user runs it: help, version, conventions, errors, and `distill`
end to end."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from symbolic_l2o.regression import FittedRule
from symbolic_l2o.cli import COMMANDS, _option_comments

EXE = Path(sys.executable).parent / "symbolic-l2o"


def cli(*args, cwd=None):
    return subprocess.run([str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_lists_every_subcommand_with_a_line_and_exits_0():
    r = cli("--help")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    for name in COMMANDS:
        line = next((l for l in lines if l.strip().startswith(name + " ")), None)
        assert line and len(line.split()) > 2, (name, r.stdout)  # the name, then its one-line description
    assert "distill" in COMMANDS


def test_version():
    import symbolic_l2o

    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"symbolic-l2o {symbolic_l2o.__version__}"


def test_options_are_kebab_case_with_flag_and_no_flag_booleans():
    r = cli("meta-train", "--help")
    assert r.returncode == 0, r.stderr
    assert "--epoch-len EPOCH_LEN" in r.stdout and "--epoch_len" not in r.stdout
    assert "--resume, --no-resume" in r.stdout and "--curriculum, --no-curriculum" in r.stdout
    assert "truncation length K" in r.stdout  # help from the signature's comments


@pytest.mark.parametrize(
    "args,says",
    [
        (["frobnicate"], "invalid choice: 'frobnicate' (choose from"),
        (["evaluate", "--seed", "1"], "unrecognized arguments: --seed 1"),  # --seeds is never abbreviated
        (["evaluate", "--epoch_len", "3"], "unrecognized arguments: --epoch_len 3"),
        (
            ["evaluate", "--task", "imagenet", "--device", "cpu"],
            "known: ['digits_cnn', 'digits_mlp', 'mnist_mlp', 'quadratic']",
        ),
        (["evaluate", "--rule", "adamx", "--device", "cpu"], "unknown optimizer 'adamx'; choose one of"),
        (["distill", "--steps", "many"], "invalid int value: 'many'"),
    ],
)
def test_a_bad_value_is_one_line_naming_what_is_valid_with_exit_2(args, says, tmp_path):
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert says in r.stderr and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, (
        r.stderr
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_an_unavailable_device_says_so_plainly(tmp_path):
    r = cli("evaluate", "--rule", "adam", "--device", "cuda", cwd=tmp_path)
    assert (
        r.returncode == 2
        and "not available: PyTorch sees no CUDA GPU" in r.stderr
        and "Traceback" not in r.stderr
    ), r.stderr


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
