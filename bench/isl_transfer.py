#!/usr/bin/env python3
"""In Silico Labeling transfer learning, as the paper: a new label (NFH) learned from one small crop on top of
a network trained on other labels (DAPI, MAP2), against the same crop trained from scratch and the network
trained on NFH over all the training quadrants. Scored on the held-out test quadrant.

    python bench/isl_transfer.py --well WELL.ome.zarr --base runs/isl/base/model --full runs/isl/fovea/model
                                 --crop CROP.zarr --tune TUNE.zarr [--label NFH] [--steps 400]
                                 [--out bench/out/isl_transfer]

--crop is a train patch shard cut from one crop of the training quadrants (deepflows isl-patches --region
Y,X,256,256); --tune the usual tune shard (selection only). Both fine-tune and scratch use
config/model/isl_transfer.yaml, the scratch run with `transfer: null` and the trunk not frozen. Each model
predicts the whole well (isl-predict) and isl-evaluate scores the label on the test quadrant. Prints a
Markdown table of the label's Pearson r per model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import OUT, ROOT, deepflows


def run(*args: str) -> None:
    subprocess.run([deepflows(), *args], check=True, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--well", required=True)
    parser.add_argument("--base", required=True, help="a model trained on the other labels")
    parser.add_argument("--full", required=True, help="a model trained on the label over all training quadrants")
    parser.add_argument("--crop", required=True, help="the crop's train patch shard")
    parser.add_argument("--tune", required=True, help="the tune patch shard")
    parser.add_argument("--label", default="NFH")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--out", default=str(OUT / "isl_transfer"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    recipe = yaml.safe_load((ROOT / "config" / "model" / "isl_transfer.yaml").read_text())
    recipe["transfer"] = {"model": str(Path(args.base).resolve())}
    scratch = {**recipe, "transfer": None,
               "model": {**recipe["model"], "options": {**recipe["model"]["options"], "frozen": False}}}  # fmt: skip
    models = {}  # name -> (slug, model directory)
    for name, slug, cfg in (("fine-tune on the frozen DAPI+MAP2 trunk", "transfer", recipe),
                            ("from scratch on the crop", "scratch", scratch)):  # fmt: skip
        (out / f"{slug}.yaml").write_text(yaml.safe_dump(cfg))
        models[name] = (slug, out / f"{slug}-model")
        run("isl-train", "--config", str(out / f"{slug}.yaml"), "--patches", args.crop, "--tune", args.tune,
            "--labels", args.label, "--steps", str(args.steps), "--workdir", str(out / slug), "--out",
            str(models[name][1]))  # fmt: skip
    models["trained on all training quadrants"] = ("full", Path(args.full))
    rows = []
    for name, (slug, model) in models.items():
        pred = out / f"{slug}.ome.zarr"
        run("isl-predict", "--stack", args.well, "--model", str(model), "--out", str(pred))
        run("isl-evaluate", "--well", args.well, "--predictions", str(pred), "--labels", args.label, "--out",
            str(out / f"{slug}-eval"))  # fmt: skip
        summary = json.loads((out / f"{slug}-eval" / "summary.json").read_text())
        rows.append((name, summary["labels"][args.label]["ours"]))
    print(f"{args.label}, Pearson r on the test quadrant (crop: {args.crop}):\n")
    print("| model | r | RMSE |\n|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s['r']:.3f} | {s['rmse']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
