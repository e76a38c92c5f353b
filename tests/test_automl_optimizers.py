"""PowerSign, AddSign and linear cosine decay against the formulas (written out here in NumPy, not by calling the
code under test), against the rule interpreter, and training a tiny model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deepflows.errors import UserError

GRADS = np.array([[0.5, -1.0, 2.0, 0.0], [-0.25, -0.5, 1.0, 3.0], [0.75, 0.5, -4.0, -1.0], [1.0, -2.0, 0.5, 0.25],
                  [-1.5, 1.0, 1.0, 2.0]], np.float32)  # fmt: skip
LR, T = 0.1, 4  # T: the sign decay's decay_steps


def run(tx, grads=GRADS, params=None):
    """The updates of each step, for a sequence of gradients of a single array (one compiled scan: the rule
    interpreter run op by op takes minutes)."""
    import jax
    import jax.numpy as jnp

    params = jnp.zeros(grads.shape[1]) if params is None else params

    def step(state, g):
        updates, state = tx.update(g, state, params)
        return state, updates

    return jax.jit(lambda gs: jax.lax.scan(step, tx.init(params), gs)[1])(jnp.asarray(grads))


def expected(multiplier, decay):
    """-lr * multiplier(f(t) sign(g) sign(m_t)) * g with m_t = 0.9 m + 0.1 g, f at the previous update count."""
    m, out = np.zeros(GRADS.shape[1]), []
    for t, g in enumerate(GRADS):
        m = 0.9 * m + 0.1 * g
        out.append(-LR * multiplier(decay(t) * np.sign(g) * np.sign(m)) * g)
    return np.array(out)


def no_decay(t):
    return 1.0


def linear_decay(t):
    return 1.0 - min(t, T) / T


def cyclical_decay(t):  # 2 periods: rises again after T / 2
    return 0.5 * (1 + math.cos(2 * math.pi * 2 * min(t, T) / T))


@pytest.mark.parametrize("base", [math.e, 2.0])
@pytest.mark.parametrize("decay", ["none", "linear", "cyclical"])
def test_powersign_hand_computed(base, decay):
    from deepflows.automl.optimizers import cyclical_sign_decay, linear_sign_decay, powersign

    f, hand = {"none": (None, no_decay), "linear": (linear_sign_decay(T), linear_decay),
               "cyclical": (cyclical_sign_decay(T, 2), cyclical_decay)}[decay]  # fmt: skip
    want = expected(lambda a: base**a, hand)
    np.testing.assert_allclose(run(powersign(LR, base=base, sign_decay=f)), want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("decay", ["none", "linear"])
def test_addsign_hand_computed(alpha, decay):
    from deepflows.automl.optimizers import addsign, linear_sign_decay

    f, hand = {"none": (None, no_decay), "linear": (linear_sign_decay(T), linear_decay)}[decay]
    want = expected(lambda a: alpha + a, hand)
    np.testing.assert_allclose(run(addsign(LR, alpha=alpha, sign_decay=f)), want, rtol=1e-5, atol=1e-7)


def test_sign_decay_is_applied():
    """With linear decay over T steps, from step T on the update is plain -lr * g (f = 0), and step 0 is not."""
    from deepflows.automl.optimizers import linear_sign_decay, powersign

    got = run(powersign(LR, sign_decay=linear_sign_decay(T)))
    np.testing.assert_allclose(got[T:], -LR * GRADS[T:], rtol=1e-6)
    assert not np.allclose(got[0], -LR * GRADS[0])


def test_schedule_learning_rate_and_state():
    import jax.numpy as jnp
    import optax

    from deepflows.automl.optimizers import SignState, addsign, scale_by_addsign

    state = scale_by_addsign().init(jnp.zeros(4))
    assert isinstance(state, SignState) and int(state.count) == 0
    got = run(addsign(optax.linear_schedule(LR, 0.0, len(GRADS))))
    scale = LR * (1 - np.arange(len(GRADS)) / len(GRADS))
    want = expected(lambda a: 1 + a, no_decay) / LR * scale[:, None]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name, text", [("powersign", "exp(sign(g)*sign(m))*g"), ("addsign", "(1+sign(g)*sign(m))*g")])
def test_agrees_with_the_rule_interpreter(name, text):
    """The interpreter's m is bias-corrected; the sign of m is not changed by it, so the updates agree."""
    import jax.numpy as jnp

    from deepflows.automl import optimizers
    from deepflows.automl.grammar import parse
    from deepflows.automl.interpreter import rule_transform

    grads = np.random.default_rng(0).normal(size=(12, 6)).astype(np.float32)
    params = jnp.ones(6)
    ours = run(getattr(optimizers, name)(LR), grads, params)
    theirs = run(rule_transform(jnp.asarray(parse(text).array), LR, 12), grads, params)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-7)


