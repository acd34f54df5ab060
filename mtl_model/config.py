"""One configuration object for the whole house.

Every field has a default and can be overridden by an environment variable named
``TANDEM_<FIELD>`` (upper case), e.g. ``TANDEM_HOME=/data/tandem`` or ``TANDEM_TOP_K=20``.
Paths default to folders under ``home`` (``TANDEM_HOME``, default ``<repo>/var``), following
the layout in DESIGN.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DAGS_DIR = REPO_ROOT / "dags"


def _default_home() -> Path:
    return REPO_ROOT / "var"


@dataclass(frozen=True)
class Settings:
    """Configuration of one Tandem deployment. Build with :func:`load_settings`."""

    home: Path = field(default_factory=_default_home)
    # Paths: empty means "derive from home" (see __post_init__).
    landing_dir: Path | None = None
    warehouse_path: Path | None = None
    exports_dir: Path | None = None
    models_dir: Path | None = None
    outputs_dir: Path | None = None
    published_dir: Path | None = None
    reports_dir: Path | None = None
    airflow_home: Path | None = None

    business_tz: str = "UTC"
    seed: int = 42

    # Model and training
    train_window_days: int = 7  # days of exposures ending at ds; the last one (ds) is the validation day
    architecture: str = "shared_bottom"
    tasks: tuple[str, ...] = ("click", "cart", "purchase")
    embedding_dim: int = 16
    hidden_dims: tuple[int, ...] = (128, 64)
    epochs: int = 3
    batch_size: int = 2048
    learning_rate: float = 0.003
    device: str = "auto"  # auto | cpu | cuda
    promote_tolerance: float = 0.01  # new model may be this much worse in mean AUC and still promote
    esmm: str = "auto"  # auto (on for mmoe / ple) | true | false: pCTCVR = pCTR × pCVR over all exposures
    scene_towers: bool = False  # a tower per scene (home, search) on top of the shared one
    n_experts: int = 4  # MMoE experts
    ple_levels: int = 2  # PLE extraction levels
    ple_task_experts: int = 1  # PLE experts per task and level
    ple_shared_experts: int = 2  # PLE shared experts per level
    loss_weighting: str = "fixed"  # fixed | uncertainty | gradnorm | pcgrad
    task_weights: tuple[float, ...] = ()  # fixed weights, in task order (empty: all 1)
    gradnorm_alpha: float = 1.5
    class_balance: str = "none"  # none (calibrated probabilities) | pos_weight | focal
    focal_gamma: float = 2.0
    sparse_embeddings: bool = True  # sparse embedding gradients + a row-sparse Adam
    max_vocab: int = 0  # 0: no cap; else ids beyond the cap are hashed into hash_buckets
    hash_buckets: int = 4096
    log_counts: bool = True  # sign(x)·log1p(|x|) on the non-negative count / amount f_* features
    patience: int = 2  # early stopping on the validation day
    checkpoints: bool = True  # a checkpoint each epoch; a crashed run resumes from it
    checkpoint_dir: Path | None = None  # default models_dir/.checkpoints
    bf16: bool = True  # autocast on CUDA only
    baselines: bool = True  # popularity and single-task baselines into model_metrics each night
    threads: int = 0  # torch threads; 0 leaves torch's default (1 is faster on a busy shared machine)

    # Outputs
    top_k: int = 10
    candidates_per_scene: int = 200
    fusion_click_weight: float = 1.0  # score = p_click^a * p_purchase^b * price^c
    fusion_purchase_weight: float = 1.0
    fusion_price_weight: float = 0.0  # c = 1 (with a = b = 1): rank by expected revenue
    max_per_category: int = 3  # at most this many items of one category in a user's top K (0: no cap)
    recommend_scene: str = "home"  # every candidate is scored in this scene ("": each in its own)
    anomaly_top_n: int = 50

    # Airflow
    train_queue: str = "default"  # "gpu" in a deployment with a GPU Celery worker
    warehouse_pool: str = "duckdb"
    task_retries: int = 1

    def __post_init__(self) -> None:
        home = Path(self.home).expanduser().resolve()
        object.__setattr__(self, "home", home)
        defaults = {
            "landing_dir": home / "landing",
            "warehouse_path": home / "warehouse.duckdb",
            "exports_dir": home / "exports",
            "models_dir": home / "models",
            "outputs_dir": home / "outputs",
            "published_dir": home / "published",
            "reports_dir": home / "reports",
            "airflow_home": home / "airflow",
        }
        for name, default in defaults.items():
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value).expanduser().resolve() if value else default)

    # ----- derived paths, keyed by ds -------------------------------------------------------
    def landing(self, table: str, ds: date | str) -> Path:
        return self.landing_dir / table / f"ds={ds}"

    def export_dir(self, ds: date | str) -> Path:
        return self.exports_dir / f"ds={ds}"

    def output_dir(self, ds: date | str) -> Path:
        return self.outputs_dir / f"ds={ds}"

    def published(self, table: str, ds: date | str) -> Path:
        return self.published_dir / table / f"ds={ds}"

    @property
    def catalog_path(self) -> Path:
        return self.published_dir / "catalog.duckdb"

    def as_env(self) -> dict[str, str]:
        """Environment variables that reproduce these settings in a subprocess (dbt, workers)."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            env[f"TANDEM_{f.name.upper()}"] = "" if value is None else str(value)
        return env


def _coerce(raw: str, annotation: str) -> Any:
    if "tuple" in annotation:
        parts = [p.strip() for p in raw.split(",") if p.strip()]
        if "float" in annotation:
            return tuple(float(p) for p in parts)
        return tuple(int(p) for p in parts) if "int" in annotation else tuple(parts)
    if annotation == "bool":
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError(f"not a boolean: {raw!r}")
        return raw.lower() in ("1", "true", "yes")
    if "Path" in annotation:
        return Path(raw)
    if "int" in annotation and "float" not in annotation:
        return int(raw)
    if "float" in annotation:
        return float(raw)
    return raw


def load_settings(**overrides: Any) -> Settings:
    """Defaults, then ``TANDEM_*`` environment variables, then explicit keyword overrides."""
    values: dict[str, Any] = {}
    for f in fields(Settings):
        raw = os.environ.get(f"TANDEM_{f.name.upper()}")
        if raw not in (None, ""):
            values[f.name] = _coerce(raw, str(f.type))
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - {f.name for f in fields(Settings)}
    if unknown:
        raise TypeError(f"unknown settings: {sorted(unknown)}")
    return Settings(**values)
