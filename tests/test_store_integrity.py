"""Store integrity: every store deepflows writes carries a manifest of its files, every reader checks it before
work (a deleted, truncated, corrupt, swapped or extra chunk is refused with one line naming the store and the
chunk), `deepflows verify` checks stores for users, a temporary store never outlives a failure, and a shard set
must agree on everything that made its examples."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from synthetic import random_reference, tile_reads, write_bam

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.genomics.calling.call_variants import META_FIELDS, ProbsWriter, open_probs
from deepflows.imaging.io import OmeZarrWriter, open_ome_zarr
from deepflows.store import integrity
from deepflows.store.examples import ShardWriter, check_shard_set, open_shard, region_plan
from deepflows.store.shuffle import open_training_store, shuffle_examples

SHAPE = (3, 4, 2)
N = 7  # with chunk_size=2: inputs chunks 0..3, the last one partial


def shard_attrs(index: int = 0, count: int = 1, **changes) -> dict:
    attrs = {
        "sample": "s", "channels": ["a", "b"], "shape": list(SHAPE), "shard_index": index, "shard_count": count,
        "regions": [], "region_plan": {"intervals": 1, "bases": 3000, "sha256": "plan-a"},
        "sources": {"reads": {"path": "r.bam", "size": 1, "sha256": "reads-a"},
                    "reference": {"path": "ref.fa", "size": 1, "sha256": "ref-a"}},
        "parameters": {"seed": 2018, "min_base_quality": 10, "realign": False},
        "deepflows_version": "test", "command": "test",
    }  # fmt: skip
    for key, value in changes.items():
        if key in attrs["parameters"]:
            attrs["parameters"][key] = value
        elif key in attrs["sources"]:
            attrs["sources"][key] = value
        else:
            attrs[key] = value
    return attrs


def make_shard(path: Path, index: int = 0, count: int = 1, n: int = N, labelled: bool = True, **changes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with ShardWriter(path, SHAPE, shard_attrs(index, count, **changes), labelled=labelled, chunk_size=2) as writer:
        for i in range(n):
            writer.add(np.full(SHAPE, i + 1, np.uint8), label=i % 3 if labelled else None, contig="c1",
                       start=10 * i, end=10 * i + 1, ref="A", alts="G", alt_indices="0", depth=i,
                       allele_depth="1,2")  # fmt: skip
        writer.commit({"stats": {"n_candidates": n}})
    return path


@pytest.fixture
def shard(tmp_path) -> Path:
    return make_shard(tmp_path / "s.zarr")


def last_error(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.strip().splitlines() if line]


# ----------------------------------------------------------------------------- the manifest


def test_manifest_lists_every_file_but_the_root_metadata(shard):
    attrs = zarr.open_group(str(shard), mode="r").attrs.asdict()
    files = attrs["integrity"]["files"]
    on_disk = sorted(p.relative_to(shard).as_posix() for p in shard.rglob("*") if p.is_file())
    assert sorted(files) == [f for f in on_disk if f != "zarr.json"] == list(files)  # sorted, complete
    assert {f"inputs/c/{i}/0/0/0" for i in range(4)} <= set(files) and "contig/c/0" in files
    size, digest = files["inputs/c/1/0/0/0"]
    assert size == (shard / "inputs/c/1/0/0/0").stat().st_size and len(digest) == 64
    assert attrs["integrity"]["algorithm"] == "sha256" and attrs["complete"] is True
    assert integrity.verify(shard) == (len(files), sum(s for s, _ in files.values()))


def test_same_content_gives_the_same_store_bytes(tmp_path):
    a, b = make_shard(tmp_path / "a" / "s.zarr"), make_shard(tmp_path / "b" / "s.zarr")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)  # zarr.json with its manifest too


def test_hidden_files_that_zarr_never_reads_are_allowed(shard):
    (shard / ".snakemake_timestamp").touch()  # Snakemake marks directory outputs so
    (shard / "inputs" / ".DS_Store").write_bytes(b"x")
    assert open_shard(shard) is not None
    (shard / "inputs" / ".zarray").write_text("{}")  # Zarr v2 metadata is not hidden from Zarr
    with pytest.raises(UserError, match="unexpected file inputs/.zarray"):
        open_shard(shard)


# ----------------------------------------------------------------------------- damaged stores


def _rewrite(path: Path, change) -> None:
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(change(data)))


def _flip(data: bytearray) -> bytearray:
    data[len(data) // 2] ^= 0xFF
    return data


def _swap(store: Path, a: str, b: str) -> None:
    pa, pb = store / a, store / b
    da, db = pa.read_bytes(), pb.read_bytes()
    pa.write_bytes(db)
    pb.write_bytes(da)


DAMAGE = {
    "deleted chunk": (lambda s: (s / "inputs/c/1/0/0/0").unlink(),
                      "chunk inputs/c/1/0/0/0 is missing (the store's manifest lists it)"),
    "truncated chunk": (lambda s: _rewrite(s / "inputs/c/2/0/0/0", lambda d: d[: len(d) // 2]),
                        "chunk inputs/c/2/0/0/0 is truncated ("),
    "corrupted byte": (lambda s: _rewrite(s / "inputs/c/0/0/0/0", _flip),
                       "chunk inputs/c/0/0/0/0 is corrupt (its sha256 differs from the manifest's)"),
    "swapped chunks": (lambda s: _swap(s, "inputs/c/0/0/0/0", "inputs/c/1/0/0/0"),
                       "chunk inputs/c/0/0/0/0 is corrupt (its sha256 differs from the manifest's) (and 1 more"),
    "extra chunk": (lambda s: shutil.copy(s / "inputs/c/0/0/0/0", s / "inputs/c/0/0/0/1"),
                    "unexpected file inputs/c/0/0/0/1 (not in the store's manifest)"),
    "deleted contig chunk": (lambda s: (s / "contig/c/0").unlink(), "chunk contig/c/0 is missing"),
    "deleted start chunk": (lambda s: (s / "start/c/0").unlink(), "chunk start/c/0 is missing"),
    "deleted ref chunk": (lambda s: (s / "ref/c/0").unlink(), "chunk ref/c/0 is missing"),
    "deleted label array": (lambda s: shutil.rmtree(s / "label"), "array label is missing"),
    "deleted array metadata": (lambda s: (s / "depth/zarr.json").unlink(), "metadata file depth/zarr.json is missing"),
    "grown chunk": (lambda s: _rewrite(s / "label/c/0", lambda d: d + b"\0"), "chunk label/c/0 is corrupt ("),
}  # fmt: skip


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_every_reader_refuses_a_damaged_shard_with_one_line(shard, tmp_path, capsys, damage):
    do, expected = DAMAGE[damage]
    do(shard)
    for read in (open_shard, lambda p: check_shard_set([p])):
        with pytest.raises(UserError) as err:
            read(shard)
        assert str(err.value).startswith(f"{shard}: ") and expected in str(err.value), str(err.value)
        assert "\n" not in str(err.value)
    for argv in (["check-shards", str(shard), "--out", str(tmp_path / "manifest.json")],
                 ["shuffle-examples", str(shard), "--out", str(tmp_path / "t.zarr"), "--seed", "1"],
                 ["verify", str(shard)]):  # fmt: skip
        assert main(argv) == 2, argv
        err = last_error(capsys)
        assert len(err) == 1 and err[0].startswith(f"deepflows {argv[0]}: error: {shard}: ") and expected in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # no output, no temporary


def test_deleted_probs_chunk_is_refused_not_read_as_zeros(tmp_path, capsys):
    """Case 10a: Zarr reads a missing chunk as zeros, and postprocess wrote every site 0/0."""
    out = tmp_path / "probs.zarr"
    n = 5
    with ProbsWriter(out, n, {"sample": "s"}, chunk=2) as writer:
        writer.add_probs(np.tile([[0.1, 0.8, 0.1]], (n, 1)))
        writer.add_meta({"contig": ["c1"] * n, "start": np.arange(n), "end": np.arange(n) + 1, "ref": ["A"] * n,
                         "alts": ["G"] * n, "alt_indices": ["0"] * n, "depth": [9] * n,
                         "allele_depth": ["4,5"] * n})  # fmt: skip
        writer.commit({"stats": {}})
    assert open_probs(out)["probs"].shape == (n, 3)
    (out / "probs/c/1/0").unlink()
    with pytest.raises(UserError, match=r"probs.zarr: chunk probs/c/1/0 is missing \(the store's manifest lists it\)"):
        open_probs(out)
    assert main(["verify", str(out)]) == 2
    assert last_error(capsys) == [f"deepflows verify: error: {out}: chunk probs/c/1/0 is missing (the store's "
                                  "manifest lists it)"]  # fmt: skip
    assert set(META_FIELDS) <= {p.name for p in out.iterdir()}


def test_training_store_is_verified(tmp_path):
    shards = [make_shard(tmp_path / f"s{i}.zarr", i, 2) for i in range(2)]
    store = tmp_path / "train.zarr"
    shuffle_examples(shards, store, seed=1, bucket_size=16, chunk_size=2)
    inputs, _, labels = open_training_store(store)
    assert inputs.shape[0] == 2 * N and labels.shape == (2 * N,)
    assert "train/inputs/c/0/0/0/0" in zarr.open_group(str(store)).attrs["integrity"]["files"]
    chunk = next(p for p in sorted((store / "train/label/c").rglob("*")) if p.is_file())
    chunk.unlink()
    with pytest.raises(UserError, match="train.zarr: chunk train/label/c/0 is missing"):
        open_training_store(store)
    from deepflows.nn.data import open_split

    with pytest.raises(UserError, match="train.zarr: chunk train/label/c/0 is missing"):
        open_split(store, "train")


def test_ome_zarr_images_are_verified_and_foreign_ones_still_open(tmp_path, capsys):
    image = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(2, 40, 50)
    out = OmeZarrWriter(tmp_path / "img.ome.zarr", "cyx", chunks=16, levels=2).write(image)
    levels, axes, _ = open_ome_zarr(out)
    assert axes == "cyx" and np.array_equal(levels[0].compute(), image)
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: ok (")
    (out / "0/c/1/0/1").unlink()
    with pytest.raises(UserError, match=r"img.ome.zarr: chunk 0/c/1/0/1 is missing"):
        open_ome_zarr(out)
    # an image written by another tool has no manifest: it opens (unchecked), and `verify` says it cannot check
    foreign = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w", zarr_format=3)
    foreign.create_array("0", data=image, chunks=(1, 16, 16))
    foreign.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": ["c", "y", "x"], "datasets": [{"path": "0"}]}]}
    assert open_ome_zarr(tmp_path / "foreign.zarr")[1] == "cyx"
    assert main(["verify", str(tmp_path / "foreign.zarr")]) == 2
    assert "no integrity manifest: not a store that deepflows wrote" in last_error(capsys)[-1]


def test_a_store_without_a_manifest_is_refused(shard, capsys):
    group = zarr.open_group(str(shard), mode="r+")
    attrs = group.attrs.asdict()
    del attrs["integrity"]
    group.attrs.put(attrs)
    with pytest.raises(UserError, match="s.zarr: store has no integrity manifest .* run make-examples again"):
        open_shard(shard)


# ----------------------------------------------------------------------------- deepflows verify


def test_verify_prints_one_line_per_good_store(tmp_path, capsys):
    a, b = make_shard(tmp_path / "a.zarr"), make_shard(tmp_path / "b.zarr", labelled=False)
    assert main(["verify", str(a), str(b)]) == 0
    out = capsys.readouterr().out.splitlines()
    files = len(zarr.open_group(str(a)).attrs["integrity"]["files"])
    assert out[0].startswith(f"{a}: ok ({files} files, ") and out[0].endswith(" MB)")
    assert out[1].startswith(f"{b}: ok (") and len(out) == 2
    (b / "inputs/c/0/0/0/0").unlink()
    assert main(["verify", str(a), str(b), str(tmp_path / "none.zarr")]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [out[0]]
    assert main(["verify", str(a / "inputs")]) == 2  # a part of a store
    assert "a part of one (verify the whole store)" in last_error(capsys)[-1]
    assert captured.err.strip().splitlines() == [
        f"deepflows verify: error: {b}: chunk inputs/c/0/0/0/0 is missing (the store's manifest lists it) "
        "(and 1 more bad store(s))"
    ]


# ----------------------------------------------------------------------------- temporary stores


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failure_while_creating_the_store_removes_the_temporary(tmp_path, monkeypatch):
    """Case 12b: the error came while the temporary store was created, before its cleanup was armed."""
    monkeypatch.setattr(zarr.Group, "create_array", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        ShardWriter(tmp_path / "s.zarr", SHAPE, shard_attrs(), labelled=True)
    with pytest.raises(OSError, match="No space left"):
        ProbsWriter(tmp_path / "p.zarr", 4, {})
    assert list(tmp_path.iterdir()) == []


def test_a_failure_while_finalising_removes_the_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(integrity, "seal", _disk_full)
    writer = ShardWriter(tmp_path / "s.zarr", SHAPE, shard_attrs(), labelled=False, chunk_size=2)
    writer.add(np.zeros(SHAPE, np.uint8), contig="c1", start=1, end=2, ref="A", alts="G", alt_indices="0", depth=1,
               allele_depth="1,2")  # fmt: skip
    with pytest.raises(OSError, match="No space left"):
        writer.commit()  # not in a `with` block: commit itself cleans up
    assert list(tmp_path.iterdir()) == []


def test_a_write_on_a_full_disk_names_the_output(tmp_path, monkeypatch):
    """A failed write() names no file: the error is told as one about the output, and the temporary goes."""
    monkeypatch.setattr(zarr.Array, "append", lambda *a, **k: _disk_full_unnamed())
    with pytest.raises(OSError) as err:
        with ShardWriter(tmp_path / "s.zarr", SHAPE, shard_attrs(), labelled=False, chunk_size=1) as writer:
            writer.add(np.zeros(SHAPE, np.uint8), contig="c1", start=1, end=2, ref="A", alts="G", alt_indices="0",
                       depth=1, allele_depth="1,2")  # fmt: skip
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "s.zarr")
    assert list(tmp_path.iterdir()) == []


def _disk_full_unnamed():
    raise OSError(errno.ENOSPC, "No space left on device")


def test_kill_9_then_rerun_gives_the_identical_store(tmp_path):
    import signal
    import subprocess
    import sys

    # a writer killed after its first chunks, before commit: its temporary store stays behind
    code = (f"import sys, time; sys.path.insert(0, {str(Path(__file__).parent)!r}); import numpy as np; "
            "from test_store_integrity import SHAPE, shard_attrs; from deepflows.store.examples import ShardWriter; "
            f"w = ShardWriter({str(tmp_path / 'run' / 's.zarr')!r}, SHAPE, shard_attrs(), labelled=False, chunk_size=2)\n"
            "for i in range(4): w.add(np.ones(SHAPE, np.uint8), contig='c1', start=i, end=i + 1, ref='A', alts='G', "
            "alt_indices='0', depth=1, allele_depth='1,2')\n"
            "print('written', flush=True); time.sleep(60)")  # fmt: skip
    (tmp_path / "run").mkdir()
    job = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert job.stdout.readline().strip() == "written"
    job.send_signal(signal.SIGKILL)
    job.wait()
    assert [p.name.split(".tmp-")[0] for p in (tmp_path / "run").iterdir()] == ["s.zarr"]  # the temporary
    rerun = make_shard(tmp_path / "run" / "s.zarr")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["s.zarr"]  # the dead run's temporary removed
    fresh = make_shard(tmp_path / "fresh" / "s.zarr")
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(rerun) for p in rerun.rglob("*") if p.is_file())
    assert all((fresh / f).read_bytes() == (rerun / f).read_bytes() for f in files)


def test_call_variants_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch, capsys):
    from test_call_variants import tiny_model

    from deepflows.genomics.examples.pileup_image import CHANNELS

    shape = (10, 21, len(CHANNELS))
    attrs = {**shard_attrs(), "channels": list(CHANNELS), "shape": list(shape)}
    shard = tmp_path / "in" / "s.zarr"
    shard.parent.mkdir()
    with ShardWriter(shard, shape, attrs, labelled=False, chunk_size=2) as writer:
        writer.add(np.zeros(shape, np.uint8), contig="c1", start=1, end=2, ref="A", alts="G", alt_indices="0",
                   depth=1, allele_depth="1,2")  # fmt: skip
        writer.commit()
    model = tiny_model(tmp_path / "in" / "model", shape=shape)
    (tmp_path / "out").mkdir()
    monkeypatch.setattr(zarr.Group, "create_array", _disk_full)
    assert main(["call-variants", "--examples", str(shard), "--model", str(model),
                 "--out", str(tmp_path / "out" / "probs.zarr")]) == 1  # fmt: skip
    err = last_error(capsys)
    assert err[-1].startswith("deepflows call-variants: error: ") and "No space left" in err[-1], err
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------------- shard sets


def three_shards(tmp_path: Path, odd: int | None = None, **changes) -> list[Path]:
    return [make_shard(tmp_path / f"s{i}.zarr", i, 3, **(changes if i == odd else {})) for i in range(3)]


@pytest.mark.parametrize(
    "odd, changes, expected",
    [
        (1, {"region_plan": {"intervals": 1, "bases": 1000, "sha256": "plan-b"}},
         "s1.zarr: made with a region plan of 1 interval(s), 1000 bp (sha256 plan-b) but shard 0/3 ({s0}) with a "
         "region plan of 1 interval(s), 3000 bp (sha256 plan-a)"),
        (2, {"realign": True}, "s2.zarr: made with realign=True but shard 0/3 ({s0}) with realign=False"),
        (0, {"realign": True}, "s0.zarr: made with realign=True but shard 1/3 ({s1}) with realign=False"),
        (1, {"seed": 7}, "s1.zarr: made with seed=7 but shard 0/3 ({s0}) with seed=2018"),
        (2, {"reference": {"path": "other.fa", "size": 1, "sha256": "ref-b"}},
         "s2.zarr: made with reference other.fa (sha256 ref-b) but shard 0/3 ({s0}) with reference ref.fa "
         "(sha256 ref-a)"),
        (1, {"reads": {"path": "r.bam", "size": 1, "sha256": "reads-b"}}, "s1.zarr: made with reads r.bam"),
        (2, {"min_base_quality": 20}, "s2.zarr: made with min_base_quality=20 but shard 0/3"),
        (1, {"channels": ["a", "c"]}, "s1.zarr: made with channels=['a', 'c'] but shard 0/3"),
        (2, {"deepflows_version": "0.0.1"}, "s2.zarr: made with deepflows_version=0.0.1 but shard 0/3"),
        (1, {"shard_count": 6}, "s1.zarr: made with shard count=6 but shard 0/3 ({s0}) with shard count=3"),
    ],
)  # fmt: skip
def test_a_shard_set_must_agree_on_how_its_examples_were_made(tmp_path, capsys, odd, changes, expected):
    shards = three_shards(tmp_path, odd, **changes)
    expected = expected.format(s0=shards[0], s1=shards[1])
    with pytest.raises(UserError) as err:
        check_shard_set(shards)
    assert str(err.value).startswith(str(shards[odd])) and expected in str(err.value), str(err.value)
    assert main(["check-shards", *map(str, shards), "--out", str(tmp_path / "m.json")]) == 2
    assert len(last_error(capsys)) == 1 and not (tmp_path / "m.json").exists()


def test_a_source_at_another_path_is_the_same_source(tmp_path):
    shards = three_shards(tmp_path, 1, reference={"path": "/elsewhere/ref.fa", "size": 1, "sha256": "ref-a"})
    assert [p for p, _ in check_shard_set(shards)] == shards


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    d = tmp_path_factory.mktemp("sample")
    ref = random_reference(d / "ref.fa", {"chrT": 3000}, seed=5)["chrT"]
    other = {"A": "C", "C": "G", "G": "T", "T": "A"}

    def het_snp(site):
        def edit(i, start, seq, cigar):
            if i % 2 and start <= site < start + len(seq):
                seq = seq[: site - start] + other[seq[site - start]] + seq[site - start + 1 :]
            return seq, cigar

        return edit

    reads = []
    for site in (500, 1500, 2500):
        reads += tile_reads(ref, site - 300, site + 300, 20, 100, f"r{site}-", edit=het_snp(site))
    return {"ref": d / "ref.fa", "bam": write_bam(d / "reads.bam", {"chrT": 3000}, reads)}


def _make_examples(sample, out, *args) -> Path:
    assert main(["make-examples", "--reads", str(sample["bam"]), "--ref", str(sample["ref"]), "--out", str(out),
                 *args]) == 0  # fmt: skip
    return out


def test_shards_of_other_runs_are_refused_end_to_end(sample, tmp_path, capsys):
    """Cases 9c and 9d with make-examples itself: shard 1/2 of a run over another region, or without realignment."""
    s0 = _make_examples(sample, tmp_path / "s0.zarr", "--regions", "chrT", "--shard", "0/2")
    s1 = _make_examples(sample, tmp_path / "s1.zarr", "--regions", "chrT", "--shard", "1/2")
    assert [p for p, _ in check_shard_set([s1, s0])] == [s0, s1]
    assert all(zarr.open_group(str(s)).attrs["n_examples"] > 0 for s in (s0, s1))
    plan = zarr.open_group(str(s0)).attrs["region_plan"]
    assert plan["intervals"] == 1 and plan["bases"] == 3000 and plan == zarr.open_group(str(s1)).attrs["region_plan"]
    other = _make_examples(sample, tmp_path / "other.zarr", "--regions", "chrT:1-2000", "--shard", "1/2")
    assert main(["check-shards", str(s0), str(other), "--out", str(tmp_path / "m.json")]) == 2
    assert last_error(capsys)[-1].startswith(f"deepflows check-shards: error: {other}: made with a region plan of "
                                             "1 interval(s), 2000 bp")  # fmt: skip
    plain = _make_examples(sample, tmp_path / "plain.zarr", "--regions", "chrT", "--shard", "1/2", "--no-realign")
    assert main(["check-shards", str(s0), str(plain), "--out", str(tmp_path / "m.json")]) == 2
    assert last_error(capsys)[-1] == (f"deepflows check-shards: error: {plain}: made with realign=False but shard "
                                      f"0/2 ({s0}) with realign=True")  # fmt: skip


def test_region_plan_is_a_digest_of_the_whole_region_list():
    from deepflows.genomics.io.regions import Interval

    plan = region_plan([Interval("c1", 0, 100), Interval("c2", 10, 20)])
    assert plan["intervals"] == 2 and plan["bases"] == 110 and len(plan["sha256"]) == 64
    assert plan != region_plan([Interval("c1", 0, 100), Interval("c2", 10, 21)])
    assert json.dumps(plan, sort_keys=True) == json.dumps(region_plan([Interval("c1", 0, 100), Interval("c2", 10, 20)]),
                                                          sort_keys=True)  # fmt: skip
