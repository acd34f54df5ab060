"""One configuration object for the whole house: :class:`Settings` (pydantic-settings).

Every field has a default and can be overridden by an environment variable ``TANDEM_<FIELD>``
(upper case), e.g. ``TANDEM_HOME=/data/tandem`` or ``TANDEM_TOP_K=20``; lists are comma-separated
(``TANDEM_TASKS=click,purchase``). :func:`load_settings` reads the environment and validates every
value when the settings load: a bad value or an unknown ``TANDEM_*`` name is a :class:`SettingsError`
that names the variable and what it allows. ``Settings(...)`` with keyword arguments ignores the
environment (tests and benchmarks build their own). Paths default to folders under ``home``
(``TANDEM_HOME``, default ``<repo>/var``), as in DESIGN.md. The settings the SQL uses reach dbt as
vars from :meth:`Settings.dbt_vars`, never as a second copy in ``dbt_project.yml``.
"""

from __future__ import annotations

import difflib
import os
from contextvars import ContextVar
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from mtl_model.contract import EVENT_TYPES, LABEL_EVENTS

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"
DAGS_DIR = REPO_ROOT / "dags"
ENV_PREFIX = "TANDEM_"

ARCHITECTURES = ("shared_bottom", "mmoe", "ple")
LOSS_WEIGHTINGS = ("fixed", "uncertainty", "gradnorm", "pcgrad")
CLASS_BALANCES = ("none", "pos_weight", "focal")
LABELS = tuple(LABEL_EVENTS)  # the label columns of training_samples a task can name
# TANDEM_* variables that are not settings: the demo's sizes and source (mtl_model.pipeline.demo)
OTHER_VARIABLES = frozenset(f"TANDEM_DEMO_{name}" for name in ("SOURCE", "USERS", "ITEMS", "DAYS"))
# folders under home that a path setting defaults to
PATH_DEFAULTS = {
    "landing_dir": "landing",
    "warehouse_path": "warehouse.duckdb",
    "exports_dir": "exports",
    "models_dir": "models",
    "outputs_dir": "outputs",
    "published_dir": "published",
    "reports_dir": "reports",
    "airflow_home": "airflow",
}
# settings the dbt project reads (as vars; see dbt_project/macros/settings.sql)
DBT_SETTINGS = (
    "train_window_days",
    "popularity_days",
    "candidates_popular_per_scene",
    "candidates_per_category",
    "candidates_covisit",
    "candidates_recent",
    "max_candidates_per_user",
    "exclude_bought",
    "negatives_per_view",
    "negative_sampling",
    "late_days_allowed",
    "history_length",
    "related_categories",
    "top_k",
    "seed",
    "business_tz",
)

_READ_ENVIRONMENT: ContextVar[bool] = ContextVar("tandem_read_environment", default=False)

