"""Peak memory of the night's Python tasks, each alone in a fresh process, on a home that already holds
the day's exports (for instance one that ``bench/bench_full_night.py --home H`` left behind).

    python bench/bench_task_memory.py --home /tmp/fn50 --ds 2026-01-08              # every task
    python bench/bench_task_memory.py --home /tmp/fn50 --ds 2026-01-08 score train  # some of them

Each task is the function the DAG calls (export, train, score, anomalies), run in a subprocess with
``TANDEM_HOME`` set; it prints the seconds and ``ru_maxrss`` of that process. Under the real scheduler
every task is a process of its own, so a worker needs the largest of these figures; ``dag.test`` runs
them all in one process, which keeps the high-water mark of each. Train and export rewrite that day's
model version and exports with identical contents. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("export", "train", "score", "anomalies")

CHILD = r"""
import resource, sys, time
from datetime import date
from mtl_model.config import load_settings
task, ds = sys.argv[1], date.fromisoformat(sys.argv[2])
settings = load_settings()
started = time.perf_counter()
if task == "export":
    from mtl_model.outputs.warehouse import export_day
    export_day(settings, ds)
elif task == "train":
    from mtl_model.learn.train import train
    train(settings, ds)
elif task == "score":
    from mtl_model.outputs.score import score
    score(settings, ds)
elif task == "anomalies":
    from mtl_model.outputs.anomalies import detect_day
    detect_day(settings, ds)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
print(f"{task:<10} {time.perf_counter() - started:7.1f} s   peak RSS {peak:5.2f} GB")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--ds", required=True, help="the day whose exports are in the home")
    parser.add_argument("tasks", nargs="*", help=f"any of {', '.join(TASKS)} (default: all)")
    args = parser.parse_args()
    unknown = sorted(set(args.tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown tasks {unknown}; known: {', '.join(TASKS)}")
    env = {**os.environ, "TANDEM_HOME": str(args.home), "PYTHONPATH": str(ROOT)}
    for task in args.tasks or TASKS:
        subprocess.run([sys.executable, "-c", CHILD, task, args.ds], env=env, check=True)


if __name__ == "__main__":
    main()
