"""`RuleOptimizer(fused=True)`: the compiled in-place step gives the checked path's values, keeps the
`on_nonfinite` promise (it falls back to the checked path when the rule's bounds do not prove a step finite),
and refuses what it cannot step."""

import io
import math

import pytest
import torch
from torch import nn

from symbolic_l2o.expressions import SymbolicRule
from symbolic_l2o.optimizers import AdamRule
from symbolic_l2o.rule_optimizer import RuleOptimizer

EQUATIONS = [
    "-0.85*mp3_0",  # 04's deployed form: m over the cube root of an average of |g|³
    "0.3*tanh(2*mp25_0) - 0.1*mp2_0 + 0.01*g_0",
    "-0.5*mt_0 + 0.2*sign(g_0)*t_0 - 0.3*mp4_0",  # mp2 and mp4: √ and √√ in the compiled graph, not log/exp
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


def test_a_parameter_with_no_flat_view_steps_as_the_checked_path_does():
    """A channels_last convolution's weight has no flat view: the fused step writes it as it is (a graph
    variant of its own), with the checked path's values; the contiguous bias beside it goes flat."""
    torch.manual_seed(0)
    a = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    b = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    b.load_state_dict(a.state_dict())
    assert not b.weight.is_contiguous() and b.bias.is_contiguous()
    rule = SymbolicRule("-0.85*mp3_0 + 0.1*tanh(3*mp3_0)", scale=0.05)
    oa, ob = RuleOptimizer(a.parameters(), rule), RuleOptimizer(b.parameters(), rule, fused=True)
    X = torch.randn(2, 3, 6, 6).to(memory_format=torch.channels_last)
    for net, opt in ((a, oa), (b, ob)):
        for _ in range(3):
            opt.zero_grad()
            net(X).square().mean().backward()
            opt.step()
    assert_same(a, oa, b, ob)
    assert ob._state_bound is not None  # the steps were fused, not the checked fallback


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


def test_one_compile_serves_a_network_at_another_width_step_and_lr(monkeypatch):
    """The fused step compiles once for a network's layers, whatever their widths: sizes equal by chance in
    the first network (4 inputs, 4 hidden units) bind nothing, and the rule's float hyperparameters do not
    restart the trace (each would call the backend again). The step count and a scheduler's lr, which change
    every step, are tensors of the graph: no recompilation either."""
    import torch._inductor.compile_fx as compile_fx

    from symbolic_l2o import rule_optimizer as optimizers

    calls, real = [], compile_fx.compile_fx
    monkeypatch.setattr(compile_fx, "compile_fx", lambda *a, **k: calls.append(1) or real(*a, **k))
    optimizers._apply_compiled.cache_clear()
    torch._dynamo.reset()
    try:
        rule = SymbolicRule("-0.85*mp3_0 + 0.1*tanh(3*mp3_0)", scale=0.05)
        for width in (4, 6, 9):
            net = nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 3))
            opt = RuleOptimizer(net.parameters(), rule, fused=True)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.7**t)
            for _ in range(3):
                opt.zero_grad()
                net(torch.randn(8, 4)).square().sum().backward()
                opt.step()
                sched.step()
                assert opt._state_bound is not None  # the fused step ran
        assert len(calls) == 1, f"{len(calls)} compilations for one network at three widths, steps and lrs"
    finally:
        optimizers._apply_compiled.cache_clear()
        torch._dynamo.reset()


def test_a_step_that_cannot_compile_runs_uncompiled(monkeypatch):
    """Where torch.compile fails (here its backend raises, as it does without a C++ compiler), the fused step
    warns once and runs its function uncompiled: the checked path's values."""
    import torch._inductor.compile_fx as compile_fx

    from symbolic_l2o import rule_optimizer as optimizers

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


# Equations whose fused step wrote NaN where the checked path refused (issue 40): a saturating function (tanh)
# of an argument without a finite bound (0/0, inf − inf in float32), and a fractional power of a signed value.
NAN_CASES = [
    ("-0.1*tanh(g_0/mom5_0)", [[0.0, 1e-2, -1e-2, 1e-3]]),
    ("-0.1*tanh(mt_0/mom5_0)", [[0.0, 1e-2, -1e-2, 1e-3]]),
    ("-0.1*tanh(cube(g_0) - cube(mom5_0))", [[1e-3] * 4, [1e14, 1.0, 1.0, 1.0]]),
    ("-0.1*sign(g_0/mom5_0)", [[0.0, 1e-2, -1e-2, 1e-3]]),
    ("-0.1*sqrt(g_0)", [[1e-3, -1e-3, 0.0, 1.0]]),
]


