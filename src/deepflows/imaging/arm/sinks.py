"""Where the ARM's overlaid frames go: a browser page (MJPEG over HTTP), an MP4 with a per-frame CSV, a window.

A sink has `write(image, record, stats)` -- called by the loop's drawing thread for every shown frame -- and
`close(ok)`. The files are written under temporary names and renamed into place only by `close(ok=True)`;
a failed run leaves neither.

The stream is served by the standard library's ThreadingHTTPServer on 127.0.0.1 (one thread per viewer, no
event loop to share with the capture threads; uvicorn would add nothing for three fixed routes):

    GET /             the page: the live view (<img id="live">) and a stats line refreshed from /stats
    GET /stream.mjpg  multipart/x-mixed-replace JPEG frames, each frame sent once to each viewer
    GET /stats        the run's Stats.summary() as JSON

A frame is JPEG-encoded only when a viewer asks for it (once, whoever asks first), so serving costs nothing
while nobody watches. The MP4 is H.264 (libx264, yuv420p, CRF 18) when the PyAV wheel has libx264 -- the
PyPI wheels of av 18 do -- else MPEG-4 part 2; each frame's time stamp is its camera frame index, so the
video plays in real time with the dropped frames' time held by the frame before.
"""

from __future__ import annotations

import csv
import json
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from deepflows.errors import UserError
from deepflows.outputs import remove, remove_stale_temporaries, temporary_path

BOUNDARY = "deepflows-arm-frame"
JPEG_QUALITY = 85

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deepflows ARM: live view</title>
<style>
body {{ margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }}
header {{ padding: 8px 14px; }} h1 {{ font-size: 16px; margin: 0 0 4px; }}
#live {{ display: block; max-width: 100%; max-height: calc(100vh - 70px); margin: 0 auto; }}
#stats {{ font-family: ui-monospace, monospace; color: #9c9; }}
</style></head>
<body><header><h1>deepflows ARM &mdash; {title}</h1><div id="stats">waiting for frames&hellip;</div></header>
<img id="live" src="/stream.mjpg" alt="live microscope view with detected regions outlined in green">
<script>
async function refresh() {{
  try {{
    const s = await (await fetch("/stats")).json();
    if (s.frames) document.getElementById("stats").textContent =
      `${{s.fps}} fps | latency p50 ${{s.latency_p50_ms}} ms, p95 ${{s.latency_p95_ms}} ms | ` +
      `inference ${{s.inference_ms}} ms | dropped ${{(100 * s.drop_rate).toFixed(1)}}% | ` +
      `${{s.regions}} regions, ${{(100 * s.area_fraction).toFixed(1)}}% of the view` +
      (s.magnification ? ` | ${{s.magnification}}x` : "");
  }} catch (e) {{}}
}}
setInterval(refresh, 1000); refresh();
</script></body></html>
"""


class MjpegServer:
    """The live view for browsers at http://HOST:PORT/ (port 0: any free one, see `.port`)."""

    def __init__(self, port: int, host: str = "127.0.0.1", title: str = "live view"):
        self.cond = threading.Condition()
        self.image, self.seq, self.jpeg, self.jpeg_seq, self.stats, self.closed = None, 0, b"", 0, None, False
        self.page = PAGE.format(title=title.replace("&", "&amp;").replace("<", "&lt;")).encode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                if self.path == "/":
                    self.reply(200, "text/html; charset=utf-8", server.page)
                elif self.path == "/stats":
                    summary = server.stats.summary() if server.stats else {"frames": 0}
                    self.reply(200, "application/json", json.dumps(summary).encode())
                elif self.path == "/stream.mjpg":
                    self.stream()
                else:
                    self.reply(404, "text/plain", b"not found\n")

            def reply(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                seen = 0
                try:
                    while (got := server.next_jpeg(seen)) is not None:
                        seen, jpeg = got
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpeg)}\r\n\r\n".encode() + jpeg + b"\r\n")  # fmt: skip
                except (BrokenPipeError, ConnectionResetError):  # the viewer left
                    pass

            def log_message(self, *args) -> None:  # no line per request on stderr
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise UserError(f"--serve {port}: cannot listen on {host}:{port} ({err.strerror})") from None
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="arm-http", daemon=True)
        self.thread.start()

    def write(self, image: np.ndarray, record, stats) -> None:
        with self.cond:
            self.image, self.stats = image, stats
            self.seq += 1
            self.cond.notify_all()

    def next_jpeg(self, seen: int) -> tuple[int, bytes] | None:
        """(sequence number, JPEG) of the first frame after `seen`, waiting for it; None once closed."""
        import cv2

        with self.cond:
            while self.seq <= seen:
                if self.closed:
                    return None
                self.cond.wait(0.5)
            if self.jpeg_seq != self.seq:
                bgr = cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR)
                self.jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
                self.jpeg_seq = self.seq
            return self.seq, self.jpeg

    def close(self, ok: bool = True) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()


