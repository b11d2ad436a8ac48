"""One name for every optimizer, everywhere: `create_optimizer`, `load_pretrained` and the command line's
`--rule` take every name of `list_optimizers()` (in any case) and the rule files the library writes; torch's
names and keywords (`adamw`, `sgd` with `momentum`/`nesterov`) step as torch does; bad command-line input is
one line and exit status 2 (issues 39 and 40)."""

import argparse
import fcntl
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from symbolic_l2o import create_optimizer, list_optimizers, load_pretrained
from symbolic_l2o.cli import COMMANDS, COUNT_OPTIONS, build_parser, main
from symbolic_l2o.regression import fit_rule
from symbolic_l2o.files import save_rule
from symbolic_l2o.optimizers import AdamRule, UpdateRule

EXE = Path(sys.executable).parent / "symbolic-l2o"
TINY = ["--task", "digits_mlp", "--steps", "2", "--seeds", "1", "--device", "cpu"]


def assert_refused(code, err, says):
    assert code == 2 and says in err, err
    assert (
        err.startswith("symbolic-l2o ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    ), err


@pytest.fixture(scope="module")
def rule_files(tmp_path_factory):
    """A fitted rule as `symbolic-l2o distill` writes it (fit_rule on a tiny recording-like table, saved as
    fitted_rule.json) and a save_rule pair, as meta-train writes them."""
    d = tmp_path_factory.mktemp("rules")
    g = np.random.default_rng(0).normal(size=(200, 1))
    fit = fit_rule(g, -0.1 * np.tanh(g[:, 0]), ["g_0"], generations=3)
    fitted = fit.save(d / "run" / "fitted_rule.json")
    pair = save_rule(AdamRule(lr=0.01), d / "saved" / "rule.pt")
    return fitted, pair


# --- the command line takes every name -------------------------------------------------------------------


@pytest.mark.parametrize("name", list_optimizers())
def test_evaluate_takes_every_name_of_list_optimizers(name, cli, tmp_path):
    code, _, err = cli("evaluate", "--rule", name, *TINY, "--out", tmp_path)
    if name == "adamw":  # Adam with RuleOptimizer's decoupled weight decay: no rule that evaluate can step
        assert_refused(code, err, "adamw is adam stepped with RuleOptimizer's")
        return
    assert code == 0, err
    result = json.loads((tmp_path / "evaluation.json").read_text())
    assert np.isfinite(result["train_loss"]).all()


def test_evaluate_names_are_case_insensitive(cli, tmp_path):
    code, _, err = cli("evaluate", "--rule", "RP_SI_Distilled", *TINY, "--out", tmp_path)
    assert code == 0, err


@pytest.mark.parametrize("which", ["fitted_rule.json", "rule.pt", "rule.json", "rule"])
def test_evaluate_takes_the_rule_files_the_library_writes(which, rule_files, cli, tmp_path):
    fitted, pair = rule_files
    path = fitted if which == "fitted_rule.json" else pair.parent / which
    code, _, err = cli("evaluate", "--rule", path, *TINY, "--out", tmp_path)
    assert code == 0, err


@pytest.mark.parametrize(
    "argv,says",
    [
        (["evaluate", "--rule", "{tmp}/none/fitted_rule.json"], "no such file: {tmp}/none/fitted_rule.json"),
        (["srgen", "--rule", "{tmp}/rule.pt"], "no such file: {tmp}/rule.pt"),
        (["distill", "--rule", "{tmp}/gone/rule"], "no such file: {tmp}/gone/rule"),
        (["evaluate", "--rule", "{tmp}"], "is not a rule file"),
        (
            ["evaluate", "--rule", "rp_si_rich"],
            "unknown optimizer 'rp_si_rich'; choose one of list_optimizers()",
        ),
        (
            ["meta-train", "--start", "adamx"],
            "unknown optimizer 'adamx'; choose one of list_optimizers()",
        ),  # --start keeps the name or path for its card
        (["evaluate", "--rule", "rp_si", "--lr", "0.1"], "has no keyword(s) ['lr']"),
    ],
)
def test_a_rule_that_is_not_there_is_one_line_naming_it(argv, says, cli, tmp_path):
    argv = [a.format(tmp=tmp_path) for a in argv]
    code, _, err = cli(*argv, "--device", "cpu", "--out", tmp_path / "out")
    assert_refused(code, err, says.format(tmp=tmp_path))
    assert not (tmp_path / "out").exists()  # refused before any work


def test_the_console_script_evaluates_a_distilled_rule_by_name(tmp_path):
    r = subprocess.run(
        [str(EXE), "evaluate", "--rule", "rp_si_distilled", *TINY, "--out", "e"],
        cwd=tmp_path,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert np.isfinite(json.loads((tmp_path / "e" / "evaluation.json").read_text())["train_loss"]).all()


# --- the parser's conventions (click's and typer's) --------------------------------------------------------


def test_help_lists_every_subcommand_with_a_line_and_exits_0(cli):
    code, out, _ = cli("--help")
    assert code == 0
    for name in COMMANDS:
        line = next((l for l in out.splitlines() if l.strip().startswith(name + " ")), None)
        assert line and len(line.split()) > 2, (name, out)  # the name, then its one-line description
    assert "distill" in COMMANDS


def test_options_are_kebab_case_with_flag_and_no_flag_booleans(cli):
    code, out, _ = cli("meta-train", "--help")
    assert code == 0
    assert "--epoch-len EPOCH_LEN" in out and "--epoch_len" not in out
    assert "--resume, --no-resume" in out and "--curriculum, --no-curriculum" in out
    assert "truncation length K" in out  # help from the signature's comments


# --- bad input: one line, exit status 2 ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,says",
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
def test_a_bad_value_is_one_line_naming_what_is_valid(argv, says, cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written, wherever it runs
    code, _, err = cli(*argv)
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_an_unavailable_device_says_so_plainly(cli, tmp_path):
    code, _, err = cli("evaluate", "--rule", "adam", "--device", "cuda", "--out", tmp_path / "e")
    assert_refused(code, err, "not available: PyTorch sees no CUDA GPU")


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--seeds", "0"],
        ["evaluate", "--seeds", "-3"],
        ["evaluate", "--steps", "-1"],
        ["evaluate", "--steps", "1000000000000"],
        ["evaluate", "--seeds", "100000000000"],
        ["srgen", "--steps", "0"],
        ["meta-train", "--epochs", "0"],
        ["meta-train", "--epoch-len", "-5"],
        ["meta-train", "--epochs", "-1", "--start", "rp_s"],
        ["distill", "--record-seeds", "0"],
        ["distill", "--tune-epochs", "-1"],
    ],
)
def test_a_count_out_of_its_range_is_refused_when_parsed(argv, cli):
    code, _, err = cli(*argv)
    assert_refused(code, err, f"argument {argv[1]}: ")
    assert "is out of range: give an integer from" in err


@pytest.mark.parametrize("device", ["meta", "cuda:7", "gpu"])
def test_a_device_this_machine_cannot_run_on_is_one_line(device, cli, tmp_path):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code, _, err = cli("evaluate", *TINY[:-2], "--device", device, "--out", tmp_path)
    assert_refused(code, err, "argument --device: ")


def test_a_run_directory_another_process_holds_is_one_line(cli, tmp_path):
    with open(tmp_path / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        argv = ["meta-train", "--epochs", "1", "--epoch-len", "2", "--unroll", "2", "--device", "cpu"]
        code, _, err = cli(*argv, "--resume", "--out", tmp_path)
    assert_refused(code, err, "is being written by another process")


def test_an_out_that_is_a_file_is_one_line(cli, tmp_path):
    (tmp_path / "taken").write_text("")
    argv = ["meta-train", "--epochs", "1", "--epoch-len", "2", "--unroll", "2", "--device", "cpu"]
    code, _, err = cli(*argv, "--out", tmp_path / "taken")
    assert_refused(code, err, "taken")


def test_missing_mnist_names_the_download_flag_and_make_data(cli, tmp_path):
    code, _, err = cli("evaluate", "--rule", "adam", "--task", "mnist_mlp", "--data-root", tmp_path)
    assert_refused(code, err, "--download")
    assert "make data" in err and "download=True" not in err


def test_running_out_of_memory_is_one_line_and_a_bug_keeps_its_traceback(cli, monkeypatch):
    cli_module = importlib.import_module("symbolic_l2o.cli")  # symbolic_l2o.cli: the module, not the function

    def evaluate_cli(rule: str = "rp_si", device: str = "auto"):  # evaluate_cli's signature, in short
        raise raised

    monkeypatch.setattr(cli_module, "evaluate_cli", evaluate_cli)
    raised = MemoryError()
    code, _, err = cli("evaluate", "--rule", "adam")
    assert_refused(code, err, "out of memory")
    raised = KeyError("m")
    with pytest.raises(KeyError):
        main(["evaluate", "--rule", "adam"])


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_that_shows_its_default(command):
    sub = next(a for a in build_parser(command)._actions if isinstance(a, argparse._SubParsersAction))
    parser = sub.choices[command]
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and "default" in action.help, (command, action.dest, action.help)
        if action.dest in COUNT_OPTIONS:
            low, high = COUNT_OPTIONS[action.dest]
            assert f"{low} to {high:,}" in action.help, action.help
    assert "--device" in parser.format_help()  # argparse renders every help text (a stray % would raise)


# --- create_optimizer and load_pretrained: names as torch and timm users expect them ---------------------


@pytest.mark.parametrize("name", [n for n in list_optimizers() if n != "adamw"])
def test_load_pretrained_takes_every_name_in_any_case(name):
    rule = load_pretrained(name.upper())
    assert isinstance(rule, UpdateRule) and str(rule) == str(load_pretrained(name))


def test_load_pretrained_says_no_such_file_and_lists_the_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no such file: {tmp_path}/fitted_rule.json"):
        load_pretrained(tmp_path / "fitted_rule.json")
    with pytest.raises(
        ValueError, match=r"unknown optimizer 'adamx'; choose one of list_optimizers\(\): sgd"
    ):
        load_pretrained("adamx")


def test_names_are_case_insensitive():
    w = [nn.Parameter(torch.ones(3))]
    for name in ("Adam", "ADAMW", "Sgd", "RP_SI_DISTILLED"):
        assert type(create_optimizer(name, w).rule) is type(create_optimizer(name.lower(), w).rule)


def lockstep(ours, theirs, steps=30):
    "Train two copies of one model, with `ours(model)` and `theirs(params)`: equal weights at every step."
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    b = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2))
    b.load_state_dict(a.state_dict())
    X, y = torch.randn(64, 4), torch.randn(64, 2)
    opts = (ours(a), theirs(b.parameters()))
    for _ in range(steps):
        for model, o in zip((a, b), opts):
            o.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            o.step()
        for p, q in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=0)
    return opts


