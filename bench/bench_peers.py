"""Peers benchmark on any landed data: Tandem's nightly models next to DeepCTR-Torch and torch-rechub,
trained on exactly the rows and features that Tandem exported for one night.

    python bench/bench_peers.py --home H --ds D                     # 3 seeds, 1 thread
    python bench/bench_peers.py --home H --ds D --seeds 1 --epochs 1 --only "deepctr MMOE"   # a quick look
    python bench/bench_peers.py --home H --ds D --only tandem --set interaction=fm   # a Tandem option

Input: ``H/exports/run_date=D/samples.parquet`` as the nightly export wrote it (any ``tandem ingest``
format or the simulator): the training window (days before D) and the validation day D. Nothing under H is
written: the file is copied into a scratch home (with the simulator's truth and the day's landing events
when H has them, for the ceiling row), and every Tandem run trains and registers there.

* Tasks: those of ``click``, ``cart``, ``purchase`` that the export has with at least one positive in
  the validation day.
* ``tandem <arch>``: :func:`mtl_model.learn.train.train` itself, the nightly step, with
  ``Settings(home=scratch, seed=s, baselines=True, threads=…, architecture=arch)`` and the nightly
  defaults otherwise (3 epochs, early stopping, sparse embeddings, ESMM ``auto``: on for MMoE and PLE).
  PLE runs with ``hidden_dims=64,64`` (two levels of 64, ``ple[64x2]``), the capacity of the peers' PLE
  in ``bench/bench_train.py``. Its references give the ``single-task`` rows (same architecture, one
  model per task) and the ``popularity`` row; the simulator's ``truth`` ceiling when available.
* ``deepctr SharedBottom / MMOE / PLE[64x2]`` (DeepCTR-Torch 0.3.0, its own ``compile`` / ``fit``) and
  ``rechub MMOE / PLE[64x2]`` (torch-rechub 0.9.0, its own ``MTLTrainer``): the models and fits of
  ``bench/bench_train.py`` (imported, not copied), at the same capacity, on the same rows encoded by
  Tandem's encoders (``feature_spec(settings)``, ``Encoders.fit`` on the training rows: every model sees
  identical categorical codes and scaled numeric ``f_*`` features), the same epochs, batch size and
  learning rate; each is evaluated after every epoch and keeps its best (Tandem keeps its best epoch
  by early stopping on the same day). ``hist_*`` sequence columns are not used by any model.

Metrics on the validation split of day D (the users that ``train()`` picks its epoch on; the test
split's users are left out, as the peers pick their epochs there too): AUC and GAUC per task
(:mod:`mtl_model.learn.metrics`, GAUC grouped by ``user_id``), mean ± sample standard deviation over the
seeds; ``mean_auc``: the mean over the tasks. On a view-only source (the export holds sampled negatives)
also ``auc_<task>_views`` and ``mean_auc_views``: the AUC among real exposures only, where a sampled
negative cannot help.
``samples/s``: training rows per second of the fastest epoch over all seeds (training steps only; the
machine is shared, so compare within one table). A peer that fails on the data is caught: its row
carries the reason. Nothing here asserts anything.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch-rechub imports tqdm: no progress bars

import argparse
import contextlib
import io
import json
import logging
import math
import shutil
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench.bench_train as bt  # noqa: E402
from bench.common import Tensors, table  # noqa: E402
from mtl_model.config import PATH_DEFAULTS, Settings  # noqa: E402
from mtl_model.dates import parse_date  # noqa: E402
from mtl_model.learn.features import Encoders  # noqa: E402
from mtl_model.learn.options import feature_spec  # noqa: E402
from mtl_model.learn.samples import SAMPLES_FILE, labels, read_split, split_test  # noqa: E402

CANDIDATE_TASKS = ("click", "cart", "purchase")
ARCHITECTURES = ("shared_bottom", "mmoe", "ple")
PLE_HIDDEN = (64, 64)  # two levels of 64: the peers' PLE[64x2] (bench_train.rechub_model, deepctr_model)
PEERS = (
    ("deepctr SharedBottom", "deepctr", "shared_bottom"),
    ("deepctr MMOE", "deepctr", "mmoe"),
    ("deepctr PLE[64x2]", "deepctr", "ple"),
    ("rechub MMOE", "rechub", "mmoe"),
    ("rechub PLE[64x2]", "rechub", "ple"),
)


def scratch_settings(scratch: Path, **options) -> Settings:
    """Settings whose every path lies under ``scratch`` (whatever TANDEM_* paths the environment sets)."""
    paths = {name: scratch / default for name, default in PATH_DEFAULTS.items()}
    return Settings(home=scratch, **paths, **options)


def make_scratch(home: Path, ds, scratch: Path) -> Path:
    """Copy night ``ds``'s samples (and, when present, the simulator's truth and landing events of
    ``ds``, for the ceiling) from ``home`` into ``scratch``; ``home`` is only read."""
    source = Settings(home=home)
    samples = source.export_dir(ds) / SAMPLES_FILE
    if not samples.exists():
        raise SystemExit(f"no export for ds={ds}: {samples} does not exist (run `tandem run --ds {ds}`)")
    target = scratch_settings(scratch)
    target.export_dir(ds).mkdir(parents=True)
    shutil.copy2(samples, target.export_dir(ds) / SAMPLES_FILE)
    truth = home / "truth" / "exposures" / f"ds={ds}"
    events = source.landing("events", ds)
    if truth.is_dir() and events.is_dir():
        shutil.copytree(truth, scratch / "truth" / "exposures" / f"ds={ds}")
        shutil.copytree(events, target.landing("events", ds))
    return samples


def tasks_with_positives(samples: Path, ds) -> tuple[str, ...]:
    """The candidate tasks the export has with at least one positive on the validation day."""
    df = pl.read_parquet(samples, hive_partitioning=False)  # the folder names the night, not the rows
    day = pl.col("ds").cast(pl.String()).str.slice(0, 10) == ds.isoformat()
    valid = df.filter(day)
    present = [t for t in CANDIDATE_TASKS if t in valid.columns]
    counts = valid.select(pl.col(t).fill_null(0).clip(0, 1).sum() for t in present).row(0) if present else ()
    return tuple(t for t, n in zip(present, counts, strict=True) if n and n > 0)


def peer_tensors(settings: Settings, ds, tasks: tuple[str, ...]) -> Tensors:
    """The rows the nightly train step reads (``read_split``), encoded with Tandem's encoders."""
    train_df, valid_df = read_split(settings, ds)
    valid_df, _ = split_test(valid_df, settings.test_fraction)  # train() selects and reports on this split
    encoders = Encoders.fit(train_df, feature_spec(settings))
    cat_tr, num_tr = encoders.encode(train_df)
    cat_va, num_va = encoders.encode(valid_df)
    users = valid_df.get_column("user_id").cast(pl.String()).fill_null("").to_numpy()  # as train.py
    return Tensors(
        encoders,
        cat_tr,
        num_tr,
        labels(train_df, tasks),
        cat_va,
        num_va,
        labels(valid_df, tasks),
        users,
        train_df,
        valid_df,
        tasks,
    )


