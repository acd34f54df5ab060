"""Which negative sampler makes the better model on a view-only log (issue 19, point 2): the same real
log landed once per ``TANDEM_NEGATIVE_SAMPLING``, the night built (dbt + export) and the nightly model
trained over several seeds; the AUC of cart and purchase **among real views** on the validation and
test splits, the only yardstick the samplers share (the sampled rows differ by sampler, so an AUC over
all rows compares different test sets).

    python bench/bench_sampling.py --format rees46 --file ../shared/data/rees46/events_2019-10-01_sample.csv \
        --tz America/St_Johns --ds 2019-10-01 --seeds 42,43,44

Each sampler gets its own home under a temporary folder (``tandem ingest``'s function, one ``dbt build``
of the night without its tests, ``export_day``), then :func:`mtl_model.learn.train.train` with the
defaults but ``baselines=false`` and 1 thread. Prints one Markdown row per sampler and seed and the means.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_epochs import _night  # noqa: E402
from bench.common import table  # noqa: E402
from mtl_model.config import Settings  # noqa: E402

SAMPLERS = ("uniform", "popularity", "popularity_category")
TASKS = ("cart", "purchase")


def one_sampler(root: Path, sampler: str, args) -> list[dict]:
    from mtl_model.learn.train import train
    from mtl_model.sources.ingest import ingest

    settings = Settings(home=root / sampler, business_tz=args.tz, negative_sampling=sampler, threads=1)
    ingest(settings, args.format, args.file)
    _night(settings, args.ds)
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        result = train(settings.replace(seed=seed, baselines=False), args.ds)
        test = json.loads((result.model_dir / "metrics.json").read_text()).get("test") or {}
        row = {"sampler": sampler, "seed": seed, "n_train": result.n_train}
        for task in TASKS:
            row[f"valid_{task}_views"] = result.metrics.get(task, {}).get("auc_views", np.nan)
            row[f"test_{task}_views"] = (test.get("tasks") or test).get(task, {}).get("auc_views", np.nan)
        rows.append(row)
        print(f"  {sampler} seed {seed}: {row}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--format", required=True, help="a `tandem ingest` format, e.g. rees46")
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--tz", default="UTC", help="TANDEM_BUSINESS_TZ of the home")
    parser.add_argument("--ds", required=True, help="the night")
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        rows = [r for s in args.samplers.split(",") for r in one_sampler(Path(tmp), s, args)]
    columns = ["sampler", "seed", "n_train", *(f"{s}_{t}_views" for s in ("valid", "test") for t in TASKS)]
    print(table(rows, columns, markdown=True))
    means = pl.DataFrame(rows).drop("seed").group_by("sampler", maintain_order=True).mean()
    print(table(means.to_dicts(), [c for c in columns if c != "seed"], markdown=True))


if __name__ == "__main__":
    main()
