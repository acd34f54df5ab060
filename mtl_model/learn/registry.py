"""Model registry on the file system: one folder per model version plus a ``CURRENT`` pointer.

``<models_dir>/<version>/`` holds ``model.pt`` (a ``state_dict`` only, loadable with
``torch.load(..., weights_only=True)``), ``encoders.json``, ``config.json`` and ``metrics.json``.
``<models_dir>/CURRENT`` holds the name of the version the newest night serves.

Point in time: ``<models_dir>/serving/ds=YYYY-MM-DD`` records, per night, the version that serves
that day (the one promoted that night, or the one kept). The night of D judges its new model against
the version as of D (its own earlier run, else the newest night before D), and scores D with the
version as of D: a backfill of old days after newer nights never uses a model trained on later days,
and gives the tables the nightly runs gave. ``CURRENT`` follows the newest recorded night. A home
without the ledger (written before it) falls back to ``CURRENT``.

The version name is ``YYYYMMDD-<hash>`` where the hash covers the training configuration and the
content of the samples file, so re-running a day with the same inputs gives the same name and
replaces that folder. Folders and the pointer are written to a temporary path and moved into place
with ``os.replace`` so a reader never sees a half-written file.

Promotion judges the new and the current model on the same rows: the current model is loaded with
its own encoders and re-evaluated on the new model's validation day (see :func:`register`); only
when that is impossible (no validation rows given, or the current version cannot be loaded or
applied) are the AUCs stored in its ``metrics.json`` compared instead, and the reason says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
import torch
from torch import nn

from mtl_model import __version__
from mtl_model.config import Settings
from mtl_model.dates import parse_date
from mtl_model.files import replace_dir, temporary_path, write_text_atomic
from mtl_model.learn.features import Encoders
from mtl_model.learn.metrics import auc
from mtl_model.learn.networks import build_model, predict_proba

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
ENCODERS_FILE = "encoders.json"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
CURRENT_FILE = "CURRENT"
MODEL_FORMAT = 1


@dataclass(frozen=True)
class Promotion:
    """Outcome of registering a version: whether ``CURRENT`` now points to it, and why."""

    promoted: bool
    reason: str
    previous_version: str | None


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def training_fingerprint(settings: Settings, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The settings that change what training produces (paths and device deliberately excluded), plus
    ``options``: the resolved training options (:func:`mtl_model.learn.options.options_fingerprint`)."""
    return {
        **({"options": options} if options else {}),
        "package_version": __version__,
        "model_format": MODEL_FORMAT,
        "seed": settings.seed,
        "train_window_days": settings.train_window_days,
        "architecture": settings.architecture,
        "tasks": list(settings.tasks),
        "embedding_dim": settings.embedding_dim,
        "hidden_dims": list(settings.hidden_dims),
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
    }


def version_name(
    settings: Settings, ds: date, samples_sha256: str, options: dict[str, Any] | None = None
) -> str:
    """Deterministic version name ``YYYYMMDD-<10 hex>`` from ds, the training config and the data hash."""
    payload = json.dumps(
        {"ds": ds.isoformat(), "config": training_fingerprint(settings, options), "samples": samples_sha256},
        sort_keys=True,
    )
    return f"{ds:%Y%m%d}-{hashlib.sha256(payload.encode()).hexdigest()[:10]}"