def tandem_settings(scratch: Path, arch: str, seed: int, tasks: tuple[str, ...], args) -> Settings:
    extra = {"hidden_dims": PLE_HIDDEN} if arch == "ple" else {}
    if args.epochs:
        extra["epochs"] = args.epochs
    extra.update(dict(item.split("=", 1) for item in args.set))  # validated by Settings
    return scratch_settings(
        scratch,
        seed=seed,
        baselines=True,
        threads=args.threads,
        architecture=arch,
        tasks=tasks,
        checkpoints=False,  # a checkpoint per epoch changes nothing in the weights, only costs time
        **extra,
    )


def run_tandem(home: Path, ds, arch: str, seed: int, t: Tensors, tasks: tuple[str, ...], args) -> dict:
    """One nightly ``train()`` in a fresh scratch home: {row name: metrics} for the joint model and its
    references. The joint model's speed is its fastest epoch (``metrics.json`` history), as the peers'.
    ``t``: the peers' rows, to check that both trained on the same ones."""
    from mtl_model.learn.train import train

    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        scratch = Path(tmp)
        make_scratch(home, ds, scratch)
        result = train(tandem_settings(scratch, arch, seed, tasks, args), ds)
        history = json.loads((result.model_dir / "metrics.json").read_text())["history"]
    if (result.n_train, result.n_valid) != (t.cat_tr.shape[0], t.cat_va.shape[0]):
        raise RuntimeError(
            f"train() read {result.n_train}/{result.n_valid} rows, the peers {t.cat_tr.shape[0]}"
        )
    speed = result.n_train / min(h["train_seconds"] for h in history)
    esmm = "+esmm" if arch in ("mmoe", "ple") else ""  # ESMM auto: on for the gated models
    name = {"shared_bottom": "shared_bottom", "mmoe": "mmoe", "ple": "ple[64x2]"}[arch]
    rows = {f"tandem {name}{esmm} (joint)": {"samples_per_s": speed, **flat(result.metrics, tasks)}}
    for ref, label in (("single_task", f"tandem {name} single-task x{len(tasks)}"), ("popularity", "")):
        if ref in result.baselines:
            rows[label or "popularity (item rates)"] = flat(result.baselines[ref], tasks)
    if "truth" in result.baselines:
        rows["truth (simulator p, ceiling)"] = flat(result.baselines["truth"], tasks)
    return rows


