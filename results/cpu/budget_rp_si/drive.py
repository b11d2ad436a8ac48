# Budget curve driver (issue 38): meta-train one zoo rule with its zoo recipe, resuming one run through
# increasing epoch counts, keeping a copy of the checkpoint at each milestone.
import shutil, sys, time, json
from dataclasses import replace
from pathlib import Path
import torch
torch.set_num_threads(1)
from symbolic_l2o.meta_train import meta_train, MetaTrainSettings, ZOO_RECIPES, zoo_tasks
from symbolic_l2o.learned_rules import make_rule

name = sys.argv[1]
milestones = [int(x) for x in sys.argv[2].split(",")]
out = Path(sys.argv[3]); out.mkdir(parents=True, exist_ok=True)
torch.manual_seed(0)
rule_args, recipe = ZOO_RECIPES.get(name, ({}, {}))
tasks = zoo_tasks()
for m in milestones:
    keep = out / f"epoch_{m:04d}.pt"
    if keep.exists():
        continue
    rule = make_rule(name, **rule_args)
    t0 = time.time()
    meta_train(rule, tasks, replace(MetaTrainSettings(), epochs=m, **recipe), out_dir=out / "run", resume=True, progress=False)
    shutil.copy(out / "run" / "checkpoint.pt", keep)
    with open(out / "milestones.jsonl", "a") as f:
        f.write(json.dumps({"epochs": m, "wall_seconds_this_leg": time.time() - t0}) + "\n")
    print("milestone", m, time.time() - t0, flush=True)
