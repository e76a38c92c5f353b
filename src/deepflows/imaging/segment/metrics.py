"""Segmentation scores: the confusion matrix and what is read from it (IoU per class, mean IoU), the boundary F1
score (BF, Csurka et al., BMVC 2013) and the trimap mIoU of the DeepLab papers (Chen et al. 2017, 2018: accuracy
in a band around the true boundaries, where a segmentation's mistakes are).

Masks are integer class maps [H, W] (or any matching shapes for the confusion matrix) with classes 0..classes-1.
Conventions:
- `confusion[t, p]` counts the pixels of true class t predicted p; `ignore` (a truth value, e.g. 255) drops
  pixels from every score.
- IoU of a class = TP / (TP + FP + FN); NaN when the class is in neither truth nor prediction, and mIoU is the
  mean over the classes present in truth or prediction (a class absent from both is neither right nor wrong;
  one predicted but absent from the truth scores 0 and counts).
- A class's boundary is its internal morphological gradient: the pixels of the class with a pixel of another
  class among their 8 neighbours (the mask minus its erosion by a 3 x 3 square; the image border is not a
  boundary). Distances are Euclidean (scipy distance_transform_edt).
- BF of a class: precision = the fraction of predicted boundary pixels within `tolerance` px of a true one,
  recall = the fraction of true boundary pixels within `tolerance` px of a predicted one, F1 their harmonic
  mean; 0 when the class has a boundary on one side only, NaN (left out of the mean) when on neither. The
  BF score is the mean over the classes.
- Trimap mIoU: the mIoU of the pixels within `band` px of a true boundary (any class's).
"""

from __future__ import annotations

import numpy as np


def confusion(pred, truth, classes: int, ignore: int | None = None) -> np.ndarray:
    """int64 [classes, classes]: rows the true class, columns the predicted one."""
    pred, truth = np.asarray(pred).ravel(), np.asarray(truth).ravel()
    if pred.shape != truth.shape:
        raise ValueError(f"prediction and truth differ in size ({pred.size} vs {truth.size} pixels)")
    if ignore is not None:
        keep = truth != ignore
        pred, truth = pred[keep], truth[keep]
    for name, values in (("prediction", pred), ("truth", truth)):
        if values.size and (values.min() < 0 or values.max() >= classes):
            raise ValueError(f"{name} has classes outside 0..{classes - 1} ({values.min()}..{values.max()})")
    flat = truth.astype(np.int64) * classes + pred.astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def iou_per_class(conf: np.ndarray) -> np.ndarray:
    """float [classes]: TP / (TP + FP + FN) of each class of a confusion matrix; NaN for a class in neither
    truth nor prediction."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    union = conf.sum(axis=0) + conf.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(conf: np.ndarray) -> float:
    """The mean IoU over the classes present in truth or prediction (NaN when there are no pixels)."""
    iou = iou_per_class(conf)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def class_boundary(mask: np.ndarray, cls: int) -> np.ndarray:
    """bool [H, W]: the pixels of class `cls` with a pixel of another class among their 8 neighbours."""
    from scipy import ndimage as ndi

    inside = np.asarray(mask) == cls
    return inside & ~ndi.binary_erosion(inside, np.ones((3, 3), bool), border_value=1)


def boundaries(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: the pixels with a pixel of another class among their 8 neighbours (every class's boundary)."""
    from scipy import ndimage as ndi

    mask = np.asarray(mask)
    return ndi.maximum_filter(mask, 3) != ndi.minimum_filter(mask, 3)


def _near(boundary: np.ndarray, tolerance: float) -> np.ndarray:
    """bool [H, W]: the pixels within `tolerance` px (Euclidean) of a pixel of `boundary`."""
    from scipy import ndimage as ndi

    if not boundary.any():
        return np.zeros(boundary.shape, bool)
    return ndi.distance_transform_edt(~boundary) <= tolerance


def boundary_f1_per_class(pred, truth, classes: int, tolerance: float = 2.0) -> np.ndarray:
    """float [classes]: the BF score of each class (see the module doc); NaN for a class with no boundary in
    either mask."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"boundary F1 needs two 2-D masks of one shape, not {pred.shape} and {truth.shape}")
    scores = np.full(classes, np.nan)
    for cls in range(classes):
        bp, bt = class_boundary(pred, cls), class_boundary(truth, cls)
        if not bp.any() and not bt.any():
            continue
        if not bp.any() or not bt.any():
            scores[cls] = 0.0
            continue
        precision = (bp & _near(bt, tolerance)).sum() / bp.sum()
        recall = (bt & _near(bp, tolerance)).sum() / bt.sum()
        scores[cls] = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return scores


def boundary_f1(pred, truth, classes: int, tolerance: float = 2.0) -> float:
    """The BF score: the mean over classes of `boundary_f1_per_class` (NaN when no class has a boundary)."""
    scores = boundary_f1_per_class(pred, truth, classes, tolerance)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


def trimap_miou(pred, truth, band: float, classes: int | None = None, ignore: int | None = None) -> float:
    """The mIoU of the pixels within `band` px of a true boundary (the trimap of the DeepLab papers); classes
    default to 0..the largest class in either mask."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(f"trimap mIoU needs two 2-D masks of one shape, not {pred.shape} and {truth.shape}")
    if classes is None:
        valid = truth if ignore is None else truth[truth != ignore]
        classes = int(max(pred.max(initial=0), valid.max(initial=0))) + 1
    return mean_iou(trimap_confusion(pred, truth, band, classes, ignore))


def trimap_confusion(pred, truth, band: float, classes: int, ignore: int | None = None) -> np.ndarray:
    """The confusion matrix of the pixels within `band` px of a true boundary."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    trimap = _near(boundaries(truth), band)
    return confusion(pred[trimap], truth[trimap], classes, ignore)


def score_regions(pairs, classes: int, tolerance: float = 2.0, band: float = 4.0) -> dict:
    """The scores of (prediction, truth) pairs of 2-D masks (the regions of a split) taken together: mIoU and
    IoU per class of the summed confusion matrix, trimap mIoU of the summed trimap confusion matrices, and
    the BF score with each class's BF averaged over the regions where it is defined."""
    pairs = [(np.asarray(p), np.asarray(t)) for p, t in pairs]
    if not pairs:
        raise ValueError("no regions to score")
    conf = sum(confusion(p, t, classes) for p, t in pairs)
    trimap = sum(trimap_confusion(p, t, band, classes) for p, t in pairs)
    per_region = np.array([boundary_f1_per_class(p, t, classes, tolerance) for p, t in pairs])
    defined = np.isfinite(per_region).any(axis=0)
    bf = np.full(classes, np.nan)
    bf[defined] = np.nanmean(per_region[:, defined], axis=0)
    return {"miou": mean_iou(conf), "iou": iou_per_class(conf).tolist(), "trimap_miou": mean_iou(trimap),
            "boundary_f1": float(np.nanmean(bf)) if defined.any() else float("nan"), "boundary_f1_per_class":
            bf.tolist(), "tolerance": tolerance, "band": band, "pixels": int(conf.sum())}  # fmt: skip
