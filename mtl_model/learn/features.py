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
  codes after the vocabulary: :func:`mtl_model.hashing.bucket` with :data:`BUCKET_SEED`, the same in
  every process, on every machine and with every library version (unlike Python's or polars' ``hash``).
  Encoders of formats 1–5 hashed these values with BLAKE2b: those with a capped column are refused
  (their buckets would not be the ones the model learned), the others read back as before.
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
* Text (``FeatureSpec.text``: the item's ``title`` and the search exposure's ``query``): nothing is
  fitted. Each text is lower-cased, every run of characters other than letters and digits becomes one
  space, and it is cut into n-grams, in this order: its words (``<w>``), its pairs of adjacent words
  (``w1 w2``) and the character trigrams of each word padded with ``<`` and ``>`` (fastText's
  subwords: ``<ab``, ``abc``, ``bc>``). The first ``text_length`` n-grams are kept (words first) and
  each is coded 1 + its :func:`mtl_model.hashing.bucket` in ``[0, text_buckets)`` with
  :data:`TEXT_SEED` (0: past the text's end, or no text). The codes follow the sequence's steps in the
  code columns. Each distinct text is cut once per call (a title repeats over every exposure of its
  item), all of it in polars and numpy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mtl_model.hashing import bucket

NULL_CODE = 0
OOV_CODE = 1
FIRST_KNOWN_CODE = 2
# 3: signed_log_numeric, log_counts; 4: the behaviour sequence; 5: text; 6: capped columns hashed by
# mtl_model.hashing (formats 1–5 used BLAKE2b: read back only when no column is capped)
ENCODERS_FORMAT = 6
READABLE_FORMATS = (1, 2, 3, 4, 5, 6)
ENCODE_ROWS = 1 << 19  # rows encoded at a time (Encoders.encode)
# sequence fields coded with a categorical column's vocabulary (and read in its embedding table)
HISTORY_VOCABULARY = {"hist_item_ids": "item_id", "hist_category_ids": "category_id"}
HISTORY_FIELDS = ("hist_item_ids", "hist_category_ids", "hist_event_types", "hist_days_ago")
TEXT_FIELDS = ("title", "query")  # the item's title; the search exposure's query (null elsewhere)
TEXT_SEED = 0x54616E64656D  # fixed: the same n-gram buckets in every process, machine and version
BUCKET_SEED = 0x566F636162  # fixed: the hash buckets of a capped column ("Vocab")


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
    text: tuple[str, ...] = ()  # string columns cut into hashed n-grams (TEXT_FIELDS), in this order
    text_buckets: int = 1 << 16  # hash buckets of the n-grams (codes 1 … text_buckets)
    text_length: int = 32  # n-grams kept per text (codes 0 past its end)


def input_columns(spec: FeatureSpec, names: Sequence[str]) -> list[str]:
    """The columns among ``names`` that encoders of ``spec`` read, fitted or not (its categoricals,
    numerics, sequence and text columns, and the ``numeric_prefix`` columns), in the order of ``names``."""
    wanted = {*spec.categorical, *spec.numeric, *spec.history, *spec.text}
    prefix = spec.numeric_prefix
    return [name for name in names if name in wanted or (prefix and name.startswith(prefix))]


def text_ngrams(texts: pl.Series) -> pl.DataFrame:
    """The n-grams of each of ``texts`` (the module docstring's rule): columns ``text`` (row of
    ``texts``), ``rank`` (0, 1, … in the order kept: words, word pairs, trigrams) and ``ngram``."""
    norm = texts.cast(pl.String()).str.to_lowercase().str.replace_all(r"[^\p{L}\p{N}]+", " ")
    words = (
        pl.DataFrame(
            {"text": np.arange(len(texts), dtype=np.int64), "w": norm.str.strip_chars().str.split(" ")}
        )
        .explode("w")
        .filter(pl.col("w").is_not_null() & (pl.col("w") != ""))
        .with_columns(
            pos=pl.int_range(pl.len()).over("text"), padded=pl.concat_str(pl.lit("<"), "w", pl.lit(">"))
        )
    )
    unigrams = words.select("text", pl.lit(0).alias("kind"), "pos", pl.lit(0).alias("sub"), ngram="padded")
    bigrams = (
        words.with_columns(next=pl.col("w").shift(-1).over("text"))
        .filter(pl.col("next").is_not_null())
        .select(
            "text",
            pl.lit(1).alias("kind"),
            "pos",
            pl.lit(0).alias("sub"),
            ngram=pl.concat_str("w", "next", separator=" "),
        )
    )
    trigrams = (
        words.with_columns(sub=pl.int_ranges(0, pl.col("padded").str.len_chars() - 2))
        .explode("sub")
        .select(
            "text", pl.lit(2).alias("kind"), "pos", "sub", ngram=pl.col("padded").str.slice(pl.col("sub"), 3)
        )
    )
    grams = pl.concat([unigrams, bigrams, trigrams], how="vertical_relaxed").sort(
        "text", "kind", "pos", "sub"
    )
    return grams.select("text", pl.int_range(pl.len()).over("text").alias("rank"), "ngram")


def text_codes(texts: pl.Series, buckets: int, length: int) -> np.ndarray:
    """int64 [N, length]: 1 + the bucket of each text's first ``length`` n-grams, 0 past its end and
    for a null or empty text. Each distinct text is cut and hashed once; each distinct n-gram too."""
    raw = texts.cast(pl.String())
    distinct = raw.drop_nulls().unique().sort()
    table = np.zeros((len(distinct) + 1, length), dtype=np.int64)  # the last row: no text
    grams = text_ngrams(distinct).filter(pl.col("rank") < length)
    if grams.height:
        grams = grams.with_columns(gram=pl.col("ngram").rank("dense").cast(pl.Int64) - 1)
        unique = grams.get_column("ngram").unique().sort()  # in the dense rank's order
        codes = bucket(unique, buckets, TEXT_SEED) + 1
        table[grams["text"].to_numpy(), grams["rank"].to_numpy()] = codes[grams["gram"].to_numpy()]
    index = raw.replace_strict(
        distinct, np.arange(len(distinct)), default=len(distinct), return_dtype=pl.Int64
    )
    return table[index.fill_null(len(distinct)).to_numpy()]


@dataclass(frozen=True)
class NumericStats:
    """Training statistics of one numeric column, after the log transform where one applies."""

    median: float
    mean: float
    std: float
    # one value on every training row: encoded as 0 everywhere (see Encoders._numeric_exprs); False in
    # encoders saved before the flag existed
    constant: bool = False


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


def _select(df: pl.DataFrame, exprs: list[pl.Expr]) -> pl.DataFrame:
    """``df.select(exprs)`` with every expression at the frame's height (a literal alone would be one row)."""
    height = pl.int_range(pl.len()).alias("__height__")  # one expression of the frame's length
    return df.select(height, *exprs).drop("__height__") if exprs else pl.DataFrame()


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
            constant = std <= 1e-12
            numeric[name] = NumericStats(median, mean, 1.0 if constant else std, constant)
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
    def n_text(self) -> int:
        """Code columns of the text n-grams (``text_length`` per text column; 0 when text is off)."""
        return len(self.spec.text) * self.spec.text_length

    @property
    def n_categorical(self) -> int:
        """Code columns produced by :meth:`encode`: the categoricals, the sequence's steps, the text's
        n-grams."""
        return len(self.spec.categorical) + len(self.spec.history) * self.spec.history_length + self.n_text

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
            buckets = first_bucket + bucket(other, self.hashed[name], BUCKET_SEED)
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

    def _code_exprs(self, df: pl.DataFrame) -> list[pl.Expr]:
        """Int64 codes of the categoricals, then of the sequence's steps."""
        exprs: list[pl.Expr] = []
        for name in self.spec.categorical:
            raw = _column(df, name, pl.String())
            values = (
                df.get_column(name).cast(pl.String()) if name in self.hashed and name in df.columns else None
            )
            exprs.append(self._codes(name, raw, values).alias(f"cat_{name}"))
        return exprs + self._history_exprs(df)

    def _numeric_exprs(self, df: pl.DataFrame) -> list[pl.Expr]:
        """Standardised columns. A column that was constant over the training rows is 0 on every row:
        the network never saw it vary, so its input weights kept their random initialisation, and
        any other value (a first night's features, built on an empty history, scored against a day
        with history) would move the scores by those random weights. On the REES46 sample's second day
        this turned every task's AUC below 0.5 (docs/benchmarks.md)."""
        exprs: list[pl.Expr] = []
        for name in self.spec.numeric:
            stats = self.numeric[name]
            if stats.constant:
                exprs.append(pl.lit(0.0, pl.Float32()).alias(f"num_{name}"))
                continue
            value = _numeric_expr(df, name, self.spec).fill_null(stats.median).fill_nan(stats.median)
            exprs.append(((value - stats.mean) / stats.std).cast(pl.Float32()).alias(f"num_{name}"))
        return exprs

    def _text_codes(self, df: pl.DataFrame) -> np.ndarray:
        """int64 [N, n_text]: the n-gram codes of each text column in turn (a missing column: none)."""
        parts = [
            text_codes(
                df.get_column(name)
                if name in df.columns
                else pl.Series(name, [None] * df.height, pl.String()),
                self.spec.text_buckets,
                self.spec.text_length,
            )
            for name in self.spec.text
        ]
        return np.concatenate(parts, axis=1) if parts else np.zeros((df.height, 0), dtype=np.int64)

    def encode_frame(self, df: pl.DataFrame) -> pl.DataFrame:
        """Encoded columns as a polars frame: Int64 codes for categoricals, the sequence's steps and
        the text's n-grams (``txt_<column>_<j>``), Float32 for numerics."""
        text = self._text_codes(df)
        names = [f"txt_{name}_{j}" for name in self.spec.text for j in range(self.spec.text_length)]
        frames = [
            _select(df, self._code_exprs(df)),
            pl.DataFrame({n: text[:, k] for k, n in enumerate(names)}, schema=dict.fromkeys(names, pl.Int64)),
            _select(df, self._numeric_exprs(df)),
        ]
        return pl.concat([f for f in frames if f.width], how="horizontal")

    def encode(self, df: pl.DataFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode rows: categorical codes ``LongTensor [N, C]`` (the categoricals, the sequence's steps,
        the text's n-grams) and numeric ``FloatTensor [N, F]``.

        Fully vectorised; unseen values map to the OOV code and nulls to the null code, never an error.
        The rows are encoded :data:`ENCODE_ROWS` at a time into the two tensors, so the intermediate
        columns of a large window are never all in memory at once (a row's codes do not depend on the
        other rows: the result is the same for any chunk size).
        """
        cat = np.empty((df.height, self.n_categorical), dtype=np.int64)
        num = np.empty((df.height, self.n_numeric), dtype=np.float32)
        for start in range(0, df.height, ENCODE_ROWS):
            part = df.slice(start, ENCODE_ROWS)
            end = start + part.height
            width = self.n_categorical - self.n_text  # the categoricals' and the sequence's codes
            codes = _select(part, self._code_exprs(part)).to_numpy(order="c")
            cat[start:end, :width] = codes.reshape(part.height, width)
            if self.n_text:
                cat[start:end, width:] = self._text_codes(part)
            values = _select(part, self._numeric_exprs(part)).to_numpy(order="c")
            num[start:end] = values.reshape(part.height, self.n_numeric)
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
        if data["format"] < 6 and data.get("hashed"):
            raise ValueError(
                f"encoders format {data['format']} hashed the capped columns {sorted(data['hashed'])} with "
                "BLAKE2b, which this version no longer computes: train a new model (tandem run --ds D)"
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
            text=tuple(raw.get("text", ())),  # formats 1–4: no text
            text_buckets=int(raw.get("text_buckets", defaults.text_buckets)),
            text_length=int(raw.get("text_length", defaults.text_length)),
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
