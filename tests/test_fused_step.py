"""`RuleOptimizer(fused=True)`: the compiled in-place step gives the checked path's values, keeps the
`on_nonfinite` promise (it falls back to the checked path when the rule's bounds do not prove a step finite),
and refuses what it cannot step."""

import io
import math

import pytest
import torch
from torch import nn

from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.optimizers import AdamRule, RuleOptimizer

EQUATIONS = [
    "-0.85*mp3_0",  # 04's deployed form: m over the cube root of an average of |g|³
    "0.3*tanh(2*mp25_0) - 0.1*mp2_0 + 0.01*g_0",
    "-0.5*mt_0 + 0.2*sign(g_0)*t_0",
]


def nets(seed=0):
    torch.manual_seed(seed)
    a = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    b = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def groups(net, **kw):  # two param groups, the second at half the lr
    return [{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 0.5}]


def train(net, opt, steps, skip_bias_every=3, scheduler=None):
    """Steps on a fixed regression; the last layer's bias has no gradient every `skip_bias_every`-th step (a
    parameter at another step count)."""
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(32, 5, generator=gen), torch.randn(32, 3, generator=gen)
    for i in range(steps):
        opt.zero_grad()
        nn.functional.mse_loss(net(X), Y).backward()
        if i % skip_bias_every == 1:
            net[2].bias.grad = None
        opt.step()
        if scheduler:
            scheduler.step()


def assert_same(a, oa, b, ob):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
        for k in oa.state[p]:
            torch.testing.assert_close(oa.state[p][k], ob.state[q][k], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("expr", EQUATIONS)
@pytest.mark.parametrize("decoupled", [False, True])
def test_fused_step_gives_the_checked_steps_values(expr, decoupled):
    rule = SymbolicRule(expr, scale=0.05)
    a, b = nets()
    kw = dict(lr=1.0, weight_decay=0.01, decoupled_weight_decay=decoupled)
    oa, ob = RuleOptimizer(groups(a), rule, **kw), RuleOptimizer(groups(b), rule, fused=True, **kw)
    sa = torch.optim.lr_scheduler.StepLR(oa, 2, gamma=0.5)
    sb = torch.optim.lr_scheduler.StepLR(ob, 2, gamma=0.5)
    train(a, oa, 7, scheduler=sa)
    train(b, ob, 7, scheduler=sb)
    assert_same(a, oa, b, ob)
    assert ob._state_bound is not None  # the steps were fused, not the checked fallback
    assert int(ob.state[b[2].bias]["step"]) < int(ob.state[b[2].weight]["step"])


def test_state_dict_moves_between_the_fused_and_the_checked_optimizer():
    rule = SymbolicRule("-0.85*mp3_0", scale=0.05)
    a, b = nets()
    oa, ob = RuleOptimizer(a.parameters(), rule), RuleOptimizer(b.parameters(), rule, fused=True)
    train(a, oa, 3), train(b, ob, 3)
    buf = io.BytesIO()
    torch.save(ob.state_dict(), buf)
    buf.seek(0)
    oc = RuleOptimizer(b.parameters(), rule)  # b continues with the checked path from the fused state
    oc.load_state_dict(torch.load(buf, weights_only=True))
    od = RuleOptimizer(a.parameters(), rule, fused=True)  # a continues fused from the checked state
    od.load_state_dict(oa.state_dict())
    train(a, od, 3), train(b, oc, 3)
    assert_same(a, od, b, oc)


def test_a_non_finite_gradient_changes_nothing():
    _, b = nets()
    for policy in ("error", "skip"):
        opt = RuleOptimizer(
            b.parameters(), SymbolicRule("-0.85*mp3_0", scale=0.05), on_nonfinite=policy, fused=True
        )
        train(b, opt, 2)
        before = [p.clone() for p in b.parameters()] + [
            v.clone() for s in opt.state.values() for v in s.values()
        ]
        for p in b.parameters():
            p.grad = torch.ones_like(p)
        b[0].weight.grad[0, 0] = math.nan
        if policy == "error":
            with pytest.raises(FloatingPointError, match="non-finite gradient"):
                opt.step()
        else:
            opt.step()
            assert opt.nonfinite_skips == 1
        after = list(b.parameters()) + [v for s in opt.state.values() for v in s.values()]
        assert all(torch.equal(x, y) for x, y in zip(before, after))


def test_an_unproven_step_takes_the_checked_path():
    """|g|³ of a finite gradient 1e13 overflows float32: the bound cannot prove the step finite, so the
    checked path steps, finds the overflow in the new state and changes nothing."""
    _, b = nets()
    opt = RuleOptimizer(
        b.parameters(), SymbolicRule("-0.85*mp3_0", scale=0.05), on_nonfinite="skip", fused=True
    )
    train(b, opt, 2)
    before = [p.clone() for p in b.parameters()]
    for p in b.parameters():
        p.grad = torch.full_like(p, 1e13)
    opt.step()
    assert opt.nonfinite_skips == 1 and opt._state_bound is None
    assert all(torch.equal(x, y) for x, y in zip(before, b.parameters()))
    # an equation without a bound (an exponential of mt, whose bound is 1/ε) is stepped by the checked path
    a, b = nets()
    rule = SymbolicRule("-0.1*exp(mt_0)", scale=0.05)
    oa, ob = RuleOptimizer(a.parameters(), rule), RuleOptimizer(b.parameters(), rule, fused=True)
    train(a, oa, 3), train(b, ob, 3)
    assert_same(a, oa, b, ob)
    assert ob._state_bound is None


def test_fused_refuses_what_it_cannot_step():
    net = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="fused=True needs a rule with a fused step"):
        RuleOptimizer(net.parameters(), AdamRule(), fused=True)
    with pytest.raises(ValueError, match="fused=True needs a rule with a fused step"):
        RuleOptimizer(net.parameters(), SymbolicRule("-0.5*mt_0 + 0.1*mt_2"), fused=True)
    with pytest.raises(ValueError, match="float32 and float64"):
        RuleOptimizer(nn.Linear(2, 1).half().parameters(), SymbolicRule("-0.5*mt_0"), fused=True)
    with pytest.raises(ValueError, match="invalid fused"):
        RuleOptimizer(net.parameters(), SymbolicRule("-0.5*mt_0"), fused="yes")