def view_keys(tasks: tuple[str, ...]) -> list[str]:
    """The columns of the AUCs among real exposures (view-only sources), after the others."""
    return [*(f"auc_{t}_views" for t in tasks), "mean_auc_views"]


def flat(metrics: dict[str, dict[str, float]], tasks: tuple[str, ...]) -> dict[str, float]:
    """task -> {auc, gauc, …} as auc_<task>, gauc_<task>, mean_auc (bench_train.quality's keys)."""
    out = {f"{m}_{t}": metrics[t][m] for t in tasks if t in metrics for m in ("auc", "gauc")}
    out["mean_auc"] = float(np.mean([out.get(f"auc_{t}", math.nan) for t in tasks]))
    views = {f"auc_{t}_views": metrics[t]["auc_views"] for t in tasks if "auc_views" in metrics.get(t, {})}
    if views:
        out |= views | {"mean_auc_views": float(np.nanmean(list(views.values())))}
    return out


def run_peer(t: Tensors, tasks: tuple[str, ...], lib: str, kind: str, seed: int, settings: Settings) -> dict:
    """One peer fit with bench_train's code, the nightly epochs, batch size and learning rate."""
    args = SimpleNamespace(
        seed=seed, lr=settings.learning_rate, epochs=settings.epochs, batch_size=settings.batch_size
    )
    if t.tasks != tasks:
        raise ValueError(f"the tensors hold tasks {t.tasks}, not {tasks}")
    with contextlib.redirect_stdout(io.StringIO()):  # rechub prints every epoch's loss
        if lib == "deepctr":
            return bt.run_deepctr_own(t, kind, args)
        return bt.run_rechub_own(t, kind, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True, help="the Tandem home that holds the export")
    parser.add_argument("--ds", required=True, help="the night (validation day) YYYY-MM-DD")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 42, 43, …")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--epochs", type=int, default=0, help="0: the nightly default (Settings.epochs)")
    parser.add_argument("--architectures", default=",".join(ARCHITECTURES), help="Tandem's joint models")
    parser.add_argument("--only", default="", help="comma-separated row-name prefixes to run (default: all)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of Tandem's runs, and of the encoders every row shares (repeat)",
    )
    args = parser.parse_args(argv)
    if bad := [item for item in args.set if "=" not in item]:
        parser.error(f"--set needs NAME=VALUE, not {bad[0]!r}")
    return args


def selected(name: str, args) -> bool:
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    return not only or any(name.startswith(s) for s in only)


