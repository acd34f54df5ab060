"""Does the model hold past its first epoch? The validation score of every epoch, the last-vs-best
gap, and the night's metrics on the held-out test split, per setting and seed, on fixed exports.

    python bench/bench_epochs.py build --home /tmp/tandem-epochs   # once: simulator, Tianchi, REES46
    python bench/bench_epochs.py train --home /tmp/tandem-epochs --seeds 42,43 \
        --configs before,after --epochs 3

``build`` makes three homes under ``--home`` and exports one night in each: ``sim`` (the demo's size:
2,000 users, 1,000 items, 14 days of the simulator), ``tianchi`` (the real Tianchi mobile sample of
``../shared/data``, landed with ``tandem ingest``, its last day as the night) and ``rees46`` (the real
REES46 sample, its last 20 minutes as the night: see ``REES46_NIGHT``). ``train`` trains the nightly way
(:func:`mtl_model.learn.train.train`, no references) on those exports with ``patience=0`` (every epoch
runs, so the gap is seen; ``--patience 2`` for the nightly early stopping) and prints, per home,
configuration and seed: the validation mean AUC of each epoch, the best and last epoch, ``gap`` = best −
last, and the test split's mean AUC and mean AUC among real views. Configurations: ``before`` = no
regularisation (weight decay 0, embedding weight decay 0, constant learning rate, no step budget,
``plateau=continue``), ``cosine`` = the
cosine schedule alone, ``cosine+decay`` = with weight decay 0.01 on the dense layers and 0.1 on the
embedding rows, ``strong-decay`` = 0.1 and 1.0, ``lr0.001+cosine`` = a third of the learning rate with
the cosine, ``dropout0.1`` / ``dropout0.2`` = dropout 0.1 / 0.2 after each hidden ReLU
(``TANDEM_DROPOUT``), ``dropout0.1+cosine`` = dropout 0.1 with the cosine, ``min_steps200`` = at least
200 optimizer steps (``TANDEM_MIN_STEPS``: more epochs than ``--epochs`` on a small window), with the
cosine schedule over those epochs (``min_steps200+cosine``), a third of the learning rate too
(``min_steps200+lr0.001+cosine``) or the decays of ``cosine+decay`` (``min_steps200+cosine+decay``),
``uniform_start`` = the task towers' output biases at 0 (``TANDEM_OUTPUT_BIAS=uniform``; ``before``
starts them at the base rate, the default since 2026-12-02), ``after`` = the defaults of
:class:`~mtl_model.config.Settings`; or any of these and ``NAME=VALUE`` settings joined by ``+``
(``cosine+decay+learning_rate=0.002``; ``decay`` = the two decays of ``cosine+decay``), on top of
``before``.
Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import named_settings, table  # noqa: E402
from mtl_model.config import Settings  # noqa: E402
from mtl_model.dates import parse_date  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIM_END = "2026-01-14"
# The REES46 sample spans 00:00–02:50 UTC of one day. Read in Newfoundland time (UTC−2:30 in
# October) its last 20 minutes (02:30–02:50 UTC, 11,503 events) fall on 2019-10-01 and the first
# 2.5 hours (5,931 events) on 2019-09-30: a real log with a day to learn from and a day to judge on.
REES46_NIGHT = "2019-10-01"
TZ = {"sim": "UTC", "tianchi": "Asia/Shanghai", "rees46": "America/St_Johns"}
BEFORE = {
    "weight_decay": 0.0,
    "embedding_weight_decay": 0.0,
    "lr_schedule": "constant",
    "min_steps": 0,
    "plateau": "continue",
}
CONFIGS = {  # each on top of BEFORE (the defaults before issue 19's changes), except ``after``
    "before": {},
    "cosine": {"lr_schedule": "cosine"},
    "cosine+decay": {"weight_decay": 0.01, "embedding_weight_decay": 0.1, "lr_schedule": "cosine"},
    "strong-decay": {"weight_decay": 0.1, "embedding_weight_decay": 1.0, "lr_schedule": "cosine"},
    "lr0.001+cosine": {"learning_rate": 0.001, "lr_schedule": "cosine"},
    "dropout0.1": {"dropout": 0.1},
    "dropout0.2": {"dropout": 0.2},
    "dropout0.1+cosine": {"dropout": 0.1, "lr_schedule": "cosine"},
    "min_steps200": {"min_steps": 200},
    "min_steps200+cosine": {"min_steps": 200, "lr_schedule": "cosine"},
    "min_steps200+lr0.001+cosine": {"min_steps": 200, "learning_rate": 0.001, "lr_schedule": "cosine"},
    "min_steps200+cosine+decay": {
        "min_steps": 200,
        "weight_decay": 0.01,
        "embedding_weight_decay": 0.1,
        "lr_schedule": "cosine",
    },
    "uniform_start": {"output_bias": "uniform"},  # the output biases' start before 2026-12-02
    "decay": {"weight_decay": 0.01, "embedding_weight_decay": 0.1},  # the decays of cosine+decay
}


def _night(settings: Settings, ds: str) -> None:
    from mtl_model.outputs.warehouse import export_day
    from mtl_model.pipeline.dbt import dbt_command

    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    command = dbt_command("build", "--quiet", target=settings.home / "t", settings=settings, run_date=ds)
    subprocess.run(
        [*command, "--exclude", "resource_type:test", "resource_type:unit_test"], env=env, check=True
    )
    export_day(settings, parse_date(ds))


def build(home: Path) -> None:
    from datetime import timedelta

    from mtl_model.sources.ingest import ingest
    from mtl_model.sources.simulate import SimConfig, simulate

    sim = Settings(home=home / "sim")
    end = parse_date(SIM_END)
    simulate(sim, end - timedelta(days=13), 14, SimConfig(n_users=2000, n_items=1000, seed=sim.seed))
    _night(sim, SIM_END)
    tianchi = Settings(home=home / "tianchi", business_tz=TZ["tianchi"])
    folder = SHARED_DATA / "tianchi_mobile"
    ingest(
        tianchi, "tianchi-mobile", folder / "user_behavior_sample.csv", items=folder / "item_info_sample.csv"
    )
    last = max(p.name.removeprefix("ds=") for p in (tianchi.landing_dir / "events").glob("ds=*"))
    _night(tianchi, last)
    rees46 = Settings(home=home / "rees46", business_tz=TZ["rees46"])
    ingest(rees46, "rees46", SHARED_DATA / "rees46" / "events_2019-10-01_sample.csv")
    _night(rees46, REES46_NIGHT)
    nights = {"sim": SIM_END, "tianchi": last, "rees46": REES46_NIGHT}
    (home / "nights.json").write_text(json.dumps(nights))


def _config(name: str) -> dict[str, object]:
    """The settings of configuration ``name`` (see the module docstring); ``after``: today's defaults."""
    if name == "after":
        return {}
    if name in CONFIGS:  # names with a + of their own (cosine+decay, min_steps200+lr0.001+cosine)
        return {**BEFORE, **CONFIGS[name]}
    return {**BEFORE, **named_settings(name, CONFIGS, "a configuration")}


