"""The shipped segmentation models on the real data they were not trained on (realdata): the label-free nuclei
ablation on the well's test quadrant, and the H&E model as the AR microscope runs it on the slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepflows.imaging.segment.tasks import HE_PARAMS, baseline, build_task, open_task

MODELS = Path(__file__).resolve().parents[1] / "resources" / "models"


@pytest.fixture(scope="module")
def label_free(shared_data, tmp_path_factory):
    return open_task(build_task("label_free_nuclei", shared_data, tmp_path_factory.mktemp("lf") / "lf.zarr"))


@pytest.mark.realdata
def test_v3plus_beats_v3_and_the_classical_baseline_on_the_held_out_quadrant(label_free):
    from deepflows.imaging.segment.metrics import score_regions
    from deepflows.imaging.segment.predict import Segmenter
    from deepflows.nn.model_dir import load_model

    (region,) = label_free.regions("test")
    image, truth = np.asarray(region.image), np.asarray(region.mask)
    scores = {"classical": score_regions([(baseline("label_free_nuclei", image), truth)], 2)}
    for name in ("segment-label-free-nuclei", "segment-label-free-nuclei-v3"):
        model, meta = load_model(MODELS / name)
        predicted = Segmenter(model, meta["classes"]).probabilities(image).argmax(-1)
        scores[name] = score_regions([(predicted, truth)], 2)
    v3plus, v3, classical = (scores[k] for k in ("segment-label-free-nuclei", "segment-label-free-nuclei-v3",
                                                 "classical"))  # fmt: skip
    for metric in ("miou", "boundary_f1"):
        assert v3plus[metric] > v3[metric] > classical[metric], (metric, scores)


@pytest.mark.realdata
def test_the_arm_model_outlines_haematoxylin_dense_tissue_in_a_slide_view(shared_data):
    import cv2
    import tifffile

    from deepflows.imaging.segment.labels import he_regions
    from deepflows.imaging.segment.metrics import confusion, iou_per_class
    from deepflows.imaging.segment.predict import load_segmenter

    with tifffile.TiffFile(shared_data / "imaging" / "histology" / "cmu_small_region.svs") as tif:
        slide = tif.pages[0].asarray()
    # a 20x camera frame of 960 x 720 in the test rows (the bottom quarter), where the model never trained
    window = (slice(-720, None), slice(-960, None))
    view = np.ascontiguousarray(slide[window])
    probability = load_segmenter(MODELS / "segment-he-regions")(view)
    assert probability.shape == (720, 960) and 0 <= probability.min() and probability.max() <= 1
    truth = he_regions(slide, **HE_PARAMS)[window] == 2  # the derived labels, made on the whole slide
    iou = iou_per_class(confusion((probability >= 0.5).astype(np.uint8), truth.astype(np.uint8), 2))[1]
    assert iou > 0.4, iou
    assert cv2.findContours((probability >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
