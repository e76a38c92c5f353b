"""The Augmented Reality Microscope loop (deepflows.imaging.arm): a synthetic H&E slide (purple nuclei clusters
on pink stroma on glass), small frames and runs of a second or two; the real CMU-1 slide under `realdata`.

The browser test reuses the headless-Chromium fixture of the text app's tests (test_text_browser.py), and
skips like them without Chromium.
"""

from __future__ import annotations

import argparse
import csv
import socket
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from deepflows.errors import UserError
from deepflows.imaging.arm import cli
from deepflows.imaging.arm.classical import haematoxylin_score
from deepflows.imaging.arm.loop import overlay, run_arm, run_naive
from deepflows.imaging.arm.sinks import CsvRecorder, MjpegServer, Mp4Recorder
from deepflows.imaging.arm.sources import SlideSource, View, VideoFileSource, aperio_magnification, pyramid
from test_text_browser import driver, screenshot, wait  # noqa: F401 - the shared browser fixture

GLASS, STROMA, NUCLEI = (243, 240, 242), (232, 160, 190), (110, 60, 150)
SMALL = (128, 96)


def synthetic_slide(size: int = 1024, seed: int = 0) -> np.ndarray:
    """[size, size, 3] uint8: a tissue disk of stroma with a few dense clusters of nuclei, on glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.empty((size, size, 3), np.uint8)
    image[:] = GLASS
    image[(yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (0.42 * size) ** 2] = STROMA
    for cy, cx, r in rng.uniform([0.25, 0.25, 0.04], [0.75, 0.75, 0.1], size=(6, 3)) * size:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = NUCLEI
    return np.clip(image + rng.normal(0, 4, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def slide() -> list[np.ndarray]:
    return pyramid(synthetic_slide(), smallest=128)


def green_mask(image: np.ndarray) -> np.ndarray:
    r, g, b = (image[..., i].astype(int) for i in range(3))
    return (g > 170) & (r < 110) & (b < 110)


def test_classical_outlines_haematoxylin_dense_regions():
    frame = np.empty((96, 128, 3), np.uint8)
    frame[:] = STROMA
    frame[:, :40] = GLASS
    frame[30:70, 70:110] = NUCLEI
    score = haematoxylin_score(frame)
    assert score.shape == (96, 128) and score.dtype == np.float32
    assert score[50, 90] > 0.9 and score[50, 55] < 0.1 and score[50, 10] < 0.1
    image, boxes, fraction = overlay(frame, score)
    assert len(boxes) == 1 and 0.1 < fraction < 0.2
    x, y, w, h, _ = boxes[0]
    assert abs(x - 70) <= 4 and abs(y - 30) <= 4 and abs(w - 40) <= 8 and abs(h - 40) <= 8
    assert green_mask(image)[y : y + h, x : x + w].any() and not green_mask(image)[:, :40].any()


def test_slide_views_are_deterministic_and_rerenderable(slide):
    a, b = (SlideSource(slide, size=SMALL, fps=10, paced=False, seed=3, duration_frames=12) for _ in range(2))
    frames_a, frames_b = list(a), list(b)
    assert [f.index for f in frames_a] == list(range(12))
    assert [f.view for f in frames_a] == [f.view for f in frames_b]
    assert all(np.array_equal(f.image, a.render(View(*f.view))) for f in frames_a)
    assert all(np.array_equal(f.image, g.image) for f, g in zip(frames_a, frames_b))
    other = SlideSource(slide, size=SMALL, fps=10, paced=False, seed=4)
    assert other.view(5) != a.view(5)


def test_zoom_range_and_pyramid_levels(slide):
    source = SlideSource(slide, native_magnification=20, size=(64, 48), fps=10, zoom=(4, 40))
    mags = [source.view(k).magnification for k in range(0, 400)]  # one sweep takes 40 s
    assert min(mags) == pytest.approx(4) and max(mags) == pytest.approx(40)
    assert all(4 - 1e-9 <= m <= 40 + 1e-9 for m in mags)
    # At the native magnification a frame is level 0 itself; at half of it, level 1; centres on pixel corners.
    assert np.array_equal(source.render(View(100.5, 200.5, 20)), slide[0][177:225, 69:133])
    assert np.array_equal(source.render(View(201.5, 401.5, 10)), slide[1][177:225, 69:133])
    zoomed = source.render(View(512, 512, 40))  # above native: upsampled, the field is half as wide
    assert zoomed.shape == (48, 64, 3)
    assert np.abs(zoomed[::2, ::2].astype(int) - slide[0][500:524, 496:528]).mean() < 12


def test_ome_zarr_slide_matches_the_same_image_in_memory(tmp_path):
    from deepflows.imaging.io import OmeZarrWriter

    image = synthetic_slide(512, seed=1)
    OmeZarrWriter(tmp_path / "slide.ome.zarr", "cyx", chunks=128, levels=3,
                  scale={"y": 0.5, "x": 0.5}).write(image.transpose(2, 0, 1))  # fmt: skip
    zarr_source = SlideSource.open(tmp_path / "slide.ome.zarr", size=SMALL, paced=False, duration_frames=6)
    assert zarr_source.native == pytest.approx(20)  # 0.5 um per pixel
    memory = SlideSource(pyramid(image, smallest=128), 20, size=SMALL, paced=False, duration_frames=6)
    for from_zarr, in_memory in zip(zarr_source, memory, strict=True):
        assert from_zarr.view == in_memory.view
        assert np.abs(from_zarr.image.astype(int) - in_memory.image).mean() < 1.5


def test_bad_slides_are_user_errors(tmp_path):
    (tmp_path / "notes.svs").write_text("not a tiff")
    with pytest.raises(UserError, match="notes.svs: not a readable SVS/TIFF slide"):
        SlideSource.open(tmp_path / "notes.svs")
    with pytest.raises(UserError, match="not found"):
        SlideSource.open(tmp_path / "missing.svs")
    assert aperio_magnification("Aperio Image Library|AppMag = 20|MPP = 0.4990") == 20
    assert aperio_magnification("Aperio|MPP = 0.25|") == pytest.approx(40)


def slow(seconds: float):
    def segment(frame):
        time.sleep(seconds)
        return haematoxylin_score(frame)

    return segment


def test_slow_segmenter_drops_frames_and_latency_stays_bounded(slide):
    """A 40 fps camera and a 80 ms segmenter: the loop shows about 12 fps of fresh frames; the naive loop
    shows every frame and falls further behind with each."""
    haematoxylin_score(slide[0][:96, :128])  # its first call imports scikit-image: not the loop's latency
    source = SlideSource(slide, size=SMALL, fps=40, paced=True)
    stats = run_arm(source, slow(0.08), duration=1.6)
    summary, latency = stats.summary(), [r.latency_ms for r in stats.records]
    assert summary["drop_rate"] > 0.5 and 8 <= summary["frames"] <= 22
    assert max(latency) < 80 + 2 * 25 + 150  # one inference, up to a frame period waiting in each mailbox
    assert np.mean(latency[-5:]) < np.mean(latency[:5]) + 60  # no growth: nothing queues

    naive = run_naive(SlideSource(slide, size=SMALL, fps=40, paced=False), slow(0.08), duration=1.0)
    lag = [r.latency_ms for r in naive.records]
    assert naive.summary()["dropped"] == 0 and lag[-1] > lag[0] + 400


def test_a_failing_segmenter_stops_the_loop_with_one_line(slide):
    def broken(frame):
        raise ValueError("weights missing")

    with pytest.raises(RuntimeError, match="^ARM inference thread failed: ValueError: weights missing$"):
        run_arm(SlideSource(slide, size=SMALL, fps=30), broken, duration=5)


def test_recorded_video_shows_the_offline_contours(slide, tmp_path):
    """Every recorded frame, decoded from the MP4, has the contours that re-rendering its view (from the CSV)
    and segmenting it offline gives: green-pixel IoU > 0.8 through H.264."""
    import av

    source = SlideSource(slide, size=(256, 192), fps=20, paced=True, seed=2)
    video, table = Mp4Recorder(tmp_path / "run.mp4", source.fps), CsvRecorder(tmp_path / "run.csv")
    stats = run_arm(source, slow(0.03), [video, table], duration=1.5)
    video.close(), table.close()
    rows = list(csv.DictReader(open(tmp_path / "run.csv")))
    with av.open(str(tmp_path / "run.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [(f.pts * stream.time_base * source.fps, f.to_ndarray(format="rgb24"))
                   for f in container.decode(stream)]
    assert stream.codec_context.name == "h264"
    assert len(rows) == len(decoded) == len(stats.records) >= 10
    assert [round(float(t)) for t, _ in decoded] == [int(r["index"]) for r in rows]
    for row, (_, image) in zip(rows, decoded):
        frame = source.render(View(float(row["x"]), float(row["y"]), float(row["magnification"])))
        offline, boxes, _ = overlay(frame, haematoxylin_score(frame))
        assert len(boxes) == int(row["regions"])
        want, got = green_mask(offline), green_mask(image)
        if want.sum() or got.sum():
            assert (want & got).sum() / (want | got).sum() > 0.8


def test_video_file_source_paced_and_unpaced(slide, tmp_path):
    recorder = Mp4Recorder(tmp_path / "clip.mp4", 25)
    for frame in SlideSource(slide, size=SMALL, fps=25, paced=False, duration_frames=20):
        recorder.write(frame.image, SimpleNamespace(index=frame.index), None)
    recorder.close()
    with VideoFileSource(tmp_path / "clip.mp4", paced=False) as video:
        assert video.fps == pytest.approx(25) and [f.index for f in video] == list(range(20))
    with VideoFileSource(tmp_path / "clip.mp4", paced=True) as video:  # a slow consumer misses frames
        seen = [f.index for f in video if time.sleep(0.1) is None]
    assert seen[-1] >= 15 and len(seen) < 12
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(UserError, match="notes.mp4: not a readable video"):
        VideoFileSource(tmp_path / "notes.mp4")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_writes_video_and_csv_and_refuses_bad_input(tmp_path, slide):
    import tifffile

    tifffile.imwrite(tmp_path / "slide.tif", synthetic_slide(512), description="Aperio|AppMag = 20|MPP = 0.5")
    source = f"slide:{tmp_path / 'slide.tif'}"
    out = [f"--record={tmp_path / 'run.mp4'}", f"--csv={tmp_path / 'run.csv'}"]
    cli.run(parse("--source", source, "--size", "160x120", "--max-frames", "6", "--fps", "30", *out))
    rows = list(csv.DictReader(open(tmp_path / "run.csv")))
    assert len(rows) == 6 and (tmp_path / "run.mp4").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.mp4", "slide.tif"]
    with pytest.raises(UserError, match="run.mp4: already exists"):
        cli.run(parse("--source", source, *out))
    for argv, message in [(["--source", "scope:1"], "expected slide:PATH, video:PATH or camera:N"),
                          (["--source", source, "--model", "nothing"], "neither 'classical' nor a model directory"),
                          (["--source", source, "--record", str(tmp_path / "x.avi")], "name it \\*.mp4"),
                          (["--source", source, "--show"], "no GUI")]:  # fmt: skip
        with pytest.raises(UserError, match=message):
            cli.run(parse(*argv, "--max-frames", "2"))
    with pytest.raises(SystemExit):
        parse("--source", source, "--size", "1024by768")


def test_cli_leaves_no_outputs_when_the_loop_fails(tmp_path, monkeypatch, slide):
    import tifffile

    tifffile.imwrite(tmp_path / "slide.tif", synthetic_slide(256))

    def broken(model, inference_size):
        return lambda frame: np.zeros((2, 2), np.float32)  # the wrong shape

    monkeypatch.setattr(cli, "load_model", broken)
    with pytest.raises(RuntimeError, match="inference thread failed: ValueError: the segmenter returned shape"):
        cli.run(parse("--source", f"slide:{tmp_path / 'slide.tif'}", "--size", "64x48", "--duration", "5",
                      "--record", str(tmp_path / "run.mp4"), "--csv", str(tmp_path / "run.csv")))  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slide.tif"]


def test_stream_routes_serve_page_stats_and_jpeg_frames(slide):
    import httpx

    server = MjpegServer(0, title="a <slide>")
    try:
        source = SlideSource(slide, size=SMALL, paced=False, duration_frames=5)
        stats = run_arm(source, haematoxylin_score, [server])
        page = httpx.get(server.url).text
        assert '<img id="live" src="/stream.mjpg"' in page and "a &lt;slide>" in page
        assert httpx.get(server.url + "stats").json()["frames"] == len(stats.records) >= 1
        assert httpx.get(server.url + "nothing").status_code == 404
        with httpx.stream("GET", server.url + "stream.mjpg", timeout=10) as response:
            assert response.headers["content-type"].startswith("multipart/x-mixed-replace; boundary=")
            first = b""
            for chunk in response.iter_bytes():  # the first part, however the bytes arrive
                first += chunk
                if b"\xff\xd9" in first:
                    break
        assert first.startswith(b"--deepflows-arm-frame\r\nContent-Type: image/jpeg") and b"\xff\xd8" in first
    finally:
        server.close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UserError, match=f"--serve {busy.getsockname()[1]}: cannot listen"):
            MjpegServer(busy.getsockname()[1])


def test_stream_page_in_a_browser_shows_the_contours(slide, driver, tmp_path):  # noqa: F811 - the fixture
    """The page at / with the live MJPEG stream, in headless Chromium: the stats line fills in, and the <img>
    shows green contours."""
    from PIL import Image
    from selenium.webdriver.common.by import By

    server, stop = MjpegServer(0, title="synthetic slide"), threading.Event()
    source = SlideSource(slide, size=(320, 240), fps=15, seed=5, zoom=(8, 8))
    loop = threading.Thread(target=run_arm, args=(source, haematoxylin_score, [server]),
                            kwargs={"stop": stop, "duration": 60}, daemon=True)  # fmt: skip
    loop.start()
    try:
        driver.get(server.url)
        wait(driver, lambda d: "fps" in d.find_element(By.ID, "stats").text, 20)
        wait(driver, lambda d: d.execute_script("return document.getElementById('live').naturalWidth") == 320, 20)
        shot = screenshot(driver, tmp_path, "arm-stream")
        live = driver.find_element(By.ID, "live")
        box = live.rect
    finally:
        stop.set()
        loop.join(10)
        server.close()
    scale = driver.execute_script("return window.devicePixelRatio") or 1
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    inside = pixels[int(box["y"] * scale) : int((box["y"] + box["height"]) * scale),
                    int(box["x"] * scale) : int((box["x"] + box["width"]) * scale)]  # fmt: skip
    assert box["width"] >= 320 and green_mask(inside).sum() > 200
    assert green_mask(pixels).sum() - green_mask(inside).sum() < 50  # the page has no green outside the view


@pytest.mark.realdata
def test_cmu_slide_is_a_20x_pyramid_with_regions_found(shared_data):
    path = shared_data / "imaging" / "histology" / "cmu_small_region.svs"
    source = SlideSource.open(path, size=(256, 192), paced=False)
    assert source.native == 20 and source.levels[0].shape == (2967, 2220, 3) and len(source.levels) == 4
    frame = source.render(View(1100, 1100, 10))
    _, boxes, fraction = overlay(frame, haematoxylin_score(frame))
    assert boxes and 0.02 < fraction < 0.9
