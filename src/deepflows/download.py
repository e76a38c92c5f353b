"""`deepflows download --url URL (--sha256 HEX | --md5 HEX) --out PATH`: fetch one file and verify it.

http://, https:// and file:// URLs (Python's urllib; no extra dependency). The file is streamed to
`PATH.tmp-<pid>` while its checksums are computed, checked against the expected sha256 and/or md5, and renamed
to PATH only when they match: a mismatch, a truncated transfer or an interruption leaves nothing behind. A
remote file without a checksum is refused unless `--allow-unverified` is given (then only its length is
checked against the server's Content-Length). `--sha256-file` records the sha256 of what was fetched, in
`sha256sum` format, so a file verified by md5 (or not at all) can be pinned and re-checked later with
`sha256sum -c`.

Run on its own, an existing PATH whose checksum matches is kept and not fetched again. (Under Snakemake, rule
`download` only runs when its output is missing: Snakemake removes a job's outputs before it runs.)
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

from deepflows.arguments import positive_float
from deepflows.errors import UserError
from deepflows.outputs import make_output_dir

log = logging.getLogger("deepflows.download")

BLOCK = 1 << 20  # bytes per read
SCHEMES = ("http://", "https://", "file://")
DIGITS = {"sha256": 64, "md5": 32}  # hex digits of each checksum


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", required=True, help="http://, https:// or file:// URL of the file")
    p.add_argument("--out", required=True, metavar="PATH", help="where the verified file goes")
    p.add_argument("--sha256", metavar="HEX", help="expected sha256 (hex)")
    p.add_argument("--md5", metavar="HEX", help="expected md5 (hex), e.g. from the provider's checksum file")
    p.add_argument("--allow-unverified", action="store_true",
                   help="fetch even without --sha256/--md5 (only the length is checked)")  # fmt: skip
    p.add_argument("--sha256-file", metavar="PATH",
                   help="also write the fetched file's sha256 here, as `sha256sum` does")  # fmt: skip
    p.add_argument("--timeout", type=positive_float, default=60.0, metavar="S",
                   help="give up when the server sends nothing for S seconds (default 60)")  # fmt: skip


def run(args: argparse.Namespace) -> None:
    result = download(args.url, args.out, sha256=args.sha256, md5=args.md5,
                      allow_unverified=args.allow_unverified, sha256_file=args.sha256_file,
                      timeout=args.timeout)  # fmt: skip
    log.info("%s", result)


def expected_checksums(url: str, sha256: str | None, md5: str | None, allow_unverified: bool) -> dict[str, str]:
    """{algorithm: lower-case hex} of the given checksums; UserError when malformed or, unless allowed, none."""
    expected = {}
    for name, value in (("sha256", sha256), ("md5", md5)):
        if value is None:
            continue
        value = value.strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{DIGITS[name]}}}", value):
            raise UserError(f"--{name} {value!r}: not a {name} ({DIGITS[name]} hex digits)")
        expected[name] = value
    if not expected and not allow_unverified:
        raise UserError(
            f"{url}: no checksum to verify it against: give --sha256 or --md5 (from the provider's checksum file),"
            " or --allow-unverified to fetch it anyway"
        )
    return expected


def file_checksums(path: str | Path) -> dict[str, str]:
    """sha256 and md5 of a local file, in hex."""
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def download(url: str, out: str | Path, sha256: str | None = None, md5: str | None = None,
             allow_unverified: bool = False, sha256_file: str | Path | None = None,
             timeout: float = 60.0) -> dict:  # fmt: skip
    """Fetch `url` to `out`, verified; returns a summary. Raises UserError (one line) and leaves nothing."""
    if not url.startswith(SCHEMES):
        raise UserError(f"{url}: not an http://, https:// or file:// URL")
    expected = expected_checksums(url, sha256, md5, allow_unverified)
    out = Path(out)
    if expected and out.is_file():
        actual = file_checksums(out)
        if all(actual[name] == value for name, value in expected.items()):
            log.info("%s: already present and verified; not fetched again", out)
            _write_sha256_file(sha256_file, out, actual["sha256"])
            return {"out": str(out), "url": url, "bytes": out.stat().st_size, **actual, "fetched": False}
        log.info("%s: present but its checksum differs from the expected one; fetching it again", out)

    make_output_dir(out.parent)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    hashes = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    started = time.monotonic()
    size = 0
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as handle:
                length = response.headers.get("Content-Length")
                length = int(length) if length and length.isdigit() else None
                next_report = 0.0
                for block in iter(lambda: response.read(BLOCK), b""):
                    handle.write(block)
                    for h in hashes.values():
                        h.update(block)
                    size += len(block)
                    if time.monotonic() >= next_report:  # progress in the rule's log, at most every 10 s
                        of = f" of {length:,}" if length else ""
                        log.info("%s: %s%s bytes", url, f"{size:,}", of)
                        next_report = time.monotonic() + 10
        except urllib.error.HTTPError as err:
            raise UserError(f"{url}: HTTP {err.code} {err.reason}") from None
        except urllib.error.URLError as err:
            reason = err.reason.strerror if isinstance(err.reason, OSError) and err.reason.strerror else err.reason
            raise UserError(f"{url}: cannot fetch ({reason})") from None
        except (TimeoutError, ConnectionError) as err:
            raise UserError(f"{url}: transfer failed after {size:,} bytes ({err or type(err).__name__})") from None
        if length is not None and size != length:
            raise UserError(f"{url}: truncated transfer: got {size:,} of {length:,} bytes")
        actual = {name: h.hexdigest() for name, h in hashes.items()}
        for name, value in expected.items():
            if actual[name] != value:
                raise UserError(f"{url}: {name} mismatch: expected {value}, got {actual[name]}; nothing was kept")
        if not expected:
            log.warning("%s: not verified (no checksum given); its sha256 is %s", url, actual["sha256"])
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    _write_sha256_file(sha256_file, out, actual["sha256"])
    seconds = time.monotonic() - started
    return {"out": str(out), "url": url, "bytes": size, **actual, "verified": sorted(expected),
            "fetched": True, "seconds": round(seconds, 3)}  # fmt: skip


def _write_sha256_file(path: str | Path | None, target: Path, digest: str) -> None:
    if path is None:
        return
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(f"{digest}  {target.name}\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
