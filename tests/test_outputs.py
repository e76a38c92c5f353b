"""The output layer (deepflows.outputs) and the CLI's last line of defence (one error line, never a traceback)."""

from __future__ import annotations

import errno
import subprocess

import pytest

from deepflows import cli
from deepflows.errors import UserError
from deepflows.outputs import atomic_output, check_new_output, check_output_dir, temporary_path, write_text


@pytest.fixture
def immutable_dir(tmp_path):
    """A directory that even root cannot create files in (chattr +i); skipped where the file system says no."""
    directory = tmp_path / "locked"
    directory.mkdir()
    if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system")
    yield directory
    subprocess.run(["chattr", "-i", str(directory)], check=True)


def test_new_output_is_refused_when_it_exists_or_has_no_directory(tmp_path):
    (tmp_path / "there.tsv").write_text("x\n")
    (tmp_path / "file").write_text("x\n")
    with pytest.raises(UserError, match="there.tsv: already exists; remove it or choose another --out"):
        check_new_output(tmp_path / "there.tsv")
    with pytest.raises(UserError, match="missing: output directory not found"):
        check_new_output(tmp_path / "missing" / "x.tsv")
    with pytest.raises(UserError, match="file: output directory is not a directory"):
        check_new_output(tmp_path / "file" / "x.tsv")
    with pytest.raises(UserError, match=r"out.vcf: the output is a bgzipped VCF; name it \*.vcf.gz"):
        check_new_output(tmp_path / "out.vcf", suffix=".vcf.gz", kind="a bgzipped VCF")
    assert check_new_output(tmp_path / "new.tsv") == tmp_path / "new.tsv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "there.tsv"]  # the write test left nothing


def test_a_directory_root_cannot_write_is_refused_before_work(immutable_dir):
    with pytest.raises(UserError, match="locked: output directory is not writable"):
        check_output_dir(immutable_dir)


@pytest.mark.parametrize("kind", ["file", "directory"])
def test_atomic_output_places_the_whole_output_or_nothing(tmp_path, kind):
    def fill(tmp):
        if kind == "file":
            tmp.write_text("half")
        else:
            (tmp / "part").mkdir(parents=True)

    out = tmp_path / "out"
    with pytest.raises(OSError), atomic_output(out) as tmp:
        assert tmp == temporary_path(out) and tmp.parent == tmp_path
        fill(tmp)
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out) as tmp:
        fill(tmp)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    write_text(tmp_path / "t.txt", "whole\n")
    assert (tmp_path / "t.txt").read_text() == "whole\n"


def _stage_raising(monkeypatch, error: BaseException):
    def run(args):
        raise error

    monkeypatch.setattr("deepflows.provenance.run", run)


def test_cli_turns_an_os_error_into_one_line_naming_the_file(monkeypatch, capsys, tmp_path):
    _stage_raising(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/data/out.tsv"))
    rc = cli.main(["provenance", "--vcf", "x.vcf.gz", "--out", str(tmp_path / "p.tsv")])
    assert rc == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "deepflows provenance: error: /data/out.tsv: No space left on device"]


def test_cli_reports_a_bug_on_one_line_and_keeps_the_traceback(monkeypatch, capsys, tmp_path):
    _stage_raising(monkeypatch, KeyError("shape"))
    rc = cli.main(["provenance", "--vcf", "x.vcf.gz", "--out", str(tmp_path / "p.tsv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and len(err) == 1
    assert err[0].startswith("deepflows provenance: error: internal error, please report it: KeyError: 'shape'")
    saved = err[0].rsplit("traceback in ", 1)[1].rstrip(")")
    with open(saved) as handle:
        text = handle.read()
    assert "Traceback" in text and "KeyError: 'shape'" in text


def test_cli_error_line_is_one_line_even_for_a_multiline_message(monkeypatch, capsys, tmp_path):
    _stage_raising(monkeypatch, UserError("a.vcf: bad\nrecord"))
    assert cli.main(["provenance", "--vcf", "x.vcf.gz", "--out", str(tmp_path / "p.tsv")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["deepflows provenance: error: a.vcf: bad record"]


def test_a_rerun_removes_the_temporaries_of_killed_runs_only(tmp_path):
    import os
    import socket

    out = tmp_path / "shard.zarr"
    host = socket.gethostname()
    dead = subprocess.Popen(["true"])
    dead.wait()
    killed = tmp_path / f"shard.zarr.tmp-{host}-{dead.pid}"
    (killed / "inputs").mkdir(parents=True)
    alive = tmp_path / f"shard.zarr.tmp-{host}-{os.getppid()}"  # a running process: its job may still be writing
    elsewhere = tmp_path / "shard.zarr.tmp-othernode-1"  # another machine's, on a shared file system
    alive.mkdir()
    elsewhere.mkdir()
    with atomic_output(out) as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["shard.zarr", alive.name, elsewhere.name])


def test_an_error_inside_a_temporary_directory_names_the_output(tmp_path):
    out = tmp_path / "bench"
    with pytest.raises(OSError) as caught, atomic_output(out) as tmp:
        tmp.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "summary.json"))
    assert caught.value.filename == str(out / "summary.json") and caught.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_write_test_left_by_a_killed_job_is_removed(tmp_path):
    import socket

    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".deepflows-write-test-{socket.gethostname()}-{dead.pid}"  # killed during its own test
    left.touch()
    check_output_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []
