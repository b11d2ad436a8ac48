"""The library as a user meets it: what the package requires, one import, optimizers by name with
torch.optim's semantics."""

import ast
import configparser
import importlib.metadata
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from symbolic_l2o import create_optimizer, list_optimizers, load_pretrained

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "symbolic_l2o"


def requirements(key: str) -> set[str]:
    cfg = configparser.ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return {
        shlex.split(r)[0].split(">")[0].split("<")[0].split("=")[0].split("[")[0].lower()
        for r in shlex.split(cfg["DEFAULT"].get(key, ""))
    }


def top_level_imports(path: Path) -> set[str]:
    """The top-level packages a module imports at import time (its module body, `try` blocks included; not
    inside functions)."""
    names, body = set(), list(ast.parse(path.read_text(encoding="utf-8")).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.Try, ast.If)):
            body += node.body + node.orelse + [s for h in getattr(node, "handlers", []) for s in h.body]
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names - {"symbolic_l2o", "__future__"}


def distribution(module: str) -> str:
    dists = importlib.metadata.packages_distributions().get(module)
    assert dists, f"{module} is imported but no installed distribution provides it"
    return dists[0].lower()


@pytest.mark.parametrize("module", sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "_modidx.py"))
def test_every_top_level_import_is_stdlib_or_required(module):
    required = requirements("requirements")
    for name in top_level_imports(PACKAGE / module):
        if name in sys.stdlib_module_names:
            continue
        assert distribution(name) in required, (
            f"symbolic_l2o/{module} imports {name} at import time, but {distribution(name)} is not in "
            "settings.ini's requirements"
        )


def setup_arguments() -> dict:
    "The keyword arguments setup.py passes to `setuptools.setup`."
    import os, setuptools

    captured, cwd = {}, os.getcwd()
    real, setuptools.setup = setuptools.setup, lambda **kw: captured.update(kw)
    try:
        os.chdir(ROOT)
        exec(compile((ROOT / "setup.py").read_text(), "setup.py", "exec"), {"__name__": "__main__"})
    finally:
        setuptools.setup = real
        os.chdir(cwd)
    return captured


def test_setup_py_declares_the_runtime_and_the_extras():
    args = setup_arguments()
    names = lambda reqs: {r.split(">")[0].split("<")[0].split("=")[0].lower() for r in reqs}
    assert names(args["install_requires"]) == {"torch", "numpy", "sympy", "tqdm", "pyoperon"}
    extras = {k: names(v) for k, v in args["extras_require"].items()}
    assert {"torchvision", "scikit-learn"} <= extras["vision"] <= extras["notebooks"] <= extras["dev"]
    assert (
        {"matplotlib", "papermill"} <= extras["notebooks"]
        and extras["docs"] <= extras["dev"]
        and "pysr" in extras["pysr"]
    )
    assert args["entry_points"]["console_scripts"] == ["symbolic-l2o=symbolic_l2o.cli:main"]


# the packages of the extras, hidden from a fresh interpreter (as if not installed): the core must import and
# run without them
HIDDEN = [
    "torchvision",
    "sklearn",
    "matplotlib",
    "fastcore",
    "pandas",
    "papermill",
    "nbformat",
    "markdown_it",
    "mdit_py_plugins",
    "pysr",
    "nbdev",
    "IPython",
    "ipykernel",
    "jupyter_book",
    "playwright",
]
CORE_SCRIPT = f"""
import importlib, sys
for name in {HIDDEN!r}:
    sys.modules[name] = None  # `import name` raises ModuleNotFoundError, find_spec says None
import torch
from symbolic_l2o import create_optimizer, list_optimizers, fit_rule, RuleOptimizer, load_pretrained
from symbolic_l2o.distill import distill
from symbolic_l2o.cli import main
for name in list_optimizers():
    w = torch.nn.Parameter(torch.ones(4))
    opt = create_optimizer(name, [w])
    w.grad = torch.tensor([0.5, -0.5, 0.1, 1.0]); opt.step()
    assert (w != 1).any(), name
try: main(["--help"])
except SystemExit as e: assert e.code == 0
for module, says in (("symbolic_l2o.finetune", "pip install 'symbolic_l2o[vision]'"),):
    try: importlib.import_module(module); raise AssertionError(module + " imported without torchvision")
    except ModuleNotFoundError as e: assert says in str(e), str(e)
from symbolic_l2o.tasks import digits_data
try: digits_data(); raise AssertionError("digits without scikit-learn")
except ModuleNotFoundError as e: assert "symbolic_l2o[vision]" in str(e), str(e)
print("core ok")
"""


