"""Recommendation lists judged by the simulator's truth: the clicks and purchases a user would make if
shown the list. The replay metrics of ``rec_feedback`` are judged differently: what users did on the
next day with what the simulator's own feed showed them.

    python bench/bench_ranking.py                    # demo size: 2,000 users, 1,000 items, 14 days
    python bench/bench_ranking.py --users 20000 --items 10000
    python bench/bench_ranking.py --retrieval two_tower          # with the learned candidate source

The bench simulates, runs the last two nights through the DAG (``dag.test``), and builds, for the
users with a published list on the last night, ``--k`` items per user:

* ``model (published)``: the nightly recommendations (default fusion ``p_click·p_purchase``, at most
  ``max_per_category`` items of a category);
* ``model p_click`` / ``model p_purchase``: the same model and candidates, ranked by one task;
* ``popularity (global list)``: the ``rec_feedback`` baseline, the items clicked by the most users in
  the last 7 days, the same list for everyone;
* ``candidates by clickers``: each user's candidates ranked by how many users clicked them in those
  7 days;
* ``candidates at random``: a seeded shuffle of each user's candidates;
* ``oracle clicks`` / ``oracle purchases``: the truth's best lists from the same candidates. This is
  the ceiling for the candidate set.

With ``--retrieval two_tower`` the night runs with ``TANDEM_RETRIEVAL=two_tower`` and the candidates
above are the merged set score.py ranks (the dbt sources plus the two-tower's). The lists are also
judged against the catalogue oracle (``oracle clicks (catalogue)``: the truth's best list over every
in-stock item the user did not buy, not only the candidates), which does not move with the candidate
set, and each candidate source's recall of both oracles' top K is printed (the share of the oracle
lists' (user, item) pairs that the source offered).

Every list from the candidates has the category cap. Each list is shown in the home feed at
positions 1..K and judged by ``mtl_model.sources.simulate.true_probabilities``. Reported per user: expected
clicks, expected purchases, and each as a share of its oracle. Click bots are left out (their truth
is a rule, not a taste). The ``rec_feedback`` replay rows of the last night are printed alongside.
With ``--signals`` it also prints what could rank the candidates at all (:func:`signal_spearman`): each
numeric input's within-user Spearman with the truth, the truth's own parts (user · item affinity,
item quality), a category ceiling (a model that knew each user's taste for each category and each
item's quality, but nothing item-specific beyond that), and how well the model's own user and item
embeddings learned the taste (the within-user Spearman of their dot product with the affinity).
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import table  # noqa: E402

END = date(2026, 1, 14)


def within_user_spearman(df: pl.DataFrame, score: str, truth: str) -> float:
    """Mean over users of the Spearman correlation of ``score`` and ``truth`` among their candidates."""
    ranked = df.select(
        "user_id",
        pl.col(score).rank().over("user_id").alias("a"),
        pl.col(truth).rank().over("user_id").alias("b"),
    )
    per_user = ranked.group_by("user_id").agg(pl.corr("a", "b").alias("rho"), pl.len().alias("n"))
    rho = per_user.filter((pl.col("n") >= 2) & pl.col("rho").is_finite())["rho"].mean()
    return float("nan") if rho is None else float(rho)


def shown_split_spearman(scored: pl.DataFrame, exposed: pl.DataFrame) -> dict[str, float]:
    """The within-user Spearman of p_click (and p_purchase) with the truth among the candidates the
    user was exposed to in the training window (``exposed``: user_id, item_id) and among the others,
    the ones the feed never showed the user."""
    key = ["user_id", "item_id"]
    flag = exposed.select(pl.col(k).cast(pl.String) for k in key).unique().with_columns(shown=pl.lit(True))
    rows = scored.join(flag, on=key, how="left").with_columns(pl.col("shown").fill_null(False))
    out = {}
    for name, part in (("shown", rows.filter("shown")), ("never shown", rows.filter(~pl.col("shown")))):
        out[f"{name} share"] = part.height / max(rows.height, 1)
        out[f"{name} p_click"] = within_user_spearman(part, "p_click", "true_click")
        out[f"{name} p_purchase"] = within_user_spearman(part, "p_purchase", "true_purchase")
    return out


def signal_spearman(config, candidates: pl.DataFrame, model, encoders) -> list[dict]:
    """Within-user Spearman with the true p_click (home feed, position 1) of each numeric input of
    ``candidates`` and of the truth's parts; of the model's user · item embedding dot product with
    the true affinity. Click bots are left out."""
    import torch

    from mtl_model.sources.simulate import true_probabilities
    from mtl_model.sources.simulator.ids import indices
    from mtl_model.sources.simulator.universe import Universe

    uni = Universe(config)
    u = indices(candidates["user_id"], "u", config.n_users)
    i = indices(candidates["item_id"], "i", config.n_items)
    truth = true_probabilities(
        config, candidates["user_id"], candidates["item_id"], np.ones(candidates.height)
    )
    aff = (uni.user_vec[u] * uni.item_vec[i]).sum(axis=1) / np.sqrt(config.latent_dim)
    item_cat = uni.item_cat[i]
    centre = np.zeros((int(uni.item_cat.max()) + 1, config.latent_dim))
    np.add.at(centre, uni.item_cat, uni.item_vec)
    centre /= np.maximum(np.bincount(uni.item_cat, minlength=centre.shape[0]), 1)[
        :, None
    ]  # ≈ category vector
    cat_aff = (uni.user_vec[u] * centre[item_cat]).sum(axis=1) / np.sqrt(config.latent_dim)
    cat, _ = encoders.encode(candidates)
    with torch.no_grad():
        vectors = model.embedding(cat)  # [N, C, D]: user_id and item_id are the first two columns
    learned = (vectors[:, 0] * vectors[:, 1]).sum(dim=1).numpy()
    parts = {
        "truth: user · item affinity": aff,
        "truth: item quality": uni.item_quality[i],
        "category ceiling: 0.7 · user · category + item quality": 0.7 * cat_aff + uni.item_quality[i],
        "model's user · item embeddings (vs the affinity)": learned,
    }
    df = candidates.with_columns(
        truth["p_click"].alias("true_click"),
        pl.Series("aff", aff),
        *(pl.Series(f"_s{k}", values) for k, values in enumerate(parts.values())),
    ).filter(pl.col("true_click").is_not_null() & ~pl.Series(uni.is_bot[u]))
    rows = [
        {
            "signal": name,
            "spearman": within_user_spearman(df, f"_s{k}", "aff" if "model" in name else "true_click"),
        }
        for k, name in enumerate(parts)
    ]
    for name, dtype in candidates.schema.items():
        if name.startswith("f_") and dtype.is_numeric():
            rho = within_user_spearman(
                df.with_columns(pl.col(name).cast(pl.Float64).fill_null(-1.0)), name, "true_click"
            )
            if rho == rho:  # nan: constant within every user
                rows.append({"signal": name, "spearman": rho})
    return sorted(rows, key=lambda r: -abs(r["spearman"]))


def catalogue_oracle(
    config,
    users: pl.DataFrame,
    in_stock: pl.DataFrame,
    bought: pl.DataFrame | None,
    k: int,
    max_per_category: int,
    chunk: int = 2_000_000,
) -> dict[str, pl.DataFrame]:
    """The truth's best top-``k`` lists (with the category cap) over every in-stock item the user did
    not buy, by true p_click (``clicks``) and by true p_purchase (``purchases``), in the home feed at
    position 1, bots left out. Built per chunk of users (a list is per user, so the top k of a chunk
    is the top k): at 20k users x 10k items all the pairs at once took more than this machine's
    24 GB."""
    from mtl_model.outputs.score import top_k
    from mtl_model.sources.simulate import true_probabilities

    user_ids = users["user_id"].sort()
    per = max(1, chunk // max(in_stock.height, 1))
    parts: dict[str, list[pl.DataFrame]] = {"clicks": [], "purchases": []}
    for start in range(0, len(user_ids), per):
        pairs = user_ids.slice(start, per).to_frame().join(in_stock, how="cross")
        if bought is not None:
            pairs = pairs.join(bought, on=["user_id", "item_id"], how="anti")
        truth = true_probabilities(config, pairs["user_id"], pairs["item_id"], np.ones(pairs.height))
        pairs = pairs.with_columns(
            truth["p_click"].alias("true_click"),
            truth["p_purchase"].alias("true_purchase"),
            pl.lit("home").alias("scene"),
        ).filter(pl.col("true_click").is_not_null())
        for name, col in (("clicks", "true_click"), ("purchases", "true_purchase")):
            ranked = top_k(pairs.with_columns(pl.col(col).alias("score")), k, max_per_category)
            parts[name].append(ranked.select("user_id", "item_id", "rank"))
    return {name: pl.concat(lists) for name, lists in parts.items()}


def source_recalls(scored: pl.DataFrame, users: pl.DataFrame, oracles: dict[str, pl.DataFrame]) -> list[dict]:
    """Per candidate source (a ``source_mask`` bit; and all of them): candidate pairs per user and the
    share of each oracle list's (user, item) pairs that the source offered."""
    from mtl_model.outputs.score import SOURCE_BITS

    key = ["user_id", "item_id"]
    offered = scored.join(users, on="user_id", how="semi").select(*key, "source_mask")
    rows = []
    for source, bit in [*SOURCE_BITS.items(), ("all candidates", 0)]:
        mine = offered.filter((pl.col("source_mask") & bit) > 0) if bit else offered
        if bit and mine.is_empty():
            continue
        row = {"source": source, "pairs_per_user": mine.height / max(users.height, 1)}
        for name, oracle in oracles.items():
            oracle = oracle.join(users, on="user_id", how="semi")
            row[name] = oracle.join(mine, on=key, how="semi").height / max(oracle.height, 1)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--retrieval", choices=("off", "two_tower"), default="off")
    parser.add_argument("--retrieval-top-n", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="TANDEM_SEED: the simulated shop, the model")
    parser.add_argument("--signals", action="store_true", help="print what could rank the candidates")
    args = parser.parse_args()
    if args.seed is not None:
        os.environ["TANDEM_SEED"] = str(args.seed)
    home = Path(tempfile.mkdtemp(prefix="tandem-bench-ranking-"))
    os.environ["TANDEM_HOME"] = str(home)  # the DAG's tasks load their settings from the environment
    os.environ["TANDEM_TOP_K"] = str(args.k)
    os.environ["TANDEM_RETRIEVAL"] = args.retrieval
    os.environ["TANDEM_RETRIEVAL_TOP_N"] = str(args.retrieval_top_n)

    import duckdb

    from mtl_model.config import load_settings
    from mtl_model.learn.networks import predict_proba
    from mtl_model.learn.registry import load_current
    from mtl_model.outputs.score import (
        mark_offered,
        retrieval_offered,
        retrieval_rows,
        top_k,
    )
    from mtl_model.pipeline.airflow_env import run_day
    from mtl_model.sources.simulate import SimConfig, simulate, true_probabilities

    settings = load_settings()
    config = SimConfig(n_users=args.users, n_items=args.items, seed=settings.seed)
    last = END
    t0 = time.perf_counter()
    simulate(settings, last - timedelta(days=args.days - 1), args.days, config)
    for ds in (last - timedelta(days=1), last):
        run_day(settings, ds)
    print(f"home {home}: simulated {args.days} days and ran 2 nights in {time.perf_counter() - t0:.0f}s")

    published = pl.read_parquet(settings.output_dir(last) / "recommendations.parquet")
    candidates = pl.read_parquet(settings.export_dir(last) / "candidates.parquet")
    if settings.retrieval != "off":  # the merged candidates, as score.py builds them
        offered = retrieval_offered(settings, last)
        candidates = pl.concat([candidates, retrieval_rows(settings, last, offered)])
        candidates = mark_offered(candidates, offered)
    if settings.recommend_scene:  # scored like score.py does: every candidate in the list's scene
        candidates = candidates.with_columns(
            pl.lit(settings.recommend_scene).cast(candidates.schema["scene"]).alias("scene")
        )
    model, encoders, version = load_current(settings)
    cat, num = encoders.encode(candidates)
    probs = predict_proba(model, cat, num)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        clicks = con.sql(
            "select item_id, count(distinct user_id) filter (where click = 1) as clickers, "
            "sum(click)::double as clicks, count(*) as exposures from interactions "
            f"where ds between date '{last}' - 6 and date '{last}' group by item_id"
        ).pl()
        feedback = con.sql(
            "select recommender, metric, value from rec_feedback_day order by recommender, metric"
        ).pl()
        in_stock = con.sql(
            f"select item_id, category_id from items where ds = date '{last}' and in_stock"
        ).pl()
        bought = con.sql(
            "select distinct user_id, item_id from interactions where purchase = 1 and ds between "
            f"date '{last}' - {settings.popularity_days - 1} and date '{last}'"
        ).pl()
    scored = candidates.select(
        "user_id", "item_id", pl.col("scene").cast(pl.String()), "category_id", "source_mask"
    ).with_columns(
        *(pl.Series(f"p_{t}", probs[t].numpy()) for t in model.tasks),
        pl.Series("shuffle", np.random.default_rng(settings.seed).random(candidates.height)),
    )
    scored = scored.join(clicks, on="item_id", how="left").with_columns(
        pl.col("clickers", "clicks", "exposures").fill_null(0)
    )
    truth = true_probabilities(config, scored["user_id"], scored["item_id"], np.ones(scored.height))
    scored = scored.with_columns(
        truth["p_click"].alias("true_click"), truth["p_purchase"].alias("true_purchase")
    )

    users = published.select("user_id").unique()

    def from_candidates(score: pl.Expr) -> pl.DataFrame:
        ranked = top_k(scored.with_columns(score.alias("score")), args.k, settings.max_per_category)
        return ranked.select("user_id", "item_id", "rank")

    popular = clicks.sort(
        ["clickers", "clicks", "exposures", "item_id"], descending=[True, True, True, False]
    ).head(args.k)
    bought_pairs = bought if settings.exclude_bought else None
    cap = settings.max_per_category
    catalogue_lists = catalogue_oracle(config, users, in_stock, bought_pairs, args.k, cap)
    lists = {
        "model (published)": published.select("user_id", "item_id", "rank"),
        "model p_click": from_candidates(pl.col("p_click")),
        "model p_purchase": from_candidates(pl.col("p_purchase")),
        "popularity (global list)": users.join(
            popular.select("item_id", (pl.int_range(pl.len()) + 1).cast(pl.Int32).alias("rank")), how="cross"
        ),
        "candidates by clickers": from_candidates(pl.col("clickers") + pl.col("clicks") * 1e-6),
        "candidates at random": from_candidates(pl.col("shuffle")),
        "oracle clicks": from_candidates(pl.col("true_click").fill_null(0)),
        "oracle purchases": from_candidates(pl.col("true_purchase").fill_null(0)),
        "oracle clicks (catalogue)": catalogue_lists["clicks"].select("user_id", "item_id", "rank"),
        "oracle purchases (catalogue)": catalogue_lists["purchases"].select("user_id", "item_id", "rank"),
    }
    rows = []
    for name, recs in lists.items():
        recs = recs.join(users, on="user_id")
        p = true_probabilities(config, recs["user_id"], recs["item_id"], recs["rank"].to_numpy())
        per_user = (
            recs.with_columns(p).group_by("user_id").agg(pl.col("p_click").sum(), pl.col("p_purchase").sum())
        )
        human = per_user.filter(pl.col("p_click") > 0)  # bots: a null truth, summed to 0
        rows.append(
            {
                "list": name,
                "users": human.height,
                "clicks_per_user": human["p_click"].mean(),
                "purchases_per_user": human["p_purchase"].mean(),
            }
        )
    oracle = {r["list"]: r for r in rows if r["list"].startswith("oracle")}
    for r in rows:
        r["clicks_vs_oracle"] = r["clicks_per_user"] / oracle["oracle clicks"]["clicks_per_user"]
        r["purchases_vs_oracle"] = r["purchases_per_user"] / oracle["oracle purchases"]["purchases_per_user"]
        r["clicks_vs_catalogue"] = (
            r["clicks_per_user"] / oracle["oracle clicks (catalogue)"]["clicks_per_user"]
        )
        r["purchases_vs_catalogue"] = (
            r["purchases_per_user"] / oracle["oracle purchases (catalogue)"]["purchases_per_user"]
        )
    print(
        f"\nlists of {last} (model {version}), top {args.k}, category cap {settings.max_per_category}; "
        f"expected clicks and purchases per user if the list is shown in the home feed (simulator truth)\n"
    )
    columns = [
        "list",
        "users",
        "clicks_per_user",
        "clicks_vs_oracle",
        "purchases_per_user",
        "purchases_vs_oracle",
        "clicks_vs_catalogue",
        "purchases_vs_catalogue",
    ]
    print(table(rows, columns, markdown=True))
    humans = users.join(scored.filter(pl.col("true_click").is_not_null()), on="user_id", how="semi")
    oracles = {
        "oracle clicks (candidates)": lists["oracle clicks"],
        "oracle clicks (catalogue)": lists["oracle clicks (catalogue)"],
        "oracle purchases (catalogue)": lists["oracle purchases (catalogue)"],
    }
    print(
        f"\neach candidate source's recall of the oracles' top {args.k} (share of the oracle lists' pairs "
        f"the source offered; retrieval={settings.retrieval}, top {settings.retrieval_top_n}):\n"
    )
    print(
        table(source_recalls(scored, humans, oracles), ["source", "pairs_per_user", *oracles], markdown=True)
    )
    metrics = pl.read_parquet(settings.output_dir(last) / "model_metrics.parquet")
    if "split" in metrics.columns:  # validation rows only (a test split may sit beside them)
        metrics = metrics.filter(pl.col("split") == "validation")
    aucs = metrics.filter(pl.col("metric").is_in(["auc", "auc_single_task", "gauc", "gauc_single_task"]))
    print(f"\nvalidation day {last}, joint model vs its single-task baselines:")
    print(aucs.pivot(on="metric", index="task", values="value").sort("task"))
    human_users = scored.filter(pl.col("true_click").is_not_null())
    print(
        "\nwithin-user rank correlation (Spearman) with the truth, mean over users with 2+ candidates: "
        f"p_click {within_user_spearman(human_users, 'p_click', 'true_click'):.4f}, "
        f"p_purchase {within_user_spearman(human_users, 'p_purchase', 'true_purchase'):.4f} "
        f"(position_bias={settings.position_bias})"
    )
    exposed = pl.read_parquet(settings.export_dir(last) / "samples.parquet", columns=["user_id", "item_id"])
    split = shown_split_spearman(human_users, exposed)
    print(
        "  split by whether the feed showed the pair in the training window: "
        + ", ".join(f"{name} {value:.4f}" for name, value in split.items())
    )
    print(
        f"\nrec_feedback of {last} (replay: the lists of {last - timedelta(days=1)} against what users did):"
    )
    print(feedback.pivot(on="recommender", index="metric", values="value"))
    if args.signals:
        print(
            "\nwithin-user Spearman with the true p_click of each signal (of the affinity: the embeddings):"
        )
        print(
            table(signal_spearman(config, candidates, model, encoders), ["signal", "spearman"], markdown=True)
        )


if __name__ == "__main__":
    main()