@pytest.mark.parametrize(
    "kwargs", [{}, {"lr": 0.02}, {"lr": 0.01, "weight_decay": 0.1, "betas": (0.8, 0.99), "eps": 1e-6}]
)
def test_adamw_steps_as_torch_adamw(kwargs):
    ours, theirs = lockstep(
        lambda m: create_optimizer("adamw", m, **kwargs), lambda ps: torch.optim.AdamW(ps, **kwargs)
    )
    assert ours.param_groups[0]["weight_decay"] == theirs.param_groups[0]["weight_decay"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.05},
        {"lr": 0.05, "momentum": 0.9},
        {"lr": 0.05, "momentum": 0.9, "nesterov": True},
        {"lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-3},
    ],
)
def test_sgd_takes_momentum_and_nesterov_as_torch_sgd(kwargs):
    lockstep(lambda m: create_optimizer("sgd", m, **kwargs), lambda ps: torch.optim.SGD(ps, **kwargs))


def test_unknown_keywords_are_refused_naming_those_accepted():
    w = [nn.Parameter(torch.ones(2))]
    with pytest.raises(
        ValueError, match=r"optimizer 'adam' has no keyword\(s\) \['momentum'\]; it takes \['lr'"
    ):
        create_optimizer("adam", w, momentum=0.9)
    with pytest.raises(ValueError, match="it takes .*'betas'.*'weight_decay'"):
        create_optimizer("adamw", w, nesterov=True)
    with pytest.raises(ValueError, match="dampening=0 only"):
        create_optimizer("sgd", w, momentum=0.9, dampening=0.1)
    with pytest.raises(ValueError, match="nesterov=True needs a momentum"):
        create_optimizer("sgd", w, nesterov=True)
    with pytest.raises(ValueError, match=r"has no keyword\(s\) \['betas'\]; it takes .*'zero_offset'"):
        create_optimizer("rp_si_distilled", w, betas=(0.9, 0.9))