def test_the_core_imports_and_runs_without_the_extras():
    proc = subprocess.run([sys.executable, "-c", CORE_SCRIPT], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "core ok" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_one_import_names_what_users_need():
    import symbolic_l2o

    for name in (
        "RuleOptimizer",
        "create_optimizer",
        "list_optimizers",
        "load_pretrained",
        "fit_rule",
        "AdamRule",
        "SymbolicRule",
        "FittedRule",
        "make_task",
        "record_trajectories",
        "evaluate",
    ):
        assert (
            name in symbolic_l2o.__all__ if hasattr(symbolic_l2o, "__all__") else hasattr(symbolic_l2o, name)
        ), name
        assert hasattr(symbolic_l2o, name), name


def test_list_optimizers_covers_hand_learned_and_distilled_rules_with_descriptions():
    infos = {i.name: i for i in list_optimizers(with_description=True)}
    assert list(infos) == list_optimizers()
    kinds = {i.kind for i in infos.values()}
    assert kinds == {"hand", "learned", "distilled"}
    assert {"sgd", "momentum", "nesterov", "adam", "rmsprop", "dm", "rp", "rp_si", "rp_si_distilled"} <= set(
        infos
    )
    assert infos["adam"].state_bytes_per_param == 8 and infos["sgd"].state_bytes_per_param == 0
    assert all(i.description and "\n" not in i.description for i in infos.values())


def test_distilled_rules_are_found_by_scanning_the_zoo(tmp_path, monkeypatch):
    import shutil
    from symbolic_l2o import library

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    shutil.copy(library.ZOO_DIR / "rp_si_distilled.json", zoo / "my_distilled.json")
    for f in ("rp_s.pt", "rp_s.json"):
        shutil.copy(library.ZOO_DIR / f, zoo / f)
    monkeypatch.setattr(library, "ZOO_DIR", zoo)
    monkeypatch.setattr(library._zoo_files, "__defaults__", (zoo,))
    assert [n for n in list_optimizers() if n in ("my_distilled", "rp_s", "rp_si_distilled")] == [
        "my_distilled",
        "rp_s",
    ]


@pytest.mark.parametrize(
    "name,reference",
    [
        ("sgd", lambda ps: torch.optim.SGD(ps, lr=0.05)),
        ("momentum", lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9)),
        ("nesterov", lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.8, nesterov=True)),
        ("adam", lambda ps: torch.optim.Adam(ps, lr=1e-3)),
        ("rmsprop", lambda ps: torch.optim.RMSprop(ps, lr=1e-3)),
    ],
)
def test_a_hand_rule_by_name_steps_as_its_torch_optim_namesake(name, reference):
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    b = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    b.load_state_dict(a.state_dict())
    X, y = torch.randn(64, 4), torch.randn(64, 1)
    ref = reference(b.parameters())
    kwargs = {k: v for k, v in ref.defaults.items() if k == "lr" or k == "momentum" and v}
    opt = create_optimizer(name, a.parameters(), **kwargs)
    assert opt.param_groups[0]["lr"] == ref.param_groups[0]["lr"]
    for _ in range(100):  # longer, float rounding grows past 1e-6 where momentum amplifies it
        for model, o in ((a, opt), (b, ref)):
            o.zero_grad()
            nn.functional.mse_loss(model(X), y).backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


DISTILLED = [i.name for i in list_optimizers(with_description=True) if i.kind == "distilled"]


def test_every_shipped_equation_states_where_it_comes_from_and_steps_fused_if_it_reads_no_past_step():
    """The zoo's equations (03's `ship_to_zoo`): each card names the rule, task and scale it was distilled
    at and its fidelity with a verdict; an equation that reads no past step takes `fused=True` (whose values
    test_fused_step checks against the checked step)."""
    from symbolic_l2o.library import _zoo_files
    from symbolic_l2o.regression import FittedRule

    assert "rp_si_distilled" in DISTILLED
    fused = 0
    for name in DISTILLED:
        card = FittedRule.load(_zoo_files()[name][1]).meta
        assert card["source"] and card["task"] and card["distilled_at_scale"] and card["provenance"], name
        assert {"verdict", "eva_ratio", "eva_ratio_ci", "state_per_param"} <= set(card["fidelity"]), name
        rule = load_pretrained(name)
        if all(str(s).endswith("_0") and not str(s).startswith("u_") for s in rule.to_sympy().free_symbols):
            create_optimizer(name, [nn.Parameter(torch.zeros(3))], fused=True)  # refused if not fusable
            fused += 1
    assert fused >= 1  # rp_si_distilled reads no past step


