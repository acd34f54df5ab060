"""Model variants side by side on one simulated night's real exports, judged on the logged validation
day and by the simulator's truth.

    python bench/bench_models.py                                   # demo size, 1 seed
    python bench/bench_models.py --seeds 1,2,3 --configs base,pal,din,pal+din
    python bench/bench_models.py --shop-seed 1 --seeds 1 --configs base,output_bias=uniform,pal+interaction=fm
    python bench/bench_models.py --home H --configs base,dropout=0.1    # the night built before, in H

It simulates ``--days`` days, builds the last night with dbt (``history_length`` = ``--history``, so
the export carries the behaviour sequences) and exports it once. Every configuration then trains the
nightly way (``mtl_model.learn.train.train``, single-task baselines included) on exactly those rows,
and scores the same candidates. Per configuration and seed it prints:

* the AUC and GAUC of the joint model and of its single-task baselines, per task, on the day's test
  split (``--split validation``: the split that picks the epoch), and the joint model's AUC per task
  on the split's search-scene rows alone (``search_<task>_auc``);
* the truth ceiling's AUC (the simulator's p of each logged exposure);
* the same AUCs of the joint model and of its single-task baselines with the logged position left
  out, as the candidates are scored (``*_no_position``, the nightly metrics of that name);
* the top-10 lists from the candidates (fused score, category cap) judged by the truth, as shares of
  the oracle's clicks and purchases from the same candidates, and the within-user Spearman
  correlation of p_click and p_purchase with the true probabilities.

Configurations: ``base`` (today's default), ``pal`` (position_bias=pal), ``din`` (the sequence
encoder on), ``text`` (titles and queries through the hashed n-gram encoder, text=hashed), or any
setting as ``NAME=VALUE`` (``output_bias=uniform``; a list with ``/`` for its commas,
``hidden_dims=256/128``; validated by Settings),
joined with ``+`` (``pal+din``, ``pal+interaction=fm``); a ``:ARCH`` suffix (``pal+din:mmoe``) changes
the architecture. ``--shop-seed`` seeds the simulated shop (``--seeds``: the models); ``--home``
reuses a night an earlier run built (its shop is read from the home's ``bench-models.json``), so
new configurations compare with old ones on the same rows. Each row is also printed as one
``RESULT {json}`` line when it is done. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_ranking import within_user_spearman  # noqa: E402
from bench.common import named_settings, table  # noqa: E402
from mtl_model.config import Settings  # noqa: E402
from mtl_model.learn.metrics import NO_POSITION, auc  # noqa: E402
from mtl_model.learn.networks import predict_proba  # noqa: E402
from mtl_model.learn.registry import load_version  # noqa: E402
from mtl_model.learn.samples import read_samples, split_test  # noqa: E402
from mtl_model.learn.train import train  # noqa: E402
from mtl_model.outputs.score import fused_score, top_k  # noqa: E402
from mtl_model.outputs.warehouse import export_day  # noqa: E402
from mtl_model.pipeline.dbt import dbt_command  # noqa: E402
from mtl_model.sources.simulate import SimConfig, simulate, true_probabilities  # noqa: E402

END = date(2026, 1, 14)
VARIANTS = {
    "base": {},
    "pal": {"position_bias": "pal"},
    "din": {"history": True},
    "text": {"text": "hashed"},
}
SHOP_FILE = "bench-models.json"  # the shop and sequence length a home was built with, for --home


def variant_settings(base: Settings, name: str, history: int, seed: int) -> Settings:
    """``name``: variants and ``NAME=VALUE`` settings joined by ``+``, with an optional ``:ARCH``."""
    kind, _, arch = name.partition(":")
    options = named_settings(kind, VARIANTS, "a variant")
    changes = {"seed": seed, "history_length": history if options.pop("history", False) else 0, **options}
    if arch:
        changes["architecture"] = arch
    return base.replace(**changes)


def night_settings(home: Path, args: argparse.Namespace, shop_seed: int) -> tuple[Settings, SimConfig]:
    """The settings of the night's home (built or reused) and the config of its simulated shop."""
    settings = Settings(
        home=home,
        history_length=args.history,
        threads=args.threads,
        baselines=not args.no_baselines,
        seed=shop_seed,
    )
    return settings, SimConfig(n_users=args.users, n_items=args.items, seed=shop_seed)


