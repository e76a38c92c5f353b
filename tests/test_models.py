"""Model registry: SmallCNN and InceptionV3 build fast, deterministically, and map uint8 pileups to [B, 3] logits."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")

from flax import nnx

from deepflows.errors import UserError
from deepflows.nn.models import ARCHITECTURES, architecture_options, build_model

TINY_INCEPTION = {"width_multiplier": 0.0625, "depth": [1, 1, 1]}


def n_params(model) -> int:
    import jax

    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_registry_and_options():
    assert {"small_cnn", "inception_v3"} <= set(ARCHITECTURES)
    assert set(architecture_options("inception_v3")) == {"width_multiplier", "depth", "dropout"}
    assert set(architecture_options("small_cnn")) == {"patch", "widths", "centre", "hidden", "dropout"}
    with pytest.raises(UserError, match="unknown model architecture 'resnet'"):
        build_model("resnet", {}, 7, 0)
    with pytest.raises(UserError, match="model option 'width' is not an option of inception_v3"):
        build_model("inception_v3", {"width": 2}, 7, 0)
    with pytest.raises(UserError, match="depth must be three block counts"):
        build_model("inception_v3", {"depth": [1, 1]}, 7, 0)
    with pytest.raises(UserError, match="small_cnn options"):
        build_model("small_cnn", {"widths": 12}, 7, 0)


def test_initialisation_is_seeded():
    import jax

    a, b, c = (build_model("small_cnn", {"widths": [4, 8], "hidden": 8}, 7, seed) for seed in (1, 1, 2))
    leaves = lambda m: jax.tree.leaves(nnx.state(m, nnx.Any(nnx.Param, nnx.BatchStat)))
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(b)))
    assert not all(np.array_equal(x, y) for x, y in zip(leaves(a), leaves(c)))
    kernel = np.asarray(a.head.kernel[...])  # lecun_normal: std 1/sqrt(fan_in), truncated at 2 std
    assert kernel.shape == (8, 3) and np.abs(kernel).max() <= 2 / np.sqrt(8) * 1.14
    assert np.array_equal(np.asarray(a.stem_norm.scale[...]), np.ones(4))


def test_inception_full_size_matches_keras():
    """DeepVariant's backbone is Keras's InceptionV3 (no top): 21,768,352 trainable parameters with 3 input
    channels; 7 channels add 3*3*4*32 to the first conv and the 3-way head 2048*3+3."""
    model = build_model("inception_v3", {}, 7, 0)
    assert model.features == 2048
    assert n_params(model) == 21_768_352 + 3 * 3 * 4 * 32 + 2048 * 3 + 3


def test_inception_tiny_forward():
    model = build_model("inception_v3", TINY_INCEPTION, 7, 0)
    assert n_params(model) < 50_000
    model.eval()
    forward = nnx.jit(lambda m, x: m(x))
    x = np.random.default_rng(0).integers(0, 256, (2, 100, 221, 7), dtype=np.uint8)
    logits = forward(model, x)
    assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
    # inputs smaller than the stem and reductions accept are padded up to 75 x 75
    assert forward(model, x[:, :20, :30]).shape == (2, 3)


def test_small_cnn_forward_any_shape():
    model = build_model("small_cnn", {"widths": [4, 8], "hidden": 8}, 7, 0)
    model.eval()
    for shape in ((3, 100, 221, 7), (1, 12, 20, 7), (2, 5, 3, 7)):
        assert model(np.zeros(shape, np.uint8)).shape == (shape[0], 3)


def test_small_cnn_patch_stem_and_centre():
    """The stem sees each 4 x 4 block as one vector (a strided 4 x 4 convolution), and the head sees the
    columns around the candidate in order: moving evidence from the centre to the edge changes the output."""
    from deepflows.nn.models import centre_columns, space_to_depth

    x = np.arange(2 * 8 * 8 * 3, dtype=np.float32).reshape(2, 8, 8, 3)
    blocks = np.asarray(space_to_depth(x, 4, 4))
    assert blocks.shape == (2, 2, 2, 48)
    assert np.array_equal(blocks[1, 1, 0].reshape(4, 4, 3), x[1, 4:8, 0:4])
    assert np.asarray(space_to_depth(x[:, :7, :6], 4, 4)).shape == (2, 2, 2, 48)  # padded up
    row = np.arange(10, dtype=np.float32).reshape(1, 10, 1)
    assert np.asarray(centre_columns(row, 4)).ravel().tolist() == [3, 4, 5, 6]
    assert np.asarray(centre_columns(row[:, :2], 4)).ravel().tolist() == [0, 0, 1, 0]
    model = build_model("small_cnn", {"widths": [4, 8], "hidden": 8}, 7, 0)
    model.eval()
    centre, edge = np.zeros((2, 100, 221, 7), np.uint8), np.zeros((2, 100, 221, 7), np.uint8)
    centre[:, :, 108:113] = 200
    edge[:, :, 0:5] = 200
    assert not np.allclose(model(centre), model(edge))


def test_read_set_reads_are_a_set():
    """ReadSetNet pools reads as a set: the order of the read rows (and where the empty rows sit) does not
    change the logits, while changing what one read shows at the candidate does; it takes any shape."""
    from deepflows.nn.read_set import shifted_stack, window_columns

    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    stacked = np.asarray(shifted_stack(x, 3))
    assert stacked.shape == (2, 3, 4, 6)
    assert np.array_equal(stacked[1, 2, 1], np.concatenate([x[1, 2, 0], x[1, 2, 1], x[1, 2, 2]]))
    assert np.array_equal(stacked[0, 0, 0, :2], [0, 0])  # zeros past the edge
    assert np.array_equal(np.asarray(window_columns(x, 2)), x[:, :, 1:3])

    assert set(architecture_options("read_set")) == {"reference_rows", "window", "kernel", "widths", "read_features",
                                                     "centre", "context", "context_pool", "hidden", "dropout",
                                                     "sample_noise", "unknown_noise"}  # fmt: skip
    with pytest.raises(UserError, match="must fit in the window"):
        build_model("read_set", {"window": 3, "centre": 5}, 7, 0)
    model = build_model("read_set", {"widths": [4, 8], "read_features": 8, "hidden": 8}, 7, 0)
    model.eval()
    rng = np.random.default_rng(0)
    pileup = np.zeros((2, 100, 221, 7), np.uint8)
    pileup[:, :5, 90:130] = rng.integers(1, 255, (2, 5, 40, 7))  # reference rows
    pileup[:, 5:35, 90:130] = rng.integers(1, 255, (2, 30, 40, 7))  # 30 reads, 65 empty rows
    logits = np.asarray(model(pileup))
    assert logits.shape == (2, 3) and np.all(np.isfinite(logits))
    shuffled = pileup.copy()
    shuffled[:, 5:] = pileup[:, 5:][:, rng.permutation(95)]
    np.testing.assert_allclose(model(shuffled), logits, rtol=1e-5, atol=1e-5)
    changed = pileup.copy()
    changed[:, 7, 110] = 255 - changed[:, 7, 110]
    assert not np.allclose(model(changed), logits)
    for shape in ((1, 12, 20, 7), (2, 6, 3, 7)):
        assert model(np.zeros(shape, np.uint8)).shape == (shape[0], 3)


# --- Model directories (deepflows.nn.model_dir): a broken one is refused with one line naming the file ---------

TINY_CNN = {"widths": [4, 8], "hidden": 8}


def _saved(directory, options=TINY_CNN, architecture="small_cnn"):
    from deepflows.nn.model_dir import save_model

    model = build_model(architecture, options, 7, 0)
    save_model(directory, model, {"architecture": architecture, "options": options, "input_shape": [10, 21, 7],
                                  "channels": [f"c{i}" for i in range(7)]})  # fmt: skip
    return directory


def _edit_json(directory, change):
    import json

    meta = json.loads((directory / "model.json").read_text())
    (directory / "model.json").write_text(json.dumps(change(meta)))


def _reseal(directory):
    """model.json's sha256 made to match the weights as they are now (a hand-edited model directory)."""
    import hashlib

    digest = hashlib.sha256((directory / "weights.msgpack").read_bytes()).hexdigest()
    _edit_json(directory, lambda meta: {**meta, "sha256": digest})


