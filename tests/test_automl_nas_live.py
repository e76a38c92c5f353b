"""The live architecture search: the durable population store, the asynchronous controller, resuming after a
kill, Large-Scale Evolution's weight inheritance, the command line, Slurm workers, and the report."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from automl_digits import write_separable_digits

from deepflows.automl.nas import cells
from deepflows.automl.nas.live import run_live_search
from deepflows.automl.nas.store import PopulationStore
from deepflows.automl.search.jobs import Pool
from deepflows.errors import UserError

DEEPFLOWS = str(Path(sys.executable).parent / "deepflows")
SETTINGS = {"child": {}, "evolution": {"population": 6, "sample": 3}, "inherit_weights": True,
            "controller": {"hidden": 8, "learning_rate": 0.01, "entropy_weight": 0.01, "baseline_decay": 0.9}}  # fmt: skip


def conv3x3_count(cell, child, seed, weights_in, weights_out):
    """A stand-in child: the reward counts 3x3 convolutions (plus a little seed noise); it records where its
    weights came from, as a trained child would read them."""
    inherited = Path(weights_in).read_text() if weights_in else None
    Path(weights_out).write_text(cells.to_text(cell))
    return {"status": "ok", "reward": sum(op == 3 for op in cell) + (seed % 97) / 1e4, "inherited": inherited}


def search(workdir, algorithm, models, init="random", seed=0, evaluate=conv3x3_count):
    with Pool("inline", 1) as pool:
        return run_live_search(workdir, algorithm, seed, models, SETTINGS, pool, init=init, evaluate=evaluate)


# ----------------------------------------------------------------------------- the store


def test_store_keeps_models_and_the_proposer_state_together(tmp_path):
    store = PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging"})
    first, seed = store.start([3, 0, 3, 1, 0, 1], None, lambda i: 100 + i, {"members": []})
    assert (first, seed) == (0, 100)
    second, _ = store.start([0] * 6, first, lambda i: i, {"members": []})
    store.finish(first, {"status": "ok", "reward": 0.9, "seconds": 1.0}, {"members": ["one"]})
    assert store.proposer_state() == {"members": ["one"]}
    with pytest.raises(RuntimeError, match="evaluated twice"):
        store.finish(first, {"status": "ok", "reward": 0.8}, {"members": []})
    assert store.proposer_state() == {"members": ["one"]}  # the refused finish changed nothing
    store.close()
    again = PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging"})  # a restart: `second` was in flight
    assert again.lost == 1 and again.incarnation == 2
    models = again.models()
    assert [m["status"] for m in models] == ["done", "lost"]
    assert models[0]["seconds"] == 1.0 and models[1]["parent"] == 0
    again.close()


def test_store_refuses_another_search_and_a_broken_file(tmp_path):
    PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging", "seed": 0}).close()
    with pytest.raises(UserError, match="different seed"):
        PopulationStore(tmp_path / "s.sqlite", {"algorithm": "aging", "seed": 1})
    (tmp_path / "bad.sqlite").write_text("not a database" * 100)
    with pytest.raises(UserError, match="bad.sqlite: not a usable search store"):
        PopulationStore(tmp_path / "bad.sqlite", {})


# ----------------------------------------------------------------------------- the controller


@pytest.mark.parametrize("algorithm", ["aging", "non-aging", "random", "reinforce", "pairwise"])
def test_every_algorithm_runs_its_budget_and_gives_the_same_answer_twice(tmp_path, algorithm):
    first = search(tmp_path / "a", algorithm, 20)
    second = search(tmp_path / "b", algorithm, 20)
    assert len(first) == 20 and all(m["status"] == "done" for m in first)
    assert [m["cell"] for m in first] == [m["cell"] for m in second]


def test_evolution_climbs_where_random_search_wanders(tmp_path):
    """On the stand-in reward (number of 3x3 convolutions, at most 6), aging evolution's best after 60 models beats
    random search's on most seeds: the tournament keeps mutating good cells."""
    wins = 0
    for seed in range(5):
        evo = max(m["reward"] for m in search(tmp_path / f"e{seed}", "aging", 60, seed=seed))
        rnd = max(m["reward"] for m in search(tmp_path / f"r{seed}", "random", 60, seed=seed))
        wins += int(evo // 1) > int(rnd // 1)
    assert wins >= 4


def test_hand_seeded_population_starts_from_the_hand_design(tmp_path):
    models = search(tmp_path / "h", "aging", 12, init="hand")
    assert models[0]["cell"] == list(cells.HAND_DESIGNED) and models[0]["parent"] is None
    hand = np.asarray(cells.HAND_DESIGNED)
    for m in models[1 : SETTINGS["evolution"]["population"]]:  # the rest of the first population: one-edge mutants
        assert np.sum(np.asarray(m["cell"]) != hand) == 1 and m["parent"] is None
    with pytest.raises(ValueError, match="seeds a population"):
        search(tmp_path / "r", "random", 2, init="hand")


def test_pairwise_evolution_starts_trivial_and_children_inherit_their_parents_weights(tmp_path):
    models = search(tmp_path / "p", "pairwise", 30)
    population = SETTINGS["evolution"]["population"]
    assert all(m["cell"] == list(cells.TRIVIAL) for m in models[:population])
    children = models[population:]
    assert children and all(m["parent"] is not None for m in children)
    by_id = {m["id"]: m for m in models}
    for child in children:  # each child read its parent's weights file
        assert child["inherited"] == cells.to_text(by_id[child["parent"]]["cell"])
        assert np.sum(np.asarray(child["cell"]) != np.asarray(by_id[child["parent"]]["cell"])) == 1
    aging = search(tmp_path / "a", "aging", 12)
    assert all(m["inherited"] is None for m in aging)  # the other algorithms train from scratch


def failing_sometimes(cell, child, seed, weights_in, weights_out):
    if cell[0] == 4:
        raise FloatingPointError("loss is NaN")
    return conv3x3_count(cell, child, seed, weights_in, weights_out)


def test_a_child_that_raises_is_a_failed_model_not_a_dead_search(tmp_path):
    models = search(tmp_path / "f", "random", 25, evaluate=failing_sometimes)
    failed = [m for m in models if m["status"] == "failed"]
    assert failed and all(m["cell"][0] == 4 and "loss is NaN" in m["error"] for m in failed)
    assert len(models) == 25 and all(m["status"] == "done" for m in models if m["cell"][0] != 4)


# ----------------------------------------------------------------------------- the commands


@pytest.fixture(scope="module")
def nas_settings(tmp_path_factory):
    """Settings whose child (a 2-channel CellNet, 20 steps) trains on 400 separable digits in about a second."""
    import yaml

    d = tmp_path_factory.mktemp("nas")
    write_separable_digits(d / "digits.csv.gz")
    settings = {"child": {"data": str(d / "digits.csv.gz"), "steps": 20, "check_every": 10, "channels": 2,
                          "batch_size": 8, "learning_rate": 0.05}, "evolution": {"population": 4, "sample": 2}}  # fmt: skip
    (d / "nas.yaml").write_text(yaml.safe_dump(settings))
    return d / "nas.yaml"


def nas_search(settings, workdir, out, models, *more):
    return [DEEPFLOWS, "nas-search", "--algorithm", "aging", "--models", str(models), "--settings", str(settings),
            "--workdir", str(workdir), "--out", str(out), *more]  # fmt: skip


def test_killed_controller_resumes_losing_only_the_models_in_flight(tmp_path, nas_settings):
    workdir = tmp_path / "w"
    # a budget the first run cannot reach before the kill, however fast the children train
    search = subprocess.Popen(nas_search(nas_settings, workdir, tmp_path / "m.tsv", 10_000, "--workers", "2"),
                              stderr=subprocess.DEVNULL)  # fmt: skip
    store = workdir / "population.sqlite"
    deadline = time.monotonic() + 240
    done_before = []
    while time.monotonic() < deadline and len(done_before) < 4:
        time.sleep(0.2)
        if store.exists():
            with sqlite3.connect(store, timeout=30) as db:
                try:
                    done_before = db.execute("SELECT id, reward FROM models WHERE status = 'done'").fetchall()
                except sqlite3.OperationalError:  # the file exists a moment before its tables do
                    continue
    assert len(done_before) >= 4, "the search did not finish 4 models in time"
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    with sqlite3.connect(store) as db:
        done_at_kill = db.execute("SELECT id, reward FROM models WHERE status = 'done' ORDER BY id").fetchall()
        in_flight = [row[0] for row in db.execute("SELECT id FROM models WHERE status = 'running'")]
    assert len(in_flight) <= 2  # at most one child per worker
    budget = len(done_at_kill) + 4  # the restart must train 4 more
    subprocess.run(nas_search(nas_settings, workdir, tmp_path / "m.tsv", budget, "--workers", "2"), check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    import pandas as pd

    models = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert (models.status == "done").sum() == budget  # the budget counts finished models
    assert sorted(models.id[models.status == "lost"]) == sorted(in_flight)  # lost: exactly those in flight
    assert models.id.is_unique and models.finish_order.dropna().is_unique  # no model finished twice
    after = dict(zip(models.id, models.reward))
    assert all(after[i] == reward for i, reward in done_at_kill)  # nothing finished before the kill was redone
    assert (models.incarnation == 2).sum() == 4 and set(models.incarnation) == {1, 2}


def test_search_and_report_from_the_command_line(tmp_path, nas_settings):
    for init in ("random", "hand"):
        subprocess.run(nas_search(nas_settings, tmp_path / init, tmp_path / f"aging-{init}.tsv", 6, "--init", init,
                                  "--executor", "inline"), check=True, capture_output=True, timeout=300)  # fmt: skip
    out = tmp_path / "report"
    run = subprocess.run([DEEPFLOWS, "nas-report", "--models", str(tmp_path / "aging-random.tsv"),
                          str(tmp_path / "aging-hand.tsv"), "--settings", str(nas_settings), "--retrain-seeds", "0",
                          "1", "--retrain-steps", "20", "--out", str(out)], capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "progress.png").stat().st_size > 20_000 and (out / "cells.png").stat().st_size > 20_000
    searches = (out / "searches.md").read_text().splitlines()
    assert searches[2].startswith("| aging-random | 6 | 0 | 0 |") and searches[3].startswith("| aging-hand | 6 |")
    retrain = (out / "retrain.md").read_text().splitlines()
    assert len(retrain) == 4 + 3 and retrain[-1].startswith("| hand-designed |")
    assert all(len(line.split(" | ")[6].split()) == 2 for line in retrain[4:])  # two seeds each


@pytest.mark.parametrize("args, message", [
    (["--settings", "{bad}"], "evolution.sample must not exceed evolution.population"),
    (["--settings", "{nodata}"], "child task's MNIST digits (child.data) not found"),
    (["--init", "hand", "--algorithm", "random"], "--init hand seeds a population"),
    (["--out", "{tmp}/m.csv"], "name it *.tsv"),
])  # fmt: skip
def test_search_cli_bad_input_is_one_line(tmp_path, nas_settings, args, message):
    (tmp_path / "bad.yaml").write_text("evolution: {population: 2, sample: 3}\n")
    (tmp_path / "nodata.yaml").write_text(f"child: {{data: {tmp_path}/none.csv.gz}}\n")
    subs = {"bad": tmp_path / "bad.yaml", "nodata": tmp_path / "nodata.yaml", "tmp": tmp_path}
    command = nas_search(nas_settings, tmp_path / "w", tmp_path / "m.tsv", 2) + [a.format(**subs) for a in args]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode != 0 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "m.tsv").exists()


@pytest.mark.slurm
def test_children_train_as_slurm_jobs(tmp_path, monkeypatch, nas_settings, slurm_cluster):
    monkeypatch.chdir(tmp_path)
    run = subprocess.run(nas_search(nas_settings, tmp_path / "w", tmp_path / "m.tsv", 3, "--executor", "slurm",
                                    "--workers", "1", "--slurm-memory", "2GB", "--slurm-walltime", "00:10:00"),
                         capture_output=True, text=True, timeout=400)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:] + slurm_cluster.log_tails()
    assert any(job["name"] == "dask-worker" for job in slurm_cluster.jobs())
    import pandas as pd

    models = pd.read_csv(tmp_path / "m.tsv", sep="\t")
    assert list(models.status) == ["done"] * 3 and models.reward.between(0, 1).all()


def test_snakemake_target_runs_comparison_searches_and_report(tmp_path, nas_settings):
    import yaml

    root = Path(__file__).resolve().parents[1]
    config = tmp_path / "automl.yaml"
    nas = {"settings": str(nas_settings), "searches": [{"algorithm": "pairwise"}], "models": 6,
           "retrain_seeds": [0], "comparison": {"runs": 2, "budget": 20, "hpolib_runs": 1, "tune_runs": 1}}  # fmt: skip
    config.write_text(yaml.safe_dump({"automl": {"nas": nas}}))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # one evaluation worker: one compilation of the child program
    command = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "automl_nas", "--cores", "1",
               "--set-threads", "nas_search=1", "--configfile", str(config)]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results/automl/nas"
    assert "| pairwise-random-s0 | 6 |" in (results / "report/searches.md").read_text()
    assert (results / "comparison/curves.png").stat().st_size > 20_000
    table = (results / "comparison/table.md").read_text()
    assert "| nasbench201 | cifar100 | aging | 2 | 20 |" in table
    assert (results / "state/pairwise-random-s0/weights").is_dir()  # Large-Scale Evolution kept weights to inherit