def test_choice_runs_the_chosen_optimizer():
    import jax
    import jax.numpy as jnp
    import optax

    from deepflows.automl.optimizers import addsign, choice, powersign

    makers = [lambda: optax.adam(LR), lambda: powersign(LR), lambda: addsign(LR)]
    for i, make in enumerate(makers):
        np.testing.assert_allclose(run(choice([m() for m in makers], i)), run(make()), rtol=1e-6, atol=1e-8)
    # under vmap, each run its own optimizer
    batched = jax.vmap(lambda i: run(choice([m() for m in makers], i)))(jnp.arange(3))
    np.testing.assert_allclose(np.asarray(batched[1]), run(makers[1]()), rtol=1e-6, atol=1e-8)


def test_bad_input_is_a_user_error():
    from deepflows.automl.optimizers import choice, powersign, scale_by_addsign
    from deepflows.automl.schedules import linear_cosine_decay, noisy_linear_cosine_decay

    for bad in (lambda: powersign(LR, base=0.0), lambda: scale_by_addsign(beta=1.0), lambda: choice([], 0),
                lambda: linear_cosine_decay(1.0, 0),
                lambda: noisy_linear_cosine_decay(1.0, 10, initial_variance=-1)):  # fmt: skip
        with pytest.raises(UserError):
            bad()


def lcd_by_hand(init, steps, periods, alpha, beta, t):
    t = min(t, steps)
    return init * ((alpha + (steps - t) / steps) * 0.5 * (1 + math.cos(math.pi * 2 * periods * t / steps)) + beta)


def test_linear_cosine_decay_hand_computed():
    from deepflows.automl.schedules import linear_cosine_decay

    schedule = linear_cosine_decay(1.0, 100)
    # (1 - t/100) * (1 + cos(pi t / 100)) / 2 + 0.001, worked out by hand
    hand = [(0, 1.001), (25, 0.75 * 0.5 * (1 + math.sqrt(0.5)) + 0.001), (50, 0.251), (100, 0.001), (250, 0.001)]
    for t, want in hand:
        assert float(schedule(t)) == pytest.approx(want, rel=1e-6)
    schedule = linear_cosine_decay(0.3, 40, num_periods=2.0, alpha=0.1, beta=0.01)
    for t in (0, 5, 10, 17, 20, 33, 40, 41):
        assert float(schedule(t)) == pytest.approx(lcd_by_hand(0.3, 40, 2.0, 0.1, 0.01, t), rel=1e-5, abs=1e-7)


def test_noisy_linear_cosine_decay():
    import jax

    from deepflows.automl.schedules import linear_cosine_decay, noisy_linear_cosine_decay

    # no variance: the plain schedule
    quiet = noisy_linear_cosine_decay(0.5, 60, initial_variance=0.0, num_periods=1.0)
    for t in (0, 13, 30, 59, 60, 70):
        assert float(quiet(t)) == pytest.approx(lcd_by_hand(0.5, 60, 1.0, 0.0, 0.001, t), rel=1e-5, abs=1e-7)
    # the noise: a function of (seed, step), N(0, initial_variance / (1 + t) ** variance_decay) on the linear term
    steps = 10**6  # the cosine stays ~1 over the steps looked at, so the noise reads off directly
    noisy = noisy_linear_cosine_decay(1.0, steps, initial_variance=2.0, variance_decay=0.55, seed=3)
    plain = linear_cosine_decay(1.0, steps)
    t = np.arange(2000)
    values = np.asarray(jax.jit(jax.vmap(noisy))(t))
    assert float(noisy(7)) == float(noisy(7)) == pytest.approx(values[7], rel=1e-6)
    z = (values - np.asarray(jax.vmap(plain)(t))) / np.sqrt(2.0 / (1.0 + t) ** 0.55)
    assert abs(z.mean()) < 0.1 and 0.9 < z.std() < 1.1
    other = np.asarray(jax.vmap(noisy_linear_cosine_decay(1.0, steps, seed=4))(t[:50]))
    assert not np.allclose(other, values[:50])


@pytest.mark.parametrize("name", ["powersign", "powersign-ld", "addsign", "addsign-ld"])
def test_trains_a_tiny_model(name):
    """Logistic regression on two separable blobs: the loss falls clearly in 150 steps."""
    import jax
    import jax.numpy as jnp
    import optax

    from deepflows.automl.optimizers import addsign, linear_sign_decay, powersign

    make = powersign if name.startswith("powersign") else addsign
    tx = make(0.05, sign_decay=linear_sign_decay(150) if name.endswith("-ld") else None)
    rng = np.random.default_rng(0)
    x = jnp.asarray(np.concatenate([rng.normal(1.5, 1, (64, 2)), rng.normal(-1.5, 1, (64, 2))]), jnp.float32)
    y = jnp.asarray(np.repeat([1.0, 0.0], 64), jnp.float32)

    def loss(p):
        return optax.sigmoid_binary_cross_entropy(x @ p["w"] + p["b"], y).mean()

    def step(carry, _):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p)
        u, s = tx.update(g, s, p)
        return (optax.apply_updates(p, u), s), value

    params = {"w": jnp.zeros(2), "b": jnp.zeros([])}
    _, losses = jax.lax.scan(step, (params, tx.init(params)), None, length=150)
    assert losses[0] == pytest.approx(math.log(2), rel=1e-5)
    assert float(losses[-1]) < 0.3 * float(losses[0])
