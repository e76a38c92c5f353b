"""Which searched rules are PowerSign- or AddSign-like, judged by what they compute rather than how they are
written: a rule is a sign-agreement rule when its update is c(s) * base with s = sign(g) * sign(m), c(+1) > c(-1)
>= 0 two constants, and base one of g, m, adam, rmsprop or sign(g) (probed on random inputs at step 0, where the
decay operands are 1). PowerSign scales by e^(+-1), AddSign by 1 +- 1; a sign-agreement rule whose text uses exp
or a power is called PowerSign-like, the others AddSign-like."""

from __future__ import annotations

import functools

import numpy as np

BASES = ("g", "m", "adam", "rmsprop", "sign(g)")
PROBE = 2000


@functools.cache
def _direction():
    """The interpreter's direction, compiled once per rule length: thousands of rules are probed in a report."""
    import jax

    from deepflows.automl.interpreter import direction

    return jax.jit(direction)


def _probe(rule) -> tuple[dict, np.ndarray, np.ndarray]:
    import jax
    import jax.numpy as jnp

    from deepflows.automl.interpreter import EPS

    rng = np.random.default_rng(0)
    g, m, w = (rng.standard_normal(PROBE).astype(np.float32) for _ in range(3))
    v = (g * g + rng.random(PROBE).astype(np.float32)) * 0.5
    y = rng.standard_normal(PROBE).astype(np.float32)
    out = _direction()(jnp.asarray(rule.array), *map(jnp.asarray, (g, m, v, y, w)), jnp.float32(0.0),
                       jnp.float32(100.0), jax.random.key(0))  # fmt: skip
    bases = {"g": g, "m": m, "adam": m / (np.sqrt(v) + EPS), "rmsprop": g / np.sqrt(v + EPS), "sign(g)": np.sign(g)}
    return bases, np.asarray(out, dtype=np.float64), np.sign(g) * np.sign(m)


def family(rule) -> str:
    """'PowerSign-like (base)', 'AddSign-like (base)' or ''."""
    bases, out, agree = _probe(rule)
    if not np.all(np.isfinite(out)):
        return ""
    for name in BASES:
        base = bases[name].astype(np.float64)
        usable = np.abs(base) > 1e-3
        scale = {s: out[usable & (agree == s)] / base[usable & (agree == s)] for s in (1, -1)}
        if min(len(x) for x in scale.values()) < 10:
            continue
        hi, lo = (np.median(scale[s]) for s in (1, -1))
        constant = all(np.allclose(scale[s], np.median(scale[s]), rtol=1e-3, atol=1e-6) for s in (1, -1))
        if constant and hi > lo + 1e-3 * abs(hi) and lo >= -1e-6:
            text = str(rule)
            kind = "PowerSign" if ("exp(" in text or "^" in text) else "AddSign"
            return f"{kind}-like ({name})"
    return ""