def lockstep(expr, grads, dtype=torch.float32):
    """Step a fused and a checked optimizer on the same gradients; after each step both parameters are equal
    (to rounding) or both optimizers refused it. Returns how many steps the fused path proved and took."""
    rule = SymbolicRule(expr)
    ws = [torch.zeros(len(grads[0]), dtype=dtype, requires_grad=True) for _ in range(2)]
    opts = [RuleOptimizer([w], rule, fused=fused) for w, fused in zip(ws, (True, False))]
    proven = 0
    for g in grads:
        outcomes = []
        for w, opt in zip(ws, opts):
            w.grad = torch.tensor(g, dtype=dtype)
            before = opt._state_bound
            try:
                opt.step()
                outcomes.append("stepped")
            except FloatingPointError:
                outcomes.append("refused")
            proven += opt.fused and opt._state_bound is not None and before is not opt._state_bound
        assert outcomes[0] == outcomes[1], f"{expr} on {g}: fused {outcomes[0]}, checked {outcomes[1]}"
        assert torch.isfinite(ws[0]).all(), f"{expr} on {g}: the fused step wrote {ws[0].tolist()}"
        torch.testing.assert_close(ws[0], ws[1], rtol=1e-4, atol=1e-6, msg=f"{expr} on {g}")
    return proven


@pytest.mark.parametrize("expr,grads", NAN_CASES)
def test_an_argument_without_a_finite_bound_takes_the_checked_path(expr, grads):
    lockstep(expr, grads)


def test_a_division_by_adams_denominator_is_proven_and_fused():
    """Adam's denominator √v̂ + ε never falls below ε (`GradFeatures.floors`), so an equation that divides by
    it (DM's at the cpu scale) has a bound: every step is fused, with the checked path's values."""
    expr = "-0.391*tanh(916*adam_dn_0) + 0.283 - 1.51*adam_up_0*exp(tanh(8.18*mt_0 - 3.59))/adam_dn_0"
    grads = [[1e-3, -2e-3, 0.0, 5e-4], [0.0, 0.0, 0.0, 0.0], [1e-2, -1e-5, 3e-3, 0.0]]
    assert lockstep(expr, grads) == len(grads)


def random_equation(rng, depth=3):
    "A random text equation over lag-0 features from the operator vocabulary (what `fused=True` may see)."
    from symbolic_l2o.features import FEATURE_NAMES

    unary = ["tanh", "asinh", "sinh", "exp", "abs", "sign", "square", "cube", "sqrt_abs", "log_abs", "sqrt"]
    binary = ["+", "-", "*", "/", "pow", "greater"]
    if depth == 0 or rng.random() < 0.25:
        return f"{rng.uniform(-2, 2):.3g}" if rng.random() < 0.3 else f"{rng.choice(FEATURE_NAMES)}_0"
    if rng.random() < 0.5:
        return f"{rng.choice(unary)}({random_equation(rng, depth - 1)})"
    op, a, b = rng.choice(binary), random_equation(rng, depth - 1), random_equation(rng, depth - 1)
    return f"{op}({a}, {b})" if op in ("pow", "greater") else f"({a} {op} {b})"


def random_gradients(rng, n=6, steps=3):
    "Gradients with zeros, ±inf, NaN and magnitudes from 1e-30 to 1e30."
    specials = [0.0, math.inf, -math.inf, math.nan]
    return [
        [
            rng.choice(specials) if rng.random() < 0.1 else rng.choice((-1, 1)) * 10 ** rng.uniform(-30, 30)
            for _ in range(n)
        ]
        for _ in range(steps)
    ]


def test_fused_and_checked_agree_on_random_equations_and_gradients(monkeypatch):
    """A property test: 300 random equations (with a gradient feature) on random gradients, stepped fused and
    checked in lock-step: the same values, or both refuse. The fused step runs uncompiled here (compiling 300
    equations takes minutes; the compiled step's values are tested above): what is tested is the proof."""
    import random

    import symbolic_l2o.rule_optimizer as O

    monkeypatch.setattr(O, "_apply_compiled", lambda: O._apply_fused)
    rng, cases, proven = random.Random(0), 0, 0
    while cases < 300:
        text = random_equation(rng)
        try:
            SymbolicRule(text)
        except ValueError:  # no variable, no gradient feature, a constant out of range: not a rule
            continue
        cases += 1
        for dtype in (torch.float32, torch.float64):
            proven += lockstep(text, random_gradients(rng), dtype)
    assert proven > 100, f"only {proven} fused steps were proven: the property was barely exercised"
