"""`deepflows text-train`: fine-tune the pretrained sentence encoder as a dual encoder on input/response pairs.

    deepflows text-train --config config/model/text_response.yaml --chats dataset.json.gz --workdir runs/text
                         --out resources/models/text-response [--steps N] [--seed S] [--stop-at N]

Talk to Books' encoder was trained on conversation-like (input, response) pairs. Here: every turn and the next
turn of the real human chats of deepflows.text.response.chitchat (train split), both sides encoded by the same network
(all-MiniLM-L6-v2, starting from its published weights), with in-batch negatives: for a batch of B pairs the
B x B cosine matrix, scaled by `data.scale`, is a B-way classification of each input's response among the
batch's responses and of each response's input among the inputs (the mean of both cross-entropies). Only the top
`model.options.trainable_layers` transformer layers learn; the embeddings and the layers below keep the
pretrained weights, which keeps the encoder's general sense of similarity (STS-B) and the shipped model small.

Each step draws its pairs from (seed, step), so a run resumes exactly (deepflows.nn.loop). Tune metrics: the
in-batch loss on tune pairs and response retrieval on tune conversations (deepflows.text.response.retrieval: MRR,
recall@1); `evaluation.select_by` picks the exported step. `--out` gets what text encoders load
(deepflows.text.encoder.load_encoder): model.json (base weights' sha256, training data, tune metrics) and the
trained layers' weights in float16.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.nn.loop import add_run_arguments
from deepflows.nn.task import Task

log = logging.getLogger("deepflows.text_train")


@functools.cache
def schema() -> dict:
    from deepflows.nn.loop import config_schema

    data = {
        "type": "object",
        "additionalProperties": False,
        "default": {},
        "properties": {
            "chats": {"type": "string", "minLength": 1, "description": "the chit-chat corpus (dataset.json[.gz])"},
            "max_tokens": {"type": "integer", "minimum": 8, "maximum": 256, "default": 64,
                           "description": "turns are cut to this many tokens in training (one padded length)"},
            "scale": {"type": "number", "exclusiveMinimum": 0, "default": 20.0,
                      "description": "cosines are multiplied by this before the softmax over the batch"},
            "tune_conversations": {"type": "integer", "minimum": 2, "default": 60,
                                   "description": "tune conversations whose turns make the retrieval metric"},
        },
    }  # fmt: skip
    return config_schema(
        "deepflows text-train config", ["sentence_bert"], ("mrr", "loss"), training={}, evaluation={},
        sections={"data": data},
        defaults={"training": {"batch_size": 32, "steps": 2000, "checkpoint_every": 200, "log_every": 25,
                               "keep_checkpoints": 2},
                  "evaluation": {"every": 200}, "optimizer": {"weight_decay": 0.0},
                  "schedule": {"learning_rate": 2e-5, "warmup_steps": 100}},
    )  # fmt: skip


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, metavar="YAML", help="the training config (see the module doc)")
    p.add_argument("--chats", help="the chit-chat corpus, dataset.json[.gz] (data.chats)")
    add_run_arguments(p, init=False)


def text_config(args: argparse.Namespace) -> dict:
    from deepflows.nn.loop import load_config, override, read_raw_config

    raw = read_raw_config(args.config)
    if args.chats:
        raw.setdefault("data", {})["chats"] = args.chats
    cfg = load_config(raw, schema(), args.config)
    if "chats" not in cfg["data"]:
        raise UserError("text-train: no chats; give --chats, or data.chats in --config")
    if cfg["model"]["options"].get("trainable_layers") is None:
        raise UserError(f"{args.config}: model.options.trainable_layers is required (the top layers that learn; "
                        f"the shipped model holds only those)")  # fmt: skip
    return override(cfg, steps=args.steps, seed=args.seed)


def run(args: argparse.Namespace) -> None:
    from deepflows.nn.loop import fit

    task = ResponseTask(text_config(args))
    summary = fit(task, args.workdir, stop_at=args.stop_at, command=getattr(args, "command_line", "deepflows text-train"))
    if "model" in summary:
        write_finetuned(Path(summary["model"]), Path(args.out), task.cfg["model"]["options"]["trainable_layers"])
        log.info("best step %d -> %s in %.0f s", summary["best_step"], args.out, summary["wall_seconds"])


def write_finetuned(exported: Path, out: Path, trainable_layers: int) -> dict:
    """The loop's exported model (every weight) -> `out`: only the trained top layers, float16, over the base."""
    from flax import nnx, serialization

    from deepflows.nn.model_dir import WEIGHTS, load_model, read_model_json, write_json
    from deepflows.text.encoder import BASE_OPTIONS

    model, _ = load_model(exported)
    meta = read_model_json(exported)
    layers = BASE_OPTIONS["layers"]
    trained = range(layers - trainable_layers, layers)
    state = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tree = {"layers": {str(i): state["layers"][i] for i in trained}}
    blob = serialization.msgpack_serialize(jax_to_numpy(tree, np.float16))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{WEIGHTS}.tmp-{os.getpid()}"
    tmp.write_bytes(blob)
    tmp.replace(out / WEIGHTS)
    card = {key: meta[key] for key in ("steps", "best_step", "selected_by", "tune_metrics", "training_data",
                                           "training_config", "command", "deepflows_version", "base", "hardware",
                                           "wall_seconds", "options")
            if key in meta}  # fmt: skip
    card.update(architecture="sentence_bert", name=out.name, trained_layers=list(trained), weights=WEIGHTS,
                sha256=hashlib.sha256(blob).hexdigest(), dtype="float16")
    write_json(out / "model.json", card)
    return card


