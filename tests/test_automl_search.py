"""Neural Optimizer Search: the grammar, the rule interpreter, the many-runs trainer, the child task, the
proposers, the durable search (cache, resume), the report, and the Slurm pool."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from automl_digits import write_separable_digits

from deepflows.automl import grammar
from deepflows.automl.grammar import RuleError, parse

DEEPFLOWS = str(Path(sys.executable).parent / "deepflows")
TINY = {"batch": 4, "child": {"steps": 20, "check_every": 10, "learning_rates": [0.01, 0.1], "batch_size": 16},
        "evolution": {"population": 4, "sample": 2}}  # fmt: skip


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small MNIST-format CSV whose classes are separable."""
    return write_separable_digits(tmp_path_factory.mktemp("digits") / "digits.csv.gz")


@pytest.fixture(scope="module")
def settings(digits):
    from deepflows.automl.search.settings import load_settings

    return {**load_settings(None), **{k: v for k, v in TINY.items() if k != "child"},
            "child": {**load_settings(None)["child"], **TINY["child"], "data": str(digits)},
            "evolution": {**load_settings(None)["evolution"], **TINY["evolution"]}}  # fmt: skip


# ----------------------------------------------------------------------------- grammar


@pytest.mark.parametrize("text, units", [("exp(sign(g)*sign(m))*g", 2), ("(1+sign(g)*sign(m))*g", 3),
                                         ("exp(ld*sign(g)*sign(m))*g", 3), ("g", 1), ("adam", 1),
                                         ("clip(g,1e-4)-drop(m,0.3)", 1), ("g-(-m)", 2), ("(-g)^2", 2)])  # fmt: skip
def test_rules_read_and_write_back(text, units):
    rule = parse(text, units)
    assert str(rule) == text and rule.units == units
    assert parse(str(rule), 4).expression() == rule.expression()


def test_random_rules_round_trip_through_text():
    rng = np.random.default_rng(1)
    for _ in range(300):
        rule = grammar.sample(rng, 3)
        again = parse(str(rule), 3)
        assert str(again) == str(rule)


def test_paper_rules_as_units():
    # PowerSign: o1 = sign(g) * sign(m); update = exp(o1) * g
    ops = grammar.OPERANDS
    assert parse("exp(sign(g)*sign(m))*g", 2).tokens == (
        (ops.index("sign(g)"), ops.index("sign(m)"), 0, 0, grammar.BINARY.index("mul")),
        (len(ops), ops.index("g"), grammar.UNARY.index("exp"), 0, grammar.BINARY.index("mul")))


@pytest.mark.parametrize("text, message", [("g*q", "unknown operand 'q'"), ("g*3", "unknown constant 3"),
                                           ("(1+sign(g)*sign(m))*g", "needs 3 units, the grammar has 2"),
                                           ("tanh(g)", "unknown function tanh"), ("g+", "incomplete"),
                                           ("g)", "unexpected ')'"), ("clip(g,0.2)", "unknown function clip")])  # fmt: skip
def test_bad_rules_say_what_is_wrong(text, message):
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text, 2)


def test_token_ranges_are_checked():
    with pytest.raises(RuleError, match="operand 21 out of range"):
        grammar.Rule.from_array([[21, 0, 0, 0, 0]])


# ----------------------------------------------------------------------------- interpreter


def _updates(text, grads, params, lr=0.1, steps=None):
    import jax.numpy as jnp

    from deepflows.automl.interpreter import rule_transform

    tx = rule_transform(jnp.asarray(parse(text, 3).array), lr, 100.0)
    state = tx.init(params)
    out = []
    for g in grads:
        u, state = tx.update(g, state, params)
        out.append(np.asarray(u))
    return out


