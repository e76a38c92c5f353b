"""Orbax checkpoints of a training run (deepflows.nn.loop): model parameters and batch statistics, optimizer
state and JSON metadata (step, data position, best tune metrics so far, wall time), the last `keep` kept. A
checkpoint is complete or absent: Orbax writes it under a temporary name."""

from __future__ import annotations

from pathlib import Path


class Checkpoints:
    """Orbax checkpoints of (model parameters + batch statistics, optimizer state) plus JSON metadata."""

    def __init__(self, directory: Path, keep: int):
        import orbax.checkpoint as ocp

        self.ocp = ocp
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(directory.resolve(), options=options)

    @staticmethod
    def _state(model, optimizer) -> dict:
        from flax import nnx

        weights = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
        return {"model": nnx.to_pure_dict(weights), "optimizer": nnx.to_pure_dict(nnx.state(optimizer))}

    @staticmethod
    def exist(directory: Path) -> bool:
        """Whether a directory holds any finished checkpoint (a step-numbered subdirectory)."""
        return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, model, optimizer, meta: dict) -> None:
        args = self.ocp.args
        state = self._state(model, optimizer)
        self.manager.save(step, args=args.Composite(state=args.StandardSave(state), meta=args.JsonSave(meta)),
                          force=True)  # fmt: skip

    def restore(self, step: int, model, optimizer) -> dict:
        """Loads the model and optimizer in place; returns the metadata."""
        import jax
        from flax import nnx

        args = self.ocp.args
        target = jax.tree.map(self.ocp.utils.to_shape_dtype_struct, self._state(model, optimizer))
        restored = self.manager.restore(step, args=args.Composite(state=args.StandardRestore(target),
                                                                  meta=args.JsonRestore()))  # fmt: skip
        weights = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
        nnx.replace_by_pure_dict(weights, restored["state"]["model"])
        nnx.update(model, weights)
        opt_state = nnx.state(optimizer)
        nnx.replace_by_pure_dict(opt_state, restored["state"]["optimizer"])
        nnx.update(optimizer, opt_state)
        return dict(restored["meta"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
