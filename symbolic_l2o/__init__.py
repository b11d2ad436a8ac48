"""symbolic_l2o: turn learned optimizers into readable equations, and ship those equations as fast, ordinary
PyTorch optimizers (after "Symbolic Learning to Optimize", Zheng et al., ICLR 2022).

Every optimizer the project ships, hand-designed, learned or distilled, by name::

    from symbolic_l2o import create_optimizer, list_optimizers
    opt = create_optimizer("rp_si_distilled", model.parameters())  # a torch.optim.Optimizer

The stages live in their modules: ``symbolic_l2o.meta_train`` (meta-train and evaluate learned optimizers),
``symbolic_l2o.srgen`` (record what a rule does), ``symbolic_l2o.distill`` (symbolic regression, null
models, fidelity), ``symbolic_l2o.finetune`` (meta-tune and deploy on ResNets); ``symbolic-l2o --help`` is the
command.
"""

__version__ = "0.0.1"

# One import for users (nbs/library.ipynb lists what it re-exports):
# from symbolic_l2o import create_optimizer, ...
from .library import *