def test_interpreter_gradient_descent_and_adam():
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)
    grads = [jnp.asarray(rng.standard_normal(5), jnp.float32) for _ in range(4)]
    params = jnp.zeros(5)
    for u, g in zip(_updates("g", grads, params), grads):
        np.testing.assert_allclose(u, -0.1 * np.asarray(g), rtol=1e-6)
    adam = optax.adam(0.1, eps=1e-8)
    state = adam.init(params)
    for u, g in zip(_updates("adam", grads, params), grads):
        expected, state = adam.update(g, state)
        np.testing.assert_allclose(u, np.asarray(expected), rtol=1e-5)


def test_interpreter_powersign_by_hand():
    import jax.numpy as jnp

    g1, g2 = np.array([1.0, -2.0, 0.5]), np.array([-1.0, -1.0, 3.0])
    out = _updates("exp(sign(g)*sign(m))*g", [jnp.asarray(g1, jnp.float32), jnp.asarray(g2, jnp.float32)],
                   jnp.zeros(3))  # fmt: skip
    # step 1: m = g1, signs agree everywhere; step 2: m = 0.9 * 0.1 * g1 + 0.1 * g2 -> [0.0, -0.28, 0.345] (the
    # bias correction does not change signs): agree, agree, agree except the first (m = -0.01 < 0, g < 0: agree)
    m2 = 0.9 * 0.1 * g1 + 0.1 * g2
    np.testing.assert_allclose(out[0], -0.1 * np.e * g1, rtol=1e-5)
    np.testing.assert_allclose(out[1], -0.1 * np.exp(np.sign(g2) * np.sign(m2)) * g2, rtol=1e-5)


def test_interpreter_decay_operand_falls_over_the_run():
    import jax.numpy as jnp

    ones = [jnp.ones(2, jnp.float32)] * 3
    out = _updates("ld*g", ones, jnp.zeros(2))  # decay_steps 100: ld = 1, 0.99, 0.98
    np.testing.assert_allclose([u[0] for u in out], [-0.1, -0.099, -0.098], rtol=1e-5)


# ----------------------------------------------------------------------------- trainer and child


def test_child_scores_rules_and_fails_degenerate_ones_fast(settings):
    from deepflows.automl.search.child import evaluate_rule

    child = settings["child"]
    good = evaluate_rule("exp(sign(g)*sign(m))*g", child)
    assert good["status"] == "ok" and good["reward"] > 0.5 and good["learning_rate"] in child["learning_rates"]
    again = evaluate_rule("exp(sign(g)*sign(m))*g", child)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in good.items() if k != "seconds"}
    stuck = evaluate_rule("0.1*w", child)
    assert (stuck["status"], stuck["reward"], stuck["steps"]) == ("no progress", 0.0, child["check_every"])
    blown = evaluate_rule("exp(exp(exp(2)))", child)
    assert blown["status"] == "not finite" and blown["steps"] == child["check_every"]


def test_trainer_vmaps_runs_with_their_own_learning_rates(digits):
    import optax

    from deepflows.automl.tasks.mnist import MnistTask
    from deepflows.automl.trainer import OK, train_many

    task = MnistTask(digits, batch_size=16)
    runs = train_many(task, _sgd, {"lr": np.array([0.0, 0.1])}, [0, 0], 20, eval_every=10, split="validation")
    assert runs.step.tolist() == [10, 20] and runs.metric.shape == (2, 2)
    assert runs.status.tolist() == [2, OK]  # lr 0 learns nothing: no progress
    assert np.isnan(runs.metric[0]).all() and runs.final[1] > 0.3
    assert isinstance(optax.sgd(0.1), optax.GradientTransformation)


def _sgd(h):
    import optax

    return optax.sgd(h["lr"])


def test_mnist_splits_are_stratified_and_disjoint(digits):
    from deepflows.automl.tasks.mnist import read_digits, split_indices

    _, labels = read_digits(digits)
    parts = split_indices(labels, {"train": 0.8, "validation": 0.2})
    assert len(parts["train"]) == 320 and len(parts["validation"]) == 80
    assert not set(parts["train"]) & set(parts["validation"])
    assert np.bincount(labels[parts["validation"]]).tolist() == [8] * 10


