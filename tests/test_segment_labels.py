"""Derived segmentation labels and the classical baselines (deepflows.imaging.segment.labels) on tiny synthetic
images, and the segmentation scores (deepflows.imaging.segment.metrics) on hand-made masks with hand-computed
answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from deepflows.imaging.segment.labels import (
    he_baseline,
    he_regions,
    instances_to_semantic,
    nuclei_mask,
    phase_nuclei_baseline,
)
from deepflows.imaging.segment.metrics import (
    boundary_f1,
    boundary_f1_per_class,
    confusion,
    iou_per_class,
    mean_iou,
    trimap_miou,
)


def disks(shape, centres, radius):
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    return np.any([(y - cy) ** 2 + (x - cx) ** 2 <= radius**2 for cy, cx in centres], axis=0)


# ------------------------------------------------------------------------------------------------- nuclei
def test_nuclei_mask_finds_disks_and_splits_touching_ones():
    rng = np.random.default_rng(0)
    # two lone nuclei, a touching pair (centres 14 px apart, radius 8: they overlap), and a 2x2 speck
    lone, pair = [(20, 20), (20, 80)], [(70, 40), (70, 54)]
    truth = disks((100, 100), lone + pair, 8)
    image = 100 + rng.normal(0, 5, truth.shape) + 900 * truth
    image[90:92, 90:92] = 1000
    semantic, instances = nuclei_mask(image, min_area=30, min_distance=5)
    assert semantic.dtype == np.uint8 and instances.dtype == np.int32
    assert instances.max() == 4  # the pair split in two, the speck removed
    assert semantic[90:92, 90:92].sum() == 0
    assert ndi.label(semantic)[1] == 4  # the watershed line keeps the pair apart in the semantic mask too
    for cy, cx in lone + pair:
        assert semantic[cy, cx] == 1
    assert instances[70, 40] != instances[70, 54]
    # the derived mask is the disks to within the smoothed edge (Li's threshold sits low on it: ~1 px out),
    # but for the watershed line
    assert not (semantic.astype(bool) & ~ndi.binary_dilation(truth, iterations=2)).any()
    assert semantic[ndi.binary_erosion(truth)].mean() > 0.95


def test_nuclei_mask_is_scale_free_and_checks_its_input():
    rng = np.random.default_rng(1)
    image = 10 + rng.normal(0, 1, (64, 64)) + 50 * disks((64, 64), [(32, 32)], 8)
    a, _ = nuclei_mask(image)
    b, _ = nuclei_mask(image * 7 + 300)  # another gain and offset: the same nuclei
    np.testing.assert_array_equal(a, b)
    for threshold in ("otsu", "log-otsu"):
        assert nuclei_mask(image, threshold=threshold)[1].max() == 1
    with pytest.raises(ValueError, match="threshold 'max'"):
        nuclei_mask(image, threshold="max")
    with pytest.raises(ValueError, match="one 2-D image"):
        nuclei_mask(np.stack([image, image]))


def test_instances_to_semantic_cuts_where_instances_touch():
    instances = np.zeros((6, 10), np.int32)
    instances[1:5, 1:4] = 1
    instances[1:5, 4:7] = 2  # touches 1 along columns 3 | 4
    instances[1:3, 8:10] = 3  # alone
    semantic = instances_to_semantic(instances)
    want = (instances > 0).astype(np.uint8)
    want[1:5, 3:5] = 0
    np.testing.assert_array_equal(semantic, want)
    assert ndi.label(semantic)[1] == 3


def test_phase_nuclei_baseline_finds_textured_blobs_in_the_focused_plane():
    rng = np.random.default_rng(2)
    blobs = disks((80, 80), [(20, 20), (55, 60)], 9)
    stack = np.stack([0.5 + rng.normal(0, 0.01, (80, 80)) for _ in range(3)])
    stack[1] += blobs * rng.normal(0, 0.3, (80, 80))  # plane 1 in focus: textured nuclei
    semantic, instances = phase_nuclei_baseline(stack, window=5)
    assert instances.max() == 2
    assert semantic[20, 20] == 1 and semantic[55, 60] == 1 and semantic[5, 75] == 0


# ------------------------------------------------------------------------------------------------- H&E
def synthetic_he(seed=0):
    """uint8 RGB [160, 200, 3]: glass; a pink (eosin) tissue block; inside it a region crowded with purple
    (haematoxylin) nuclei. Returns (rgb, tissue, dense) with the boolean truth of the last two."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((160, 200, 3), np.float64)
    rgb[:] = (242, 240, 244)
    tissue = np.zeros((160, 200), bool)
    tissue[20:140, 20:180] = True
    dense = np.zeros_like(tissue)
    dense[40:120, 100:170] = True
    rgb[tissue] = (235, 140, 190)
    nuclei = disks(tissue.shape, [(y, x) for y in range(44, 120, 8) for x in range(104, 170, 8)], 3)
    rgb[nuclei & dense] = (90, 60, 150)
    rgb += rng.normal(0, 4, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8), tissue, dense


