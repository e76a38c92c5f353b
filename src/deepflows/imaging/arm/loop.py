"""The ARM's real-time loop: capture -> segmenter -> contours drawn over the frame -> sinks, in three threads.

    capture thread --[one-slot mailbox]--> inference thread --[one-slot mailbox]--> drawing thread -> sinks

A mailbox holds only the latest item: a frame put while the previous one is still waiting replaces it (the
older one is dropped and counted). So when the segmenter is slower than the camera the loop shows fewer
frames, each of them fresh; nothing queues, and the latency stays about one inference long however long the
loop runs. The contours are drawn over the frame the segmenter saw (the result travels with its frame), so an
overlay always lines up with the tissue under it even while the slide moves.

Every shown frame gets a `Record`; `Stats` sums them up (fps delivered, latency percentiles, drop rate). The
end-to-end latency runs from the frame's capture to the moment its overlaid image is handed to the sinks.

`run_naive` is the peer the loop is measured against: one thread, capture -> infer -> draw in sequence, every
frame of a camera that buffers them all (frame k exists from its due time, start + k / fps): nothing dropped,
so a slow segmenter makes it fall further behind the live view with every frame.

The loop stops at `duration` seconds, after `max_frames` shown frames, at the source's end, or on Ctrl-C
(a graceful stop: the run's records are kept). An exception in any thread stops all three and is raised
again in the caller's thread as one line naming the thread (a UserError as it is).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from deepflows.errors import UserError
from deepflows.imaging.arm.sources import Frame, FrameSource, View

GREEN = (0, 255, 0)  # RGB: the ARM's contour colour
HEATMAP_COLOUR = np.array([255, 215, 0], np.float32)  # yellow: stands out from H&E's pinks and purples and green
HEATMAP_ALPHA = 0.5  # tint at probability 1
Segmenter = Callable[[np.ndarray], np.ndarray]


@dataclass
class Record:
    """One shown frame. Times are seconds from the loop's start; boxes are (x, y, width, height, area in
    pixels) of each region (outer contour) found in it."""

    index: int
    capture_time: float
    inference_ms: float
    latency_ms: float
    dropped: int  # camera frames never shown, up to this one
    regions: int
    area_fraction: float  # fraction of the frame at or above the threshold
    view: View | None
    boxes: list[tuple[int, int, int, int, int]] = field(default_factory=list)


class Stats:
    """The records of a run and their summary; thread-safe (the web page asks for it while the loop runs)."""

    def __init__(self):
        self.records: list[Record] = []
        self.start, self.end = time.perf_counter(), None  # end: when the loop stopped (None while it runs)
        self.lock = threading.Lock()

    def add(self, record: Record) -> None:
        with self.lock:
            self.records.append(record)

    def summary(self) -> dict:
        with self.lock:
            records = list(self.records)
        elapsed = (self.end or time.perf_counter()) - self.start
        if not records:
            return {"frames": 0, "seconds": round(elapsed, 2)}
        latency = np.array([r.latency_ms for r in records])
        inference = np.array([r.inference_ms for r in records])
        offered = records[-1].index + 1
        last = records[-1]
        return {
            "frames": len(records),
            "seconds": round(elapsed, 2),
            "fps": round(len(records) / max(elapsed, 1e-9), 2),
            "latency_p50_ms": round(float(np.percentile(latency, 50)), 1),
            "latency_p95_ms": round(float(np.percentile(latency, 95)), 1),
            "inference_ms": round(float(np.mean(inference)), 1),
            "dropped": last.dropped,
            "drop_rate": round(last.dropped / offered, 3),
            "regions": last.regions,
            "area_fraction": round(last.area_fraction, 4),
            "magnification": round(last.view.magnification, 1) if last.view else None,
        }


class Mailbox:
    """A one-slot hand-over between two threads: `put` replaces a waiting item (counted in `dropped`), `get`
    waits for one and returns None once the mailbox is closed and empty, or the loop is stopping."""

    def __init__(self, stop: threading.Event):
        self.stop, self.cond = stop, threading.Condition()
        self.item, self.closed, self.dropped = None, False, 0

    def put(self, item) -> None:
        with self.cond:
            self.dropped += self.item is not None
            self.item = item
            self.cond.notify()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def get(self):
        with self.cond:
            while self.item is None:
                if self.closed or self.stop.is_set():
                    return None
                self.cond.wait(0.05)
            item, self.item = self.item, None
            return item


def line_thickness(shape: tuple[int, ...]) -> int:
    """Contour width in pixels for a frame: 2 on small frames, 3 at 1024x768, 6 at 1920x1080 and up."""
    return max(2, round(max(shape[:2]) / 340))


def overlay(frame: np.ndarray, probability: np.ndarray, threshold: float = 0.5,
            heatmap: bool = False) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]], float]:  # fmt: skip
    """(the frame with green contours around the regions where `probability` >= `threshold` -- holes
    outlined too -- and, with `heatmap`, a yellow tint by probability; the regions' boxes; their area
    fraction)."""
    import cv2

    mask = (probability >= threshold).astype(np.uint8)
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    image = frame
    if heatmap:
        alpha = (HEATMAP_ALPHA * np.clip(probability, 0, 1))[..., None]
        image = (frame * (1 - alpha) + HEATMAP_COLOUR * alpha).round().astype(np.uint8)
    else:
        image = frame.copy()
    cv2.drawContours(image, contours, -1, GREEN, line_thickness(frame.shape))
    boxes = []
    for i, contour in enumerate(contours):
        if hierarchy[0][i][3] == -1:  # an outer contour: one region (the others are its holes)
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x, y, w, h, int(round(cv2.contourArea(contour)))))
    return image, boxes, float(mask.mean())


def _infer(segmenter: Segmenter, image: np.ndarray) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    probability = np.asarray(segmenter(image))
    if probability.shape != image.shape[:2]:
        raise ValueError(f"the segmenter returned shape {probability.shape} for a {image.shape[:2]} frame")
    return probability, (time.perf_counter() - start) * 1000


def _show(frame: Frame, captured: float, probability, inference_ms: float, stats: Stats, sinks, threshold: float,
          heatmap: bool) -> Record:  # fmt: skip
    """Draw one result over its frame, record it and hand it to the sinks."""
    image, boxes, fraction = overlay(frame.image, probability, threshold, heatmap)
    shown = time.perf_counter()
    record = Record(frame.index, captured - stats.start, inference_ms, (shown - captured) * 1000,
                    frame.index - len(stats.records), len(boxes), fraction, frame.view, boxes)  # fmt: skip
    stats.add(record)
    for sink in sinks:
        sink.write(image, record, stats)
    return record


class _Loop:
    def __init__(self, source: FrameSource, segmenter: Segmenter, sinks, threshold: float, heatmap: bool,
                 max_frames: int | None, stop: threading.Event | None):  # fmt: skip
        self.source, self.segmenter, self.sinks = source, segmenter, list(sinks)
        self.threshold, self.heatmap, self.max_frames = threshold, heatmap, max_frames
        self.stop, self.errors = stop if stop is not None else threading.Event(), []
        self.frames, self.results = Mailbox(self.stop), Mailbox(self.stop)
        self.stats = Stats()

    def guarded(self, name: str, work: Callable[[], None], done: Callable[[], None]) -> threading.Thread:
        def body():
            try:
                work()
            except BaseException as err:  # noqa: BLE001 - any failure stops the loop; the caller raises it
                self.errors.append((name, err))
                self.stop.set()
            finally:
                done()

        return threading.Thread(target=body, name=f"arm-{name}", daemon=True)

    def capture(self) -> None:
        for frame in self.source:
            if self.stop.is_set():
                return
            self.frames.put(frame)

    def infer(self) -> None:
        while (frame := self.frames.get()) is not None:
            self.results.put((frame, *_infer(self.segmenter, frame.image)))

    def draw(self) -> None:
        while (item := self.results.get()) is not None:
            frame, probability, inference_ms = item
            _show(frame, frame.time, probability, inference_ms, self.stats, self.sinks, self.threshold, self.heatmap)
            if self.max_frames and len(self.stats.records) >= self.max_frames:
                break

    def run(self, duration: float | None) -> Stats:
        threads = [self.guarded("capture", self.capture, self.frames.close),
                   self.guarded("inference", self.infer, self.results.close),
                   self.guarded("drawing", self.draw, self.stop.set)]  # fmt: skip
        self.stats.start = time.perf_counter()
        for thread in threads:
            thread.start()
        deadline = None if duration is None else self.stats.start + duration
        try:
            while not self.stop.wait(0.05):
                if deadline is not None and time.perf_counter() >= deadline:
                    self.stop.set()
        except KeyboardInterrupt:  # Ctrl-C: a graceful stop, the run so far is kept
            self.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        self.stats.end = time.perf_counter()
        raise_first(self.errors)
        return self.stats


def raise_first(errors: list[tuple[str, BaseException]]) -> None:
    if not errors:
        return
    name, err = errors[0]
    if isinstance(err, UserError | KeyboardInterrupt):
        raise err
    raise RuntimeError(f"ARM {name} thread failed: {type(err).__name__}: {err}") from err


def run_arm(source: FrameSource, segmenter: Segmenter, sinks: Iterable = (), threshold: float = 0.5,
            heatmap: bool = False, duration: float | None = None, max_frames: int | None = None,
            stop: threading.Event | None = None) -> Stats:  # fmt: skip
    """Run the three-thread loop until `duration` seconds, `max_frames` shown frames, the source's end,
    Ctrl-C or `stop` being set (from another thread); the run's `Stats`. The sinks are written to, not closed."""
    return _Loop(source, segmenter, sinks, threshold, heatmap, max_frames, stop).run(duration)


def run_naive(source: FrameSource, segmenter: Segmenter, sinks: Iterable = (), threshold: float = 0.5,
              heatmap: bool = False, duration: float | None = None,
              max_frames: int | None = None) -> Stats:  # fmt: skip
    """The single-threaded peer: every frame of `source` in order (read unpaced; frame k counts as captured
    at start + k / fps, as from a camera that buffers every frame), captured, segmented and drawn in sequence."""
    if source.paced:
        raise ValueError("run_naive reads every frame: give it an unpaced source (paced=False)")
    sinks, stats = list(sinks), Stats()
    period = 1.0 / source.fps
    try:
        for frame in source:
            due = stats.start + frame.index * period
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            _show(frame, due, *_infer(segmenter, frame.image), stats, sinks, threshold, heatmap)
            if (max_frames and len(stats.records) >= max_frames) or (
                    duration is not None and time.perf_counter() - stats.start >= duration):  # fmt: skip
                break
    except KeyboardInterrupt:
        pass
    stats.end = time.perf_counter()
    return stats