def _row(settings: Settings, ds: str, name: str, seed: int, epochs: int, patience: int = 0) -> dict:
    from mtl_model.learn.train import train

    config = _config(name)
    changes = {**config, "seed": seed, "epochs": epochs, "patience": patience, "baselines": False}
    result = train(settings.replace(**changes), ds)
    metrics = json.loads((result.model_dir / "metrics.json").read_text())
    scores = [h["valid_score"] for h in metrics["history"]]
    test = metrics.get("test") or {}
    row = {"config": name, "seed": seed, "best_epoch": result.best_epoch, "last_epoch": len(scores)}
    row |= {f"valid_e{i + 1}": s for i, s in enumerate(scores)}
    row |= {"gap": max(scores) - scores[-1], "test_mean_auc": test.get("mean_auc")}
    row["test_mean_auc_views"] = test.get("mean_auc_views")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=("build", "train"))
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--homes", default="sim,tianchi")
    parser.add_argument("--configs", default="before,after", help=f"of {', '.join([*CONFIGS, 'after'])}")
    parser.add_argument("--seeds", default="42,43")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--patience", type=int, default=0, help="0: every epoch runs (the gap is seen)")
    args = parser.parse_args()
    if args.step == "build":
        build(args.home)
        return
    nights = json.loads((args.home / "nights.json").read_text())
    for name in args.homes.split(","):
        settings = Settings(home=args.home / name, business_tz=TZ[name], threads=args.threads)
        rows = [
            _row(settings, nights[name], config, int(seed), args.epochs, args.patience)
            for config in args.configs.split(",")
            for seed in args.seeds.split(",")
        ]
        columns = ["config", "seed", *(f"valid_e{i + 1}" for i in range(args.epochs))]
        columns += ["best_epoch", "last_epoch", "gap", "test_mean_auc", "test_mean_auc_views"]
        print(f"\n{name} (ds={nights[name]}):")
        print(table(rows, columns, markdown=True))
        means = pl.DataFrame(rows).drop("seed").group_by("config", maintain_order=True).mean()
        print(table(means.to_dicts(), [c for c in columns if c != "seed"], markdown=True))


if __name__ == "__main__":
    main()
