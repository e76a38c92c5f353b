"""PowerSign and AddSign (Bello et al. 2017) as optax transformations, and the sign-decay schedules f(t) they
take: functions of the step that fall from 1 towards 0 over `decay_steps`, as TensorFlow 1.x defined them
(tf.contrib.opt.sign_decay, 2018).

TF 1.x semantics (tf.contrib.opt.PowerSignOptimizer, AddSignOptimizer): m_t = beta m + (1 - beta) g, the update
scaled by the agreement of sign(g) and sign(m_t), and f evaluated at the number of previous updates (0 on the
first).
"""

from __future__ import annotations

import math
from typing import NamedTuple

from deepflows.errors import UserError


def linear_sign_decay(decay_steps: int):
    """f(t) = 1 - min(t, T) / T."""

    def schedule(step):
        import jax.numpy as jnp

        return 1.0 - jnp.minimum(step, decay_steps) / decay_steps

    return schedule


def cyclical_sign_decay(decay_steps: int, num_periods: float = 0.5):
    """f(t) = (1 + cos(2 pi num_periods min(t, T) / T)) / 2: num_periods 0.5 falls once from 1 to 0, more
    periods rise and fall again (TF's get_cosine_decay_fn)."""

    def schedule(step):
        import jax.numpy as jnp

        fraction = jnp.minimum(step, decay_steps) / decay_steps
        return 0.5 * (1.0 + jnp.cos(2.0 * math.pi * num_periods * fraction))

    return schedule


def restart_sign_decay(decay_steps: int, num_periods: int = 1):
    """f(t) = (1 + cos(pi * (t mod P) / P)) / 2 with P = T / num_periods: falls from 1 to 0 every period and
    restarts at 1 (TF's get_restart_decay_fn)."""

    def schedule(step):
        import jax.numpy as jnp

        period = decay_steps / num_periods
        fraction = jnp.mod(jnp.minimum(step, decay_steps), period) / period
        return 0.5 * (1.0 + jnp.cos(math.pi * fraction))

    return schedule


class SignState(NamedTuple):
    count: object  # int32: the number of updates made so far (the sign decay's t)
    m: object  # running average of the gradient, beta * m + (1 - beta) * g (not bias-corrected: only its sign is used)


def _scale_by_sign_agreement(scale, beta: float, sign_decay):
    """g scaled by scale(f(t) * sign(g) * sign(m_t)), elementwise: the common form of PowerSign and AddSign."""
    import jax
    import jax.numpy as jnp
    import optax

    if not 0.0 <= beta < 1.0:
        raise UserError(f"beta {beta}: must be in [0, 1)")

    def init(params):
        return SignState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        m = jax.tree.map(lambda a, g: beta * a + (1 - beta) * g, state.m, updates)
        decay = 1.0 if sign_decay is None else sign_decay(state.count)
        out = jax.tree.map(lambda g, a: (scale(decay * jnp.sign(g) * jnp.sign(a)) * g).astype(g.dtype), updates, m)
        return out, SignState(optax.safe_increment(state.count), m)

    return optax.GradientTransformation(init, update)


def scale_by_powersign(base: float = math.e, beta: float = 0.9, sign_decay=None):
    """PowerSign: g * base ** (f(t) sign(g) sign(m)): the step grows by `base` where the gradient agrees with its
    running average m and shrinks by it where they disagree. sign_decay: f(t) (None: 1), t the number of previous
    updates."""
    import jax.numpy as jnp

    if not base > 0:
        raise UserError(f"PowerSign base {base}: must be positive")
    log_base = math.log(base)
    return _scale_by_sign_agreement(lambda a: jnp.exp(log_base * a), beta, sign_decay)


def scale_by_addsign(alpha: float = 1.0, beta: float = 0.9, sign_decay=None):
    """AddSign: g * (alpha + f(t) sign(g) sign(m)): as PowerSign, with an additive rather than multiplicative
    bonus for agreement."""
    return _scale_by_sign_agreement(lambda a: alpha + a, beta, sign_decay)


def powersign(learning_rate, base: float = math.e, beta: float = 0.9, sign_decay=None):
    """PowerSign with a learning rate (a float, an array or an optax schedule): params move by -lr * update."""
    import optax

    return optax.chain(scale_by_powersign(base, beta, sign_decay), optax.scale_by_learning_rate(learning_rate))


def addsign(learning_rate, alpha: float = 1.0, beta: float = 0.9, sign_decay=None):
    """AddSign with a learning rate (a float, an array or an optax schedule): params move by -lr * update."""
    import optax

    return optax.chain(scale_by_addsign(alpha, beta, sign_decay), optax.scale_by_learning_rate(learning_rate))


def choice(transforms, index):
    """One of several optax transformations, picked by `index` (an int, may be traced): the state holds every
    transformation's state and a step updates only the chosen one's. Under jax.vmap with a batched index, runs
    with different optimizers share one compiled program (each step then computes every branch and keeps one:
    cheap beside a model's forward and backward pass)."""
    import jax
    import optax

    transforms = tuple(transforms)
    if not transforms:
        raise UserError("choice needs at least one transformation")

    def init(params):
        return tuple(tx.init(params) for tx in transforms)

    def branch(i):
        def update(updates, state, params):
            out, new = transforms[i].update(updates, state[i], params)
            return out, (*state[:i], new, *state[i + 1 :])

        return update

    def update(updates, state, params=None):
        return jax.lax.switch(index, [branch(i) for i in range(len(transforms))], updates, state, params)

    return optax.GradientTransformation(init, update)
