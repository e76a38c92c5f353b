"""`deepflows download` and rule `download`: fetch into resources/cache/, verify, never fetch a verified file
again; the GIAB configs validate and plan download -> make_examples -> call_variants -> postprocess ->
benchmark. No internet: file:// URLs and a local HTTP server that counts its requests."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import ClassVar

import pytest
from test_workflow import ROOT, job_counts, model_dir, snakemake, write_config  # noqa: F401 (model_dir: fixture)

BIN = Path(sys.executable).parent
GIAB_CONFIGS = sorted((ROOT / "config" / "giab").glob("*.yaml"))
DATA = b">c\nACGTACGTAC\n" * 50


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def deepflows(*args, cwd=None):
    cmd = [str(BIN / "deepflows"), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error:" in line]


@pytest.fixture
def source(tmp_path) -> Path:
    path = tmp_path / "src" / "ref.fa"
    path.parent.mkdir()
    path.write_bytes(DATA)
    return path


class _Counting(http.server.SimpleHTTPRequestHandler):
    requests: ClassVar[list[str]] = []

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def http_server(source):
    """Serves source's directory on 127.0.0.1; yields (base URL, list of request paths)."""
    handler = type("Handler", (_Counting,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=source.parent))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", handler.requests
    finally:
        server.shutdown()
        server.server_close()


# --- deepflows download ------------------------------------------------------------------------------------


def test_verified_download_and_sidecar(tmp_path, source):
    out = tmp_path / "cache" / "sub" / "ref.fa"
    run = deepflows("download", "--url", source.as_uri(), "--sha256", sha256(DATA), "--out", out,
                    "--sha256-file", f"{out}.sha256")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == DATA
    assert Path(f"{out}.sha256").read_text() == f"{sha256(DATA)}  ref.fa\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["ref.fa", "ref.fa.sha256"]


def test_md5_and_http(tmp_path, http_server):
    base, requests = http_server
    out = tmp_path / "ref.fa"
    run = deepflows("download", "--url", f"{base}/ref.fa", "--md5", hashlib.md5(DATA).hexdigest().upper(),
                    "--out", out)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert out.read_bytes() == DATA and requests == ["/ref.fa"]
    # run on its own again: the file is there and verifies, so it is not fetched again
    mtime = out.stat().st_mtime_ns
    run = deepflows("download", "--url", f"{base}/ref.fa", "--md5", hashlib.md5(DATA).hexdigest(), "--out", out)
    assert run.returncode == 0, run.stderr
    assert requests == ["/ref.fa"] and out.stat().st_mtime_ns == mtime
    assert "already present and verified" in run.stderr


@pytest.mark.parametrize("kind", ["sha256", "md5"])
def test_checksum_mismatch_fails_with_one_line_and_leaves_nothing(tmp_path, source, kind):
    out = tmp_path / "cache" / "ref.fa"
    wrong = "0" * (64 if kind == "sha256" else 32)
    run = deepflows("download", "--url", source.as_uri(), f"--{kind}", wrong, "--out", out,
                    "--sha256-file", f"{out}.sha256")  # fmt: skip
    assert run.returncode == 2
    actual = sha256(DATA) if kind == "sha256" else hashlib.md5(DATA).hexdigest()
    expected = f"deepflows download: error: {source.as_uri()}: {kind} mismatch: expected {wrong}, got {actual};"
    assert errors(run.stderr) == [f"{expected} nothing was kept"], run.stderr
    assert run.stderr.strip().splitlines()[-1] == errors(run.stderr)[0]  # the last line, no traceback
    assert list(out.parent.iterdir()) == []  # no file, no sidecar, no .tmp-<pid>


def test_unverified_is_refused_unless_allowed(tmp_path, source):
    out = tmp_path / "ref.fa"
    run = deepflows("download", "--url", source.as_uri(), "--out", out)
    assert run.returncode == 2 and not out.exists()
    expected = (
        f"deepflows download: error: {source.as_uri()}: no checksum to verify it against: give --sha256 or --md5"
        " (from the provider's checksum file), or --allow-unverified to fetch it anyway"
    )
    assert errors(run.stderr) == [expected]
    run = deepflows("download", "--url", source.as_uri(), "--out", out, "--allow-unverified")
    assert run.returncode == 0 and out.read_bytes() == DATA
    assert f"its sha256 is {sha256(DATA)}" in run.stderr


@pytest.mark.parametrize(
    "url, problem",
    [
        ("file:///no/such/file.fa", "file:///no/such/file.fa: cannot fetch (No such file or directory)"),
        ("ftp://example.org/ref.fa", "ftp://example.org/ref.fa: not an http://, https:// or file:// URL"),
    ],
)
def test_bad_url_fails_with_one_line(tmp_path, url, problem):
    run = deepflows("download", "--url", url, "--md5", "0" * 32, "--out", tmp_path / "x" / "ref.fa")
    assert run.returncode == 2 and errors(run.stderr) == [f"deepflows download: error: {problem}"], run.stderr
    assert not (tmp_path / "x").exists() or list((tmp_path / "x").iterdir()) == []


