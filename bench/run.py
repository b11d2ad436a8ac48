"""The benchmark suite: `make bench` (or `python bench/run.py --out bench/results.json [--only NAME]`).

Each benchmark returns a dict of figures; timings are ratios against a baseline measured alternately in
the same process (machines are noisy), with the absolute times beside them."""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torchvision

import symbolic_l2o
from symbolic_l2o.files import atomic_write
from symbolic_l2o.tasks import make_task
from symbolic_l2o.evaluation import BASELINES, evaluate
from symbolic_l2o.zoo import ZOO, zoo_rule
from symbolic_l2o.meta_train import MetaTrainSettings, meta_train
from symbolic_l2o.evaluation import tune_baseline
from symbolic_l2o.optimizers import AdamRule
from symbolic_l2o.rule_optimizer import RuleOptimizer
from symbolic_l2o.learned_rules import make_rule


def optimizer_step(repeats: int = 30, warmup: int = 3) -> dict:
    """Median `step()` time of RuleOptimizer(AdamRule) vs torch.optim.Adam(foreach=True) on the CIFAR
    ResNet-18's parameters (CPU; `finetune.step_costs`, the optimizers stepped in turn)."""
    from symbolic_l2o.finetune import step_costs

    costs = step_costs(
        {
            "rule": lambda ps: RuleOptimizer(ps, AdamRule(lr=1e-3)),
            "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        },
        "resnet18",
        repeats,
        warmup,
    )
    rule, adam = costs["rule"], costs["adam"]
    return {
        "ratio": rule["step_ms"] / adam["step_ms"],
        "rule_ms": rule["step_ms"],
        "adam_ms": adam["step_ms"],
        "state_bytes_per_param": rule["state_bytes_per_param"],
        "adam_state_bytes_per_param": adam["state_bytes_per_param"],
        "params": adam["params"],
        "repeats": repeats,
        "threads": torch.get_num_threads(),
    }


def rule_step(repeats: int = 20, warmup: int = 3) -> dict:
    """Median `step()` time of RuleOptimizer with the deployed kinds of rule (the zoo's distilled equation as
    deployed, fused; u = c·mp3_0, checked and fused; a two-term equation with a lag; the γ·tanh rule) over
    torch.optim.Adam's default (foreach) and its fastest (fused=True), each stepped in turn, on the CIFAR
    ResNet-18's parameters (CPU; `finetune.step_costs`)."""
    from symbolic_l2o import load_pretrained
    from symbolic_l2o.expressions import SymbolicRule
    from symbolic_l2o.learned_rules import TanhBasisRule
    from symbolic_l2o.finetune import step_costs

    deployed = load_pretrained("rp_si_distilled")
    rules = {
        "symbolic_c_mp3": SymbolicRule("-1.5703016687270164*mp3_0", scale=0.1),
        "symbolic_two_terms_lag8": SymbolicRule("0.00349*mp2_8 - 0.0123*mp3_0", scale=0.1),
        "tanh_basis": TanhBasisRule(weights=[[1.0, -0.1], [0.1, 0.0]]),
    }
    costs = step_costs(
        {
            "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
            "adam_fused": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
            **{k: (lambda ps, r=r: RuleOptimizer(ps, r)) for k, r in rules.items()},
            "symbolic_c_mp3_fused": lambda ps: RuleOptimizer(ps, rules["symbolic_c_mp3"], fused=True),
            "deployed_fused": lambda ps: RuleOptimizer(ps, deployed, fused=deployed.fusable),
        },
        "resnet18",
        repeats,
        warmup,
    )
    ms = {k: c["step_ms"] for k, c in costs.items()}
    return {
        "ratio_over_adam": {k: ms[k] / ms["adam"] for k in ms if k != "adam"},
        "ratio_over_fastest_adam": {k: ms[k] / min(ms["adam"], ms["adam_fused"]) for k in ms},
        "ms": ms,
        "deployed_equation": str(deployed.to_sympy()),
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "target": "deployed_fused <= 1.0x torch's fastest Adam (issue 36), <= 1.3x its default (issue 20)",
    }


def meta_train_scaling(unrolls=(5, 10, 20, 40), windows: int = 4, epochs: int = 3) -> dict:
    """Seconds per meta-training window of RP on digits_mlp for each unroll K (median over epochs of `windows`
    windows)."""
    task, out = make_task("digits_mlp"), {}
    # warm-up
    meta_train(
        make_rule("rp"),
        task,
        MetaTrainSettings(epochs=1, epoch_len=unrolls[0], unroll=unrolls[0]),
        progress=False,
    )
    for k in unrolls:
        torch.manual_seed(0)
        history = meta_train(
            make_rule("rp"),
            task,
            MetaTrainSettings(epochs=epochs, epoch_len=windows * k, unroll=k),
            progress=False,
        )
        out[str(k)] = statistics.median(h["seconds"] for h in history) / windows
    return {
        "seconds_per_window": out,
        "ratio_40_over_10": out["40"] / out["10"],
        "note": "linear cost in K gives a ratio of about 4, quadratic about 16",
    }


def l2o_quality(horizon: int = 200, factor: int = 5, seeds: int = 10) -> dict:
    "Held-out Eva loss of each zoo rule at its trained horizon and at factor× it, beside LR-tuned baselines."
    task, result = make_task("digits_mlp"), {"task": "digits_mlp", "seeds": seeds}
    for steps in (horizon, factor * horizon):
        row = {}
        for name in ZOO:
            ev = evaluate(zoo_rule(name), task, steps, range(seeds), progress=False)
            row[name] = {"eva_loss": ev.eva_loss, "final_eval_loss": ev.final_eval_loss}
        for name in BASELINES:
            lr, ev = tune_baseline(name, task, steps, seeds=range(seeds))
            row[name] = {"lr": lr, "eva_loss": ev.eva_loss, "final_eval_loss": ev.final_eval_loss}
        result[f"{steps}_steps"] = row
    for steps in (horizon, factor * horizon):
        row = result[f"{steps}_steps"]
        result[f"rp_si_over_adam_{steps}"] = row["rp_si"]["eva_loss"][0] / row["adam"]["eva_loss"][0]
    result["rp_si_over_adam"] = result[f"rp_si_over_adam_{horizon}"]
    return result


def sanity_recovery() -> dict:
    """The paper's five sanity targets from recorded gradients (library defaults: max_length 50, 25 s engine
    clock, most accurate member): R², seconds, exact flag."""
    from symbolic_l2o.sanity import sanity_check

    paper = {
        "-0.01 g_t": (1.0, 49),
        "sum (1-0.1i) g_t-i": (0.94, 126),
        "g_t^2 + g_t-1 + 2g_t-2 + exp(g_t-4)": (0.98, 256),
        "momentum(0.6)": (0.97, 90),
        "Adam(0.9)": (0.89, 879),
    }
    return {
        r["target"]: {
            "r2": r["r2"],
            "seconds": r["seconds"],
            "exact": r["exact"],
            "recovered": r["recovered"],
            "stopped_by_time": r["fit"].meta["stopped_by_time"],
            "paper_r2": paper[r["target"]][0],
            "paper_seconds": paper[r["target"]][1],
        }
        for r in sanity_check(progress=False)
    }


def distill_fidelity() -> dict:
    """Per zoo rule, at the library's settings (three search seeds): the deployed equation, its nodes, R²
    teacher-forced and free-running, Eva loss ratio to its LSTM with its interval, faithful seeds, TPF,
    mapping complexity."""
    from symbolic_l2o.distill import distill

    task = make_task("digits_mlp")
    return {name: distill(zoo_rule(name), task, name, progress=False).summary() for name in ZOO}


def _deployed_symbolic():
    "The zoo's distilled RP_si equation reduced to its deployable member (as 04_finetune_resnet deploys it)."
    from symbolic_l2o.finetune import deployable, _rule_source_fit
    from symbolic_l2o.expressions import SymbolicRule

    fit, _ = _rule_source_fit()
    return fit, SymbolicRule(deployable(fit), scale=float(fit.meta.get("scale", 1.0)))


def scalability(repeats: int = 10) -> dict:
    """ResNet-18 (CIFAR) parameters on CPU: state bytes/param and median step time of the symbolic, γ·tanh,
    Adam and RNNprop LSTM rules."""
    from symbolic_l2o.finetune import scalability as measure

    result = measure(_deployed_symbolic()[1], "resnet18", repeats=repeats)
    result["targets"] = {
        "symbolic_over_adam_time": "<= 1.3",
        "symbolic_state_bytes_per_param": "<= adam_state_bytes_per_param",
    }
    return result


def resnet_digits32(seeds=(0, 1, 2)) -> dict:
    """04's protocol on digits32 (resnet10_w8, 8 epochs): the proxy-tuned symbolic rule and every baseline,
    each with a 3-point LR grid chosen on 300 validation images, then 3 seeds; test accuracy mean and 95%
    interval."""
    from symbolic_l2o.vision import digits32
    from symbolic_l2o.finetune import COSINE_BASELINES, prepare_symbolic, _rule_spec, run_protocol

    torch.set_num_threads(min(2, torch.get_num_threads()))
    fit, _ = _deployed_symbolic()
    data = digits32()
    t0 = time.perf_counter()
    fit_part, _ = data.holdout(300)
    sym, card = prepare_symbolic(
        fit,
        fit_part.task("resnet10_w4", batch_size=32, n=512),
        tune=dict(epochs=3, epoch_len=30, unroll=10),
        search=dict(steps=30, multipliers=(3.0, 1.0, 0.3, 0.1, 0.03)),
    )
    prep = time.perf_counter() - t0
    results = run_protocol(
        {"symbolic": _rule_spec("Symbolic L2O", sym), **COSINE_BASELINES},
        "resnet10_w8",
        data,
        epochs=8,
        seeds=seeds,
        n_val=300,
        points=3,
        max_extensions=2,
        progress=False,
    )
    summary = {
        n: {k: r[k] for k in ("best_lr", "val_metric", "test_acc", "test_acc_mean", "test_acc_ci")}
        for n, r in results.items()
    }
    best = max(COSINE_BASELINES, key=lambda n: summary[n]["val_metric"])  # chosen on validation
    return {
        "arch": "resnet10_w8",
        "dataset": "digits32",
        "epochs": 8,
        "seeds": list(seeds),
        "optimizers": summary,
        "best_baseline": best,
        "symbolic_minus_best_baseline": summary["symbolic"]["test_acc_mean"] - summary[best]["test_acc_mean"],
        "target": "symbolic test_acc_mean >= the best baseline's 95% interval's low end",
        "rule": f"{sym.scale:g} * ({sym.to_sympy()})",
        "multiplier": card["multiplier"],
        "prepare_seconds": prep,
        "seconds": time.perf_counter() - t0,
    }


BENCHMARKS = {
    "optimizer_step": optimizer_step,
    "rule_step": rule_step,
    "meta_train_scaling": meta_train_scaling,
    "l2o_quality": l2o_quality,
    "sanity_recovery": sanity_recovery,
    "distill_fidelity": distill_fidelity,
    "scalability": scalability,
    "resnet_digits32": resnet_digits32,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args()
    results = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
        },
        "versions": {
            "symbolic_l2o": symbolic_l2o.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "python": platform.python_version(),
        },
        "benchmarks": {},
    }
    if (
        args.only and args.out.exists()
    ):  # a partial run updates those benchmarks and keeps the others' last results
        results["benchmarks"] = json.loads(args.out.read_text()).get("benchmarks", {})
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        results["benchmarks"][name] = BENCHMARKS[name]()
        print(json.dumps(results["benchmarks"][name], indent=2), flush=True)
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2)))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
