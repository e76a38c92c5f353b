"""The prediction store of In Silico Labeling: what `isl-predict` and the baselines (`isl-ridge`) write and
`isl-evaluate` reads.

One OME-Zarr image (NGFF 0.5, deepflows.imaging.io.OmeZarrWriter), axes "cyx", float32, the same y and x size
as the well it predicts. Values are in each label's normalised units (0..1 = the target's low..high; see
deepflows.imaging.isl.normalize), except `entropy`, in bits. Each channel is named "<LABEL> <statistic>",
the statistic one of `STATISTICS`: a model with a per-pixel distribution over the bins writes all of them,
a point model (L2 loss, ridge) writes only `mean`. The attributes `deepflows.isl_predictions` say which
model wrote it (`model`), for which labels and statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepflows.errors import UserError, abbreviated

STATISTICS = ("mean", "median", "q05", "q25", "q75", "q95", "entropy")
ATTRS_KEY = "isl_predictions"


def channel_name(label: str, statistic: str) -> str:
    return f"{label} {statistic}"


def write_predictions(out: str | Path, image, channels: list[tuple[str, str]], model: str, attrs: dict | None = None,
                      chunks: int = 1024) -> Path:  # fmt: skip
    """`image` [C, Y, X] (NumPy or Dask) whose channel i is `channels[i]` = (label, statistic) -> the store
    `out` (one level, float32), with `attrs` beside the store's own record of labels and statistics."""
    from deepflows.imaging.io import OmeZarrWriter

    unknown = sorted({s for _, s in channels} - set(STATISTICS))
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; expected some of {', '.join(STATISTICS)}")
    if image.shape[0] != len(channels):
        raise ValueError(f"{image.shape[0]} channels in the image, {len(channels)} named")
    labels = list(dict.fromkeys(label for label, _ in channels))
    record = {"model": model, "labels": labels, "statistics": list(dict.fromkeys(s for _, s in channels))}
    writer = OmeZarrWriter(out, "cyx", chunks=chunks, levels=1,
                           channel_names=[channel_name(label, s) for label, s in channels],
                           attrs={ATTRS_KEY: record, **(attrs or {})})  # fmt: skip
    return writer.write(image.astype(np.float32))


@dataclass
class Predictions:
    """An opened prediction store: `channels` maps (label, statistic) to the index into `image` [C, Y, X]."""

    path: Path
    image: object  # dask array [C, Y, X]
    channels: dict[tuple[str, str], int]
    attrs: dict

    def has(self, label: str, statistic: str) -> bool:
        return (label, statistic) in self.channels

    def get(self, label: str, statistic: str):
        """[Y, X] (Dask) of one channel."""
        return self.image[self.channels[(label, statistic)]]

    def point_statistic(self, label: str) -> str:
        """The point prediction of `label`: its mean where the store has one, else its median. The mean, as
        isl-train's tune r: on the real well's tune band the ISL model's mean had the higher r for every label
        (DAPI 0.786 vs 0.756, MAP2 0.769 vs 0.741, NFH 0.456 vs 0.399): where a pixel may be a bright
        nucleus or background, the median of that two-peaked distribution sides with the background."""
        return "mean" if self.has(label, "mean") else "median"

    def statistics(self, label: str) -> list[str]:
        return [s for s in STATISTICS if self.has(label, s)]


def open_predictions(path: str | Path, labels, shape: tuple[int, int], well: str | Path = "the well") -> Predictions:
    """Open and check a prediction store against the well it is compared with: axes "cyx", every channel
    named "<LABEL> <statistic>", a mean or median for each of `labels`, and y/x size `shape`. Any mismatch is
    one UserError naming the store."""
    import zarr

    from deepflows.imaging.io import open_ome_zarr

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: prediction store not found")
    levels, axes, _ = open_ome_zarr(path)
    if axes != "cyx":
        raise UserError(f"{path}: a prediction store has axes cyx, this image has {axes}")
    image = levels[0]
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    names = [c.get("label", "") for c in attrs.get("ome", attrs).get("omero", {}).get("channels", [])]
    if len(names) != image.shape[0]:
        raise UserError(f"{path}: {image.shape[0]} channels but {len(names)} channel labels; a prediction store "
                        "names each channel '<LABEL> <statistic>'")  # fmt: skip
    channels = {}
    for i, name in enumerate(names):
        label, _, statistic = str(name).rpartition(" ")
        if not label or statistic not in STATISTICS:
            raise UserError(f"{path}: channel {i} is named {name!r}; expected '<LABEL> <statistic>' with the "
                            f"statistic one of {', '.join(STATISTICS)}")  # fmt: skip
        channels[(label, statistic)] = i
    for label in labels:
        if (label, "mean") not in channels and (label, "median") not in channels:
            raise UserError(f"{path}: no '{label} mean' or '{label} median' channel (it has "
                            f"{abbreviated(names)}); every label of the well needs a prediction")  # fmt: skip
    if tuple(image.shape[1:]) != tuple(shape):
        raise UserError(f"{path}: predictions are {image.shape[1]} x {image.shape[2]} pixels, {well} is "
                        f"{shape[0]} x {shape[1]}")  # fmt: skip
    return Predictions(path, image, channels, attrs.get("deepflows", {}))
