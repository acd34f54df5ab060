"""Negative down-sampling (issue 18, point 2): the joint model trained at several ``negative_rate``s on
the same exported window: its calibration, AUC and log loss on the validation split, and AUC and log
loss on the test split (the other users of the same day; the logit shift is not applied to those).

    .venv/bin/python bench/bench_negatives.py --samples HOME/exports/run_date=D/samples.parquet \
        --rates 1,0.5,0.25 --uncorrected 0.25 --seeds 42,7,8

Each rate trains in a fresh temporary home (the samples copied in) with the default settings but
``baselines=false`` and 1 thread. ``--uncorrected R`` also trains at rate R without the importance
weights (what a sampler without the correction gives), and shows the He et al. (2014) logit shift
``q = p / (p + (1 - p) / R)`` applied to that model per task. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtl_model.config import Settings  # noqa: E402
from mtl_model.learn import train as train_module  # noqa: E402
from mtl_model.learn.networks import predict_proba  # noqa: E402
from mtl_model.learn.registry import load_version  # noqa: E402
from mtl_model.learn.samples import labels, read_split, split_test  # noqa: E402


def _logloss(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def run(samples: Path, rate: float, corrected: bool, threads: int, seed: int, epochs: int) -> list[dict]:
    ds = pl.read_parquet(samples, columns=["ds"]).get_column("ds").max()
    with tempfile.TemporaryDirectory(prefix="tandem-bench-neg-") as tmp:
        settings = Settings(
            home=Path(tmp), negative_rate=rate, baselines=False, threads=threads, seed=seed, epochs=epochs
        )
        folder = settings.export_dir(ds)
        folder.mkdir(parents=True)
        shutil.copy(samples, folder / "samples.parquet")
        original = train_module.negative_weights
        if not corrected:
            train_module.negative_weights = lambda y, r: None  # the sampler without its correction
        t0 = time.perf_counter()
        try:
            result = train_module.train(settings, ds)
        finally:
            train_module.negative_weights = original
        seconds = time.perf_counter() - t0
        model, encoders, _ = load_version(settings, result.version)
        valid, _ = split_test(read_split(settings, ds)[1], settings.test_fraction)
        cat, num = encoders.encode(valid)
        probs = predict_proba(model, cat, num, device=torch.device("cpu"))
        y = labels(valid, tuple(settings.tasks)).numpy()
    rows = []
    for i, task in enumerate(settings.tasks):
        p = probs[task].numpy().astype(np.float64)
        variants = [("weights" if corrected or rate == 1.0 else "none", p)]
        if not corrected:
            variants.append(("logit shift", p / (p + (1 - p) / rate)))
        for correction, q in variants:
            rows.append(
                {
                    "seed": seed,
                    "rate": rate,
                    "epochs": result.epochs_trained,
                    "correction": correction,
                    "task": task,
                    "n_train": result.n_train,
                    "train_s": round(seconds, 1),
                    "auc": round(result.metrics[task]["auc"], 4),
                    "test_auc": round(result.test_metrics[task]["auc"], 4),
                    "test_logloss": round(result.test_metrics[task]["logloss"], 4),
                    "logloss": round(_logloss(q, y[:, i]), 4),
                    "positive_rate": round(float(y[:, i].mean()), 4),
                    "mean_predicted": round(float(q.mean()), 4),
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, required=True)
    parser.add_argument("--rates", default="1,0.5,0.25")
    parser.add_argument("--uncorrected", type=float, default=0.0, help="also train at this rate, unweighted")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds")
    parser.add_argument("--epochs", type=int, default=3, help="TANDEM_EPOCHS (the most epochs)")
    args = parser.parse_args()
    rows = []
    for seed in (int(x) for x in args.seeds.split(",")):
        for rate in (float(x) for x in args.rates.split(",")):
            rows += run(args.samples, rate, True, args.threads, seed, args.epochs)
        if args.uncorrected:
            rows += run(args.samples, args.uncorrected, False, args.threads, seed, args.epochs)
    table = pl.DataFrame(rows)
    _print(table)
    if table.get_column("seed").n_unique() > 1:  # the mean over seeds, per rate, correction and task
        keys = ["rate", "correction", "task"]
        values = [
            "n_train",
            "epochs",
            "train_s",
            "auc",
            "test_auc",
            "test_logloss",
            "logloss",
            "positive_rate",
            "mean_predicted",
        ]
        print()
        _print(table.group_by(keys, maintain_order=True).agg(pl.col(values).mean().round(4)))


def _print(table: pl.DataFrame) -> None:
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for row in table.iter_rows():
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
