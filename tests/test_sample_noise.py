"""The sample's homopolymer noise: measured by make-examples over the whole run (every shard the same value),
carried per example by shuffle-examples, read by a read_set model with `sample_noise`, whose weights for it start
at zero (so a fine-tune from a model without it starts as that model), and given to it by call-variants."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from synthetic import Read, write_bam
from test_call_variants import call, make_shard
from test_labels import write_fasta
from test_train import CHANNELS, SHAPE, init_config, toy_shard

from deepflows.cli import main
from deepflows.errors import UserError
from deepflows.genomics.examples.sample_noise import KEPT, MIN_RUNS, measure
from deepflows.genomics.io.regions import Interval
from deepflows.nn.model_dir import save_model
from deepflows.nn.models import build_model

FLANK = "ACGTGCATGCAGTCAGTGCATCGATGCATGCTAGCTAGCATCGATCGTAGCTAGCATCGATGCATCG"  # no run of 3
CONTIG = "chrT"
RUNS = 24
SHORTER = [i % 3 for i in range(RUNS - 2)] + [6, 5]  # of 10 reads per run; the last two runs look like hets


def noisy_sample(tmp_path, runs: int = RUNS):
    """A reference with `runs` homopolymers of 9 bases, ten reads over each, SHORTER[k] of them a base short there."""
    reference = FLANK + "".join("ACGT"[k % 4] * 9 + FLANK for k in range(runs))
    fasta = write_fasta(tmp_path / "ref.fa", {CONTIG: reference})
    reads = []
    for k, shorter in enumerate(SHORTER[:runs]):
        run = len(FLANK) + k * (9 + len(FLANK))
        start = run - 30
        for i in range(10):
            if i < shorter:
                seq = reference[start:run] + reference[run + 1 : run + 40]
                reads.append(Read(f"r{k}-{i}", start, seq, [(0, run - start), (2, 1), (0, 39)]))
            else:
                reads.append(Read(f"r{k}-{i}", start, reference[start : run + 40], [(0, run + 40 - start)]))
    bam = write_bam(tmp_path / "reads.bam", {CONTIG: len(reference)}, reads)
    return fasta, bam, reference


def test_the_noise_is_the_trimmed_mean_share_of_reads_with_a_length_change(tmp_path):
    import pysam

    fasta, bam, reference = noisy_sample(tmp_path)
    shares = np.sort(np.array(SHORTER) / 10)
    with pysam.FastaFile(str(fasta)) as ref, pysam.AlignmentFile(str(bam)) as reads:
        got = measure(reads, bam, ref, [Interval(CONTIG, 0, len(reference))])
        # the two het-like runs are the highest tenth, left out
        assert got == {"homopolymer_length_error": pytest.approx(shares[: int(RUNS * KEPT)].mean(), abs=1e-5),
                       "runs": RUNS, "min_run": 7}  # fmt: skip
        assert got["homopolymer_length_error"] == pytest.approx(1 / 3 * (0 + 0.1 + 0.2), abs=0.01)
        # a region shorter than a window is measured over the window around it: here the whole contig
        assert measure(reads, bam, ref, [Interval(CONTIG, 100, 200)]) == got
    # too few runs: no value, and how many there were
    (tmp_path / "few").mkdir()
    fasta, bam, reference = noisy_sample(tmp_path / "few", runs=MIN_RUNS - 1)
    with pysam.FastaFile(str(fasta)) as ref, pysam.AlignmentFile(str(bam)) as reads:
        assert measure(reads, bam, ref, [Interval(CONTIG, 0, len(reference))]) == {
            "homopolymer_length_error": None, "runs": MIN_RUNS - 1, "min_run": 7}


def test_every_shard_records_the_whole_runs_noise(tmp_path):
    fasta, bam, reference = noisy_sample(tmp_path)
    noise = []
    for shard in ("0/2", "1/2"):
        out = tmp_path / f"examples-{shard[0]}.zarr"
        assert main(["make-examples", "--reads", str(bam), "--ref", str(fasta), "--regions",
                     f"{CONTIG}:1-{len(reference)}", "--shard", shard, "--out", str(out)]) == 0  # fmt: skip
        noise.append(dict(zarr.open_group(str(out), mode="r").attrs)["sample_noise"])
    assert noise[0] == noise[1] and noise[0]["runs"] == RUNS and noise[0]["homopolymer_length_error"] > 0


def labelled_store(tmp_path, noises):
    """A training store from one toy shard per value in `noises` (None: a shard without the measure)."""
    from deepflows.store.shuffle import shuffle_examples

    shards = []
    for k, value in enumerate(noises):
        measured = {"sample_noise": {"homopolymer_length_error": value, "runs": 50, "min_run": 7}} if value else {}
        shards.append(toy_shard(tmp_path / f"toy-{k}.zarr", 200, regions=[f"c1:1-2000 ({k})"], **measured))
    out = tmp_path / "mixed.zarr"
    shuffle_examples(shards, out, tune_regions=["c1:1-400"], seed=1, bucket_size=128, chunk_size=16)
    return out


def test_shuffle_carries_each_shards_noise_to_its_examples(tmp_path):
    from deepflows.nn.data import open_split

    store = labelled_store(tmp_path, [0.05, None])
    split = open_split(store, "train")
    counts = {"0.05": int(np.sum(split.noise == np.float32(0.05))), "nan": int(np.isnan(split.noise).sum())}
    assert counts["0.05"] > 0 and counts["nan"] > 0 and sum(counts.values()) == split.n
    # a model that reads the noise refuses a store where some examples lack it, in one line
    from deepflows.nn.train import train

    cfg = init_config(None)
    del cfg["init"]
    cfg["model"] = {"architecture": "read_set", "options": {"widths": [4, 8], "read_features": 8, "hidden": 8,
                                                            "sample_noise": True}}  # fmt: skip
    with pytest.raises(UserError, match=r"train: \d+ of \d+ examples have no sample noise"):
        train(store, cfg, tmp_path / "run")


OPTIONS = {"widths": [4, 8], "read_features": 8, "hidden": 8, "reference_rows": 2}
UNKNOWN = {**OPTIONS, "sample_noise": True, "unknown_noise": True}


def test_the_noise_weights_start_at_zero():
    images = np.random.default_rng(0).integers(0, 255, (3, *SHAPE), dtype=np.uint8)
    plain = build_model("read_set", OPTIONS, SHAPE[-1], 0)
    reading = build_model("read_set", {**OPTIONS, "sample_noise": True}, SHAPE[-1], 0)
    plain.eval(), reading.eval()
    noise = np.array([0.0, 0.1, 0.3], np.float32)
    np.testing.assert_array_equal(np.asarray(reading(images, noise)), np.asarray(plain(images)))
    reading.zero_init_noise[...] = np.linspace(-1, 1, 8, dtype=np.float32)
    assert not np.allclose(reading(images, noise), reading(images, np.zeros(3, np.float32)))


def test_a_fine_tune_adds_the_noise_to_a_model_without_it(tmp_path):
    from test_train import checkpoint_params, model_weights

    from deepflows.nn.train import train

    source = tmp_path / "plain"
    save_model(source, build_model("read_set", OPTIONS, SHAPE[-1], 0),
               {"architecture": "read_set", "options": OPTIONS, "input_shape": list(SHAPE), "channels": CHANNELS})  # fmt: skip
    store = labelled_store(tmp_path, [0.05, 0.12])
    cfg = init_config(source)
    cfg["model"] = {"architecture": "read_set", "options": {**OPTIONS, "sample_noise": True}}
    train(store, cfg, tmp_path / "run", stop_at=1)
    # after one update at learning rate 0: the source's weights, and the new ones at zero
    got, want = checkpoint_params(tmp_path / "run", 1), model_weights(source)
    assert set(got) - set(want) == {"[zero_init_noise]"} and not got["[zero_init_noise]"].any()
    assert all(np.array_equal(got[k], want[k]) for k in want)
    # the other way round is refused: a model that reads the noise does not start one that does not
    reading = tmp_path / "reading"
    save_model(reading, build_model("read_set", {**OPTIONS, "sample_noise": True}, SHAPE[-1], 0),
               {"architecture": "read_set", "options": {**OPTIONS, "sample_noise": True}, "input_shape": list(SHAPE),
                "channels": CHANNELS})  # fmt: skip
    cfg = init_config(reading)
    cfg["model"] = {"architecture": "read_set", "options": OPTIONS}
    with pytest.raises(UserError, match="its options.sample_noise true differs from the config's model.options."
                                        "sample_noise false"):  # fmt: skip
        train(store, cfg, tmp_path / "run2")
    # a model that reads the noise starts one that may also go without it, as itself
    cfg = init_config(reading)
    cfg["model"] = {"architecture": "read_set", "options": UNKNOWN}
    train(store, cfg, tmp_path / "run3", stop_at=1)
    got, want = checkpoint_params(tmp_path / "run3", 1), model_weights(reading)
    assert set(got) - set(want) == {"[zero_init_unknown_noise]"} and not got["[zero_init_unknown_noise]"].any()


def test_call_variants_gives_the_model_the_runs_noise(tmp_path, capsys):
    from test_call_variants import EXAMPLES
    from test_call_variants import SHAPE as CALL_SHAPE

    from deepflows.genomics.calling.call_variants import open_probs
    from deepflows.genomics.examples.pileup_image import CHANNELS as PILEUP_CHANNELS

    model = build_model("read_set", {**OPTIONS, "sample_noise": True}, CALL_SHAPE[-1], 0)
    model.zero_init_noise[...] = np.linspace(-3, 3, 8, dtype=np.float32)
    meta = {"architecture": "read_set", "options": {**OPTIONS, "sample_noise": True},
            "input_shape": list(CALL_SHAPE), "channels": list(PILEUP_CHANNELS)}  # fmt: skip
    model_dir = tmp_path / "model"
    save_model(model_dir, model, meta)
    rows = range(len(EXAMPLES))
    bare = make_shard(tmp_path / "bare.zarr", 0, 1, rows)
    assert call([bare], model_dir, tmp_path / "none.zarr") == 2
    err = capsys.readouterr().err
    assert "bare.zarr: no sample noise" in err and "reads it" in err and not (tmp_path / "none.zarr").exists()
    probs = {}
    for value in (0.0, 0.2):
        shard = make_shard(tmp_path / f"noise-{value}.zarr", 0, 1, rows)
        zarr.open_group(str(shard), mode="r+").attrs["sample_noise"] = {"homopolymer_length_error": value,
                                                                        "runs": 40, "min_run": 7}  # fmt: skip
        out = tmp_path / f"probs-{value}.zarr"
        assert call([shard], model_dir, out) == 0
        group = open_probs(out)
        assert json.loads(json.dumps(dict(group.attrs)))["model"]["sample_noise"] == value
        probs[value] = np.asarray(group["probs"][:])
    assert not np.allclose(probs[0.0], probs[0.2])


def test_an_unknown_noise_gets_its_own_weights_which_start_at_zero():
    import jax.numpy as jnp
    from flax import nnx

    images = np.random.default_rng(0).integers(0, 255, (3, *SHAPE), dtype=np.uint8)
    plain = build_model("read_set", OPTIONS, SHAPE[-1], 0)
    model = build_model("read_set", UNKNOWN, SHAPE[-1], 0)
    plain.eval(), model.eval()
    unknown = np.full(3, np.nan, np.float32)
    np.testing.assert_array_equal(np.asarray(model(images, unknown)), np.asarray(plain(images)))
    model.zero_init_unknown_noise[...] = np.linspace(-1, 1, 8, dtype=np.float32)
    got = np.asarray(model(images, unknown))
    assert np.isfinite(got).all() and not np.allclose(got, model(images, np.zeros(3, np.float32)))
    # a known value does not touch the unknown weights; an unknown one passes no NaN into the gradient
    model.train()
    mixed = jnp.asarray([0.1, np.nan, 0.0], jnp.float32)
    grads = nnx.grad(lambda m: jnp.sum(m(images, mixed)))(model)
    assert all(np.isfinite(np.asarray(g.get_value())).all() for _, g in nnx.to_flat_state(grads))
    with pytest.raises(UserError, match="unknown_noise needs sample_noise"):
        build_model("read_set", {**OPTIONS, "unknown_noise": True}, SHAPE[-1], 0)


def test_noise_dropout_hides_a_share_of_each_batch_as_a_function_of_the_step(tmp_path):
    from deepflows.config import ConfigError
    from deepflows.nn.train import PileupTask, load_train_config

    store = labelled_store(tmp_path, [0.05, None])  # half the examples have no noise: allowed with unknown_noise
    cfg = init_config(None)
    del cfg["init"]
    cfg["model"] = {"architecture": "read_set", "options": UNKNOWN}
    cfg["training"]["noise_dropout"] = 0.5
    task = PileupTask(store, load_train_config(cfg))
    hidden = [np.isnan(noise) for _, (_, _, noise) in zip(range(20), task.batches(0))]
    measured = ~np.isnan(np.concatenate([n for _, (_, _, n) in zip(range(20), task.stream.batches(0))]))
    share = np.concatenate(hidden)[measured].mean()  # of the examples that have a value, about half are hidden
    assert 0.35 < share < 0.65
    resumed = [np.isnan(noise) for _, (_, _, noise) in zip(range(10), task.batches(10))]
    assert all(np.array_equal(a, b) for a, b in zip(hidden[10:], resumed))
    cfg["model"]["options"] = {**OPTIONS, "sample_noise": True}
    with pytest.raises(ConfigError, match="training.noise_dropout hides the sample noise from a model that cannot "
                                          "do without it"):
        load_train_config(cfg)


def test_call_variants_calls_a_run_without_noise_with_a_model_that_knows_unknown(tmp_path, capsys, caplog):
    from test_call_variants import EXAMPLES
    from test_call_variants import SHAPE as CALL_SHAPE

    from deepflows.genomics.calling.call_variants import open_probs
    from deepflows.genomics.examples.pileup_image import CHANNELS as PILEUP_CHANNELS

    def saved(name, options):
        model = build_model("read_set", options, CALL_SHAPE[-1], 0)
        if options.get("sample_noise"):
            model.zero_init_noise[...] = np.linspace(-3, 3, 8, dtype=np.float32)
        if options.get("unknown_noise"):
            model.zero_init_unknown_noise[...] = np.linspace(2, -2, 8, dtype=np.float32)
        meta = {"architecture": "read_set", "options": options, "input_shape": list(CALL_SHAPE),
                "channels": list(PILEUP_CHANNELS)}  # fmt: skip
        save_model(tmp_path / name, model, meta)
        return tmp_path / name

    def probs(out):
        group = open_probs(out)
        return np.asarray(group["probs"][:]), json.loads(json.dumps(dict(group.attrs)))["model"]

    knows, needs = saved("knows", UNKNOWN), saved("needs", {**OPTIONS, "sample_noise": True})
    rows = range(len(EXAMPLES))
    bare = make_shard(tmp_path / "bare.zarr", 0, 1, rows)
    measured = make_shard(tmp_path / "measured.zarr", 0, 1, rows)
    zarr.open_group(str(measured), mode="r+").attrs["sample_noise"] = {"homopolymer_length_error": 0.2, "runs": 40,
                                                                       "min_run": 7}  # fmt: skip
    assert call([bare], knows, tmp_path / "unknown.zarr") == 0
    assert "bare.zarr: no sample noise" in caplog.text and "calls with it unknown" in caplog.text
    unknown, attrs = probs(tmp_path / "unknown.zarr")
    assert attrs["sample_noise"] is None and attrs["sample_noise_source"] == "unknown"
    # a value given on the command line is the measured one's equal; unknown can also be asked for
    assert call([measured], knows, tmp_path / "measured-probs.zarr") == 0
    assert call([bare], knows, tmp_path / "given.zarr", "--sample-noise", "0.2") == 0
    assert call([measured], knows, tmp_path / "asked.zarr", "--sample-noise", "unknown") == 0
    (got, attrs), (given, given_attrs) = probs(tmp_path / "measured-probs.zarr"), probs(tmp_path / "given.zarr")
    np.testing.assert_array_equal(got, given)
    assert (attrs["sample_noise_source"], given_attrs["sample_noise_source"]) == ("measured", "given")
    np.testing.assert_array_equal(probs(tmp_path / "asked.zarr")[0], unknown)
    assert not np.allclose(unknown, got)
    # refused in one line, with nothing written
    capsys.readouterr()
    for model, value, words in [(needs, "unknown", "needs the sample noise"),
                                (saved("plain", OPTIONS), "0.1", "does not read the sample noise")]:  # fmt: skip
        assert call([measured], model, tmp_path / "refused.zarr", "--sample-noise", value) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert words in err[-1] and not (tmp_path / "refused.zarr").exists()
    with pytest.raises(SystemExit) as refused:  # argparse's own exit, before any work
        call([measured], knows, tmp_path / "refused.zarr", "--sample-noise", "1.5")
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and "a share of reads in [0, 1]" in err[-1]
    assert not (tmp_path / "refused.zarr").exists()