def jax_to_numpy(tree, dtype):
    import jax

    return jax.tree.map(lambda a: np.asarray(a, dtype), tree)


# ----------------------------------------------------------------------------- loss


@dataclasses.dataclass(frozen=True)
class InBatchLoss:
    """Symmetric in-batch softmax over scaled cosines; aux: in-batch top-1 hits of inputs -> responses."""

    scale: float

    def __call__(self, model, batch, constants):
        import jax.numpy as jnp
        import optax

        q_ids, q_mask, r_ids, r_mask = batch
        logits = self.scale * model(q_ids, q_mask) @ model(r_ids, r_mask).T
        labels = jnp.arange(logits.shape[0])
        loss = (optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
                + optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()) / 2  # fmt: skip
        return loss, {"correct": jnp.sum(jnp.argmax(logits, axis=1) == labels).astype(jnp.float32)}


# ----------------------------------------------------------------------------- the task


class ResponseTask(Task):
    """sentence_bert from all-MiniLM-L6-v2's weights, on chit-chat (turn, next turn) pairs."""

    inputs_name = "chit-chat pairs"
    export_dtype = np.float16
    plotted = {"train": ("accuracy",), "tune": ("mrr",), "loss": "in-batch softmax loss",
               "metrics_label": "in-batch accuracy (train), retrieval MRR (tune)"}

    def __init__(self, cfg: dict):
        from deepflows.text.response.chitchat import pairs, read_conversations, split
        from deepflows.text.encoder import Tokenizer, file_sha256, package_dir

        self.cfg = cfg
        data = cfg["data"]
        conversations = read_conversations(data["chats"])
        train, tune = split(conversations, "train"), split(conversations, "tune")
        self.tune_conversations = tune[: data["tune_conversations"]]
        self.max_tokens = int(data["max_tokens"])
        self.tokenizer = Tokenizer(package_dir() / "tokenizer.json")
        self.base_sha = file_sha256(package_dir() / "model.safetensors")
        self.train_pairs = pairs(train)
        # A conversation's pairs chain (a pair's response is the next pair's input), so tune batches take pairs
        # in a fixed random order: neighbours in a batch would make each other's answers.
        tune_pairs = pairs(tune)
        self.tune_pairs = [tune_pairs[i] for i in np.random.default_rng(0).permutation(len(tune_pairs))]
        self.shape, self.channels = [self.max_tokens], ["token_ids"]
        self.examples = len(self.train_pairs)
        self.data = {"chats": str(data["chats"]), "split": "train (sha256 of the conversation id, 80/10/10)",
                     "pairs": len(self.train_pairs)}  # fmt: skip
        self.loss = InBatchLoss(float(data["scale"]))
        self._train_ids = [self._ids(side) for side in zip(*self.train_pairs)]

    def _ids(self, texts) -> tuple[np.ndarray, np.ndarray]:
        """Token ids [n, max_tokens] int32 (cut, then padded with 0) and their mask."""
        from deepflows.text.encoder import pad_batch

        cut = [t[: self.max_tokens - 1] + t[-1:] if len(t) > self.max_tokens else t for t in self.tokenizer.ids(texts)]
        ids, mask = pad_batch(cut, len(cut), width=self.max_tokens)
        return ids, mask

    def build_model(self):
        """The registry's sentence_bert with all-MiniLM-L6-v2's weights (only the top layers will learn)."""
        from deepflows.text.encoder import BASE_OPTIONS, build_model, base_weights

        options = self.cfg["model"]["options"]
        unknown = {k: v for k, v in options.items() if k in BASE_OPTIONS and v != BASE_OPTIONS[k]}
        if unknown:
            raise UserError(f"model.options: {', '.join(unknown)} must stay all-MiniLM-L6-v2's (the weights are its)")
        return build_model(base_weights(), seed=self.cfg["training"]["seed"],
                           **{k: v for k, v in options.items() if k not in BASE_OPTIONS})  # fmt: skip

    def batches(self, step: int):
        seed, size = self.cfg["training"]["seed"], self.cfg["training"]["batch_size"]
        (q_ids, q_mask), (r_ids, r_mask) = self._train_ids
        while True:
            pick = np.random.default_rng([seed, step]).choice(len(q_ids), size, replace=False)
            yield q_ids[pick], q_mask[pick], r_ids[pick], r_mask[pick]
            step += 1

    def train_metrics(self, aux: dict, examples: int) -> dict:
        return {"accuracy": float(aux["correct"] / examples)}

    def evaluate(self, model) -> dict:
        from deepflows.text.response.retrieval import encoder_ranks, retrieval_task, summarise

        size = self.cfg["training"]["batch_size"]
        step = _eval_loss(self.loss)
        q, r = (self._ids(side) for side in zip(*self.tune_pairs[: 20 * size]))
        losses = [float(step(model, q[0][i:i + size], q[1][i:i + size], r[0][i:i + size], r[1][i:i + size]))
                  for i in range(0, len(q[0]) - size + 1, size)]  # fmt: skip
        texts, queries, answers = retrieval_task(self.tune_conversations)
        metrics = summarise(encoder_ranks(lambda t: self._encode(model, t), texts, queries, answers))
        return {"loss": float(np.mean(losses)), "mrr": metrics["mrr"], "recall@1": metrics["recall@1"],
                "recall@10": metrics["recall@10"]}  # fmt: skip

    def _encode(self, model, texts, batch: int = 64) -> np.ndarray:
        ids, mask = self._ids(texts)
        forward = _forward()
        return np.concatenate([np.asarray(forward(model, ids[i:i + batch], mask[i:i + batch]))
                               for i in range(0, len(ids), batch)])  # fmt: skip

    def describe(self, result: dict) -> str:
        return f"loss {result['loss']:.4f}, MRR {result['mrr']:.4f}, recall@1 {result['recall@1']:.3f}"

    def summary(self) -> str:
        return (f"{len(self.train_pairs)} train pairs, {len(self.tune_pairs)} tune pairs "
                f"({len(self.tune_conversations)} tune conversations for retrieval)")

    def model_meta(self) -> dict:
        from deepflows.text.encoder import PACKAGE, PACKAGE_VERSION

        return {"name": "text-response", "training_data": self.data,
                "base": {"package": PACKAGE, "version": PACKAGE_VERSION, "sha256": self.base_sha}}


@functools.lru_cache(maxsize=2)
def _eval_loss(loss):
    from flax import nnx

    return nnx.jit(lambda model, qi, qm, ri, rm: loss(model, (qi, qm, ri, rm), ())[0])


@functools.cache
def _forward():
    from flax import nnx

    return nnx.jit(lambda model, ids, mask: model(ids, mask))