def test_http_error_leaves_nothing(tmp_path, http_server):
    base, _ = http_server
    out = tmp_path / "cache" / "ref.fa"
    run = deepflows("download", "--url", f"{base}/missing.fa", "--md5", "0" * 32, "--out", out)
    assert run.returncode == 2
    assert errors(run.stderr) == [f"deepflows download: error: {base}/missing.fa: HTTP 404 File not found"]
    assert list(out.parent.iterdir()) == []


# --- rule download -----------------------------------------------------------------------------------------


def cache_config(tmp_path, url_of, checksum: dict, allow_unverified: bool = False) -> Path:
    """A config whose reference lives in resources/cache/t/ (fetched from url_of(name))."""
    files = {
        "t/ref.fa": {"url": url_of("ref.fa"), **checksum},
        "t/ref.fa.fai": {"url": url_of("ref.fa.fai"), "sha256": sha256(b"c\t500\t3\t10\t11\n")},
    }
    download = {"files": files, "allow_unverified": allow_unverified}
    return write_config(tmp_path, {"reference": {"fasta": "resources/cache/t/ref.fa"}, "download": download})


TARGETS = ("resources/cache/t/ref.fa", "resources/cache/t/ref.fa.fai")


@pytest.mark.workflow
def test_rule_download_fetches_once(tmp_path, source, http_server):
    (source.parent / "ref.fa.fai").write_bytes(b"c\t500\t3\t10\t11\n")
    base, requests = http_server
    cfg = cache_config(tmp_path, lambda name: f"{base}/{name}", {"sha256": sha256(DATA)})
    run = snakemake(tmp_path, "--cores", "1", *TARGETS, configfile=cfg)
    assert run.returncode == 0, run.stderr[-3000:]
    cached = tmp_path / TARGETS[0]
    assert cached.read_bytes() == DATA and sorted(requests) == ["/ref.fa", "/ref.fa.fai"]
    assert (tmp_path / f"{TARGETS[0]}.sha256").read_text() == f"{sha256(DATA)}  ref.fa\n"
    assert not os.stat(cached).st_mode & 0o222  # protected: read-only
    assert (tmp_path / "logs/download/t/ref.fa.log").is_file()
    mtime = cached.stat().st_mtime_ns
    run = snakemake(tmp_path, "--cores", "1", *TARGETS, configfile=cfg)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Nothing to be done" in run.stdout + run.stderr
    assert sorted(requests) == ["/ref.fa", "/ref.fa.fai"] and cached.stat().st_mtime_ns == mtime


@pytest.mark.workflow
def test_rule_download_mismatch_leaves_nothing(tmp_path, source):
    (source.parent / "ref.fa.fai").write_bytes(b"c\t500\t3\t10\t11\n")
    cfg = cache_config(tmp_path, lambda name: (source.parent / name).as_uri(), {"md5": "0" * 32})
    run = snakemake(tmp_path, "--cores", "1", TARGETS[0], configfile=cfg)
    assert run.returncode != 0
    assert "Error in rule download" in run.stdout + run.stderr
    log = (tmp_path / "logs/download/t/ref.fa.log").read_text()
    expected = (
        f"deepflows download: error: {source.as_uri()}: md5 mismatch: expected {'0' * 32},"
        f" got {hashlib.md5(DATA).hexdigest()}; nothing was kept"
    )
    assert errors(log) == [expected]
    cache = tmp_path / "resources/cache/t"
    assert not cache.exists() or list(cache.iterdir()) == []


@pytest.mark.workflow
def test_rule_download_refuses_unverified_unless_allowed(tmp_path, source):
    (source.parent / "ref.fa.fai").write_bytes(b"c\t500\t3\t10\t11\n")
    cfg = cache_config(tmp_path, lambda name: (source.parent / name).as_uri(), {})
    run = snakemake(tmp_path, "--cores", "1", TARGETS[0], configfile=cfg)
    assert run.returncode != 0
    assert "deepflows: warning: download.files: 1 file(s) without sha256 or md5 (t/ref.fa)" in run.stderr
    assert "no checksum to verify it against" in (tmp_path / "logs/download/t/ref.fa.log").read_text()
    assert not (tmp_path / TARGETS[0]).exists()
    cfg = cache_config(tmp_path, lambda name: (source.parent / name).as_uri(), {}, allow_unverified=True)
    run = snakemake(tmp_path, "--cores", "1", TARGETS[0], configfile=cfg)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / TARGETS[0]).read_bytes() == DATA


@pytest.mark.workflow
def test_cache_path_without_entry_fails_with_one_line(tmp_path):
    cfg = write_config(tmp_path, {"reference": {"fasta": "resources/cache/x/ref.fa"}})
    run = snakemake(tmp_path, "-n", configfile=cfg)
    assert run.returncode != 0
    expected = (
        "error: reference.fasta: resources/cache/x/ref.fa is not there and download.files has no entry 'x/ref.fa'"
        " to fetch it; add one, or point the key at a local copy"
    )
    assert errors(run.stderr) == [expected]
    assert "Traceback" not in run.stderr