def test_a_distilled_rule_by_name_moves_nothing_under_zero_gradients():
    for name in DISTILLED:
        w = nn.Parameter(torch.randn(50))
        before = w.detach().clone()
        opt = create_optimizer(name, [w])
        for _ in range(30):
            w.grad = torch.zeros(50)
            opt.step()
        assert torch.equal(w.detach(), before), name
        # and it does train: a gradient moves the weights against it
        w.grad = torch.ones(50)
        opt.step()
        assert (w.detach() < before).all(), name
    # the shipped equation's canonical form has no constant term: kept or removed, nothing drifts
    w = nn.Parameter(torch.zeros(5))
    opt = create_optimizer("rp_si_distilled", [w], zero_offset=False)
    w.grad = torch.zeros(5)
    opt.step()
    assert (w == 0).all()


def test_a_learned_or_distilled_rules_lr_scales_its_update_and_defaults_to_the_rule():
    for name in ("rp_si", "rp_si_distilled"):
        steps = []
        for lr in (None, 1.0, 0.5):
            w = nn.Parameter(torch.zeros(6))
            opt = create_optimizer(name, [w], **({} if lr is None else {"lr": lr}))
            w.grad = torch.linspace(-1, 1, 6)
            opt.step()
            steps.append(w.detach().clone())
        assert torch.equal(steps[0], steps[1]) and steps[0].abs().sum() > 0
        torch.testing.assert_close(steps[2], 0.5 * steps[0])


@pytest.mark.parametrize("name", ["adam", "momentum", "nesterov", "lion"])
def test_one_cycle_lr_with_its_defaults_cycles_a_hand_rules_momentum(name):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = create_optimizer(name, model)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=20)
    key = "betas" if "betas" in opt.defaults else "momentum"
    seen = set()
    for _ in range(20):
        opt.zero_grad()
        model(torch.randn(8, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
        seen.add(opt.param_groups[0][key] if key == "momentum" else opt.param_groups[0][key][0])
    assert len(seen) > 5  # cycled, and the rule read it
    assert opt.rule.with_hyperparameters(opt.param_groups[0]) is not opt.rule


def test_hyperparameters_round_trip_through_state_dict():
    w = nn.Parameter(torch.ones(3))
    opt = create_optimizer("adam", [w], lr=3e-3, betas=(0.8, 0.99), eps=1e-6)
    w.grad = torch.ones(3)
    opt.step()
    other = create_optimizer("adam", [nn.Parameter(torch.ones(3))])
    other.load_state_dict(opt.state_dict())
    for k in ("lr", "betas", "eps"):
        assert other.param_groups[0][k] == opt.param_groups[0][k], k


def test_bad_names_and_hyperparameters_say_what_is_valid():
    w = [nn.Parameter(torch.ones(2))]
    with pytest.raises(ValueError, match="choose one of list_optimizers\\(\\): .*adam"):
        create_optimizer("adamx", w)
    with pytest.raises(ValueError, match="no keyword"):
        create_optimizer("rp_si", w, betas=(0.9, 0.9))
    with pytest.raises(ValueError, match="invalid lr"):
        create_optimizer("adam", w, lr=-1.0)
    with pytest.raises(ValueError, match="choose one of list_optimizers"):
        load_pretrained("rp_huge")


def test_a_stage_module_is_not_shadowed_by_its_function():
    import importlib
    import types

    for stage in ("distill", "meta_train"):
        module = importlib.import_module(f"symbolic_l2o.{stage}")
        exec(f"import symbolic_l2o.{stage} as imported", ns := {})
        assert isinstance(ns["imported"], types.ModuleType) and ns["imported"] is module
        assert callable(getattr(module, stage))  # the function lives in its module


def test_the_package_says_what_it_is():
    import symbolic_l2o

    assert "learned optimizers" in symbolic_l2o.__doc__ and "create_optimizer" in symbolic_l2o.__doc__
