"""Scoring speed: (user, candidate) pairs per second through `mtl_model.outputs.score.score`.

    python bench/bench_score.py --users 20000 --items 5000 --candidates 300 --threads 1

Simulates a week, trains the joint model on it (1 epoch, no baselines), then builds
`candidates.parquet` with `--candidates` items for every user active on the last day and times one
`score(settings, ds)`: read, encode, predict every task, fuse, top-K with the category cap, write.
Prints the figure; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for bench.common

from bench.common import simulated_samples  # noqa: E402
from mtl_model.config import Settings  # noqa: E402
from mtl_model.learn.train import train  # noqa: E402
from mtl_model.outputs.score import score  # noqa: E402
from mtl_model.sources.simulate import SimConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--candidates", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--architecture", default="shared_bottom")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-score-"))
    ds = date(2026, 2, 7)
    settings = Settings(
        home=home, epochs=1, baselines=False, architecture=args.architecture, threads=args.threads
    )
    samples = simulated_samples(
        home / "sim", ds, 7, SimConfig(n_users=args.users, n_items=args.items, seed=5)
    )
    settings.export_dir(ds).mkdir(parents=True, exist_ok=True)
    samples.write_parquet(settings.export_dir(ds) / "samples.parquet")
    result = train(settings, ds)

    items = samples.select("item_id", "category_id", "price").unique("item_id").sort("item_id")
    users = samples.filter(pl.col("ds") == ds).select("user_id").unique().sort("user_id")
    n = min(args.candidates, items.height)
    # every active user gets n items: a different window of the catalogue per user (no Python loop)
    pairs = (
        users.with_row_index("u")
        .join(pl.DataFrame({"k": range(n)}), how="cross")
        .with_columns(((pl.col("u") * 7919 + pl.col("k")) % items.height).alias("i"))
        .join(items.with_row_index("i"), on="i")
        .select(
            "user_id",
            "item_id",
            "category_id",
            pl.lit("home").alias("scene"),
            pl.lit(None, pl.Int32).alias("position"),
            "price",
        )
    )
    pairs.write_parquet(settings.export_dir(ds) / "candidates.parquet")

    started = time.perf_counter()
    out = score(settings, ds)
    seconds = time.perf_counter() - started
    recs = pl.read_parquet(out)
    print(f"model {result.version} ({args.architecture}), {torch.get_num_threads()} thread(s)")
    print(
        f"scored {pairs.height:,} pairs for {users.height:,} users in {seconds:.2f}s: "
        f"{pairs.height / seconds:,.0f} pairs/s; {recs.height:,} recommendations written"
    )


if __name__ == "__main__":
    main()
