"""A rule of the grammar (deepflows.automl.grammar) as an optax transformation whose rule is data: the tokens
are an array argument, so one compiled program trains with any rule (and jax.vmap trains a batch of different
rules side by side). Each unit's operands are picked from a bank (the primitives, then the earlier units'
outputs) and its functions by lax.switch.
"""

from __future__ import annotations

from typing import NamedTuple

from deepflows.automl.grammar import BINARY, OPERANDS, UNARY
from deepflows.automl.optimizers import cyclical_sign_decay, linear_sign_decay, restart_sign_decay

B1, B2, B3 = 0.9, 0.999, 0.999  # running averages of g, g^2, g^3
EPS = 1e-8
NOISE_SD = 0.1  # noise ~ N(0, 0.01)
# the decay operands' periods: cd rises and falls twice over the run, rd restarts twice
CYCLICAL_PERIODS, RESTART_PERIODS = 2.0, 2


class RuleState(NamedTuple):
    count: object  # int32 step count
    m: object
    v: object
    y: object
    key: object  # the random stream of noise and drop


def _unary(key):
    import jax
    import jax.numpy as jnp

    def drop(p):
        return lambda x: x * jax.random.bernoulli(key, 1.0 - p, x.shape)

    fns = {"id": lambda x: x, "neg": lambda x: -x, "exp": jnp.exp, "log": lambda x: jnp.log(jnp.abs(x) + EPS),
           "sqrt": lambda x: jnp.sqrt(jnp.abs(x)), "clip5": lambda x: jnp.clip(x, -1e-5, 1e-5),
           "clip4": lambda x: jnp.clip(x, -1e-4, 1e-4), "clip3": lambda x: jnp.clip(x, -1e-3, 1e-3),
           "drop1": drop(0.1), "drop3": drop(0.3), "drop5": drop(0.5), "sign": jnp.sign}  # fmt: skip
    return [fns[name] for name in UNARY]


def _binary():
    import jax.numpy as jnp

    fns = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "div": lambda x, y: x / (y + EPS),
           "pow": jnp.power, "keep": lambda x, y: x}  # fmt: skip
    return [fns[name] for name in BINARY]


def direction(tokens, g, m, v, y, w, t, decay_steps, key):
    """The rule's update direction for one parameter array (before -lr): m, v, y bias-corrected averages."""
    import jax
    import jax.numpy as jnp

    decays = (linear_sign_decay(decay_steps)(t), cyclical_sign_decay(decay_steps, CYCLICAL_PERIODS)(t),
              restart_sign_decay(decay_steps, RESTART_PERIODS)(t))  # fmt: skip
    noise_key, drop_key = jax.random.split(key)
    primitives = {"g": g, "g^2": g * g, "g^3": g * g * g, "m": m, "v": v, "y": y, "sign(g)": jnp.sign(g),
                  "sign(m)": jnp.sign(m), "1": jnp.ones_like(g), "2": jnp.full_like(g, 2.0),
                  "noise": NOISE_SD * jax.random.normal(noise_key, g.shape, g.dtype),
                  "1e-4*w": 1e-4 * w, "1e-3*w": 1e-3 * w, "0.01*w": 0.01 * w, "0.1*w": 0.1 * w,
                  "adam": m / (jnp.sqrt(v) + EPS), "rmsprop": g / jnp.sqrt(v + EPS),
                  "ld": decays[0], "cd": decays[1], "rd": decays[2]}  # fmt: skip
    bank = jnp.stack([jnp.broadcast_to(primitives[name], g.shape).astype(g.dtype) for name in OPERANDS])
    binary = _binary()
    for unit in range(tokens.shape[0]):
        op1, op2, u1, u2, b = (tokens[unit, i] for i in range(5))
        k1, k2 = jax.random.split(jax.random.fold_in(drop_key, unit))
        x = jax.lax.switch(u1, _unary(k1), bank[op1])
        z = jax.lax.switch(u2, _unary(k2), bank[op2])
        bank = jnp.concatenate([bank, jax.lax.switch(b, binary, x, z)[None]])
    return bank[-1]


def rule_transform(tokens, learning_rate, decay_steps, seed: int = 0):
    """optax transformation: params move by -learning_rate * rule(g, m, v, ...). tokens: int (units, 5), may be
    traced; decay_steps: the step at which ld, cd, rd reach their end (the run's length)."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.flatten_util import ravel_pytree

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return RuleState(jnp.zeros([], jnp.int32), zeros, zeros, zeros, jax.random.key(seed))

    def update(grads, state, params):
        if params is None:
            raise ValueError("rule_transform needs the params (some rules use the weights w)")
        count = state.count + 1
        m = jax.tree.map(lambda a, g: B1 * a + (1 - B1) * g, state.m, grads)
        v = jax.tree.map(lambda a, g: B2 * a + (1 - B2) * g * g, state.v, grads)
        y = jax.tree.map(lambda a, g: B3 * a + (1 - B3) * g * g * g, state.y, grads)
        t = count.astype(jnp.float32)
        c1, c2, c3 = 1 - B1**t, 1 - B2**t, 1 - B3**t
        # one flat vector for all parameters: the rule's bank is built once per step, not once per array
        flat_g, unravel = ravel_pytree(grads)
        flat = [ravel_pytree(tree)[0] for tree in (m, v, y, params)]
        out = direction(tokens, flat_g, flat[0] / c1, flat[1] / c2, flat[2] / c3, flat[3], t - 1, decay_steps,
                        jax.random.fold_in(state.key, count))
        updates = unravel(-learning_rate * out)
        return updates, RuleState(count, m, v, y, state.key)

    return optax.GradientTransformation(init, update)