def test_bad_digits_file_is_one_line(tmp_path):
    from deepflows.automl.tasks.mnist import read_digits
    from deepflows.errors import UserError

    bad = tmp_path / "bad.csv.gz"
    with gzip.open(bad, "wt") as handle:
        handle.write("1,2,3\n")
    with pytest.raises(UserError, match="expected rows of 785 numbers"):
        read_digits(bad)


# ----------------------------------------------------------------------------- search, cache, resume


def _search(tmp_path, settings, algorithm, rules, name="s", cache="cache.sqlite"):
    from deepflows.automl.search.cache import EvaluationCache
    from deepflows.automl.search.child import fingerprint
    from deepflows.automl.search.driver import run_search
    from deepflows.automl.search.jobs import Pool

    cache = EvaluationCache(tmp_path / cache, fingerprint(settings["child"]))
    try:
        with Pool("inline") as pool:
            return run_search(tmp_path / name, algorithm, 3, rules, settings, pool, cache)
    finally:
        cache.close()


def _rules(history):
    return [(h["rule"], h["reward"]) for h in history]


@pytest.mark.parametrize("algorithm", ["random", "evolution", "controller"])
def test_interrupted_search_ends_as_an_uninterrupted_one(tmp_path, settings, algorithm):
    whole = _search(tmp_path, settings, algorithm, 16, "whole")
    _search(tmp_path, settings, algorithm, 8, "parts")  # "killed" after two batches
    resumed = _search(tmp_path, settings, algorithm, 16, "parts")
    assert _rules(resumed) == _rules(whole) and len(whole) == 16
    assert not any(h["evaluated"] for h in resumed)  # the second and third runs were served by the cache
    assert all(h["algorithm"] == algorithm and h["seed"] == 3 for h in whole)


def test_evolution_keeps_the_population_and_mutates_the_tournament_winner():
    from deepflows.automl.search.proposers import Evolution

    evo = Evolution(lambda rng: [int(rng.integers(100))], lambda c, rng: [c[0] + 1000], population=3, sample=3)
    rng = np.random.default_rng(0)
    first = evo.propose(3, rng)
    evo.observe(first, [0.1, 0.9, 0.5])
    assert evo.propose(2, rng) == [[first[1][0] + 1000]] * 2  # sample = population: the best is always picked
    evo.observe([[7], [8]], [0.0, 0.0])
    assert [m["candidate"] for m in evo.members] == [first[2], [7], [8]]  # the two oldest died
    worst = Evolution(evo.draw, evo.mutate, population=3, sample=3, aging=False)
    worst.observe([[1], [2], [3], [4]], [0.5, 0.1, 0.9, 0.7])
    assert [m["candidate"] for m in worst.members] == [[1], [3], [4]]


def test_controller_learns_to_prefer_rewarded_tokens():
    from deepflows.automl.search.controller import RuleController

    controller = RuleController([4, 3], (1, 2), hidden=8, learning_rate=0.05, entropy_weight=0.0,
                                baseline_decay=0.5, seed=0)  # fmt: skip
    rng = np.random.default_rng(0)
    for _ in range(60):
        batch = controller.propose(16, rng)
        controller.observe(batch, [1.0 if c[0][0] == 2 else 0.0 for c in batch])
    assert np.mean([c[0][0] == 2 for c in controller.propose(64, rng)]) > 0.8
    restored = RuleController([4, 3], (1, 2), hidden=8, learning_rate=0.05, entropy_weight=0.0,
                              baseline_decay=0.5, seed=0)  # fmt: skip
    restored.restore(json.loads(json.dumps(controller.state())))
    assert restored.propose(8, rng) == controller.propose(8, rng)


