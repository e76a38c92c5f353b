"""Where the ARM's frames come from: a video file, a camera, or a simulated microscope over a slide.

Every source is an iterable of `Frame(index, time, image, view)`: `index` counts the camera's frames from 0
(a frame the consumer was too slow to take is skipped, so indices can jump), `time` is `time.perf_counter()`
when the frame was captured, `image` is uint8 [H, W, 3] RGB, and `view` says where a simulated microscope was
looking (None for real cameras and videos). Each has a nominal `fps` and `close()`.

Pacing: a paced source produces frames by the wall clock, `fps` a second, like a camera: a consumer that takes
longer than one frame period gets the frame of *now*, never a stale one, and the ones in between are lost
(a video file's are decoded and thrown away). `paced=False` produces every frame as fast as it is asked for,
for offline work and tests.

The simulated microscope (`SlideSource`) pans and zooms over one image: an Aperio SVS or any TIFF (the first
page, its pyramid made here by 2x area downsampling, since a small region like CMU-1-Small-Region has one
level), or an OME-Zarr image (its own levels). A view is (x, y) -- the centre in full-resolution pixels --
and a magnification, 4x to 40x; one frame pixel covers native / magnification slide pixels, so above the
native magnification (20x for CMU-1, from the SVS's `AppMag`) the slide is upsampled. Its path is a fixed
function of time: a seeded smooth pan (sums of slow sinusoids) and a zoom that sweeps the range on a log
scale, so frame k of a run can be rendered again, exactly, from its view (`SlideSource.render`).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from deepflows.errors import UserError

DEFAULT_NATIVE_MAGNIFICATION = 20.0  # when a slide does not say (Aperio scanners' usual 20x; CMU-1 says AppMag = 20)
MICRONS_AT_10X = 1.0  # micrometres per pixel at 10x, the scanners' convention (20x ~ 0.5 um/px)
ZOOM_PERIOD_S = 40.0  # one sweep out and back in over the magnification range
PAN_PERIODS_S = (53.0, 31.0, 19.0)  # the pan's sinusoids (slow, mutually prime: the path never repeats soon)


class View(NamedTuple):
    x: float  # centre, full-resolution slide pixels
    y: float
    magnification: float


class Frame(NamedTuple):
    index: int
    time: float
    image: np.ndarray
    view: View | None = None


class FrameSource:
    """The pacing and iteration every source shares; a subclass implements `grab(index)`: the image (and
    view) of camera frame `index`, or None after the last one. Indices asked for only increase."""

    def __init__(self, fps: float, paced: bool):
        if not fps > 0:
            raise UserError(f"frame rate must be positive, not {fps}")
        self.fps, self.paced = float(fps), paced

    def grab(self, index: int) -> tuple[np.ndarray, View | None] | None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        start, index = time.perf_counter(), 0
        while True:
            if self.paced:
                now = time.perf_counter()
                due = start + index / self.fps
                if now < due:
                    time.sleep(due - now)
                else:  # late: the camera has moved on to the frame of now
                    index = max(index, int((now - start) * self.fps))
            got = self.grab(index)
            if got is None:
                return
            yield Frame(index, time.perf_counter(), *got)
            index += 1

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """Frames of a video file, decoded with PyAV, at the file's own frame rate (or `fps`)."""

    def __init__(self, path: str | Path, fps: float | None = None, paced: bool = True):
        import av

        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"{self.path}: video file not found")
        try:
            self.container = av.open(str(self.path))
            stream = self.container.streams.video[0]
        except (av.error.FFmpegError, IndexError) as err:
            raise UserError(f"{self.path}: not a readable video ({err})") from None
        rate = float(stream.average_rate or 0) or 25.0
        super().__init__(fps or rate, paced)
        self.decoded, self.next_index = self.container.decode(stream), 0

    def grab(self, index: int):
        import av

        try:
            for frame in self.decoded:
                self.next_index += 1
                if self.next_index > index:
                    return frame.to_ndarray(format="rgb24"), None
        except av.error.FFmpegError as err:
            raise UserError(f"{self.path}: video damaged at frame {self.next_index} ({err})") from None
        return None

    def close(self) -> None:
        self.container.close()


