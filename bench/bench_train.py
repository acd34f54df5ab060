"""Training benchmark of the joint model: samples/s and validation AUC per architecture, dense vs sparse
embedding gradients, side by side with torch-rechub's and DeepCTR-Torch's MMOE and PLE on identical
tensors.

    python bench/bench_train.py                      # defaults below: ~500k simulated exposures, 2 epochs
    python bench/bench_train.py --users 4000 --epochs 1 --no-rechub   # a quick look
    python bench/bench_train.py --features --no-rechub   # + dbt-like f_* features: log vs linear
    python bench/bench_train.py --repeat 3 --only "tandem ple[64x2] dense,rechub PLE[64x2] own trainer"

Data: ``mtl_model.sources.simulate`` (7 days; the last is the validation day), turned into exposures exactly
as the dbt model ``interactions`` does (see bench/common.py), encoded once with Tandem's encoders;
every model below trains on the same tensors with the same batch size, learning rate and epochs.
``--features`` adds point-in-time ``f_*`` count / rate features (``bench.common.with_features``, like the
dbt feature models) to every model's input, and rows that train on the same features without the log
of counts and amounts (``FeatureSpec(log_counts=False)``), to measure that transform.

* ``+fm`` rows: the same model with the FM term (``interaction="fm"``, ``TANDEM_INTERACTION=fm``; off
  by default); the other rows are the network alone, as in earlier tables.
* ``tandem``: :func:`mtl_model.learn.fit.fit_model`, the nightly training loop (tensors in memory, a seeded
  permutation per epoch, fused Adam, or a row-sparse Adam on the embeddings + Adam on the rest).
* ``rechub/own``: torch-rechub 0.9.0 with
  its own ``MTLTrainer`` and ``DataGenerator`` (a DataLoader over per-row dicts), as its docs use it.
* ``rechub/loop``: the same rechub model fed from in-memory tensors by a minimal loop (isolates the
  model's own cost from its data path).
* ``deepctr/own``: DeepCTR-Torch 0.3.0's ``MMOE`` / ``PLE`` with its own ``compile`` / ``fit``, as its docs
  use them. Both libraries: ``pip install -e '.[bench]'``.

Speed: samples per second of the fastest epoch of each model (training steps only, validation
excluded: the least disturbed epoch on a shared machine); compare the ratios within one run, not
absolute numbers across machines. ``--repeat N`` runs the selected rows N times in turn and keeps
each row's fastest epoch over all turns: rows run minutes apart, and the machine's speed drifts by
±10% over minutes, so one turn can put a slow spell on one side of a ratio. ``load``: the 1-minute
load average when the row finished. With several threads, other jobs on the same cores can stall
every OpenMP parallel region (a waiting thread spins while its partner is descheduled): rows run
under such load can be 10–40× slow, so compare rows with a low ``load`` only
(``OMP_WAIT_POLICY=PASSIVE`` avoids the stall, at about 10% of speed on an idle machine). AUC /
GAUC: the validation day, best of
the epochs for every model (Tandem keeps its best epoch by early stopping; rechub is evaluated after
each epoch too). Nothing here asserts anything.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # before torch-rechub imports tqdm: no progress bars

import argparse
import logging
import math
import sys
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    Tensors,
    Timer,
    simulated_samples,
    table,
    to_tensors,
    with_features,
)
from mtl_model.config import Settings  # noqa: E402
from mtl_model.learn.baselines import popularity_scores  # noqa: E402
from mtl_model.learn.device import deterministic  # noqa: E402
from mtl_model.learn.features import FeatureSpec  # noqa: E402
from mtl_model.learn.fit import fit_model  # noqa: E402
from mtl_model.learn.metrics import auc, gauc  # noqa: E402
from mtl_model.learn.networks import build_model, predict_proba  # noqa: E402
from mtl_model.learn.options import TOWER_DIM  # noqa: E402
from mtl_model.learn.samples import real_exposures  # noqa: E402
from mtl_model.sources.simulate import SimConfig  # noqa: E402

LAST_DAY = date(2026, 3, 7)


def quality(probs: dict[str, np.ndarray], t: Tensors) -> dict[str, float]:
    """AUC and GAUC per task and their mean on the validation rows; for a view-only source (rows with
    ``exposure`` = ``sampled``) also the AUC among real exposures only (``auc_<task>_views``), the
    metric that the nightly ``model_metrics`` reports first for such sources."""
    labels = t.y_va.numpy()
    out: dict[str, float] = {}
    for i, task in enumerate(t.tasks):
        out[f"auc_{task}"] = auc(labels[:, i], probs[task])
        out[f"gauc_{task}"] = gauc(labels[:, i], probs[task], t.users_va)
    out["mean_auc"] = float(np.mean([out[f"auc_{task}"] for task in t.tasks]))
    real = real_exposures(t.valid_df)
    if real is not None:
        for i, task in enumerate(t.tasks):
            out[f"auc_{task}_views"] = auc(labels[real, i], probs[task][real])
        out["mean_auc_views"] = float(np.nanmean([out[f"auc_{task}_views"] for task in t.tasks]))
    return out


def fit_settings(args, **options) -> Settings:
    """The nightly loop's settings for a bench row: ``args``' epochs, batch size, learning rate and seed,
    every epoch (no early stopping), no checkpoints, no baselines; ``options``: other Settings fields."""
    return Settings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        seed=args.seed,
        patience=0,
        checkpoints=False,
        baselines=False,
        **options,
    )


def run_tandem(
    t: Tensors,
    arch: str,
    hidden: tuple[int, ...],
    esmm: bool,
    sparse: bool,
    args,
    weighting: str = "fixed",
    interaction: str | None = None,
) -> dict:
    torch.manual_seed(args.seed)
    scene = t.encoders.spec.categorical.index("scene")
    model = build_model(
        arch,
        t.encoders.cardinalities,
        t.encoders.n_numeric,
        t.tasks,
        embedding_dim=16,
        hidden_dims=hidden,
        tower_dim=TOWER_DIM,
        esmm=esmm,
        scene_index=scene,
        sparse=sparse,
        interaction=interaction,
    )
    y_tr = t.y_tr.clone()
    if esmm:  # ESMM targets: click ∧ task
        y_tr[:, 1:] *= y_tr[:, :1]
    with deterministic(args.seed):  # as in the nightly train()
        fit = fit_model(
            model,
            (t.cat_tr, t.num_tr, y_tr),
            (t.cat_va, t.num_va, t.y_va),
            fit_settings(args, sparse_embeddings=sparse, loss_weighting=weighting),
            device=torch.device("cpu"),
        )
    p = predict_proba(model, t.cat_va, t.num_va)
    speed = max(t.cat_tr.shape[0] / h["train_seconds"] for h in fit.history)  # the least disturbed epoch
    return {"samples_per_s": speed, **quality({task: p[task].numpy() for task in t.tasks}, t)}


def run_single_task(
    t: Tensors, arch: str, hidden: tuple[int, ...], args, interaction: str | None = None
) -> dict:
    """One model per task, same architecture and capacity, no ESMM (the nightly single_task baseline).
    Speed: training rows per second for the three models together (one pass over the data each)."""
    scene = t.encoders.spec.categorical.index("scene")
    probs, seconds = {}, 0.0
    for i, task in enumerate(t.tasks):
        torch.manual_seed(args.seed)
        model = build_model(
            arch,
            t.encoders.cardinalities,
            t.encoders.n_numeric,
            (task,),
            hidden_dims=hidden,
            tower_dim=TOWER_DIM,
            esmm=False,
            scene_index=scene,
            sparse=True,
            interaction=interaction,
        )
        fit = fit_model(
            model,
            (t.cat_tr, t.num_tr, t.y_tr[:, i : i + 1]),
            (t.cat_va, t.num_va, t.y_va[:, i : i + 1]),
            fit_settings(args),
            device=torch.device("cpu"),
        )
        seconds += min(h["train_seconds"] for h in fit.history)
        probs[task] = predict_proba(model, t.cat_va, t.num_va)[task].numpy()
    return {"samples_per_s": t.cat_tr.shape[0] / seconds, **quality(probs, t)}


def rechub_features(t: Tensors, embed_dim: int = 16):
    from torch_rechub.basic.features import DenseFeature, SparseFeature

    cats = [
        SparseFeature(f"cat_{name}", vocab_size=card, embed_dim=embed_dim)
        for name, card in zip(t.encoders.spec.categorical, t.encoders.cardinalities, strict=True)
    ]
    return cats + [DenseFeature(f"num_{name}") for name in t.encoders.spec.numeric]


def rechub_x(t: Tensors, cat: torch.Tensor, num: torch.Tensor, index=None) -> dict:
    names_c = [f"cat_{n}" for n in t.encoders.spec.categorical]
    names_n = [f"num_{n}" for n in t.encoders.spec.numeric]
    if index is not None:
        cat, num = cat[index], num[index]
    return {**{n: cat[:, i] for i, n in enumerate(names_c)}, **{n: num[:, i] for i, n in enumerate(names_n)}}


def rechub_model(kind: str, t: Tensors):
    from torch_rechub.models.multi_task import MMOE, PLE

    features = rechub_features(t)
    towers = [{"dims": [TOWER_DIM]} for _ in t.tasks]
    if kind == "mmoe":
        return MMOE(features, ["classification"] * 3, 4, {"dims": [128, 64]}, towers)
    return PLE(features, ["classification"] * 3, 2, 1, 2, {"dims": [64]}, towers)


@torch.no_grad()
def rechub_predict(model, t: Tensors, batch: int = 65536) -> dict[str, np.ndarray]:
    model.eval()
    outs = [
        model(rechub_x(t, t.cat_va[i : i + batch], t.num_va[i : i + batch]))
        for i in range(0, t.cat_va.shape[0], batch)
    ]
    p = torch.cat(outs).double().numpy()
    model.train()
    return {task: p[:, i] for i, task in enumerate(t.tasks)}


def best(results: list[dict]) -> dict:
    return max(results, key=lambda r: r["mean_auc"] if math.isfinite(r["mean_auc"]) else -1)


def run_rechub_own(t: Tensors, kind: str, args) -> dict:
    from torch_rechub.trainers import MTLTrainer
    from torch_rechub.utils.data import DataGenerator

    torch.manual_seed(args.seed)
    model = rechub_model(kind, t)
    x_tr = {k: v.numpy() for k, v in rechub_x(t, t.cat_tr, t.num_tr).items()}
    x_va = {k: v.numpy() for k, v in rechub_x(t, t.cat_va, t.num_va).items()}
    loaders = DataGenerator(x_tr, t.y_tr.numpy()).generate_dataloader(
        x_va, t.y_va.numpy(), x_va, t.y_va.numpy(), batch_size=args.batch_size
    )
    with tempfile.TemporaryDirectory() as tmp:
        trainer = MTLTrainer(
            model,
            ["classification"] * 3,
            optimizer_params={"lr": args.lr, "weight_decay": 0.0},
            n_epoch=args.epochs,
            device="cpu",
            model_path=tmp,
        )
        seconds, per_epoch = [], []
        for _ in range(args.epochs):
            with Timer() as timer:
                trainer.train_one_epoch(loaders[0])
            seconds.append(timer.seconds)
            per_epoch.append(quality(rechub_predict(trainer.model, t), t))
    return {"samples_per_s": t.cat_tr.shape[0] / min(seconds), **best(per_epoch)}


def run_rechub_loop(t: Tensors, kind: str, args) -> dict:
    torch.manual_seed(args.seed)
    model = rechub_model(kind, t)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    gen = torch.Generator().manual_seed(args.seed)
    n, seconds, per_epoch = t.cat_tr.shape[0], [], []
    model.train()
    for _ in range(args.epochs):
        with Timer() as timer:
            perm = torch.randperm(n, generator=gen)
            for lo in range(0, n, args.batch_size):
                idx = perm[lo : lo + args.batch_size]
                p = model(rechub_x(t, t.cat_tr, t.num_tr, idx))
                loss = F.binary_cross_entropy(p, t.y_tr[idx], reduction="none").mean(0).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
        seconds.append(timer.seconds)
        per_epoch.append(quality(rechub_predict(model, t), t))
    return {"samples_per_s": n / min(seconds), **best(per_epoch)}


def deepctr_model(kind: str, t: Tensors, seed: int):
    """DeepCTR-Torch's MMOE / PLE / SharedBottom at the capacity of the other rows: gates without
    hidden layers, towers of TOWER_DIM, the shared bottom as Tandem's (128 → 64); everything else
    (init, L2 on the embeddings) DeepCTR's defaults. ``seed`` goes to DeepCTR's own ``seed``
    argument: its models reseed torch with it (default 1024)."""
    from deepctr_torch.inputs import DenseFeat, SparseFeat
    from deepctr_torch.models.multitask import MMOE, PLE, SharedBottom

    columns = [
        SparseFeat(f"cat_{name}", vocabulary_size=card, embedding_dim=16)
        for name, card in zip(t.encoders.spec.categorical, t.encoders.cardinalities, strict=True)
    ] + [DenseFeat(f"num_{name}", 1) for name in t.encoders.spec.numeric]
    common = dict(
        gate_dnn_hidden_units=(),
        tower_dnn_hidden_units=(TOWER_DIM,),
        task_types=["binary"] * len(t.tasks),
        task_names=list(t.tasks),
        device="cpu",
        seed=seed,
    )
    if kind == "mmoe":
        return MMOE(columns, num_experts=4, expert_dnn_hidden_units=(128, 64), **common)
    if kind == "shared_bottom":
        common.pop("gate_dnn_hidden_units")
        return SharedBottom(columns, bottom_dnn_hidden_units=(128, 64), **common)
    experts = dict(shared_expert_num=2, specific_expert_num=1, num_levels=2, expert_dnn_hidden_units=(64,))
    model = PLE(columns, **experts, **common)
    # DeepCTR-Torch 0.3.0 builds specific_expert_num shared experts per level instead of
    # shared_expert_num (ple.py, `multi_module_list(..., 1, self.specific_expert_num, ...)`), and its
    # forward then indexes past them: rebuild them as the paper and the docstring have it
    from deepctr_torch.layers import DNN

    model.shared_experts = torch.nn.ModuleList(
        torch.nn.ModuleList(
            [
                torch.nn.ModuleList(
                    DNN(model.input_dim if level == 0 else 64, (64,), init_std=0.0001, device="cpu")
                    for _ in range(2)
                )
            ]
        )
        for level in range(2)
    )
    return model


def run_deepctr_own(t: Tensors, kind: str, args) -> dict:
    """DeepCTR-Torch 0.3.0 with its own Keras-like ``compile`` / ``fit`` (a DataLoader over a
    TensorDataset of the concatenated inputs), one ``fit`` call per epoch to time each."""
    import contextlib
    import io

    torch.manual_seed(args.seed)
    model = deepctr_model(kind, t, args.seed)
    model.compile(
        torch.optim.Adam(model.parameters(), lr=args.lr), loss=["binary_crossentropy"] * len(t.tasks)
    )
    x_tr = {k: v.numpy() for k, v in rechub_x(t, t.cat_tr, t.num_tr).items()}
    x_va = {k: v.numpy() for k, v in rechub_x(t, t.cat_va, t.num_va).items()}
    seconds, per_epoch = [], []
    for _ in range(args.epochs):
        with Timer() as timer, contextlib.redirect_stdout(io.StringIO()):  # fit prints its device
            model.fit(x_tr, t.y_tr.numpy(), batch_size=args.batch_size, epochs=1, verbose=0)
        seconds.append(timer.seconds)
        p = model.predict(x_va, batch_size=65536)
        per_epoch.append(quality({task: p[:, i].astype(np.float64) for i, task in enumerate(t.tasks)}, t))
    return {"samples_per_s": t.cat_tr.shape[0] / min(seconds), **best(per_epoch)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=40_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--sessions", type=float, default=0.18, help="sessions per user per day")
    parser.add_argument("--bot-rate", type=float, default=0.001, help="share of click-bot users")
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", default="", help="comma-separated row names to run (default: all)")
    parser.add_argument("--no-rechub", action="store_true", help="no torch-rechub or DeepCTR-Torch rows")
    parser.add_argument("--features", action="store_true", help="add f_* features; log vs linear rows")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the selected rows this many times in turn; each row keeps its fastest epoch of all",
    )
    return parser.parse_args(argv)


def prepare(args: argparse.Namespace) -> tuple[Tensors, Tensors | None]:
    """The simulated exposures as tensors (and, with ``--features``, the same without log counts)."""
    with tempfile.TemporaryDirectory() as home, Timer() as timer:
        samples = simulated_samples(
            Path(home),
            LAST_DAY,
            args.days,
            SimConfig(
                n_users=args.users,
                n_items=args.items,
                sessions_per_user=args.sessions,
                bot_rate=args.bot_rate,
                seed=7,
            ),
        )
        if args.features:
            samples = with_features(samples)
        t = to_tensors(samples)
        t_linear = to_tensors(samples, FeatureSpec(log_counts=False)) if args.features else None
    print(
        f"{samples.height:,} exposures ({t.cat_tr.shape[0]:,} train, {t.cat_va.shape[0]:,} validation), "
        f"vocabularies {dict(zip(t.encoders.spec.categorical, t.encoders.cardinalities, strict=True))}, "
        f"positive rates {dict(zip(t.tasks, t.y_tr.mean(0).tolist(), strict=True))}; prepared in "
        f"{timer.seconds:.1f}s; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"epochs {args.epochs}, batch {args.batch_size}, lr {args.lr}; numeric features "
        f"{list(t.encoders.spec.numeric)}, of which log1p {list(t.encoders.spec.log_numeric)} and signed "
        f"log1p {list(t.encoders.spec.signed_log_numeric)}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    return t, t_linear


def bench_rows(t: Tensors, t_linear: Tensors | None, args: argparse.Namespace) -> list[tuple[str, Callable]]:
    """(row name, run) of every model row, filtered by ``--only``."""
    runs = [
        ("tandem shared_bottom dense", lambda: run_tandem(t, "shared_bottom", (128, 64), False, False, args)),
        ("tandem shared_bottom sparse", lambda: run_tandem(t, "shared_bottom", (128, 64), False, True, args)),
        ("tandem mmoe+esmm dense", lambda: run_tandem(t, "mmoe", (128, 64), True, False, args)),
        ("tandem mmoe+esmm sparse", lambda: run_tandem(t, "mmoe", (128, 64), True, True, args)),
        ("tandem ple+esmm sparse", lambda: run_tandem(t, "ple", (128, 64), True, True, args)),
        ("tandem single-task shared_bottom x3", lambda: run_single_task(t, "shared_bottom", (128, 64), args)),
        ("tandem single-task mmoe x3", lambda: run_single_task(t, "mmoe", (128, 64), args)),
        (
            "tandem shared_bottom sparse +fm",
            lambda: run_tandem(t, "shared_bottom", (128, 64), False, True, args, interaction="fm"),
        ),
        (
            "tandem mmoe+esmm sparse +fm",
            lambda: run_tandem(t, "mmoe", (128, 64), True, True, args, interaction="fm"),
        ),
        (
            "tandem single-task shared_bottom x3 +fm",
            lambda: run_single_task(t, "shared_bottom", (128, 64), args, "fm"),
        ),
        ("tandem mmoe dense", lambda: run_tandem(t, "mmoe", (128, 64), False, False, args)),
        ("tandem mmoe sparse", lambda: run_tandem(t, "mmoe", (128, 64), False, True, args)),
        ("tandem ple[64x2] dense", lambda: run_tandem(t, "ple", (64, 64), False, False, args)),
        ("tandem ple[64x2] sparse", lambda: run_tandem(t, "ple", (64, 64), False, True, args)),
        (
            "tandem mmoe+esmm sparse pcgrad",
            lambda: run_tandem(t, "mmoe", (128, 64), True, True, args, "pcgrad"),
        ),
    ]
    if t_linear is not None:  # the same models on the same f_* features without the log of counts
        runs += [
            (
                "tandem shared_bottom sparse (f_ linear)",
                lambda: run_tandem(t_linear, "shared_bottom", (128, 64), False, True, args),
            ),
            (
                "tandem mmoe+esmm sparse (f_ linear)",
                lambda: run_tandem(t_linear, "mmoe", (128, 64), True, True, args),
            ),
            (
                "tandem ple+esmm sparse (f_ linear)",
                lambda: run_tandem(t_linear, "ple", (128, 64), True, True, args),
            ),
        ]
    if not args.no_rechub:
        runs += [
            ("rechub MMOE own trainer", lambda: run_rechub_own(t, "mmoe", args)),
            ("rechub MMOE in tensor loop", lambda: run_rechub_loop(t, "mmoe", args)),
            ("rechub PLE[64x2] own trainer", lambda: run_rechub_own(t, "ple", args)),
            ("rechub PLE[64x2] in tensor loop", lambda: run_rechub_loop(t, "ple", args)),
            ("deepctr MMOE own trainer", lambda: run_deepctr_own(t, "mmoe", args)),
            ("deepctr PLE[64x2] own trainer", lambda: run_deepctr_own(t, "ple", args)),
        ]
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    return [(name, run) for name, run in runs if not only or name in only]


def measure(runs: list[tuple[str, Callable]], args: argparse.Namespace) -> list[dict]:
    """Run the rows ``--repeat`` times in turn; each keeps its fastest turn."""
    measured: dict[str, dict] = {}
    for turn in range(max(args.repeat, 1)):  # in turn, so that a slow spell of the machine hits every row
        for name, run in runs:
            result = run()
            result["load"] = f"{os.getloadavg()[0]:.2f}"
            if name not in measured or result["samples_per_s"] > measured[name]["samples_per_s"]:
                measured[name] = result  # same seed, same AUC every turn; keep the fastest
            print(
                f"  {name}: {result['samples_per_s']:,.0f} samples/s, mean AUC {result['mean_auc']:.4f}"
                + (f" (turn {turn + 1})" if args.repeat > 1 else ""),
                flush=True,
            )
    return [{"model": name, **measured[name]} for name, _ in runs]


def add_ratios(rows: list[dict]) -> None:
    """x_<lib>: samples/s ÷ that library's own trainer, same architecture (in place)."""
    for lib in ("rechub", "deepctr"):
        ref = {
            kind: next((r["samples_per_s"] for r in rows if r["model"] == f"{lib} {kind} own trainer"), None)
            for kind in ("MMOE", "PLE[64x2]")
        }
        for r in rows:
            name = r["model"].lower()
            kind = "MMOE" if "mmoe" in name else "PLE[64x2]" if "ple[64x2]" in name else None
            kind = None if "single-task" in name or "pcgrad" in name or "f_ linear" in name else kind
            if "samples_per_s" in r and kind and ref.get(kind):
                r[f"x_{lib}"] = r["samples_per_s"] / ref[kind]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    t, t_linear = prepare(args)

    rows: list[dict] = []
    pop = popularity_scores(t.train_df, t.valid_df, t.tasks)
    rows.append({"model": "popularity (item rates)", **quality({k: v.to_numpy() for k, v in pop.items()}, t)})
    truth = {task: t.valid_df.get_column(f"p_{task}").fill_null(0.0).to_numpy() for task in t.tasks}
    rows.append({"model": "truth (simulator p, ceiling)", **quality(truth, t)})
    rows += measure(bench_rows(t, t_linear, args), args)
    add_ratios(rows)

    columns = ["model", "samples_per_s", "x_rechub", "x_deepctr", *(f"auc_{k}" for k in t.tasks), "mean_auc"]
    columns += [f"gauc_{k}" for k in t.tasks] + ["load"]
    print()
    print(table(rows, columns, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
