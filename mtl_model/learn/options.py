"""What the training settings mean for the network: value coercions, the keyword arguments of
:func:`~mtl_model.learn.networks.build_model`, and the options part of the version fingerprint.

Every training option is a :class:`~mtl_model.config.Settings` field (``TANDEM_*`` variable); these
functions read them from ``settings`` and accept the strings an environment may carry (``"true"``,
``"0"``, ``"1,2,0.5"``) as well as typed values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from mtl_model.config import Settings
from mtl_model.learn.features import HISTORY_FIELDS, TEXT_FIELDS, Encoders, FeatureSpec
from mtl_model.learn.networks import build_model, default_esmm

TOWER_DIM = 32
# boolean options that are part of the fingerprint (checkpoints and baselines are not: see below)
_FLAGS = ("scene_towers", "sparse_embeddings", "log_counts", "bf16")
# options that change the trained weights: the fingerprint (and so the version name) covers them
_FINGERPRINTED = (
    "esmm",
    "scene_towers",
    "n_experts",
    "ple_levels",
    "ple_task_experts",
    "ple_shared_experts",
    "loss_weighting",
    "task_weights",
    "gradnorm_alpha",
    "class_balance",
    "focal_gamma",
    "sparse_embeddings",
    "max_vocab",
    "hash_buckets",
    "log_counts",
    "patience",
    "bf16",
    "test_fraction",  # the validation split picks the epoch: other rows, other weights
)
# options that enter the fingerprint only when they differ from their default (older names stay)
_WHEN_SET = {
    "lr_schedule": "constant",
    "weight_decay": 0.0,
    "embedding_weight_decay": 0.0,
    "embedding_epochs": 0,
    "plateau": "continue",  # before the option: the default enters the name
    "plateau_lr_factor": 1.0,
    "dropout": 0.0,
    "min_steps": 200,
    "interaction": "none",
    "output_bias": "uniform",  # models before the option started uniform; the default enters the name
}


def esmm_enabled(settings: Settings) -> bool:
    """``settings.esmm`` resolved: "auto" is on for mmoe / ple (see ``networks.default_esmm``)."""
    if settings.esmm == "auto":
        return default_esmm(settings.architecture, tuple(settings.tasks))
    return settings.esmm == "true"


def task_weights(settings: Settings) -> tuple[float, ...]:
    """The fixed task weights as floats (empty: every task weighs 1)."""
    return tuple(float(x) for x in settings.task_weights)


def feature_spec(settings: Settings) -> FeatureSpec:
    """The input columns: under ``position_bias=pal`` the position is the last categorical column (for
    ProbSeen alone), otherwise a numeric input of the model like the price."""
    common: dict[str, Any] = {"max_vocab": settings.max_vocab, "hash_buckets": settings.hash_buckets}
    if settings.history_length > 0:  # DIN over the user's last behaviour events
        common.update(history=HISTORY_FIELDS, history_length=settings.history_length)
    if settings.text != "off":  # the title and the query as hashed n-grams (networks/text.py)
        common.update(text=TEXT_FIELDS, text_buckets=settings.text_buckets, text_length=settings.text_length)
    spec = FeatureSpec(log_counts=settings.log_counts, **common)
    if settings.position_bias == "pal":
        numeric = tuple(c for c in spec.numeric if c != "position")
        return FeatureSpec(categorical=(*spec.categorical, "position"), numeric=numeric, **common)
    return spec


def model_kwargs(
    settings: Settings, categorical: Sequence[str], history: dict | None = None
) -> dict[str, Any]:
    """Keyword arguments of :func:`build_model` that define the network (stored in config.json), for
    the encoders' ``categorical`` columns and sequence (``Encoders.history_kwargs``)."""
    kwargs: dict[str, Any] = {
        "esmm": esmm_enabled(settings),
        "scene_index": categorical.index("scene") if "scene" in categorical else None,
        "scene_towers": settings.scene_towers,
    }
    if settings.position_bias == "pal":
        kwargs["bias_index"] = len(categorical) - 1
    if history:
        kwargs["history"] = history
    if settings.text != "off":  # the n-gram codes follow the sequence's in ``cat`` (Encoders.encode)
        kwargs["text"] = {"buckets": settings.text_buckets, "length": settings.text_length}
    if settings.dropout > 0:  # absent at 0: configs (and version names) of older models stay the same
        kwargs["dropout"] = float(settings.dropout)
    if settings.interaction != "none":  # absent when off, like the dropout
        kwargs["interaction"] = settings.interaction
    if settings.architecture == "mmoe":
        kwargs["n_experts"] = settings.n_experts
    if settings.architecture == "ple":
        kwargs.update(
            ple_levels=settings.ple_levels,
            ple_task_experts=settings.ple_task_experts,
            ple_shared_experts=settings.ple_shared_experts,
        )
    return kwargs


def options_fingerprint(settings: Settings) -> dict[str, Any]:
    """The training options that change the trained model (the ``options`` of the version name and
    of config.json): not ``checkpoints``, ``checkpoint_dir``, ``threads``, ``baselines``,
    ``baselines_every`` or ``train_nproc`` (they change how a model is trained or reported, not its
    weights)."""
    data = {name: getattr(settings, name) for name in _FINGERPRINTED}
    data.update({name: getattr(settings, name) for name in _FLAGS})
    data["esmm"] = esmm_enabled(settings)
    data["task_weights"] = list(task_weights(settings))
    data.update({n: v for n, default in _WHEN_SET.items() if (v := getattr(settings, n)) != default})
    if settings.plateau == "continue":  # the factor acts on plateaus only: unused, it names nothing
        data.pop("plateau_lr_factor", None)
    if settings.position_bias != "feature":  # absent by default: older version names stay the same
        data["position_bias"] = settings.position_bias
    if settings.history_length > 0:
        data["history_length"] = settings.history_length
    if settings.negative_rate != 1.0:  # other training rows and weights (samples.sample_negatives)
        data["negative_rate"] = settings.negative_rate
    if settings.negative_sampling != "uniform":  # the rows differ (dbt draws them), so do the weights
        data["negative_sampling"] = settings.negative_sampling
    if settings.text != "off":
        data.update(text=settings.text, text_buckets=settings.text_buckets, text_length=settings.text_length)
    return data


def build_network(
    settings: Settings, encoders: Encoders, tasks: Sequence[str], kwargs: dict[str, Any]
) -> nn.Module:
    """The network of ``settings.architecture`` for ``tasks`` on CPU (``kwargs``: :func:`model_kwargs`)."""
    return build_model(
        settings.architecture,
        encoders.cardinalities,
        encoders.n_numeric,
        tuple(tasks),
        embedding_dim=settings.embedding_dim,
        hidden_dims=settings.hidden_dims,
        tower_dim=TOWER_DIM,
        sparse=settings.sparse_embeddings,
        **kwargs,
    )