def _refusal(directory) -> str:
    from deepflows.nn.model_dir import load_model

    with pytest.raises(UserError) as info:
        load_model(directory)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_saved_model_loads_with_its_weights(tmp_path):
    from deepflows.nn.model_dir import load_model

    saved = _saved(tmp_path / "m")
    model, meta = load_model(saved)
    original = build_model("small_cnn", TINY_CNN, 7, 0)
    x = np.random.default_rng(1).integers(0, 255, (2, 10, 21, 7), dtype=np.uint8)
    original.eval()
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(original(x)), rtol=1e-6)
    assert meta["architecture"] == "small_cnn"


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda meta: [], "model.json: unreadable model description (a JSON list, not an object)"),
        (lambda meta: {k: v for k, v in meta.items() if k != "sha256"}, "model.json: no 'sha256' (a model"),
        (lambda meta: {k: v for k, v in meta.items() if k != "options"}, "model.json: no 'options'"),
        (lambda meta: {**meta, "input_shape": "10x21x7"}, "model.json: 'input_shape' must be a list of positive"),
        (lambda meta: {**meta, "options": None}, "model.json: 'options' must be an object"),
        (lambda meta: {**meta, "weights": "../other/weights.msgpack"}, "model.json: 'weights' must be a file name"),
        (lambda meta: {**meta, "sha256": 5}, "model.json: 'sha256' must be a sha256"),
        (lambda meta: {**meta, "calibration": "hot"}, "model.json: 'calibration' must be an object"),
        (lambda meta: {**meta, "architecture": "resnet"}, "model.json: unknown model architecture 'resnet'"),
    ],
)
def test_broken_model_json_is_one_line(tmp_path, change, expected):
    saved = _saved(tmp_path / "m")
    _edit_json(saved, change)
    assert _refusal(saved).startswith(f"{saved}/{expected}")


