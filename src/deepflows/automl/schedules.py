"""Linear cosine decay and noisy linear cosine decay (Bello et al. 2017) as optax schedules, with TensorFlow's
definitions (tf.train.linear_cosine_decay, noisy_linear_cosine_decay, 2018):

    t = min(step, T);  linear = (T - t) / T;  cosine = (1 + cos(2 pi num_periods t / T)) / 2
    lr(step) = init_value * ((alpha + linear) * cosine + beta)

The noisy one adds N(0, initial_variance / (1 + t) ** variance_decay) to `linear`; its noise is a function of
(seed, step), so a schedule gives the same value for a step every time it is asked (optax calls it in jit).
"""

from __future__ import annotations

from deepflows.automl.optimizers import cyclical_sign_decay, linear_sign_decay
from deepflows.errors import UserError


def _check(decay_steps: int) -> None:
    if not (isinstance(decay_steps, int) and decay_steps > 0):
        raise UserError(f"decay_steps {decay_steps!r}: must be a positive integer")


def linear_cosine_decay(init_value: float, decay_steps: int, num_periods: float = 0.5, alpha: float = 0.0,
                        beta: float = 0.001):  # fmt: skip
    """An optax schedule: init_value * ((alpha + linear) * cosine + beta), constant after decay_steps."""
    _check(decay_steps)
    # linear and cosine are the linear and cyclical sign-decay functions of the same step
    linear, cosine = linear_sign_decay(decay_steps), cyclical_sign_decay(decay_steps, num_periods)

    def schedule(step):
        return init_value * ((alpha + linear(step)) * cosine(step) + beta)

    return schedule


def noisy_linear_cosine_decay(init_value: float, decay_steps: int, initial_variance: float = 1.0,
                              variance_decay: float = 0.55, num_periods: float = 0.5, alpha: float = 0.0,
                              beta: float = 0.001, seed: int = 0):  # fmt: skip
    """linear_cosine_decay with Gaussian noise on its linear term, decaying in variance as (1 + t) ** -variance_decay
    (t the step clipped at decay_steps, as TF)."""
    _check(decay_steps)
    if initial_variance < 0:
        raise UserError(f"initial_variance {initial_variance}: must be >= 0")
    linear, cosine = linear_sign_decay(decay_steps), cyclical_sign_decay(decay_steps, num_periods)

    def schedule(step):
        import jax
        import jax.numpy as jnp

        t = jnp.minimum(step, decay_steps)
        sd = jnp.sqrt(initial_variance / (1.0 + t) ** variance_decay)
        noise = jax.random.normal(jax.random.fold_in(jax.random.key(seed), jnp.asarray(step, jnp.int32)))
        return init_value * ((alpha + linear(step) + sd * noise) * cosine(step) + beta)

    return schedule