def build_night(home: Path, args: argparse.Namespace) -> tuple[Settings, SimConfig]:
    settings, config = night_settings(home, args, args.shop_seed)
    shop = {"users": args.users, "items": args.items, "days": args.days, "seed": settings.seed}
    (home / SHOP_FILE).write_text(json.dumps({**shop, "history": args.history}))
    simulate(settings, END - timedelta(days=args.days - 1), args.days, config)
    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    command = dbt_command("build", "--quiet", target=home / "t", settings=settings, run_date=END)
    subprocess.run(
        [*command, "--exclude", "resource_type:test", "resource_type:unit_test"], env=env, check=True
    )
    export_day(settings, END)
    return settings, config


def reuse_night(home: Path, args: argparse.Namespace) -> tuple[Settings, SimConfig]:
    """The night an earlier run built in ``home`` (its shop from ``bench-models.json``)."""
    shop = json.loads((home / SHOP_FILE).read_text())
    args.users, args.items, args.days, args.history = (shop[k] for k in ("users", "items", "days", "history"))
    return night_settings(home, args, shop["seed"])


def judge(settings: Settings, config: SimConfig, version: str, k: int) -> dict[str, float]:
    """Lists from the candidates by the model's fused score, against the truth's best lists."""
    candidates = pl.read_parquet(settings.export_dir(END) / "candidates.parquet")
    candidates = candidates.with_columns(
        pl.lit(settings.recommend_scene).cast(candidates.schema["scene"]).alias("scene")
    )
    model, encoders, _ = load_version(settings, version)
    probs = predict_proba(model, *encoders.encode(candidates))
    scored = candidates.select("user_id", "item_id", "category_id", "price", "scene").with_columns(
        *(pl.Series(f"p_{t}", probs[t].numpy()) for t in model.tasks)
    )
    truth = true_probabilities(config, scored["user_id"], scored["item_id"], np.ones(scored.height))
    scored = scored.with_columns(
        truth["p_click"].alias("true_click"), truth["p_purchase"].alias("true_purchase")
    )
    scored = scored.filter(pl.col("true_click").is_not_null())  # click bots: a rule, not a taste
    fused = fused_score(
        tuple(model.tasks), settings.fusion_click_weight, settings.fusion_purchase_weight, 0.0
    )

    def expected(score: pl.Expr) -> tuple[float, float]:
        recs = top_k(scored.with_columns(score.alias("score")), k, settings.max_per_category)
        p = true_probabilities(config, recs["user_id"], recs["item_id"], recs["rank"].to_numpy())
        per_user = (
            recs.with_columns(p).group_by("user_id").agg(pl.col("p_click").sum(), pl.col("p_purchase").sum())
        )
        return float(per_user["p_click"].mean()), float(per_user["p_purchase"].mean())

    model_clicks, model_buys = expected(fused)
    oracle_clicks, _ = expected(pl.col("true_click"))
    _, oracle_buys = expected(pl.col("true_purchase"))
    return {
        "clicks_vs_oracle": model_clicks / oracle_clicks,
        "purchases_vs_oracle": model_buys / oracle_buys,
        "rho_click": within_user_spearman(scored, "p_click", "true_click"),
        "rho_purchase": within_user_spearman(scored, "p_purchase", "true_purchase"),
    }


def scene_auc(settings: Settings, version: str, split: str, scene: str) -> dict[str, float]:
    """The model's AUC per task on the rows of ``scene`` in the day's ``split``."""
    rows = split_test(read_samples(settings, END, days=1), settings.test_fraction)[split == "test"]
    rows = rows.filter(pl.col("scene") == scene)
    model, encoders, _ = load_version(settings, version)
    probs = predict_proba(model, *encoders.encode(rows))
    return {
        f"{scene}_{t}_auc": auc(rows[t].fill_null(0).clip(0, 1).to_numpy(), probs[t].numpy())
        for t in model.tasks
    }


