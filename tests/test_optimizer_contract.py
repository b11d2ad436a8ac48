"""The optimizer contract: every update rule, deployed through `RuleOptimizer`, behaves like a `torch.optim`
optimizer.

`ALL` holds the hand rules, the pretrained learned rules of the zoo, a symbolic rule and the γ·tanh rule."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from symbolic_l2o.zoo import ZOO, zoo_rule
from symbolic_l2o.optimizers import AdamRule, AddSignRule, LionRule, MomentumRule, NesterovRule
from symbolic_l2o.optimizers import PowerSignRule, RMSpropRule, SGDRule
from symbolic_l2o.rule_optimizer import RuleOptimizer
from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.learned_rules import DMRule, RNNpropRule, TanhBasisRule, make_rule

# name -> factory of the rule with a learning rate suited to the small problems below
RULES = {
    "sgd": lambda: SGDRule(lr=0.05),
    "momentum": lambda: MomentumRule(lr=0.01, momentum=0.9),
    "nesterov": lambda: NesterovRule(lr=0.01, momentum=0.9),
    "adam": lambda: AdamRule(lr=0.05),
    "rmsprop": lambda: RMSpropRule(lr=0.01),
    "lion": lambda: LionRule(lr=0.01),
    "powersign": lambda: PowerSignRule(lr=0.02),
    "addsign": lambda: AddSignRule(lr=0.02),
}
# learned rules as users deploy them: the pretrained zoo
LEARNED = {name: (lambda name=name: zoo_rule(name)) for name in ZOO}
# equations as deployed by 04_finetune_resnet (one reads a lag, so its history is exercised), and a recurrent
# one (it reads its own past outputs u_k, as distilled LSTMs do)
SYMBOLIC = {
    "symbolic": lambda: SymbolicRule("-1.5*mt_0 - 0.3*tanh(gt_1)", scale=0.03),
    "symbolic_recurrent": lambda: SymbolicRule(
        "0.6*u_1 + 0.2*u_3 - 0.5*tanh(2*mt_0 + 0.1*u_2)", scale=0.03, clip=(-0.4, 0.4)
    ),
    "tanh_basis": lambda: TanhBasisRule(
        ("mt", "gt"), lags=1, gamma=1.0, scale=0.05, weights=[[1.0, 0.2], [0.3, -0.1]]
    ),
}
ALL = {**RULES, **LEARNED, **SYMBOLIC}
# name -> (invalid keyword arguments, the name the error must mention)
INVALID = {
    "sgd": [({"lr": -0.1}, "lr"), ({"lr": float("nan")}, "lr")],
    "momentum": [({"lr": -1.0}, "lr"), ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum")],
    "nesterov": [({"momentum": 1.5}, "momentum")],
    "adam": [
        ({"lr": -1e-3}, "lr"),
        ({"betas": (1.0, 0.999)}, "betas[0]"),
        ({"betas": (0.9, -0.1)}, "betas[1]"),
        ({"betas": 0.9}, "betas"),
        ({"eps": 0.0}, "eps"),
    ],
    "rmsprop": [({"alpha": 1.0}, "alpha"), ({"eps": -1e-8}, "eps")],
    "lion": [({"betas": (0.9, 2.0)}, "betas[1]"), ({"lr": "fast"}, "lr")],
    "powersign": [
        ({"base": 0.0}, "base"),
        ({"beta": 1.0}, "beta"),
        ({"decay": "exponential"}, "decay"),
        ({"decay": "linear"}, "decay_steps"),
        ({"decay": "cyclic", "decay_steps": 10, "num_cycles": 0}, "num_cycles"),
    ],
    "addsign": [({"alpha": -1.0}, "alpha"), ({"decay": "restart", "decay_steps": 2.5}, "decay_steps")],
}
CLS = {
    "sgd": SGDRule,
    "momentum": MomentumRule,
    "nesterov": NesterovRule,
    "adam": AdamRule,
    "rmsprop": RMSpropRule,
    "lion": LionRule,
    "powersign": PowerSignRule,
    "addsign": AddSignRule,
}
names = pytest.mark.parametrize("name", list(ALL))


def mlp(seed=0, sizes=(4, 8, 1)):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(sizes[0], sizes[1]), nn.Tanh(), nn.Linear(sizes[1], sizes[2]))


def data(seed=1, n=32, d=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(n, 1, generator=g)


def train(model, opt, X, y, steps):
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def snapshot(model, opt):
    "Deep copies of parameters and optimizer state, to check that nothing changed."
    return [p.detach().clone() for p in model.parameters()], copy.deepcopy(opt.state_dict()["state"])


def same(a, b):
    return (
        all(torch.equal(x, y) for x, y in zip(a[0], b[0]))
        and a[1].keys() == b[1].keys()
        and all(
            a[1][k].keys() == b[1][k].keys() and all(torch.equal(a[1][k][n], b[1][k][n]) for n in a[1][k])
            for k in a[1]
        )
    )


@names
def test_linear_model_loss_falls_tenfold(name):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 6, generator=g)
    y = X @ torch.randn(6, 1, generator=g) + 0.1 * torch.randn(64, 1, generator=g)
    torch.manual_seed(0)
    model = nn.Linear(6, 1)
    # the zoo's rules move a coordinate by at most their output scale, the paper's 0.01, per step: 400 steps
    # let them travel as far as the weights lie (~1); every other rule gets 200
    steps = 400 if name in LEARNED else 200
    losses = train(model, RuleOptimizer(model.parameters(), ALL[name]()), X, y, steps)
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])


# hand rules: a learned rule's first steps carry its learned bias
@pytest.mark.parametrize("name", list(RULES))
def test_sigmoid_mlp_loss_falls_on_every_step(name):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
    X, y = data(seed=4, n=16, d=2)
    # a small step (1/30 of the rule's own): the loss must then fall at every step
    opt = RuleOptimizer(model.parameters(), ALL[name]())
    opt.param_groups[0]["lr"] /= 30
    losses = []
    for _ in range(21):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@names
def test_state_dict_lock_step_is_bit_identical(name):
    X, y = data()
    a = mlp()
    opt_a = RuleOptimizer(a.parameters(), ALL[name]())
    train(a, opt_a, X, y, 20)
    b = copy.deepcopy(a)
    opt_b = RuleOptimizer(b.parameters(), ALL[name]())
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    opt_b.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(20):
        train(a, opt_a, X, y, 1)
        train(b, opt_b, X, y, 1)
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


@names
def test_state_survives_a_dtype_cast(name):
    X, y = data()
    a = mlp()
    opt_a = RuleOptimizer(a.parameters(), ALL[name]())
    train(a, opt_a, X, y, 10)
    b = copy.deepcopy(a).double()
    opt_b = RuleOptimizer(b.parameters(), ALL[name]())
    opt_b.load_state_dict(opt_a.state_dict())  # directly, not through a file: nothing may be shared
    for p, q in zip(a.parameters(), b.parameters()):
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert sa.keys() == sb.keys() and torch.equal(sa["step"], sb["step"])
        for k in sa:
            if k != "step":
                assert sb[k].dtype == torch.float64 and torch.equal(sb[k], sa[k].double())
    # Continue both with the same gradients: the float64 copy follows the float32 run up to rounding.
    g = torch.Generator().manual_seed(5)
    for _ in range(5):
        for p, q in zip(a.parameters(), b.parameters()):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.double()
        opt_a.step()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert q.dtype == torch.float64
        torch.testing.assert_close(p.double(), q, atol=1e-6, rtol=1e-5)


def fixed_grad_run(rule_factory, lrs, steps, scheduler=None):
    """Identical parameters stepped with the same fixed gradient sequence, one per group, its lr the rule's
    default × `lrs[i]`."""
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(5, generator=g) for _ in range(steps)]
    params = [nn.Parameter(torch.zeros(5)) for _ in lrs]
    opt = RuleOptimizer([{"params": [p]} for p in params], rule_factory())
    for group, factor in zip(opt.param_groups, lrs):
        group["lr"] *= factor
    sched = scheduler(opt) if scheduler else None
    for gr in grads:
        for p in params:
            p.grad = gr.clone()
        opt.step()
        if sched:
            sched.step()
    return params, grads


@names
def test_param_groups_scale_the_update_by_their_lr(name):
    (p1, p2, p3), _ = fixed_grad_run(ALL[name], [1.0, 0.25, 0.0], steps=10)
    assert p1.abs().sum() > 0
    torch.testing.assert_close(p2, 0.25 * p1)
    assert torch.equal(p3, torch.zeros(5))


@names
@pytest.mark.parametrize("scheduler", ["step", "cosine"])
def test_lr_schedulers_scale_each_update(name, scheduler):
    make = {
        "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
        "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=8),
    }[scheduler]
    (p,), grads = fixed_grad_run(ALL[name], [1.0], steps=8, scheduler=make)
    factors = {
        "step": [0.5 ** (t // 3) for t in range(8)],
        "cosine": [0.5 * (1 + math.cos(math.pi * t / 8)) for t in range(8)],
    }[scheduler]
    rule = ALL[name]()
    expected, state = torch.zeros(5), rule.init([torch.zeros(5)])
    with torch.no_grad():
        for t, (gr, f) in enumerate(zip(grads, factors), 1):
            (u,), state = rule.step([gr], state, t)
            expected += f * u
    torch.testing.assert_close(p.detach(), expected)


@names
def test_step_with_closure_returns_its_loss(name):
    X, y = data()
    model = mlp()
    opt = RuleOptimizer(model.parameters(), ALL[name]())
    before = [p.detach().clone() for p in model.parameters()]
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), y)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert len(calls) == 1 and loss.requires_grad is False or loss.grad_fn is not None
    torch.testing.assert_close(loss, nn.functional.mse_loss(mlp()(X), y))
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


@names
def test_non_contiguous_and_zero_size_parameters(name):
    base = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    nc = nn.Parameter(base.clone().t())  # 4x3, non-contiguous
    assert not nc.is_contiguous()
    contiguous = nn.Parameter(base.clone().t().contiguous())
    empty = nn.Parameter(torch.zeros(0, 3))
    opt_nc = RuleOptimizer([nc, empty], ALL[name]())
    opt_c = RuleOptimizer([contiguous], ALL[name]())
    for i in range(5):
        g = torch.randn(4, 3, generator=torch.Generator().manual_seed(i + 1))
        nc.grad, contiguous.grad, empty.grad = g.t().contiguous().t(), g.clone(), torch.zeros(0, 3)
        opt_nc.step()
        opt_c.step()
    assert torch.equal(nc.detach(), contiguous.detach())
    assert not torch.equal(nc.detach(), base.t())
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("name", list(RULES))
def test_invalid_hyperparameters_raise_naming_the_value(name):
    for kwargs, bad in INVALID[name]:
        with pytest.raises(ValueError, match=f"invalid {bad.replace('[', '.').replace(']', '.')}"):
            CLS[name](**kwargs)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: DMRule(preprocessing="sign"), "invalid preprocessing"),
        (lambda: DMRule(k=-1.0), "invalid k"),
        (lambda: DMRule(hidden=()), "need >= 1 LSTM layer"),
        (lambda: RNNpropRule(output_scale=0.0), "invalid output_scale"),
        (lambda: RNNpropRule(features=("mt", "speed")), "unknown gradient feature.*speed"),
        (lambda: RNNpropRule(beta1=1.0), "invalid beta1"),
        (lambda: make_rule("rp_xxl"), "unknown rule"),
    ],
)
def test_invalid_learned_rule_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_invalid_optimizer_arguments():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ValueError, match="invalid lr"):
        RuleOptimizer(p, SGDRule(), lr=-1.0)
    with pytest.raises(ValueError, match="on_nonfinite"):
        RuleOptimizer(p, SGDRule(), on_nonfinite="ignore")
    with pytest.raises(TypeError, match="UpdateRule"):
        RuleOptimizer(p, torch.optim.SGD)


@names
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_gradient_error_changes_nothing(name, bad):
    X, y = data()
    model = mlp()
    opt = RuleOptimizer(model.named_parameters(), ALL[name]())
    train(model, opt, X, y, 3)
    opt.zero_grad()
    nn.functional.mse_loss(model(X), y).backward()
    model[2].weight.grad[0, 5] = bad
    before = snapshot(model, opt)
    with pytest.raises(FloatingPointError, match=r"'2\.weight'"):
        opt.step()
    assert same(before, snapshot(model, opt))


@names
def test_nonfinite_gradient_skip_changes_nothing_and_counts(name):
    X, y = data()
    model = mlp()
    opt = RuleOptimizer(model.parameters(), ALL[name](), on_nonfinite="skip")
    train(model, opt, X, y, 3)
    opt.zero_grad()
    nn.functional.mse_loss(model(X), y).backward()
    model[0].bias.grad[1] = float("nan")
    before = snapshot(model, opt)
    opt.step()
    assert same(before, snapshot(model, opt))
    assert opt.nonfinite_skips == 1 and opt.state_dict()["nonfinite_skips"] == 1
    train(model, opt, X, y, 1)  # finite gradients step again
    assert not same(before, snapshot(model, opt))
    fresh = RuleOptimizer(model.parameters(), ALL[name](), on_nonfinite="skip")
    fresh.load_state_dict(opt.state_dict())
    assert fresh.nonfinite_skips == 1


def test_sparse_gradients_are_rejected():
    emb = nn.Embedding(10, 3, sparse=True)
    opt = RuleOptimizer(emb.parameters(), AdamRule())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients"):
        opt.step()


@names
def test_parameters_without_grad_are_skipped_with_their_own_step_count(name):
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    ref = nn.Parameter(torch.ones(3))
    opt, ref_opt = RuleOptimizer([a, b], ALL[name]()), RuleOptimizer([ref], ALL[name]())
    g = torch.tensor([0.5, -1.0, 2.0])
    for _ in range(3):  # only `a` has gradients: b stays put and gets no state
        a.grad, b.grad = g.clone(), None
        opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and not opt.state[b]
    a.grad, b.grad, ref.grad = g.clone(), g.clone(), g.clone()
    opt.step()
    ref_opt.step()
    assert torch.equal(b.detach(), ref.detach())  # b's first step is a first step (t = 1), not the 4th
    assert int(opt.state[a]["step"]) == 4 and int(opt.state[b]["step"]) == 1


@names
def test_step_is_pure_and_differentiable_with_autograd(name):
    rule = ALL[name]()
    w = torch.randn(6, requires_grad=True)
    state = rule.init([w])
    kept = [{k: v.clone() for k, v in s.items()} for s in state]
    originals = state
    total = 0
    for t in range(1, 4):
        g = torch.sin(w * t)  # gradient-like input that depends on w, as in second-order meta-training
        (u,), state = rule.step([g], state, t)
        total = total + (u * torch.arange(6.0)).sum()
    total.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()
    for s, k in zip(originals, kept):
        assert all(torch.equal(s[n], k[n]) for n in s)  # the input state was not modified


PARITY = [
    ("sgd", lambda: SGDRule(lr=0.05), lambda ps: torch.optim.SGD(ps, lr=0.05)),
    (
        "momentum",
        lambda: MomentumRule(lr=0.02, momentum=0.9),
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.9),
    ),
    (
        "nesterov",
        lambda: NesterovRule(lr=0.02, momentum=0.8),
        lambda ps: torch.optim.SGD(ps, lr=0.02, momentum=0.8, nesterov=True),
    ),
    (
        "adam",
        lambda: AdamRule(lr=3e-3, betas=(0.8, 0.99), eps=1e-7),
        lambda ps: torch.optim.Adam(ps, lr=3e-3, betas=(0.8, 0.99), eps=1e-7),
    ),
    # lr 1e-3: at 3e-3 a coordinate whose gradient passes through zero amplifies float rounding past 1e-6
    (
        "rmsprop",
        lambda: RMSpropRule(lr=1e-3, alpha=0.9, eps=1e-7),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-3, alpha=0.9, eps=1e-7),
    ),
]


@pytest.mark.parametrize("name,rule,reference", PARITY, ids=[p[0] for p in PARITY])
def test_parity_with_torch_optim_over_100_steps(name, rule, reference):
    X, y = data(n=64)
    a, b = mlp(sizes=(4, 16, 1)), mlp(sizes=(4, 16, 1))
    opt_a, opt_b = RuleOptimizer(a.parameters(), rule()), reference(b.parameters())
    for _ in range(100):
        train(a, opt_a, X, y, 1)
        train(b, opt_b, X, y, 1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=0)


WEIGHT_DECAY_PARITY = [
    (
        "sgd_coupled",
        lambda ps: RuleOptimizer(ps, MomentumRule(lr=0.05, momentum=0.9), weight_decay=5e-2),
        lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=5e-2),
    ),
    (
        "adam_coupled",
        lambda ps: RuleOptimizer(ps, AdamRule(lr=1e-2), weight_decay=1e-1),
        lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-1),
    ),
    # decoupled: the group lr (Adam's step size) multiplies the decay, as AdamW's lr does
    (
        "adamw_decoupled",
        lambda ps: RuleOptimizer(ps, AdamRule(), lr=1e-2, weight_decay=0.5, decoupled_weight_decay=True),
        lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.5),
    ),
]


@pytest.mark.parametrize("name,ours,reference", WEIGHT_DECAY_PARITY, ids=[p[0] for p in WEIGHT_DECAY_PARITY])
def test_weight_decay_matches_torch_optim_over_100_steps(name, ours, reference):
    X, y = data(n=64)
    a, b, plain = mlp(sizes=(4, 16, 1)), mlp(sizes=(4, 16, 1)), mlp(sizes=(4, 16, 1))
    opt_a, opt_b = ours(a.parameters()), reference(b.parameters())
    opt_plain = RuleOptimizer(plain.parameters(), opt_a.rule, lr=opt_a.param_groups[0]["lr"])
    for _ in range(100):
        for model, o in ((a, opt_a), (b, opt_b), (plain, opt_plain)):
            train(model, o, X, y, 1)
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=0)
    # the decay did something: without it the weights end elsewhere, with a larger norm
    assert sum(p.norm() ** 2 for p in a.parameters()) < sum(p.norm() ** 2 for p in plain.parameters())


def test_weight_decay_is_per_group_and_validated():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    opt = RuleOptimizer([{"params": [a], "weight_decay": 0.1}, {"params": [b]}], SGDRule(lr=1.0))
    a.grad, b.grad = torch.zeros(3), torch.zeros(3)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.full((3,), 0.9))  # coupled: g + 0.1·θ = 0.1, times lr 1
    assert torch.equal(b.detach(), torch.ones(3))
    assert torch.equal(a.grad, torch.zeros(3))  # the gradient itself is left alone
    for bad in (-1e-4, float("nan"), "5e-4"):
        with pytest.raises(ValueError, match="invalid weight_decay"):
            RuleOptimizer([nn.Parameter(torch.ones(2))], SGDRule(), weight_decay=bad)
    with pytest.raises(ValueError, match="invalid weight_decay"):
        RuleOptimizer([{"params": [nn.Parameter(torch.ones(2))], "weight_decay": -1.0}], SGDRule())
    with pytest.raises(ValueError, match="decoupled_weight_decay"):
        RuleOptimizer([nn.Parameter(torch.ones(2))], SGDRule(), decoupled_weight_decay="yes")


def test_weight_decay_survives_state_dict_round_trip():
    X, y = data()
    a = mlp()
    opt_a = RuleOptimizer(a.parameters(), AdamRule(lr=1e-2), weight_decay=0.1, decoupled_weight_decay=True)
    train(a, opt_a, X, y, 5)
    b = copy.deepcopy(a)
    opt_b = RuleOptimizer(b.parameters(), AdamRule(lr=1e-2))
    opt_b.load_state_dict(opt_a.state_dict())
    assert (
        opt_b.param_groups[0]["weight_decay"] == 0.1
        and opt_b.param_groups[0]["decoupled_weight_decay"] is True
    )
    for _ in range(5):
        train(a, opt_a, X, y, 1)
        train(b, opt_b, X, y, 1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def assert_fast_path_matches_autograd_path(rule, grads, atol):
    """Without autograd a rule writes into its temporaries: it must give the autograd path's updates and touch
    no input."""
    fast, slow = rule.init(grads[0]), rule.init(grads[0])
    for t, gr in enumerate(grads, 1):
        kept = [x.clone() for x in gr]
        with torch.no_grad():
            u_fast, fast = rule.step(gr, fast, t)
        assert all(torch.equal(a, b) for a, b in zip(gr, kept)), "the gradients were written"
        u_slow, slow = rule.step(kept, slow, t)
        slow = [{k: v.detach() for k, v in s.items()} for s in slow]
        for a, b in zip(u_fast, u_slow):
            torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=atol)


@pytest.mark.parametrize(
    "expr",
    [
        "-1.57*mp3_0",
        "-1.57*mp3_0 + 0.01",
        "-3.3*tanh(0.94*mp25_1)*sqrt(abs(mp3_8)) + 0.0095",
        "mt_0*tanh(mt_0)",
        "-0.5*g_0 - 0.1*g_2",
        "-10*mom9_0",
        "-(mt_0 + gt_0)^2*0.3",
        "-1.2*mt_0*adam_dn_0",
        "-0.3*adam_up_norm_0 - 0.1*adam_up_0",
        "-exp(-abs(mt_0))*0.2*mt_0",
        "-0.7*mt_0",
        "-0.2*g_0",
        "-0.4*mom9_0",
        "-0.6*adam_up_0",  # these four: u = c·f_0 from the feature pass
        "-1.5*tanh(mt_0) + 0.2*gt_1",
        "-0.3*adam_up_norm_0 + 0.1*adam_up_norm_2",  # lag-0 temporaries that also enter the history
        "0.9*u_1 - g_0",
        "0.8*u_1 + 0.1*u_4 - tanh(8*g_1 - 0.2*u_2)",
        "u_1*tanh(mt_0) - gt_0",
    ],
)
def test_symbolic_rule_fast_path_matches_autograd_path_and_keeps_grads(expr):
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(6, 5, generator=g) * 0.01, torch.randn(7, generator=g) * 0.01] for _ in range(12)]
    assert_fast_path_matches_autograd_path(SymbolicRule(expr, scale=0.03), grads, atol=1e-9)


def test_clipped_recurrent_rule_fast_path_matches_autograd_path():
    """The clamp binds (a feedback gain of 1.5 diverges unclipped) and both paths clamp the same value, fed
    back as u."""
    g = torch.Generator().manual_seed(0)
    grads = [[torch.randn(6, 5, generator=g) * 0.01, torch.randn(7, generator=g) * 0.01] for _ in range(12)]
    rule = SymbolicRule("1.5*u_1 - 30*g_0", scale=0.03, clip=(-0.5, 0.5))
    assert_fast_path_matches_autograd_path(rule, grads, atol=1e-9)
    state = rule.init(grads[0])
    with torch.no_grad():
        for t, gr in enumerate(grads, 1):
            u, state = rule.step(gr, state, t)
    assert torch.cat([x.reshape(-1) for x in u]).abs().max().item() == pytest.approx(0.5 * 0.03)


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(lags=3, gamma=0.5),
        dict(features=("g", "mom9"), lags=2, gamma=0.01),
        dict(features=("mt",), lags=0),
        dict(features=("mp2", "mt", "gt"), lags=1),
    ],
)
def test_tanh_basis_fast_path_matches_autograd_path_and_keeps_grads(kw):
    G, L = len(kw.get("features", ("mt", "gt"))), kw.get("lags", 1)
    rule = TanhBasisRule(
        **kw, scale=0.05, weights=torch.randn(G, L + 1, generator=torch.Generator().manual_seed(1))
    )
    gen = torch.Generator().manual_seed(0)
    grads = [
        [torch.randn(6, 5, generator=gen) * 0.01, torch.randn(7, generator=gen) * 0.01, torch.zeros(0, 3)]
        for _ in range(10)
    ]
    assert_fast_path_matches_autograd_path(rule, grads, atol=1e-8)


def test_finite_check_is_exact_when_sums_overflow():
    """The cheap sum test falls back to min/max when a sum overflows: finite half-precision gradients still
    pass."""
    from symbolic_l2o.rule_optimizer import _finite

    big = torch.full((100,), 60000.0, dtype=torch.float16)  # finite values whose fp16 sum is inf
    assert _finite([big, torch.ones(3)])
    for bad in (float("nan"), float("inf"), -float("inf")):
        g = torch.ones(5)
        g[2] = bad
        assert not _finite([torch.ones(4), g])
        assert not _finite([big, g.half()])