def video_codec() -> str:
    """libx264 (H.264, plays in browsers) when this PyAV build has the encoder, else mpeg4."""
    import av

    try:
        av.codec.Codec("libx264", "w")
        return "libx264"
    except Exception:  # noqa: BLE001 - av raises UnknownCodecError or ValueError by version
        return "mpeg4"


class Mp4Recorder:
    """The overlaid frames as an MP4 at `path` (renamed into place by close(ok=True)); frame sizes must be even."""

    def __init__(self, path: str | Path, fps: float):
        import av

        self.path, self.tmp = Path(path), temporary_path(path)
        remove_stale_temporaries(self.path)
        self.rate = Fraction(fps).limit_denominator(1001)
        self.codec = video_codec()
        self.container = av.open(str(self.tmp), "w", format="mp4")
        self.stream, self.frames = None, 0

    def write(self, image: np.ndarray, record, stats) -> None:
        import av

        if self.stream is None:
            height, width = image.shape[:2]
            if height % 2 or width % 2:
                raise UserError(f"{self.path}: the video needs an even frame size, not {width}x{height}")
            self.stream = self.container.add_stream(self.codec, rate=self.rate)
            self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
            if self.codec == "libx264":
                self.stream.options = {"crf": "18", "preset": "veryfast"}
            else:
                self.stream.bit_rate = 8_000_000
            self.stream.codec_context.time_base = 1 / self.rate
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = record.index, 1 / self.rate
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        try:
            if self.stream is not None:
                self.container.mux(self.stream.encode())
            self.container.close()
        except BaseException:
            remove(self.tmp)
            raise
        if ok and self.frames:
            self.tmp.replace(self.path)
        else:
            remove(self.tmp)


CSV_COLUMNS = ["index", "capture_s", "inference_ms", "latency_ms", "dropped", "regions", "area_fraction",
               "x", "y", "magnification", "boxes"]  # fmt: skip


class CsvRecorder:
    """One row per shown frame: its Record; `x, y, magnification` its view (empty for cameras and videos),
    `boxes` its regions as 'x y width height area' (pixels) joined by ';'. The view is written at full
    precision, so SlideSource.render(View(x, y, magnification)) renders the frame again exactly."""

    def __init__(self, path: str | Path):
        self.path, self.tmp = Path(path), temporary_path(path)
        remove_stale_temporaries(self.path)
        self.handle = open(self.tmp, "w", newline="")
        self.writer = csv.writer(self.handle)
        self.writer.writerow(CSV_COLUMNS)

    def write(self, image: np.ndarray, record, stats) -> None:
        view = record.view
        self.writer.writerow([record.index, f"{record.capture_time:.4f}", f"{record.inference_ms:.2f}",
                              f"{record.latency_ms:.2f}", record.dropped, record.regions,
                              f"{record.area_fraction:.5f}",
                              *(("", "", "") if view is None else
                                (repr(view.x), repr(view.y), repr(view.magnification))),
                              ";".join(" ".join(map(str, box)) for box in record.boxes)])  # fmt: skip

    def close(self, ok: bool = True) -> None:
        self.handle.close()
        if ok:
            self.tmp.replace(self.path)
        else:
            remove(self.tmp)


class WindowSink:
    """An OpenCV window (needs an OpenCV with a GUI; the headless wheel deepflows installs has none)."""

    def __init__(self, title: str = "deepflows ARM"):
        import cv2

        self.title = title
        try:
            cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE)
        except cv2.error:
            raise UserError("--show: this OpenCV has no GUI (opencv-python-headless); "
                            "watch in a browser with --serve PORT instead") from None  # fmt: skip

    def write(self, image: np.ndarray, record, stats) -> None:
        import cv2

        cv2.imshow(self.title, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.waitKey(1)

    def close(self, ok: bool = True) -> None:
        import cv2

        cv2.destroyWindow(self.title)
