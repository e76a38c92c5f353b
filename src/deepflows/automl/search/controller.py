"""The RNN controller of Neural Optimizer Search: an LSTM writes a rule token by token (each token's choices
depend on its place: operands, unary or binary functions), and learns by REINFORCE with a moving-average
baseline (Williams 1992; Bello et al. 2017 trained theirs with PPO, REINFORCE is the simpler of the two the issue
allows) and an entropy bonus that keeps it exploring.

As a proposer (deepflows.automl.search.proposers): propose(n, rng) samples n rules; observe(...) takes one
policy-gradient step on them. Its state (weights, Adam's moments, baseline) is plain bytes for the search state.
"""

from __future__ import annotations

import base64

import numpy as np


def _model(choices: list[int], hidden: int, seed: int):
    from flax import nnx

    class Controller(nnx.Module):
        def __init__(self, rngs):
            self.width = max(choices)
            # position-specific token embeddings: row position * width + token; the last row starts the sequence
            self.embed = nnx.Embed(len(choices) * self.width + 1, hidden, rngs=rngs)
            self.cell = nnx.OptimizedLSTMCell(hidden, hidden, rngs=rngs)
            self.head = nnx.Linear(hidden, self.width, rngs=rngs)

    return Controller(nnx.Rngs(seed))


def _masks(choices: list[int]) -> np.ndarray:
    width = max(choices)
    return np.arange(width)[None, :] < np.asarray(choices)[:, None]


def _unroll(model, masks, tokens=None, key=None, n=None):
    """Run the LSTM over the positions: sample tokens (key, n) or score given tokens. Returns the tokens, their
    summed log-probability and the mean entropy of the token distributions, per sequence."""
    import jax
    import jax.numpy as jnp

    length, width = masks.shape
    batch = n if tokens is None else tokens.shape[0]
    zeros = jnp.zeros((batch, model.cell.hidden_features))
    carry = (zeros, zeros)  # the LSTM's (c, h)
    previous = jnp.full((batch,), length * width)
    out, logp, entropy = [], 0.0, 0.0
    for position in range(length):
        carry, h = model.cell(carry, model.embed(previous))
        logits = jnp.where(masks[position], model.head(h), -1e9)
        log_probs = jax.nn.log_softmax(logits)
        if tokens is None:
            token = jax.random.categorical(jax.random.fold_in(key, position), logits)
        else:
            token = tokens[:, position]
        out.append(token)
        logp = logp + jnp.take_along_axis(log_probs, token[:, None], 1)[:, 0]
        entropy = entropy - jnp.sum(jnp.where(masks[position], jnp.exp(log_probs) * log_probs, 0.0), -1)
        previous = position * width + token
    return jnp.stack(out, 1), logp, entropy / length


class RuleController:
    def __init__(self, choices: list[int], shape: tuple[int, int], *, hidden: int, learning_rate: float,
                 entropy_weight: float, baseline_decay: float, seed: int):  # fmt: skip
        import jax
        import jax.numpy as jnp
        import optax
        from flax import nnx

        self.shape, self.entropy_weight, self.baseline_decay = shape, entropy_weight, baseline_decay
        self.masks = _masks(choices)
        self.model = _model(choices, hidden, seed)
        self.optimizer = nnx.Optimizer(self.model, optax.adam(learning_rate), wrt=nnx.Param)
        self.baseline: float | None = None
        self.key = jax.random.key(seed)
        self.steps = 0
        masks = self.masks

        @nnx.jit(static_argnums=2)
        def sample(model, key, n):
            return _unroll(model, masks, key=key, n=n)[0]

        @nnx.jit
        def learn(model, optimizer, tokens, advantages, entropy_weight):
            def loss_fn(model):
                _, logp, entropy = _unroll(model, masks, tokens=tokens)
                return -jnp.mean(advantages * logp) - entropy_weight * jnp.mean(entropy), jnp.mean(entropy)

            (loss, entropy), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
            optimizer.update(model, grads)
            return loss, entropy

        self._sample, self._learn = sample, learn
        self.last_entropy = None

    def propose(self, n: int, rng: np.random.Generator) -> list:
        import jax

        tokens = np.asarray(self._sample(self.model, jax.random.fold_in(self.key, self.steps), n))
        return [row.reshape(self.shape).tolist() for row in tokens]

    def propose_with_parents(self, n: int, rng: np.random.Generator) -> list[tuple]:
        return [(candidate, None) for candidate in self.propose(n, rng)]

    def observe(self, candidates: list, rewards: list[float], extras: list[dict] | None = None) -> None:
        import jax.numpy as jnp

        rewards = np.asarray(rewards, dtype=np.float32)
        if self.baseline is None:
            self.baseline = float(rewards.mean())
        advantages = rewards - self.baseline
        tokens = jnp.asarray(np.asarray(candidates, dtype=np.int32).reshape(len(candidates), -1))
        _, entropy = self._learn(self.model, self.optimizer, tokens, jnp.asarray(advantages), self.entropy_weight)
        self.last_entropy = float(entropy)
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * float(rewards.mean())
        self.steps += 1

    def state(self) -> dict:
        from flax import nnx, serialization

        blob = serialization.msgpack_serialize({"model": nnx.to_pure_dict(nnx.state(self.model)),
                                                "optimizer": nnx.to_pure_dict(nnx.state(self.optimizer))})  # fmt: skip
        return {"weights": base64.b64encode(blob).decode(), "baseline": self.baseline, "steps": self.steps,
                "entropy": self.last_entropy}  # fmt: skip

    def restore(self, state: dict) -> None:
        from flax import nnx, serialization

        blob = serialization.msgpack_restore(base64.b64decode(state["weights"]))
        for target, saved in ((self.model, blob["model"]), (self.optimizer, blob["optimizer"])):
            current = nnx.state(target)
            nnx.replace_by_pure_dict(current, saved)
            nnx.update(target, current)
        self.baseline, self.steps, self.last_entropy = state["baseline"], state["steps"], state["entropy"]