def test_resuming_another_search_is_refused(tmp_path, settings):
    from deepflows.errors import UserError

    _search(tmp_path, settings, "random", 4, "w")
    with pytest.raises(UserError, match="holds another search"):
        _search(tmp_path, settings, "evolution", 4, "w")


def test_sign_agreement_rules_are_recognised():
    from deepflows.automl.search.families import family

    assert family(parse("exp(sign(g)*sign(m))*g", 3)) == "PowerSign-like (g)"
    assert family(parse("(1+sign(g)*sign(m))*g", 3)) == "AddSign-like (g)"
    assert family(parse("2^(sign(m)*sign(g))*adam", 3)) == "PowerSign-like (adam)"
    assert family(parse("g", 3)) == family(parse("sign(m)*g", 3)) == family(parse("noise*g", 3)) == ""
    assert family(parse("rmsprop*exp(cd)", 3)) == family(parse("2*g", 3)) == ""  # one scale, agreeing or not
    assert family(parse("sign(adam)+sign(g)", 3)) == "AddSign-like (sign(g))"


# ----------------------------------------------------------------------------- CLI and report


def test_search_and_report_from_the_command_line(tmp_path, settings):
    import yaml

    from deepflows.automl.search.driver import write_history

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(settings))
    subprocess.run([DEEPFLOWS, "nos-search", "--algorithm", "random", "--rules", "8", "--settings",
                    str(tmp_path / "s.yaml"), "--workdir", str(tmp_path / "random"), "--executor", "inline",
                    "--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "random.tsv")],
                   check=True, capture_output=True)  # fmt: skip
    write_history(_search(tmp_path, settings, "evolution", 8, "evolution"), tmp_path / "evolution.tsv")
    out = tmp_path / "report"
    subprocess.run([DEEPFLOWS, "nos-report", "--histories", str(tmp_path / "random.tsv"),
                    str(tmp_path / "evolution.tsv"), "--settings", str(tmp_path / "s.yaml"), "--out", str(out),
                    "--reevaluate-seeds", "--references", "--top", "3"], check=True, capture_output=True)  # fmt: skip
    assert (out / "curves.png").stat().st_size > 10_000
    table = (out / "top_rules.md").read_text().splitlines()
    assert len(table) == 2 + 3 and "re-measured, seeds -" in table[0]
    searches = (out / "searches.md").read_text()
    assert "| random | 3 | 8 |" not in searches and "| random | 0 | 8 |" in searches and "| evolution | 3 | 8 |" in searches


def test_top_rules_are_remeasured_with_other_seeds(tmp_path, settings):
    import pandas as pd

    from deepflows.automl.search.jobs import Pool
    from deepflows.automl.search.report import measure, references_markdown, top_rules

    history = pd.DataFrame(_search(tmp_path, settings, "random", 8))
    with Pool("inline") as pool:
        table = top_rules(history, 2, settings, [1, 2], pool, tmp_path / "cache.sqlite")
    assert table["remeasured_seeds"].tolist() == [2, 2]
    assert table["reward"].is_monotonic_decreasing and table["rule"].is_unique
    assert np.isfinite(table["remeasured_mean"]).all()
    with Pool("inline") as pool:
        measured = measure(["g", "0.1*w"], [0, 1], settings, pool, tmp_path / "cache.sqlite")
    assert measured["0.1*w"] == [0.0, 0.0] and 0 < measured["g"][0] <= 1
    lines = references_markdown(measured, [1]).splitlines()
    assert lines[2].startswith("| `g` |") and lines[3] == "| `0.1*w` | 0.0000 | 0.0000 |"


@pytest.mark.parametrize("args, message", [
    (["--settings", "{bad}"], "batch: 'x' is not of type 'integer'"),
    (["--settings", "{nodata}"], "child task's MNIST digits (child.data) not found"),
    (["--out", "{tmp}/h.csv"], "name it *.tsv"),
])  # fmt: skip
def test_search_cli_bad_input_is_one_line(tmp_path, args, message):
    (tmp_path / "bad.yaml").write_text("batch: x\n")
    (tmp_path / "nodata.yaml").write_text(f"child: {{data: {tmp_path}/none.csv.gz}}\n")
    subs = {"bad": tmp_path / "bad.yaml", "nodata": tmp_path / "nodata.yaml", "tmp": tmp_path}
    args = [a.format(**subs) for a in args]
    base = ["--algorithm", "random", "--rules", "2", "--workdir", str(tmp_path / "w"), "--out", str(tmp_path / "h.tsv")]
    run = subprocess.run([DEEPFLOWS, "nos-search", *base, *args], capture_output=True, text=True)
    assert run.returncode != 0 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert not (tmp_path / "h.tsv").exists()


# ----------------------------------------------------------------------------- Slurm


@pytest.mark.slurm
def test_evaluations_run_as_slurm_jobs(tmp_path, monkeypatch, settings, slurm_cluster):
    from deepflows.automl.search.child import evaluate_rule
    from deepflows.automl.search.jobs import Pool

    monkeypatch.chdir(tmp_path)
    rules = ["exp(sign(g)*sign(m))*g", "0.1*w"]
    slurm = {"cores": 1, "memory": "2GB", "walltime": "00:10:00", "host": "127.0.0.1", "wait_timeout": 90}
    with Pool("slurm", 1, slurm) as pool:
        running = [job for job in slurm_cluster.jobs() if job["name"] == "dask-worker"]
        results = dict(pool.run(evaluate_rule, [(rule, settings["child"]) for rule in rules]))
    assert running
    for i, rule in enumerate(rules):
        here = evaluate_rule(rule, settings["child"])
        assert {k: v for k, v in results[i].items() if k != "seconds"} == {k: v for k, v in here.items() if k != "seconds"}


def test_snakemake_target_runs_the_searches_and_the_report(tmp_path, settings):
    import os

    import yaml

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "nos.yaml").write_text(yaml.safe_dump(settings))
    config = tmp_path / "automl.yaml"
    config.write_text(yaml.safe_dump({"automl": {"settings": str(tmp_path / "nos.yaml"), "algorithms": ["random"],
                                                 "seeds": [1], "rules": 4, "reevaluate_seeds": []}}))  # fmt: skip
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    # one evaluation worker: one compilation of the child program
    command = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile"), "automl_nos", "--cores", "1",
               "--set-threads", "nos_search=1", "--configfile", str(config)]  # fmt: skip
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    report = tmp_path / "results/automl/nos/report"
    assert "| random | 1 | 4 |" in (report / "searches.md").read_text()
    assert (report / "curves.png").stat().st_size > 10_000 and (tmp_path / "results/automl/nos/cache.sqlite").exists()


def test_killed_search_leaves_no_worker_behind(tmp_path, settings):
    import os
    import signal
    import time

    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(settings))
    search = subprocess.Popen([DEEPFLOWS, "nos-search", "--algorithm", "random", "--rules", "100", "--settings",
                               str(tmp_path / "s.yaml"), "--workdir", str(tmp_path / "w"), "--workers", "2",
                               "--out", str(tmp_path / "h.tsv")], stderr=subprocess.DEVNULL)  # fmt: skip

    def workers():
        children = Path(f"/proc/{search.pid}/task/{search.pid}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    deadline = time.monotonic() + 120
    while len(workers()) < 3 and time.monotonic() < deadline:  # the two workers and multiprocessing's tracker
        time.sleep(0.5)
    time.sleep(8)  # past the workers' initializer (a kill before it is the one case left to chance)
    pids = workers()
    assert len(pids) >= 3, "the pool's workers did not start"
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    time.sleep(3)
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in
             Path(f"/proc/{pid}/stat").read_text().split()[2]]  # fmt: skip
    assert not alive, f"workers {alive} outlived their search"