def test_not_a_model_directory(tmp_path):
    (tmp_path / "file").write_text("x")
    assert _refusal(tmp_path / "file").endswith("file: not a model directory (a file; expected model.json + "
                                                "weights.msgpack)")  # fmt: skip
    assert "none: not a model directory (no such directory" in _refusal(tmp_path / "none")
    assert _refusal(tmp_path) == f"{tmp_path}: not a model directory (no model.json)"
    (tmp_path / "model.json").write_bytes(b"\xff\xfe binary")
    assert _refusal(tmp_path).startswith(f"{tmp_path}/model.json: unreadable model description")


def test_damaged_or_foreign_weights_are_refused(tmp_path):
    saved = _saved(tmp_path / "m")
    weights = saved / "weights.msgpack"
    blob = weights.read_bytes()
    weights.write_bytes(blob[: len(blob) // 2])
    assert _refusal(saved) == f"{weights}: sha256 does not match model.json; corrupt or replaced weights"
    _reseal(saved)  # truncated, and model.json edited to match
    assert _refusal(saved).startswith(f"{weights}: unreadable weights (")
    # the weights of another model of the same architecture: every array is there, of another shape
    other = _saved(tmp_path / "wide", {"widths": [4, 16], "hidden": 8})
    weights.write_bytes((other / "weights.msgpack").read_bytes())
    _reseal(saved)
    message = _refusal(saved)
    assert message.startswith(f"{weights}: weights do not fit architecture 'small_cnn' (") and "expected" in message
    # model.json of another architecture over these weights
    _edit_json(saved, lambda meta: {**meta, "architecture": "focus_cnn", "options": {}})
    assert _refusal(saved).startswith(f"{weights}: weights do not fit architecture 'focus_cnn' (no ")
    (saved / "weights.msgpack").unlink()
    assert _refusal(saved) == f"{weights}: model weights not found"
