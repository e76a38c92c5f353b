"""PowerSign and AddSign (Bello et al. 2017) as optax transformations, and the sign-decay schedules f(t) they
take: functions of the step that fall from 1 towards 0 over `decay_steps`, as TensorFlow 1.x defined them
(tf.contrib.opt.sign_decay, 2018).
"""

from __future__ import annotations

import math


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