class CameraSource(FrameSource):
    """A live camera through OpenCV (`cv2.VideoCapture(N)`); the camera paces itself."""

    def __init__(self, device: int, fps: float | None = None):
        import cv2

        self.capture = cv2.VideoCapture(device)
        if not self.capture.isOpened():
            raise UserError(f"camera {device}: cannot be opened")
        if fps:
            self.capture.set(cv2.CAP_PROP_FPS, fps)
        super().__init__(fps or self.capture.get(cv2.CAP_PROP_FPS) or 30.0, paced=False)

    def grab(self, index: int):
        import cv2

        ok, bgr = self.capture.read()
        return (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None) if ok else None

    def close(self) -> None:
        self.capture.release()


class SlideSource(FrameSource):
    """A simulated microscope over a slide: `levels` are the slide's pyramid, full resolution first, each
    [H, W, 3] uint8 (NumPy or Dask) and half the size of the one before."""

    def __init__(self, levels: list, native_magnification: float = DEFAULT_NATIVE_MAGNIFICATION,
                 size: tuple[int, int] = (1024, 768), fps: float = 15.0, paced: bool = True, seed: int = 0,
                 zoom: tuple[float, float] = (4.0, 40.0), duration_frames: int | None = None,
                 name: str = "slide"):  # fmt: skip
        super().__init__(fps, paced)
        if not 0 < zoom[0] <= zoom[1]:
            raise UserError(f"{name}: magnification range {zoom[0]}x-{zoom[1]}x is not a range")
        self.levels, self.native, self.size, self.zoom = levels, float(native_magnification), size, zoom
        self.duration_frames, self.name = duration_frames, name
        # Off the slide the microscope shows empty glass: the colour of the slide's own border, so the edge of a
        # scanned region does not show as a seam.
        coarse = np.asarray(levels[-1])
        border = np.concatenate([coarse[0], coarse[-1], coarse[:, 0], coarse[:, -1]])
        self.background = tuple(float(v) for v in np.median(border, axis=0))
        rng = np.random.default_rng(seed)
        self.phases = rng.uniform(0, 2 * math.pi, size=(2, len(PAN_PERIODS_S) + 1))
        self.weights = rng.dirichlet(np.ones(len(PAN_PERIODS_S)), size=2)

    @classmethod
    def open(cls, path: str | Path, native_magnification: float | None = None, **kwargs) -> SlideSource:
        """A slide from an SVS/TIFF (first page) or an OME-Zarr image (RGB, or one grey channel shown as grey)."""
        path = Path(path)
        if path.is_dir():
            levels, native = _zarr_levels(path)
        else:
            levels, native = _tiff_levels(path)
        return cls(levels, native_magnification or native or DEFAULT_NATIVE_MAGNIFICATION, name=str(path), **kwargs)

    def view(self, index: int) -> View:
        """Where the microscope looks at frame `index`: a smooth pan inside the slide and a zoom sweeping the
        magnification range on a log scale (starting at its low end, where a pathologist starts)."""
        t = index / self.fps
        height, width = self.levels[0].shape[:2]
        centre = []
        for axis, extent in enumerate((width, height)):
            wave = sum(w * math.sin(2 * math.pi * t / p + phase)
                       for w, p, phase in zip(self.weights[axis], PAN_PERIODS_S, self.phases[axis]))  # fmt: skip
            centre.append(float(extent / 2 + 0.4 * extent * wave))
        low, high = math.log(self.zoom[0]), math.log(self.zoom[1])
        sweep = 0.5 - 0.5 * math.cos(2 * math.pi * t / ZOOM_PERIOD_S)
        return View(centre[0], centre[1], math.exp(low + (high - low) * sweep))

    def render(self, view: View) -> np.ndarray:
        """The uint8 [H, W, 3] frame the microscope shows at `view`: read from the coarsest level still at
        least as fine as the frame, resampled (bilinear) onto the frame's pixel grid; off the slide is glass."""
        import cv2

        width, height = self.size
        step = self.native / view.magnification  # slide pixels per frame pixel
        level = 0
        while level + 1 < len(self.levels) and 2 ** (level + 1) <= step:
            level += 1
        image, scale = self.levels[level], step / 2**level  # level pixels per frame pixel
        # Frame pixel (u, v) centres map to level coordinates x = x0 + scale * u (pixel centres at integers).
        x0 = (view.x + 0.5) / 2**level - 0.5 - scale * (width - 1) / 2
        y0 = (view.y + 0.5) / 2**level - 0.5 - scale * (height - 1) / 2
        left, top = max(0, math.floor(x0) - 1), max(0, math.floor(y0) - 1)
        right = min(image.shape[1], math.ceil(x0 + scale * (width - 1)) + 2)
        bottom = min(image.shape[0], math.ceil(y0 + scale * (height - 1)) + 2)
        if right <= left or bottom <= top:
            return np.full((height, width, 3), np.round(self.background), np.uint8)
        patch = np.ascontiguousarray(np.asarray(image[top:bottom, left:right]))
        matrix = np.array([[scale, 0, x0 - left], [0, scale, y0 - top]], np.float64)
        return cv2.warpAffine(patch, matrix, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=self.background)  # fmt: skip

    def grab(self, index: int):
        if self.duration_frames is not None and index >= self.duration_frames:
            return None
        view = self.view(index)
        return self.render(view), view