def run_seed(home: Path, ds, seed: int, t: Tensors, settings: Settings, args, runs: dict) -> None:
    """Every selected row once with ``seed``; results (or the reason of a failure) appended to ``runs``
    (row name -> one result per seed). ``settings``: the tasks, epochs, batch size and learning rate."""
    tasks = tuple(settings.tasks)
    for arch in [a.strip() for a in args.architectures.split(",") if a.strip()]:
        if not selected(f"tandem {arch.replace('ple', 'ple[64x2]')}", args):
            continue
        for name, row in run_tandem(home, ds, arch, seed, t, tasks, args).items():
            if name.startswith(("popularity", "truth")) and name in runs:
                continue  # deterministic: once is enough
            runs.setdefault(name, []).append(row)
            report(name, seed, row)
    for name, lib, kind in PEERS:
        if not selected(name, args):
            continue
        try:
            row = run_peer(t, tasks, lib, kind, seed, settings)
        except Exception as exc:  # noqa: BLE001 - a peer failing on some data is a result, not a crash
            row = {"note": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
        runs.setdefault(name, []).append(row)
        report(name, seed, row)


def report(name: str, seed: int, row: dict) -> None:
    speed = f"{row['samples_per_s']:,.0f} samples/s, " if "samples_per_s" in row else ""
    result = f"mean AUC {row['mean_auc']:.4f}" if "mean_auc" in row else row.get("note", "")
    print(f"  seed {seed} {name}: {speed}{result} (load {os.getloadavg()[0]:.2f})", flush=True)


def summarise(name: str, results: list[dict], tasks: tuple[str, ...]) -> dict:
    """Mean ± sample sd over the seeds of every metric; the fastest epoch of all seeds; failures noted."""
    ok = [r for r in results if "mean_auc" in r]
    notes = sorted({r["note"] for r in results if "note" in r})
    row: dict = {"model": name, "seeds": len(ok), "note": "; ".join(notes)}
    speeds = [r["samples_per_s"] for r in ok if "samples_per_s" in r]
    row["samples/s"] = max(speeds) if speeds else None
    for key in [f"{m}_{t}" for m in ("auc", "gauc") for t in tasks] + ["mean_auc", *view_keys(tasks)]:
        values = np.array([r.get(key, math.nan) for r in ok], dtype=float)
        if values.size == 0:
            continue
        sd = f" ±{values.std(ddof=1):.4f}" if values.size > 1 and np.isfinite(values).all() else ""
        row[key] = f"{values.mean():.4f}{sd}"
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    ds, home = parse_date(args.ds), args.home.resolve()
    runs: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        samples = make_scratch(home, ds, Path(tmp))
        tasks = tasks_with_positives(samples, ds)
        if not tasks:
            raise SystemExit(f"{samples}: no task of {CANDIDATE_TASKS} has a positive on {ds}")
        settings = tandem_settings(Path(tmp), "shared_bottom", 42, tasks, args)
        t = peer_tensors(settings, ds, tasks)
    print(
        f"{samples}: {t.cat_tr.shape[0]:,} training rows, {t.cat_va.shape[0]:,} validation rows (ds={ds}); "
        f"tasks {list(tasks)}, validation positives {t.y_va.sum(0).int().tolist()}; categorical "
        f"{dict(zip(t.encoders.spec.categorical, t.encoders.cardinalities, strict=True))}, "
        f"{t.encoders.n_numeric} numeric {list(t.encoders.spec.numeric)}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; epochs {settings.epochs}, batch {settings.batch_size}, "
        f"lr {settings.learning_rate}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    for seed in range(42, 42 + args.seeds):  # seeds in turn: a slow spell of the machine hits every row
        run_seed(home, ds, seed, t, settings, args, runs)
    first = [n for n in runs if n.startswith(("popularity", "truth"))]  # the references, then the models
    rows = [summarise(n, runs[n], tasks) for n in first + [n for n in runs if n not in first]]
    columns = ["model", "samples/s", *(f"auc_{k}" for k in tasks), "mean_auc", *(f"gauc_{k}" for k in tasks)]
    if any("mean_auc_views" in r for r in rows):  # a view-only source: the AUCs among real views too
        columns += view_keys(tasks)
    columns += ["seeds", "note"]
    print()
    print(table(rows, columns, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