def test_he_regions_on_a_synthetic_slide():
    rgb, tissue, dense = synthetic_he()
    labels = he_regions(rgb, nuclei_diameter=6, region_scale=1.5, closing=2, min_area=50)
    assert labels.dtype == np.uint8 and labels.shape == tissue.shape
    assert (labels[~tissue] == 0).mean() > 0.99  # glass
    inner = ndi.binary_erosion(dense, iterations=8)
    assert (labels[inner] == 2).mean() > 0.95
    stroma = tissue & ~ndi.binary_dilation(dense, iterations=12)
    assert (labels[stroma] == 1).mean() > 0.95
    # float RGB in [0, 1] reads as the same image
    np.testing.assert_array_equal(he_regions(rgb / 255.0, nuclei_diameter=6, region_scale=1.5, closing=2,
                                             min_area=50), labels)  # fmt: skip


def test_he_regions_on_tissue_without_glass_finds_no_background():
    rgb, tissue, _ = synthetic_he()
    labels = he_regions(rgb[30:130, 30:170], nuclei_diameter=6, region_scale=1.5, closing=2, min_area=50)
    assert (labels > 0).all()  # the glass cap: Otsu alone would split the tissue into glass and tissue
    assert set(np.unique(labels)) == {1, 2}


def test_he_baseline_is_another_method_and_still_sane():
    rgb, tissue, dense = synthetic_he()
    kwargs = {"nuclei_diameter": 6, "region_scale": 1.5}
    base = he_baseline(rgb, **kwargs)
    assert set(np.unique(base)) <= {0, 1, 2}
    assert (base[~tissue] == 0).mean() > 0.95 and (base[tissue] > 0).mean() > 0.9
    assert (base[ndi.binary_erosion(dense, iterations=8)] == 2).mean() > 0.8
    with pytest.raises(ValueError, match=r"RGB \[H, W, 3\]"):
        he_baseline(rgb[..., :2])


# ------------------------------------------------------------------------------------------------- metrics
def shifted_squares():
    """A 4 x 4 square at rows 2-5, columns 2-5 (truth) and the same square one column right (prediction)."""
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[2:6, 3:7] = 1
    return pred, truth


def test_confusion_and_iou_of_a_square_shifted_by_one_pixel():
    pred, truth = shifted_squares()
    conf = confusion(pred, truth, 2)
    np.testing.assert_array_equal(conf, [[80, 4], [4, 12]])
    # square: 12 / (16 + 16 - 12); background: 80 / (100 - 12)
    np.testing.assert_allclose(iou_per_class(conf), [80 / 88, 0.6])
    assert mean_iou(conf) == pytest.approx((80 / 88 + 0.6) / 2)
    assert mean_iou(confusion(truth, truth, 2)) == 1.0


def test_miou_classes_absent_and_ignored():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 255]])
    pred = np.array([[0, 0, 1, 2], [0, 0, 1, 1]])
    conf = confusion(pred, truth, 4, ignore=255)
    assert conf.sum() == 7
    iou = iou_per_class(conf)
    # class 2: predicted once, never true -> 0 and counted; class 3: in neither -> NaN, left out
    np.testing.assert_allclose(iou[:3], [1.0, 2 / 3, 0.0])
    assert np.isnan(iou[3])
    assert mean_iou(conf) == pytest.approx((1 + 2 / 3 + 0) / 3)
    with pytest.raises(ValueError, match=r"outside 0\.\.1"):
        confusion(pred, truth, 2, ignore=255)


def test_boundary_f1_of_a_square_shifted_by_one_pixel():
    pred, truth = shifted_squares()
    # tolerance 0: half of each 12-pixel square boundary and of each 20-pixel background ring coincide
    np.testing.assert_allclose(boundary_f1_per_class(pred, truth, 2, tolerance=0), [0.5, 0.5])
    assert boundary_f1(pred, truth, 2, tolerance=0) == pytest.approx(0.5)
    # tolerance 1: every boundary pixel is within one pixel of the other mask's
    assert boundary_f1(pred, truth, 2, tolerance=1) == pytest.approx(1.0)
    # a class with a boundary on one side only scores 0; one with none on either side is left out
    empty = np.zeros_like(truth)
    np.testing.assert_array_equal(boundary_f1_per_class(empty, truth, 3, tolerance=1)[:2], [0.0, 0.0])
    assert np.isnan(boundary_f1_per_class(empty, truth, 3)[2])
    assert np.isnan(boundary_f1(empty, empty, 2))


def test_trimap_miou_of_a_square_shifted_by_one_pixel():
    pred, truth = shifted_squares()
    # band 0: the 32 true boundary pixels (12 inside the square, 20 in the ring around it);
    # square: 8 right, 4 missed (column 2), 4 false (column 6 of the ring) -> 8 / 16; ring: 16 / 24
    assert trimap_miou(pred, truth, band=0) == pytest.approx((8 / 16 + 16 / 24) / 2)
    # a band wide enough for the whole image is the plain mIoU
    assert trimap_miou(pred, truth, band=20) == pytest.approx(mean_iou(confusion(pred, truth, 2)))
    assert trimap_miou(truth, truth, band=2, classes=2) == 1.0