def pyramid(image: np.ndarray, smallest: int = 256) -> list[np.ndarray]:
    """`image` and its 2x area-downsampled halves, down to the first level whose shorter side is under
    `smallest` pixels."""
    import cv2

    levels = [image]
    while min(levels[-1].shape[:2]) >= 2 * smallest:
        h, w = levels[-1].shape[:2]
        levels.append(cv2.resize(levels[-1], (w // 2, h // 2), interpolation=cv2.INTER_AREA))
    return levels


def aperio_magnification(description: str) -> float | None:
    """`AppMag` of an Aperio ImageDescription ('... |AppMag = 20|MPP = 0.4990|...'), else 10 um / `MPP`."""
    found = re.search(r"\|\s*AppMag\s*=\s*([0-9.]+)", description)
    if found:
        return float(found.group(1))
    found = re.search(r"\|\s*MPP\s*=\s*([0-9.]+)", description)
    return MICRONS_AT_10X * 10 / float(found.group(1)) if found and float(found.group(1)) > 0 else None


def _tiff_levels(path: Path) -> tuple[list[np.ndarray], float | None]:
    from deepflows.imaging.segment.inputs import read_slide

    pixels, description = read_slide(path)
    return pyramid(_as_rgb(pixels, "yxc" if pixels.ndim == 3 else "yx", path)), aperio_magnification(description)


def _zarr_levels(path: Path) -> tuple[list, float | None]:
    from deepflows.imaging.io import open_ome_zarr

    levels, axes, multiscales = open_ome_zarr(path)
    levels = [_as_rgb(level, axes, path) for level in levels]
    axes_meta = [a if isinstance(a, dict) else {"name": a} for a in multiscales.get("axes", [])]
    scale = next((t["scale"] for t in multiscales["datasets"][0].get("coordinateTransformations", [])
                  if t.get("type") == "scale"), None)  # fmt: skip
    unit = next((a.get("unit") for a in axes_meta if a.get("name") == "x"), None)
    if scale and unit == "micrometer" and scale[-1] > 0:  # NGFF pixel size -> the 10x-at-1-um convention
        return levels, MICRONS_AT_10X * 10 / float(scale[-1])
    return levels, None


def _as_rgb(image, axes: str, path: Path):
    """A [H, W, 3] uint8 view of a 2-D image: RGB(A) kept as RGB, one channel repeated as grey."""
    if any(a not in "cyx" and n != 1 for a, n in zip(axes, image.shape)):
        raise UserError(f"{path}: a slide needs one 2-D image; this one has axes '{axes}' {tuple(image.shape)}")
    image = image[tuple(0 if a not in "cyx" else slice(None) for a in axes)]
    axes = "".join(a for a in axes if a in "cyx")
    if image.dtype != np.uint8:
        raise UserError(f"{path}: a slide must be 8-bit RGB, not {image.dtype}")
    if axes == "yx":
        image = image[..., None]
    elif axes == "cyx":
        image = image.transpose(1, 2, 0)
    elif axes != "yxc":
        raise UserError(f"{path}: unsupported slide axes '{axes}'")
    channels = image.shape[2]
    if channels == 1:
        return _repeat3(image)
    if channels in (3, 4):
        return image[..., :3]
    raise UserError(f"{path}: a slide needs 1, 3 or 4 channels, not {channels}")


def _repeat3(image):
    import dask.array as da

    return da.repeat(image, 3, axis=2) if isinstance(image, da.Array) else np.repeat(image, 3, axis=2)