Count = Annotated[int, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Names = Annotated[tuple[str, ...], NoDecode]
Sizes = Annotated[tuple[Positive, ...], NoDecode]
Weights = Annotated[tuple[Annotated[float, Field(ge=0.0)], ...], NoDecode]


class SettingsError(ValueError):
    """A setting that cannot be used; the message names the variable and what it allows."""


def _default_home() -> Path:
    return REPO_ROOT / "var"


class Settings(BaseSettings):
    """Configuration of one Tandem deployment. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, frozen=True, extra="forbid", env_ignore_empty=True, validate_default=True
    )

    home: Path = Field(default_factory=_default_home)
    # Paths: unset means "under home" (see PATH_DEFAULTS)
    landing_dir: Path = Path()
    warehouse_path: Path = Path()
    exports_dir: Path = Path()
    models_dir: Path = Path()
    outputs_dir: Path = Path()
    published_dir: Path = Path()
    reports_dir: Path = Path()
    airflow_home: Path = Path()

    business_tz: str = "UTC"
    seed: Count = 42
    # DuckDB's memory limit for the night's export (e.g. "3GB"; "": DuckDB's default, 80% of RAM).
    # Past it the export's sorts and joins spill to a temporary folder: less memory, more seconds
    # (docs/benchmarks.md, "Nights at growing events a day")
    duckdb_memory_limit: Annotated[
        str, Field(pattern=r"^(|[1-9][0-9]*(\.[0-9]+)?\s?(KB|MB|GB|TB|KiB|MiB|GiB|TiB))$")
    ] = ""

    # Data (the dbt project reads these as vars)
    train_window_days: Annotated[int, Field(ge=2)] = 7  # days ending at ds; the last (ds) validates
    popularity_days: Positive = 7  # look-back of the candidate sources
    candidates_popular_per_scene: Count = 100  # most clicked items of each scene
    candidates_per_category: Count = 30  # most clicked items of each of the user's top 3 categories
    candidates_covisit: Count = 50  # items co-clicked in sessions with the user's recent clicks
    candidates_recent: Count = 30  # items the user clicked or carted in the window
    max_candidates_per_user: Positive = 300
    # a learned candidate source beside the dbt ones: a two-tower model fitted each night on the
    # window's clicks (mtl_model.learn.retrieval; docs/retrieval.md); off: the dbt sources alone
    retrieval: Literal["off", "two_tower"] = "off"
    retrieval_top_n: Annotated[int, Field(ge=1, le=2000)] = 100  # items it offers per active user
    exclude_bought: bool = True  # never recommend what the user bought in the window
    negatives_per_view: Count = 4  # view-only sources: sampled items the user did not touch, per view
    # view-only sources: how those items are drawn (seeded): uniform over the day's items, by popularity
    # (distinct users per item on the popularity_days days before the day, plus one), or by popularity
    # within the viewed item's category (docs/data.md, "Sampled negatives")
    negative_sampling: Literal["uniform", "popularity", "popularity_category"] = "uniform"
    late_days_allowed: Count = 3  # events landing up to this many days after their business date count
    history_length: Annotated[int, Field(ge=0, le=200)] = 0  # last N behaviour events per sample (0: off)
    # f_uc_related_30d: a category's taste from this many categories its clickers also click (0: off)
    related_categories: Annotated[int, Field(ge=0, le=1000)] = 20

    # Model and training
    architecture: Literal[ARCHITECTURES] = "shared_bottom"  # type: ignore[valid-type]
    tasks: Names = ("click", "cart", "purchase")
    embedding_dim: Positive = 16
    hidden_dims: Sizes = (128, 64)
    epochs: Positive = 3
    batch_size: Positive = 2048
    learning_rate: Annotated[float, Field(gt=0.0)] = 0.003
    # where each task's output bias starts: base_rate, the logit of the task's positive rate in the
    # training rows (MultiTaskNet.start_at_base_rates); uniform: a small random value (p ≈ 0.5)
    output_bias: Literal["base_rate", "uniform"] = "base_rate"
    # the learning rate over the steps of `epochs`: constant, or a cosine from learning_rate down to a
    # tenth of it (later epochs move the weights less, so they drift less past the best)
    lr_schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # decoupled (AdamW) decay of the dense layers
    # decoupled decay of the embedding rows a batch touches (lazy, like their Adam moments)
    embedding_weight_decay: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # the embedding tables learn for this many epochs and are then held fixed while the layers go on
    # learning (the one-epoch overfitting of CTR models sits in the embeddings: Zhang et al. 2022);
    # 0: they learn every epoch
    embedding_epochs: Count = 0
    # what an epoch that does not improve the validation score leads to: hold_embeddings: the best
    # epoch's weights come back, the learning rate is multiplied by plateau_lr_factor, and from the
    # first such epoch on only the layers learn (the tables are held fixed), so that later epochs stay
    # near the best (learn/fit.py, _on_plateau); continue: nothing (the fit goes on from there)
    plateau: Literal["continue", "hold_embeddings"] = "hold_embeddings"
    plateau_lr_factor: Annotated[float, Field(gt=0.0, le=1.0)] = 0.1
    # inverted dropout after each hidden ReLU of the shared bottom, the experts and the task towers,
    # in training only (scoring runs in eval mode); 0: off, and no random draws
    dropout: Annotated[float, Field(ge=0.0, lt=0.9)] = 0.0
    # fm: the factorization machine's pairwise dot products of the embeddings (user · item, ...) added
    # to every task's logit (networks/fm.py, as in DeepFM); none: the network alone
    interaction: Literal["none", "fm"] = "none"
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5  # users of ds held out from selection
    device: Literal["auto", "cpu", "cuda"] = "auto"
    promote_tolerance: Annotated[float, Field(ge=0.0)] = 0.01  # may be this much worse in mean AUC
    esmm: Literal["auto", "true", "false"] = "auto"  # auto: on for mmoe / ple (pCTCVR = pCTR × pCVR)
    scene_towers: bool = False  # a tower per scene (home, search) on top of the shared one
    # feature: the position is an input (candidates get the median); pal: only a ProbSeen tower sees it
    position_bias: Literal["feature", "pal"] = "feature"
    # item titles and search queries as input (mtl_model.learn.networks.text): hashed: one learned
    # encoder of hashed word and character n-grams, shared by both, and their cosine match; off: none
    text: Literal["off", "hashed"] = "off"
    text_buckets: Annotated[int, Field(ge=16, le=1 << 24)] = 1 << 16  # hash buckets of the n-grams
    text_length: Annotated[int, Field(ge=1, le=512)] = 32  # n-grams kept per text (words, pairs, trigrams)
    text_encoder_path: Path | None = None  # a locally installed pretrained text encoder: not supported yet
    n_experts: Positive = 4  # MMoE experts
    ple_levels: Positive = 2  # PLE extraction levels (at most len(hidden_dims))
    ple_task_experts: Positive = 1  # PLE experts per task and level
    ple_shared_experts: Positive = 2  # PLE shared experts per level
    loss_weighting: Literal[LOSS_WEIGHTINGS] = "fixed"  # type: ignore[valid-type]
    task_weights: Weights = ()  # fixed weights, in task order (empty: all 1)
    gradnorm_alpha: Annotated[float, Field(ge=0.0)] = 1.5
    class_balance: Literal[CLASS_BALANCES] = "none"  # type: ignore[valid-type]
    focal_gamma: Annotated[float, Field(ge=0.0)] = 2.0
    sparse_embeddings: bool = True  # sparse embedding gradients + a row-sparse Adam
    max_vocab: Count = 0  # 0: no cap; else ids beyond the cap are hashed into hash_buckets
    hash_buckets: Positive = 4096
    log_counts: bool = True  # sign(x)·log1p(|x|) on the non-negative count / amount f_* features
    patience: Count = 2  # early stopping on the validation day (0: run every epoch)
    # at least this many optimizer steps: a small window gets more than `epochs` (fit.planned_epochs)
    min_steps: Count = 200
    checkpoints: bool = True  # a checkpoint each epoch; a crashed run resumes from it
    checkpoint_dir: Path | None = None  # default models_dir/.checkpoints
    bf16: bool = True  # autocast on CUDA only
    baselines: bool = True  # popularity and single-task baselines into model_metrics each night
    # the single-task baselines only on nights whose day number (days since 0001-01-01) is a multiple
    # of this (1: every night); the popularity and truth references run every night
    baselines_every: Positive = 1
    # training days only: keep this share of the rows where every label is 0 (a seeded hash of the
    # row's key), weighting the kept ones by 1/rate in the loss (docs/models.md); 1.0: keep all
    negative_rate: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    # >1: the train step runs `torchrun --standalone --nproc_per_node=N` (gloo on CPU, NCCL on CUDA)
    train_nproc: Positive = 1
    threads: Count = 0  # torch threads; 0 leaves torch's default

    # the dbt build in the DAG: "models" (cosmos: one build, a sensor task per model and test, each
    # visible in the UI) or "build" (one task runs `dbt build`: ~45 fewer task processes a night,
    # for small machines and the scheduler tests)
    dbt_tasks: Literal["models", "build"] = "models"

    # Outputs
    # >1: score runs as that many mapped tasks, each the users of one hash slice, then one merge
    score_parts: Annotated[int, Field(ge=1, le=64)] = 1
    top_k: Positive = 10
    fusion_click_weight: float = 1.0  # score = p_click^a * p_purchase^b * price^c
    fusion_purchase_weight: float = 1.0
    fusion_price_weight: float = 0.0  # c = 1 (with a = b = 1): rank by expected revenue
    max_per_category: Count = 3  # at most this many items of one category in a user's top K (0: no cap)
    recommend_scene: str = "home"  # every candidate is scored in this scene ("": each in its own)
    anomaly_top_n: Count = 50
    publish_grace_hours: Annotated[float, Field(ge=0.0)] = 24.0  # superseded published files kept this long

    # Airflow
    train_queue: Annotated[str, Field(min_length=1)] = "default"  # "gpu" with a GPU Celery worker
    warehouse_pool: Annotated[str, Field(min_length=1)] = "duckdb"
    task_retries: Count = 1
    retry_delay_seconds: Count = 120  # before a failed task's retry (under the scheduler)
    owner: Annotated[str, Field(min_length=1)] = "tandem"  # the owner of every task of the DAG
    task_timeout_minutes: Positive = 120  # execution_timeout of every task
    train_timeout_minutes: Count = 0  # execution_timeout of train (0: task_timeout_minutes)
    # the first task waits (rescheduled every wait_poke_seconds) while an earlier night is queued or
    # running, or the day is not landed; skipped with the reason when not landed after landing_wait_hours.
    # At least 10 s: a sensor requeued before the scheduler heard its last poke end is failed by it
    wait_poke_seconds: Annotated[int, Field(ge=10)] = 60
    landing_wait_hours: Annotated[float, Field(ge=0.0)] = 6.0
    # who hears of a failed night (the DAG's on_failure_callback; Airflow notifiers): off by default
    notify: Literal["none", "smtp", "webhook"] = "none"
    notify_webhook_url: str = ""  # notify=webhook: the URL a JSON summary is POSTed to
    notify_email_to: Names = ()  # notify=smtp: recipients, comma-separated
    notify_email_from: str = ""  # notify=smtp: sender ("": the SMTP connection's from_email)
    notify_smtp_conn_id: Annotated[str, Field(min_length=1)] = "smtp_default"  # the Airflow connection

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment only inside :func:`load_settings`."""
        return (init_settings, env_settings) if _READ_ENVIRONMENT.get() else (init_settings,)

    @model_validator(mode="before")
    @classmethod
    def _paths_under_home(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        home = Path(data.get("home") or _default_home()).expanduser().resolve()
        data["home"] = home
        for name, default in PATH_DEFAULTS.items():
            value = data.get(name)
            data[name] = Path(value).expanduser().resolve() if value not in (None, "") else home / default
        if data.get("checkpoint_dir") in ("", None):
            data["checkpoint_dir"] = None
        return data

    @field_validator("tasks", "hidden_dims", "task_weights", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("home", "warehouse_path")
    @classmethod
    def _no_query_mark(cls, value: Path) -> Path:
        # dbt-duckdb reads a '?' in the database path as the start of URI options, then splices
        # the rest into SQL unescaped: refuse it in one line rather than fail inside dbt
        if "?" in str(value):
            raise ValueError(f"a path without '?' (dbt-duckdb reads it as URI options): {value}")
        return value

    @field_validator("text_encoder_path", mode="before")
    @classmethod
    def _pretrained_text_encoder(cls, value: Any) -> Any:
        if value in (None, ""):
            return None
        path = Path(value).expanduser()
        if not path.exists():
            raise ValueError(f"no such file or folder: {str(path)!r}")
        raise ValueError(f"a pretrained text encoder ({str(path)!r}) is not supported yet; unset it")

    @field_validator("business_tz")
    @classmethod
    def _time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"not a time zone of the IANA database (e.g. UTC, Asia/Shanghai): {value!r}"
            ) from None
        return value

    @field_validator("tasks")
    @classmethod
    def _known_tasks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [t for t in value if t not in LABELS]
        if not value or unknown or len(set(value)) != len(value):
            known = ", ".join(LABELS)
            raise ValueError(f"tasks must be distinct names among {known}; got {','.join(value)!r}")
        return value

    @field_validator("notify_email_to", mode="before")
    @classmethod
    def _comma_separated_addresses(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("notify_email_to")
    @classmethod
    def _addresses(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if "@" not in a.strip("@") or any(c.isspace() for c in a)]
        if bad:
            raise ValueError(f"not an e-mail address: {bad[0]!r} (comma-separated, e.g. ops@example.com)")
        return value

    @field_validator("notify_webhook_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.hostname):
            raise ValueError(f"not an http:// or https:// URL: {value!r}")
        return value

    @model_validator(mode="after")
    def _notifier_complete(self) -> Settings:
        if self.notify == "webhook" and not self.notify_webhook_url:
            raise ValueError("notify_webhook_url: needed when notify=webhook (an http:// or https:// URL)")
        if self.notify == "smtp" and not self.notify_email_to:
            raise ValueError("notify_email_to: needed when notify=smtp (comma-separated addresses)")
        return self

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if not self.hidden_dims:
            raise ValueError("hidden_dims: at least one layer size is needed (e.g. 128,64)")
        if self.task_weights and len(self.task_weights) != len(self.tasks):
            n, got = len(self.tasks), len(self.task_weights)
            raise ValueError(f"task_weights: one weight per task ({n}), got {got}")
        if self.architecture == "ple" and self.ple_levels > len(self.hidden_dims):
            raise ValueError(f"ple_levels: at most len(hidden_dims) = {len(self.hidden_dims)}")
        return self

    # ----- derived paths, keyed by ds -------------------------------------------------------
    def landing(self, table: str, ds: date | str) -> Path:
        return self.landing_dir / table / f"ds={ds}"

    def export_dir(self, ds: date | str) -> Path:
        # run_date=, not ds=: samples.parquet holds the whole training window, and a reader that
        # applies hive partitioning (DuckDB's default) would overwrite each row's ds with the folder's
        # (docs/analysts.md, "Exports"); run_date is a column of no export, so every read is right
        return self.exports_dir / f"run_date={ds}"

    def output_dir(self, ds: date | str) -> Path:
        return self.outputs_dir / f"ds={ds}"

    def published(self, table: str, ds: date | str) -> Path:
        return self.published_dir / table / f"ds={ds}"

    @property
    def catalog_path(self) -> Path:
        return self.published_dir / "catalog.duckdb"

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with ``changes`` (paths under a new ``home`` follow it unless given)."""
        values = self.model_dump()
        if "home" in changes:
            for name in PATH_DEFAULTS:
                if values[name] == values["home"] / PATH_DEFAULTS[name]:
                    values[name] = None
        return type(self)(**{**values, **changes})

    def as_env(self) -> dict[str, str]:
        """Environment variables that reproduce these settings in a subprocess (dbt, workers)."""
        env = {}
        for name, value in self.model_dump().items():
            if isinstance(value, tuple):
                value = ",".join(str(v) for v in value)
            env[f"{ENV_PREFIX}{name.upper()}"] = "" if value is None else str(value)
        return env

    def dbt_vars(self, run_date: date | str | None = None) -> dict[str, Any]:
        """The vars of every dbt invocation: the settings the SQL reads, the contract's event types
        and (when given) the run date."""
        out: dict[str, Any] = {name: getattr(self, name) for name in DBT_SETTINGS}
        out["event_types"] = list(EVENT_TYPES)
        if run_date is not None:
            out["run_date"] = str(run_date)
        return out


def _unknown_variables(environ: dict[str, str]) -> list[str]:
    known = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields} | OTHER_VARIABLES
    errors = []
    for var in sorted(v for v in environ if v.startswith(ENV_PREFIX) and v not in known):
        near = difflib.get_close_matches(var, sorted(known), n=1)
        errors.append(f"{var}: not a Tandem setting" + (f" (did you mean {near[0]}?)" if near else ""))
    return errors


def _describe(error: dict[str, Any], overrides: dict[str, Any]) -> str:
    """One line: the variable (or keyword), its value, what is wrong. Errors of a model validator have
    no location: their message starts with the field name."""
    message = str(error["msg"]).removeprefix("Value error, ")
    name = str(error["loc"][0]) if error.get("loc") else ""
    head, _, rest = message.partition(": ")
    if not name and head in Settings.model_fields:
        name, message = head, rest
    source = "" if not name or name in overrides else ENV_PREFIX + name.upper()
    label = source or name or "settings"
    value = os.environ.get(source) if source else overrides.get(name)
    shown = f"={value!r}" if value is not None else ""
    return f"{label}{shown}: {message}"


def load_settings(**overrides: Any) -> Settings:
    """Defaults, then ``TANDEM_*`` environment variables, then explicit keyword overrides; validated.
    Raises :class:`SettingsError` (one line per problem) on a bad value or an unknown variable."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    problems = _unknown_variables(dict(os.environ))
    token = _READ_ENVIRONMENT.set(True)
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        problems += [_describe(e, overrides) for e in exc.errors()]
        settings = None
    finally:
        _READ_ENVIRONMENT.reset(token)
    if problems or settings is None:
        raise SettingsError("; ".join(problems))
    return settings