def _json_safe(value: Any) -> Any:
    """NaN/inf → None so the files stay strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=True), encoding="utf-8")


def mean_auc(metrics: dict[str, Any], tasks: list[str] | None = None) -> float:
    """Mean of the finite per-task validation AUCs in a ``metrics.json`` dict (nan if none)."""
    per_task = metrics.get("tasks", {})
    values = [
        float(m["auc"])
        for task, m in per_task.items()
        if (tasks is None or task in tasks) and m.get("auc") is not None and math.isfinite(float(m["auc"]))
    ]
    return sum(values) / len(values) if values else float("nan")


def _finite_auc_tasks(metrics: dict[str, Any]) -> set[str]:
    return {t for t in metrics.get("tasks", {}) if math.isfinite(mean_auc(metrics, [t]))}


def decide_promotion(
    new: dict[str, Any], current: dict[str, Any] | None, tolerance: float
) -> tuple[bool, str]:
    """Promote if there is no current model or the new mean AUC >= current mean AUC - tolerance.

    The means are taken over the tasks both models have a finite AUC for (all of each model's tasks
    if they share none). ``current`` is normally the current model re-evaluated on the new model's
    validation day (see :func:`register`), else its stored ``metrics.json``.
    """
    if current is None:
        return True, "no current model"
    common = sorted(_finite_auc_tasks(new) & _finite_auc_tasks(current))
    new_auc = mean_auc(new, common or None)
    cur_auc = mean_auc(current, common or None)
    over = f"over {', '.join(common)}" if common else "over each model's own tasks"
    if not math.isfinite(new_auc):
        return False, "new model has no finite validation AUC; keeping the current model"
    if not math.isfinite(cur_auc):
        return True, f"current model has no finite AUC; new mean AUC {new_auc:.4f}"
    if new_auc >= cur_auc - tolerance:
        return True, f"mean AUC {over}: new {new_auc:.4f} >= current {cur_auc:.4f} - tolerance {tolerance}"
    return False, f"mean AUC {over}: new {new_auc:.4f} < current {cur_auc:.4f} - tolerance {tolerance}"


def read_current_version(settings: Settings) -> str | None:
    """Name in ``CURRENT``, or None when there is no pointer yet."""
    path = settings.models_dir / CURRENT_FILE
    if not path.exists():
        return None
    return path.read_text(encoding="utf-8").strip() or None


SERVING_DIR = "serving"


def _ledger(settings: Settings) -> dict[date, str]:
    """Day → the version that serves it, from ``<models_dir>/serving/ds=D`` files."""
    out: dict[date, str] = {}
    for path in (settings.models_dir / SERVING_DIR).glob("ds=*"):
        version = path.read_text(encoding="utf-8").strip()
        if version and not path.name.startswith("."):
            out[parse_date(path.name.removeprefix("ds="))] = version
    return out


def version_as_of(settings: Settings, ds: date | str) -> str | None:
    """The version that served the newest recorded night on or before ``ds``; None when no night
    before it was recorded; ``CURRENT`` for a home without the ledger."""
    ledger = _ledger(settings)
    if not ledger:
        return read_current_version(settings)
    days = [d for d in ledger if d <= parse_date(ds)]
    return ledger[max(days)] if days else None


def record_serving(settings: Settings, ds: date | str, version: str) -> None:
    """Record ``version`` as the one serving ``ds``; ``CURRENT`` follows the newest recorded night."""
    write_text_atomic(settings.models_dir / SERVING_DIR / f"ds={parse_date(ds)}", version + "\n")
    ledger = _ledger(settings)
    set_current(settings, ledger[max(ledger)])


def read_metrics(settings: Settings, version: str) -> dict[str, Any] | None:
    """The stored ``metrics.json`` of a version, or None when it is missing or unreadable."""
    try:
        return json.loads((settings.models_dir / version / METRICS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def set_current(settings: Settings, version: str) -> None:
    """Point ``CURRENT`` at ``version`` atomically."""
    if not (settings.models_dir / version / MODEL_FILE).exists():
        raise FileNotFoundError(f"model version {version!r} not found under {settings.models_dir}")
    write_text_atomic(settings.models_dir / CURRENT_FILE, version + "\n")


def save_version(
    settings: Settings,
    version: str,
    model: nn.Module,
    encoders: Encoders,
    config: dict[str, Any],
    metrics: dict[str, Any],
) -> Path:
    """Write the version folder via a temporary folder; an existing folder of that name is replaced."""
    root = settings.models_dir
    root.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(root / version)
    tmp.mkdir()
    try:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(state, tmp / MODEL_FILE)
        encoders.save(tmp / ENCODERS_FILE)
        _write_json(tmp / CONFIG_FILE, config)
        _write_json(tmp / METRICS_FILE, metrics)
        final = root / version
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def evaluate_version(settings: Settings, version: str, rows: pl.DataFrame) -> dict[str, Any]:
    """AUC per task of a saved version on ``rows`` (encoded with that version's own encoders), in the
    shape of ``metrics.json`` (``{"tasks": {task: {"auc": value}}}``); tasks without a label column in
    ``rows`` are left out. Raises if the version cannot be loaded or applied."""
    model, encoders, _ = load_version(settings, version)
    tasks = [t for t in model.tasks if t in rows.columns]
    cat, num = encoders.encode(rows)
    probs = predict_proba(model, cat, num)
    labels = rows.select(pl.col(t).fill_null(0).clip(0, 1) for t in tasks)
    return {"tasks": {t: {"auc": auc(labels.get_column(t).to_numpy(), probs[t].numpy())} for t in tasks}}


def register(
    settings: Settings,
    version: str,
    model: nn.Module,
    encoders: Encoders,
    config: dict[str, Any],
    metrics: dict[str, Any],
    validation: pl.DataFrame | None = None,
    ds: date | str | None = None,
) -> Promotion:
    """Save the version, then promote it to ``CURRENT`` if it is not worse (see :func:`decide_promotion`).

    With ``validation`` (the new model's validation rows, labels included), the current model is
    re-evaluated on those rows so both models are judged on the same day; if that fails (e.g. an
    unreadable model file) its stored metrics are compared instead. With ``ds`` (the night's day)
    "current" is the version as of ``ds`` and the decision is recorded in the serving ledger.
    """
    previous = version_as_of(settings, ds) if ds is not None else read_current_version(settings)
    current_metrics = read_metrics(settings, previous) if previous else None  # read before overwriting
    save_version(settings, version, model, encoders, config, metrics)
    basis = "stored metrics of the current model"
    if previous and previous != version and validation is not None and validation.height:
        try:
            current_metrics = evaluate_version(settings, previous, validation)
            basis = f"current model re-evaluated on the validation day {metrics.get('ds', '')}".rstrip()
        except Exception as exc:  # noqa: BLE001 - any failure falls back to the stored numbers
            log.warning(
                "could not re-evaluate current version %s (%s); comparing stored metrics", previous, exc
            )
    if previous == version:
        promoted, reason = True, f"re-run of the current version {version}"
    elif previous and current_metrics is None:
        promoted, reason = True, f"current version {previous} has no readable metrics"
    else:
        promoted, reason = decide_promotion(metrics, current_metrics, settings.promote_tolerance)
        if previous:
            reason += f" ({basis})"
    if ds is not None:
        record_serving(settings, ds, version if promoted else previous or version)
    elif promoted:
        set_current(settings, version)
    if not promoted and previous:
        reason += f"; CURRENT stays {previous}"
    return Promotion(promoted=promoted, reason=reason, previous_version=previous)


def load_version(settings: Settings, version: str) -> tuple[nn.Module, Encoders, dict[str, Any]]:
    """Rebuild the model of ``version`` on CPU in eval mode, with its encoders and config."""
    folder = settings.models_dir / version
    if not (folder / MODEL_FILE).exists():
        raise FileNotFoundError(f"model version {version!r} not found under {settings.models_dir}")
    config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    encoders = Encoders.load(folder / ENCODERS_FILE)
    model = build_model(
        config["architecture"],
        encoders.cardinalities,
        encoders.n_numeric,
        config["tasks"],
        embedding_dim=config["embedding_dim"],
        hidden_dims=config["hidden_dims"],
        tower_dim=config["tower_dim"],
        **config.get("model", {}),  # esmm, scene_index, scene_towers, experts (absent in format-1 configs)
    )
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model, encoders, config


def load_as_of(settings: Settings, ds: date | str) -> tuple[nn.Module, Encoders, str]:
    """The model that serves ``ds`` (:func:`version_as_of`), its encoders and its version name."""
    version = version_as_of(settings, ds)
    if version is None:
        raise FileNotFoundError(f"no model serves ds={ds}: no night on or before it trained one")
    model, encoders, _ = load_version(settings, version)
    return model, encoders, version


def load_current(settings: Settings) -> tuple[nn.Module, Encoders, str]:
    """The model ``CURRENT`` points to, its encoders and its version name."""
    version = read_current_version(settings)
    if version is None:
        raise FileNotFoundError(f"no current model: {settings.models_dir / CURRENT_FILE} does not exist")
    model, encoders, _ = load_version(settings, version)
    return model, encoders, version


# The learned retrieval source (mtl_model.learn.retrieval): its own artifact per night, keyed by ds,
# beside the ranking versions. Scoring day D reads the folder of D, written by D's train step.
RETRIEVAL_DIR = "retrieval"
RETRIEVAL_CANDIDATES_FILE = "candidates.parquet"  # user_id, item_id, retrieval_rank, retrieval_score


def retrieval_dir(settings: Settings, ds: date | str) -> Path:
    """``<models_dir>/retrieval/ds=D``: the towers, vocabularies, metrics and candidates of night D."""
    return settings.models_dir / RETRIEVAL_DIR / f"ds={parse_date(ds)}"
