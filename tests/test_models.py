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
                                                     "centre", "context", "context_pool", "hidden", "dropout"}  # fmt: skip
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
