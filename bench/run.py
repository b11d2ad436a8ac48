"""The benchmark suite: `make bench` (or `python bench/run.py --out bench/results.json [--only NAME]`).

Each benchmark returns a dict of figures; timings are ratios against a baseline measured alternately in
the same process (machines are noisy), with the absolute times beside them."""
import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torchvision

import symbolic_l2o
from symbolic_l2o.optimizers import AdamRule, RuleOptimizer


def state_bytes_per_param(opt: torch.optim.Optimizer, n_params: int) -> float:
    "Bytes of optimizer state (every tensor, step counters included) per parameter."
    return sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
               if isinstance(v, torch.Tensor)) / n_params


def optimizer_step(repeats: int = 30, warmup: int = 3) -> dict:
    "Median `step()` time of RuleOptimizer(AdamRule) vs torch.optim.Adam(foreach=True) on ResNet-18's parameters (CPU)."
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    ref_params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for p, q in zip(params, ref_params):
        p.grad = torch.randn_like(p) * 1e-3
        q.grad = p.grad.clone()
    n = sum(p.numel() for p in params)
    rule_opt = RuleOptimizer(params, AdamRule(lr=1e-3))
    adam = torch.optim.Adam(ref_params, lr=1e-3, foreach=True)
    times = {"rule": [], "adam": []}
    for i in range(warmup + repeats):
        for name, opt in (("rule", rule_opt), ("adam", adam)):
            t0 = time.perf_counter()
            opt.step()
            if i >= warmup: times[name].append(time.perf_counter() - t0)
    rule_ms, adam_ms = (1e3 * statistics.median(times[k]) for k in ("rule", "adam"))
    return {"ratio": rule_ms / adam_ms, "rule_ms": rule_ms, "adam_ms": adam_ms,
            "state_bytes_per_param": state_bytes_per_param(rule_opt, n),
            "adam_state_bytes_per_param": state_bytes_per_param(adam, n),
            "params": n, "repeats": repeats, "threads": torch.get_num_threads()}


BENCHMARKS = {"optimizer_step": optimizer_step}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"))
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    args = parser.parse_args()
    results = {"machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                           "cpus": os.cpu_count()},
               "versions": {"symbolic_l2o": symbolic_l2o.__version__, "torch": torch.__version__,
                            "torchvision": torchvision.__version__, "python": platform.python_version()},
               "benchmarks": {}}
    for name in args.only or BENCHMARKS:
        print(f"== {name}", flush=True)
        results["benchmarks"][name] = BENCHMARKS[name]()
        print(json.dumps(results["benchmarks"][name], indent=2), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as f:
        json.dump(results, f, indent=2)
    os.replace(f.name, args.out)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