def run(settings: Settings, config: SimConfig, name: str, args: argparse.Namespace, seed: int) -> dict:
    variant = variant_settings(settings, name, args.history, seed)
    started = time.perf_counter()
    result = train(variant, END)
    seconds = time.perf_counter() - started
    row: dict = {"config": name, "seed": seed, "train_s": seconds}
    test = args.split == "test"
    metrics = result.test_metrics if test else result.metrics
    baselines = result.test_baselines if test else result.baselines
    for task, m in metrics.items():
        single = baselines.get("single_task", {}).get(task, {})
        truth = baselines.get("truth", {}).get(task, {})
        row.update({f"{task}_auc": m["auc"], f"{task}_auc_single": single.get("auc", float("nan"))})
        row.update({f"{task}_gauc": m["gauc"], f"{task}_gauc_single": single.get("gauc", float("nan"))})
        row[f"{task}_auc_truth"] = truth.get("auc", float("nan"))
        for name, got in (("auc_no_position", m), ("auc_single_no_position", single)):  # as candidates
            row[f"{task}_{name}"] = got.get("auc" + NO_POSITION, float("nan"))
    row["mean_auc"], row["mean_auc_single"] = (
        result.test_mean_auc if test else result.mean_auc,
        float(np.nanmean([row[f"{t}_auc_single"] for t in metrics])),
    )
    for name in ("auc_no_position", "auc_single_no_position"):  # nan where the rows carry no position
        row[f"mean_{name}"] = float(np.mean([row[f"{t}_{name}"] for t in metrics]))
    row.update(scene_auc(variant, result.version, args.split, "search"))
    row.update(judge(variant, config, result.version, args.k))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--history", type=int, default=20, help="sequence length of the din variants")
    parser.add_argument("--configs", default="base,pal,din,pal+din")
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--split", choices=("test", "validation"), default="test")
    parser.add_argument("--no-baselines", action="store_true", help="skip the single-task baselines")
    parser.add_argument("--shop-seed", type=int, default=42, help="the simulated shop's seed")
    parser.add_argument("--home", type=Path, default=None, help="reuse the night built in this home")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.home is not None:
        settings, config = reuse_night(args.home, args)
        print(f"home {args.home}: the night of {END} built before (shop seed {config.seed})")
    else:
        home = Path(tempfile.mkdtemp(prefix="tandem-bench-models-"))
        settings, config = build_night(home, args)
        seconds = time.perf_counter() - started
        print(f"home {home}: simulated {args.days} days, built and exported {END} in {seconds:.0f}s")
    rows = []
    for seed in args.seeds.split(","):
        for name in args.configs.split(","):
            rows.append(run(settings, config, name, args, int(seed)))
            print("RESULT " + json.dumps({"shop_seed": config.seed, **rows[-1]}), flush=True)
    tasks = ("click", "cart", "purchase")
    columns = ["config", "seed", "mean_auc", "mean_auc_single"]
    columns += [f"{t}_{m}" for t in tasks for m in ("auc", "auc_single", "gauc", "gauc_single", "auc_truth")]
    columns += [f"search_{t}_auc" for t in tasks]
    columns += ["mean_auc_no_position", "mean_auc_single_no_position"]
    columns += [f"{t}_{m}" for t in tasks for m in ("auc_no_position", "auc_single_no_position")]
    columns += ["clicks_vs_oracle", "purchases_vs_oracle", "rho_click", "rho_purchase", "train_s"]
    print(table(rows, columns, markdown=True))
    means = pl.DataFrame(rows).group_by("config", maintain_order=True).agg(pl.exclude("seed").mean())
    if len(args.seeds.split(",")) > 1:
        print("\nmeans over seeds:")
        print(table(means.to_dicts(), [c for c in columns if c != "seed"], markdown=True))


if __name__ == "__main__":
    main()
