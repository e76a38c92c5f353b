"""What one model family gives the shared training loop (deepflows.nn.loop.fit), and nothing more.

A task is a model, its data, its loss and its metrics. The loop owns the rest: jit, the optimizer and
learning-rate schedule from the config, gradient accumulation, data parallelism over the devices JAX sees,
checkpoints and exact resumption, SIGTERM, the workdir lock, metrics.jsonl and metrics.png, the best model
on the tune split, warm start from a model directory and the export. README.md, "Adding a training task",
walks through writing one; deepflows.nn.train (pileups) and deepflows.imaging.focus_train (focus quality)
are the two there are.

The contract that makes resumption exact: `batches(step)` yields the batches step, step + 1, ... as a pure
function of (seed, step), and `rng` sets the model's random streams from (seed, step) alone, so a run
restored from its checkpoint at step k trains on what an uninterrupted run would have seen from step k on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator


def key_per_step(model, seed, step, accumulate: int) -> None:
    """Every random stream (dropout) of the model starts step `step` from the key fold_in(key(seed), step)."""
    import jax
    from flax import nnx

    tags = {node.key.tag for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)}
    if tags:
        nnx.reseed(model, **dict.fromkeys(tags, jax.random.fold_in(jax.random.key(seed), step)))


def stream_at_step(model, seed, step, accumulate: int) -> None:
    """Each random stream keeps the key it was initialised with (from the seed) and draws its `step *
    accumulate`-th value at step `step`: what one draw per forward pass from the start amounts to."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    counts = nnx.state(model, nnx.RngCount)
    nnx.update(model, jax.tree.map(lambda c: jnp.full_like(c, step * accumulate), counts))


RNG_POLICIES = {key_per_step: "dropout key fold_in(key({seed}), step); batches a function of (seed, step)",
                stream_at_step: "dropout stream of key({seed}) at draw step; batches a function of (seed, step)"}  # fmt: skip


class Task:
    """One family's part of a training run. Subclasses set the attributes and write the methods marked
    `required`; the rest have defaults that suit a classifier trained on a stream of batches."""

    cfg: dict  # the validated config (deepflows.nn.loop.config_schema): model, init, optimizer, schedule, training, ...
    shape: list[int]  # one input example's shape (model.json input_shape; checked by warm start)
    channels: list[str]  # the input's channel names (likewise)
    inputs_name = "training data"  # what the task trains on, in messages ("training store")
    data: dict  # what the run trains on, for run.json; a rerun on other data (compared without paths) is refused
    examples: int | None = None  # train examples per epoch (the log's epoch count); None: a stream without epochs
    # (model, batch, constants) -> (mean loss, aux): aux maps names to sums over the batch (a count of correct
    # predictions), which the loop adds up over steps and microbatches. Traced inside the jitted step, so it must
    # be hashable: a module-level function, or a frozen dataclass holding the loss's settings.
    loss: Callable
    rng = staticmethod(key_per_step)  # how the model's random streams are set for a step (see RNG_POLICIES)
    plotted: dict = {}  # metrics.png: the metrics drawn beside the loss per split, the loss label (plot_metrics)
    export_dtype = None  # e.g. numpy.float16: the dtype of the exported weights (None: as trained)

    def build_model(self):
        """A freshly initialised model from the config's model section (any registered architecture)."""
        from deepflows.nn.models import build_model

        model = self.cfg["model"]
        return build_model(model["architecture"], model["options"], len(self.channels), self.cfg["training"]["seed"])

    def constants(self):
        """Inputs of `loss` besides the batch that stay the same every step (arrays: class weights...)."""
        return ()

    def batches(self, step: int) -> Iterator:
        """Required: the training batches step, step + 1, ... (pytrees of arrays with the batch first)."""
        raise NotImplementedError

    def position(self, step: int) -> dict:
        """Where batch `step` starts in the data (checkpoint metadata; `examples_seen` at least)."""
        return {"examples_seen": step * self.cfg["training"]["batch_size"]}

    def train_metrics(self, aux: dict, examples: int) -> dict:
        """A train log line's fields from the loss's aux summed over `examples` examples."""
        return {}

    def evaluate(self, model) -> dict:
        """Required when evaluation.every > 0: metrics of the model (in eval mode) on the tune split; `loss`
        among them."""
        raise NotImplementedError

    def better(self, new: dict, best: dict | None) -> bool:
        """Whether tune metrics `new` beat the best so far (evaluation.select_by)."""
        if best is None:
            return True
        metric = self.cfg["evaluation"]["select_by"]
        if metric == "loss":
            return new["loss"] < best["loss"]
        return (new[metric] or 0.0) > (best[metric] or 0.0)

    def describe(self, result: dict) -> str:
        """Tune metrics in a log line."""
        return f"loss {result['loss']:.4f}"

    def summary(self) -> str:
        """What this run trains on, for the first log line."""
        return f"{self.examples} train examples" if self.examples else "a stream of training batches"

    def check_init(self, meta: dict) -> str | None:
        """What keeps a model directory (its model.json) from starting this run; None if it fits."""
        from deepflows.nn.warm_start import init_mismatch

        return init_mismatch(meta, self.cfg, self)

    def model_meta(self) -> dict:
        """The task's fields of model.json (training data, class names, preprocessing...)."""
        return {}

    def export_meta(self, model) -> dict:
        """More model.json fields for the exported model, measured on it (e.g. a calibration)."""
        return {}