# --- GIAB configs ------------------------------------------------------------------------------------------


def test_giab_configs_exist():
    assert {p.name for p in GIAB_CONFIGS} >= {"hg002-grch38-wgs.yaml", "hg001-grch37-wgs.yaml"}


@pytest.mark.parametrize("config", GIAB_CONFIGS, ids=lambda p: p.stem)
def test_giab_config_validates(config):
    run = deepflows("validate-config", config)
    assert run.returncode == 0 and run.stdout.strip() == f"{config}: ok", run.stderr
    import yaml

    data = yaml.safe_load(config.read_text())
    files = data["download"]["files"]
    for name, entry in files.items():
        assert entry["url"].startswith("https://"), name
        assert name.rsplit("/", 1)[-1] == entry["url"].rsplit("/", 1)[-1], name  # cached under its own name
    # every input of the run is either an entry or (for a local copy) outside the cache
    paths = [data["reference"]["fasta"], data["reads"]["path"], data["truth"]["vcf"], data["truth"]["confident_bed"],
             *data["benchmark"]["stratify"].values()]  # fmt: skip
    assert all(p.removeprefix("resources/cache/") in files for p in paths)


@pytest.mark.workflow
@pytest.mark.parametrize("config", GIAB_CONFIGS, ids=lambda p: p.stem)
def test_giab_dry_run_plans_download_to_benchmark(tmp_path, model_dir, config):  # noqa: F811
    import yaml

    data = yaml.safe_load(config.read_text())
    run = snakemake(tmp_path, "-n", "-p", "--config", f"model={model_dir}", configfile=config)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = job_counts(run.stdout)
    shards = data["make_examples"]["shards"]
    assert counts == {"download": len(data["download"]["files"]), "make_examples": shards, "check_shards": 1,
                      "call_variants": 1, "postprocess": 1, "benchmark": 1, "gq_calibration": 1,
                      "run_times": 1, "provenance": 1, "all": 1}  # fmt: skip
    assert "simulate" not in counts and "make_reference" not in counts
    sample, reads, ref = data["sample"], data["reads"]["path"], data["reference"]["fasta"]
    assert f"--reads {reads} --ref {ref}" in run.stdout  # make_examples reads the cached (downloaded) files
    assert f"--out results/{sample}/calls/calls.vcf.gz --sample {sample}" in run.stdout
    bench = re.search(r"deepflows benchmark .*", run.stdout)[0]
    assert f"--truth {data['truth']['vcf']} --confident {data['truth']['confident_bed']}" in bench
    strata = " ".join(f"{name}={path}" for name, path in sorted(data["benchmark"]["stratify"].items()))
    assert f"--stratify {strata} --out results/{sample}/benchmark" in bench
    for entry in data["download"]["files"].values():
        assert f"deepflows download --url {entry['url']} " in run.stdout
    # an index is fetched after its data file: the stages refuse an index older than its data
    for name in data["download"]["files"]:
        data_file = next((name.removesuffix(s) for s in (".fai", ".bai", ".tbi") if name.endswith(s)), None)
        if data_file in data["download"]["files"]:
            assert f"input: resources/cache/{data_file}\n    output: resources/cache/{name}," in run.stdout, name
    assert "without sha256 or md5" in run.stderr  # the checksums are still to be filled in: said up front
    assert not (tmp_path / "resources").exists()


@pytest.mark.workflow
def test_giab_with_local_copies_downloads_nothing(tmp_path, model_dir):  # noqa: F811
    """A config layered after the GIAB one points every input at a local copy: nothing is fetched."""
    local = {
        "reference": {"fasta": "ref.fa"},
        "reads": {"path": "r.bam"},
        "truth": {"vcf": "t.vcf.gz", "confident_bed": "t.bed"},
        "benchmark": {"stratify": {"lowcomplexity": "lc.bed.gz", "segdups": "sd.bed.gz"}},  # same names: replaced
    }
    for name in ("ref.fa", "ref.fa.fai", "r.bam", "r.bam.bai", "t.vcf.gz", "t.vcf.gz.tbi", "t.bed", "lc.bed.gz",
                 "sd.bed.gz"):  # fmt: skip
        (tmp_path / name).touch()
    giab = ROOT / "config" / "giab" / "hg002-grch38-wgs.yaml"
    local_cfg = write_config(tmp_path, local)
    run = snakemake(tmp_path, "-n", "-p", "--configfile", str(giab), str(local_cfg), "--config", f"model={model_dir}",
                    configfile=giab)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    counts = job_counts(run.stdout)
    assert "download" not in counts and counts["benchmark"] == 1 and counts["make_examples"] == 64
    assert "--reads r.bam --ref ref.fa" in run.stdout and "--stratify lowcomplexity=lc.bed.gz segdups=sd.bed.gz" in (
        run.stdout
    )
    assert "without sha256 or md5" not in run.stderr