def test_a_step_that_cannot_compile_runs_uncompiled(monkeypatch):
    """Where torch.compile fails (here its backend raises, as it does without a C++ compiler), the fused step
    warns once and runs its function uncompiled: the checked path's values."""
    import torch._inductor.compile_fx as compile_fx

    from symbolic_l2o import optimizers

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compile_fx, "compile_fx", broken)
    optimizers._apply_compiled.cache_clear()
    torch._dynamo.reset()
    try:
        rule = SymbolicRule("-0.85*mp3_0", scale=0.05)
        a, b = nets()
        oa, ob = RuleOptimizer(a.parameters(), rule), RuleOptimizer(b.parameters(), rule, fused=True)
        train(a, oa, 3)
        with pytest.warns(UserWarning, match="could not compile"):
            train(b, ob, 3)
        assert_same(a, oa, b, ob)
        assert ob._state_bound is not None  # the fused step ran, uncompiled
    finally:
        optimizers._apply_compiled.cache_clear()
        torch._dynamo.reset()


def test_a_loaded_non_finite_state_takes_the_checked_path():
    """A state read back with a NaN in it has no bound: the fused step does not write, and the checked path
    refuses the step."""
    a, b = nets()
    rule = SymbolicRule("-0.85*mp3_0", scale=0.05)
    oa = RuleOptimizer(a.parameters(), rule)
    train(a, oa, 2)
    state = oa.state_dict()
    state["state"][0]["m"][0] = math.nan
    ob = RuleOptimizer(b.parameters(), rule, fused=True)
    ob.load_state_dict(state)
    before = [p.clone() for p in b.parameters()]
    for p in b.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(FloatingPointError, match="non-finite update"):  # m's NaN reaches the update
        ob.step()
    assert all(torch.equal(x, y) for x, y in zip(before, b.parameters()))


def test_a_set_of_parameters_is_refused_as_torch_optim_refuses_it():
    opt = RuleOptimizer(nn.Linear(2, 1).parameters(), SymbolicRule("-0.5*mt_0"), fused=True)
    with pytest.raises(TypeError, match="ordered collections"):
        opt.add_param_group({"params": set(nn.Linear(2, 1).parameters())})
