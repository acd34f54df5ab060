"""Training throughput of the joint model on a GPU: MMoE at a large batch with bf16 autocast (the goal in
issue 5: over 2M samples/s on an H100), through the nightly loop ``mtl_model.learn.fit.fit_model``.

    python bench/bench_gpu.py                              # cuda, bf16, batch 65536, MMoE dense
    python bench/bench_gpu.py --arch ple --no-bf16         # PLE in fp32
    python bench/bench_gpu.py --device cpu --replicate 1 --epochs 1 --batch-size 2048   # a smoke run

Data: the same simulated exposures as ``bench/bench_train.py`` (``--users`` / ``--items``), encoded
once; the training tensors are repeated ``--replicate`` times so that an epoch has enough large
batches to time (repeated rows change nothing about speed). The tensors sit on the device before the
first epoch, as in the nightly run. Speed: training rows per second of the fastest epoch (the first
includes CUDA's warm-up); AUC on the validation day. Nothing here asserts anything.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_train import LAST_DAY, fit_settings, quality  # noqa: E402
from bench.common import TASKS, Tensors, Timer, simulated_samples, table, to_tensors  # noqa: E402
from mtl_model.learn.device import deterministic  # noqa: E402
from mtl_model.learn.fit import FitResult, fit_model  # noqa: E402
from mtl_model.learn.networks import build_model, predict_proba  # noqa: E402
from mtl_model.learn.options import TOWER_DIM  # noqa: E402
from mtl_model.sources.simulate import SimConfig  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", default="mmoe", choices=["shared_bottom", "mmoe", "ple"])
    parser.add_argument("--batch-size", type=int, default=65536)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--replicate", type=int, default=20, help="repeat the training rows this many times")
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32")
    parser.add_argument("--sparse", action="store_true", help="sparse embedding gradients")
    parser.add_argument("--users", type=int, default=40_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run on a GPU machine, or pass --device cpu for a smoke run")
        return 2

    with tempfile.TemporaryDirectory() as home, Timer() as timer:
        config = SimConfig(
            n_users=args.users, n_items=args.items, sessions_per_user=0.18, bot_rate=0.001, seed=7
        )
        t = to_tensors(simulated_samples(Path(home), LAST_DAY, 7, config))
    k = max(args.replicate, 1)
    train = (t.cat_tr.repeat(k, 1), t.num_tr.repeat(k, 1), t.y_tr.repeat(k, 1))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{train[0].shape[0]:,} training rows ({t.cat_tr.shape[0]:,} × {k}), "
        f"prepared in {timer.seconds:.1f}s; "
        f"{name}, torch {torch.__version__}, {args.arch}, batch {args.batch_size:,}, "
        f"{'bf16 autocast' if device.type == 'cuda' and not args.no_bf16 else 'fp32'}",
        flush=True,
    )
    torch.manual_seed(args.seed)
    model = build_model(
        args.arch,
        t.encoders.cardinalities,
        t.encoders.n_numeric,
        TASKS,
        hidden_dims=(128, 64),
        tower_dim=TOWER_DIM,
        esmm=False,
        scene_index=t.encoders.spec.categorical.index("scene"),
        sparse=args.sparse,
    ).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with deterministic(args.seed):
        fit = fit_model(
            model,
            train,
            (t.cat_va, t.num_va, t.y_va),
            fit_settings(args, sparse_embeddings=args.sparse, bf16=not args.no_bf16),
            device=device,
        )
    report(model, fit, t, train[0].shape[0], device)
    return 0


def report(model: torch.nn.Module, fit: FitResult, t: Tensors, n_train: int, device: torch.device) -> None:
    """Print the speed of each epoch, the fastest, the validation mean AUC and the peak GPU memory."""
    p = predict_proba(model, t.cat_va, t.num_va, device=device)
    rows = [
        {
            "epoch": h["epoch"],
            "samples_per_s": n_train / h["train_seconds"],
            "seconds": h["train_seconds"],
        }
        for h in fit.history
    ]
    print(table(rows, ["epoch", "samples_per_s", "seconds"]))
    result = quality({task: p[task].numpy() for task in TASKS}, t)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    print(
        f"fastest epoch: {max(r['samples_per_s'] for r in rows):,.0f} samples/s; validation mean AUC "
        f"{result['mean_auc']:.4f}" + (f"; peak GPU memory {peak:.2f} GiB" if device.type == "cuda" else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
