"""Feature encoding for the joint model: Parquet rows (polars) → integer codes and scaled floats (torch).

Encoders are fitted on the training rows only and saved next to the model as JSON, so scoring
uses exactly the vocabularies and statistics the model was trained with.

* Categorical columns get a vocabulary: code 0 = null, code 1 = unseen (out of vocabulary, OOV),
  then the known values sorted, so the same training rows always give the same codes. Values seen
  fewer than ``min_count`` times are left out and map to the OOV code; that way the OOV embedding is
  trained on rare ids and is meaningful for ids first met at scoring time.
* Very large id spaces (``FeatureSpec.max_vocab`` > 0): when a column has more than ``max_vocab``
  known values, only the ``max_vocab`` most frequent keep their own code; every other value (rarer,
  below ``min_count``, or first met at scoring time) is hashed into one of ``hash_buckets`` shared
  codes after the vocabulary. The hash is an unkeyed BLAKE2b of the UTF-8 value, stable across
  processes, machines and library versions (unlike Python's ``hash`` or polars' ``hash``).
* Numeric columns: ``log1p`` for the columns in ``FeatureSpec.log_numeric`` (price, clipped at 0)
  and ``sign(x) · log1p(|x|)`` for those in ``FeatureSpec.signed_log_numeric`` (see below), nulls
  filled with the training median, then standardised with the training mean and standard deviation. There
  is no missing flag: candidates may have no position at all, and a flag that was never set in
  training would feed an untrained weight at scoring time. Besides ``FeatureSpec.numeric``, every
  numeric (or boolean) column of the training rows whose name starts with ``numeric_prefix``
  (``f_``) becomes a numeric feature; the fitted encoders list them explicitly, so scoring uses the
  same columns (a missing one is all null, i.e. the training median).
* Counts and amounts (``FeatureSpec.log_counts``): the dbt features are heavy-tailed (a few users
  with thousands of impressions, spend up to 100× the median). Rule, applied at fit time to each
  ``numeric_prefix`` column: every training value ≥ 0 and some value > 1 (a count, an amount, a
  price, a number of days, a ratio of amounts; not a rate or share in [0, 1], and not a column with
  negative values) → ``sign(x) · log1p(|x|)`` (= log1p on the training range; defined for a negative
  value met at scoring time). The chosen columns are written to the encoders JSON
  (``signed_log_numeric``), so scoring applies exactly the transforms the model was trained with.
  Encoders of formats 1–2 (before this rule) read back with no such column.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

NULL_CODE = 0
OOV_CODE = 1
FIRST_KNOWN_CODE = 2
ENCODERS_FORMAT = 4  # 3: signed_log_numeric and log_counts in the spec; 4: the behaviour sequence
READABLE_FORMATS = (1, 2, 3, 4)
# sequence fields coded with a categorical column's vocabulary (and read in its embedding table)
HISTORY_VOCABULARY = {"hist_item_ids": "item_id", "hist_category_ids": "category_id"}
HISTORY_FIELDS = ("hist_item_ids", "hist_category_ids", "hist_event_types", "hist_days_ago")


@dataclass(frozen=True)
class FeatureSpec:
    """Which input columns the model sees and how numeric ones are transformed."""

    categorical: tuple[str, ...] = ("user_id", "item_id", "category_id", "scene")
    numeric: tuple[str, ...] = ("position", "price")
    log_numeric: tuple[str, ...] = ("price",)  # log1p(max(x, 0))
    log_counts: bool = True  # at fit: prefixed count / amount columns (see module docstring) get a log
    signed_log_numeric: tuple[str, ...] = ()  # sign(x) · log1p(|x|); filled in by Encoders.fit
    min_count: int = 2  # categorical values seen fewer times in training map to OOV (or a hash bucket)
    numeric_prefix: str = "f_"  # numeric columns named so are picked up as numeric features ("" = off)
    max_vocab: int = 0  # per categorical column; 0 = no cap. Beyond it, values are hashed into buckets
    hash_buckets: int = 4096  # buckets of a capped column (used only when its vocabulary exceeds the cap)
    history: tuple[str, ...] = ()  # list columns of the behaviour sequence (HISTORY_FIELDS), newest first
    history_length: int = 0  # steps kept per sequence (codes 0 past its end)


@dataclass(frozen=True)
class NumericStats:
    """Training statistics of one numeric column, after the log transform where one applies."""

    median: float
    mean: float
    std: float


def _column(df: pl.DataFrame, name: str, dtype: pl.DataType) -> pl.Expr:
    """The column cast to ``dtype``, or an all-null column when the frame does not have it."""
    if name in df.columns:
        return pl.col(name).cast(dtype)
    return pl.lit(None, dtype=dtype)


def _steps(df: pl.DataFrame, name: str, length: int) -> pl.Series:
    """The first ``length`` elements of every list of column ``name``, as one String series."""
    if name not in df.columns:
        return pl.Series(name, [], dtype=pl.String())
    return df.get_column(name).list.head(length).explode().cast(pl.String()).rename(name)


def stable_bucket(value: str, buckets: int) -> int:
    """Bucket of ``value`` in ``[0, buckets)`` from an 8-byte BLAKE2b digest (same on every machine)."""
    digest = hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def _auto_numeric(df: pl.DataFrame, spec: FeatureSpec) -> tuple[str, ...]:
    """Columns of ``df`` named ``<numeric_prefix>…`` with a numeric or boolean type, sorted by name."""
    if not spec.numeric_prefix:
        return ()
    return tuple(
        sorted(
            name
            for name, dtype in df.schema.items()
            if name.startswith(spec.numeric_prefix)
            and name not in spec.numeric
            and (dtype.is_numeric() or dtype == pl.Boolean())
        )
    )


def _numeric_expr(df: pl.DataFrame, name: str, spec: FeatureSpec) -> pl.Expr:
    expr = _column(df, name, pl.Float64())
    if name in spec.log_numeric:
        expr = expr.clip(lower_bound=0.0).log1p()
    elif name in spec.signed_log_numeric:
        expr = expr.sign() * expr.abs().log1p()
    return expr


def count_columns(df: pl.DataFrame, names: tuple[str, ...]) -> tuple[str, ...]:
    """Of ``names``, the columns of ``df`` that look like counts or amounts: every non-null value ≥ 0
    and at least one > 1 (the ``log_counts`` rule of the module docstring)."""
    present = [n for n in names if n in df.columns]
    if not present or df.is_empty():
        return ()
    values = df.select(pl.col(n).cast(pl.Float64).fill_nan(None) for n in present)
    low, high = values.min().row(0), values.max().row(0)
    return tuple(
        n for n, lo, hi in zip(present, low, high, strict=True) if lo is not None and lo >= 0 and hi > 1
    )


@dataclass
class Encoders:
    """Fitted vocabularies and numeric statistics; see the module docstring for the coding rules."""

    spec: FeatureSpec
    vocabs: dict[str, list[str]]
    numeric: dict[str, NumericStats]
    hashed: dict[str, int] = field(default_factory=dict)  # capped column -> number of hash buckets
    _lookups: dict[str, pl.Series] = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def fit(cls, df: pl.DataFrame, spec: FeatureSpec | None = None) -> Encoders:
        """Fit on the training rows ``df`` (missing columns are treated as all null).

        The returned encoders' ``spec.numeric`` also lists the ``numeric_prefix`` columns found in ``df``.
        """
        spec = spec or FeatureSpec()
        extra = _auto_numeric(df, spec)
        if extra:
            spec = replace(spec, numeric=(*spec.numeric, *extra))
        if spec.log_counts:
            counts = count_columns(df, tuple(c for c in extra if c not in spec.log_numeric))
            spec = replace(spec, signed_log_numeric=tuple(dict.fromkeys((*spec.signed_log_numeric, *counts))))
        vocabs: dict[str, list[str]] = {}
        hashed: dict[str, int] = {}
        for name in spec.categorical:
            counts = (
                df.select(_column(df, name, pl.String()).alias("v"))
                .drop_nulls()
                .group_by("v")
                .len()
                .filter(pl.col("len") >= spec.min_count)
            )
            if 0 < spec.max_vocab < counts.height:
                # the most frequent values keep a code (ties by value, so the choice is deterministic)
                counts = counts.sort(["len", "v"], descending=[True, False]).head(spec.max_vocab)
                hashed[name] = max(int(spec.hash_buckets), 1)
            vocabs[name] = counts.get_column("v").sort().to_list()
        for name in spec.history:
            if name not in HISTORY_VOCABULARY:
                values = _steps(df, name, spec.history_length).drop_nulls()
                vocabs[name] = (
                    values.value_counts().filter(pl.col("count") >= spec.min_count)[name].sort().to_list()
                )
        numeric: dict[str, NumericStats] = {}
        for name in spec.numeric:
            values = df.select(_numeric_expr(df, name, spec).alias("v")).get_column("v")
            median = values.median()
            median = 0.0 if median is None or not np.isfinite(median) else float(median)
            filled = values.fill_null(median).fill_nan(median)
            mean = float(filled.mean()) if len(filled) else 0.0
            std = float(filled.std(ddof=0)) if len(filled) else 1.0
            numeric[name] = NumericStats(median=median, mean=mean, std=std if std > 1e-12 else 1.0)
        return cls(spec=spec, vocabs=vocabs, numeric=numeric, hashed=hashed)

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table size per categorical column (null + OOV + known values + hash buckets)."""
        return [
            len(self.vocabs[name]) + FIRST_KNOWN_CODE + self.hashed.get(name, 0)
            for name in self.spec.categorical
        ]

    def history_kwargs(self) -> dict | None:
        """The ``history`` argument of the networks (see ``networks.base.MultiTaskNet``), or None."""
        if not self.spec.history or self.spec.history_length <= 0:
            return None
        categorical = list(self.spec.categorical)
        fields = [
            {"table": categorical.index(HISTORY_VOCABULARY[name])}
            if name in HISTORY_VOCABULARY
            else {"size": len(self.vocabs[name]) + FIRST_KNOWN_CODE}
            for name in self.spec.history
        ]
        target = [categorical.index(c) for c in ("item_id", "category_id") if c in categorical]
        return {"length": self.spec.history_length, "fields": fields, "target": target}

    @property
    def n_categorical(self) -> int:
        """Code columns produced by :meth:`encode`: the categoricals, then the sequence's steps."""
        return len(self.spec.categorical) + len(self.spec.history) * self.spec.history_length

    @property
    def n_numeric(self) -> int:
        """Number of float features produced by :meth:`encode`."""
        return len(self.spec.numeric)

    def _lookup(self, name: str) -> pl.Series:
        if name not in self._lookups:
            self._lookups[name] = pl.Series(name, self.vocabs[name], dtype=pl.String())
        return self._lookups[name]

    def _codes(self, name: str, raw: pl.Expr, values: pl.Series | None) -> pl.Expr:
        """Codes of ``raw`` (String) in the vocabulary ``name``; ``values``: its distinct raw values,
        hashed into the buckets when the column is capped (one hash per value, not per row)."""
        vocab = self._lookup(name)
        old_values = vocab
        old_codes = pl.int_range(FIRST_KNOWN_CODE, FIRST_KNOWN_CODE + len(vocab), eager=True)
        if name in self.hashed and values is not None:
            other = values.drop_nulls().unique().sort().rename(name)
            other = other.filter(~other.is_in(vocab))
            first_bucket = FIRST_KNOWN_CODE + len(vocab)
            buckets = [first_bucket + stable_bucket(v, self.hashed[name]) for v in other.to_list()]
            old_values = pl.concat([vocab, other])
            old_codes = pl.concat([old_codes, pl.Series(buckets, dtype=old_codes.dtype)])
        codes = raw.replace_strict(old_values, old_codes, default=OOV_CODE, return_dtype=pl.Int64())
        return pl.when(raw.is_null()).then(NULL_CODE).otherwise(codes)

    def _history_exprs(self, df: pl.DataFrame) -> list[pl.Expr]:
        """L code columns per sequence field: step j of each row's list (null past its end)."""
        length, exprs = self.spec.history_length, []
        for name in self.spec.history:
            vocab = HISTORY_VOCABULARY.get(name, name)
            values = _steps(df, name, length) if name in df.columns else None
            for j in range(length):
                raw = (
                    pl.col(name).list.get(j, null_on_oob=True).cast(pl.String())
                    if name in df.columns
                    else pl.lit(None, pl.String())
                )
                exprs.append(self._codes(vocab, raw, values).alias(f"seq_{name}_{j}"))
        return exprs

    def encode_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """Encoded columns as a polars frame: Int64 codes for categoricals and the sequence's steps,
        Float32 for numerics."""
        exprs: list[pl.Expr] = []
        for name in self.spec.categorical:
            raw = _column(df, name, pl.String())
            values = (
                df.get_column(name).cast(pl.String()) if name in self.hashed and name in df.columns else None
            )
            exprs.append(self._codes(name, raw, values).alias(f"cat_{name}"))
        exprs += self._history_exprs(df)
        for name in self.spec.numeric:
            stats = self.numeric[name]
            value = _numeric_expr(df, name, self.spec).fill_null(stats.median).fill_nan(stats.median)
            exprs.append(((value - stats.mean) / stats.std).cast(pl.Float32()).alias(f"num_{name}"))
        return df.select(exprs)

    def encode(self, df: pl.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode rows: categorical codes ``LongTensor [N, C]`` and numeric ``FloatTensor [N, F]``.

        Fully vectorised; unseen values map to the OOV code and nulls to the null code, never an error.
        """
        enc = self.encode_frame(df)
        n_cat = self.n_categorical
        # row-major, writable arrays built directly (no Fortran-order copy converted afterwards)
        cat = enc.select(enc.columns[:n_cat]).to_numpy(order="c", writable=True)
        num = enc.select(enc.columns[n_cat:]).to_numpy(order="c", writable=True)
        del enc
        cat = np.require(cat.reshape(len(df), n_cat), dtype=np.int64, requirements=["C", "W"])
        num = np.require(num.reshape(len(df), self.n_numeric), dtype=np.float32, requirements=["C", "W"])
        return torch.from_numpy(cat), torch.from_numpy(num)

    # ----- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain-JSON form (lists and numbers only)."""
        return {
            "format": ENCODERS_FORMAT,
            "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.spec).items()},
            "vocabs": self.vocabs,
            "numeric": {name: asdict(stats) for name, stats in self.numeric.items()},
            "hashed": dict(self.hashed),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Encoders:
        """Inverse of :meth:`to_dict`."""
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(
                f"unsupported encoders format {data.get('format')!r}, expected one of {READABLE_FORMATS}"
            )
        raw = data["spec"]
        defaults = FeatureSpec()
        spec = FeatureSpec(
            categorical=tuple(raw["categorical"]),
            numeric=tuple(raw["numeric"]),
            log_numeric=tuple(raw["log_numeric"]),
            min_count=int(raw["min_count"]),
            numeric_prefix=str(raw.get("numeric_prefix", defaults.numeric_prefix)),
            max_vocab=int(raw.get("max_vocab", 0)),
            hash_buckets=int(raw.get("hash_buckets", defaults.hash_buckets)),
            log_counts=bool(raw.get("log_counts", False)),  # formats 1–2: no count logs
            signed_log_numeric=tuple(raw.get("signed_log_numeric", ())),
            history=tuple(raw.get("history", ())),  # formats 1–3: no sequence
            history_length=int(raw.get("history_length", 0)),
        )
        numeric = {name: NumericStats(**stats) for name, stats in data["numeric"].items()}
        return cls(
            spec=spec,
            vocabs={k: list(v) for k, v in data["vocabs"].items()},
            numeric=numeric,
            hashed={k: int(v) for k, v in data.get("hashed", {}).items()},
        )

    def to_json(self) -> str:
        """Serialise to a JSON string."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Encoders:
        """Load from a JSON string written by :meth:`to_json`."""
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        """Write the JSON form to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Encoders:
        """Read encoders saved with :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
