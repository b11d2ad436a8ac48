"""Worker of tests/test_finetune.py's DDP test: `torchrun --nproc_per_node=2 ddp_train_script.py OUT` trains a
small network with `RuleOptimizer` and a symbolic rule through `vision.train`, and each rank saves its final
parameters."""

import sys
from pathlib import Path

import torch
from torch import nn

from symbolic_l2o.vision import ImageData, digits32, distributed, train
from symbolic_l2o.finetune import _rule_optimizer_factory
from symbolic_l2o.expressions import SymbolicRule


def run(out: Path | None = None):
    """Two epochs of a BN-free CNN on 256 digits32 images, global batch 64, with a symbolic rule that reads a
    lag."""
    torch.manual_seed(0)
    full = digits32()
    data = ImageData(
        "digits32-256",
        full.X_train[:256],
        full.y_train[:256],
        full.X_test[:64],
        full.y_test[:64],
        10,
        full.mean.flatten().tolist(),
        full.std.flatten().tolist(),
        flip=True,  # flips on: exercises augmentation
    )
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 10)
    )
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    rule = SymbolicRule("-1.5*mt_0 - 0.3*gt_1", scale=0.01)
    record = train(
        model,
        _rule_optimizer_factory(rule),
        2,
        data,
        "cosine",
        batch_size=64,
        device="cpu",
        seed=3,
        out=out / "run.json" if out else None,
        progress=False,
    )
    return initial, {k: v.detach().clone() for k, v in model.state_dict().items()}, record


if __name__ == "__main__":
    torch.set_num_threads(1)
    out = Path(sys.argv[1])
    _, final, _ = run(out)
    rank, world = distributed()
    torch.save({"world": world, "params": final}, out / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()
