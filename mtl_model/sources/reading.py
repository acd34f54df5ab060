"""Opening the inputs of ``tandem ingest``: plain, gzip and zip files, CSV and Parquet, scanned lazily as
text; the rules a row breaks (``QUARANTINE_REASONS``) and the one-scan split of a file into the rows
kept and the rows to quarantine.

Bytes are kept or quarantined, never altered: a CSV line that is not valid UTF-8 is quarantined as
``invalid_encoding`` (its raw bytes go into the quarantine file's ``raw_line``), unless the caller
names the file's encoding (``tandem ingest --encoding latin-1``; :data:`ENCODING`), in which case the
file is decoded with it (a line it cannot decode is quarantined the same way)."""

from __future__ import annotations

import codecs
import contextlib
import csv
import itertools
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import polars as pl

from mtl_model.sources.formats import EARLIEST_S, LATEST_S, SourceFormat

QUARANTINE_REASONS = (
    "truncated_line",
    "malformed_line",
    "null_event_id",
    "null_user_id",
    "null_item_id",
    "null_event_time",
    "unparseable_event_time",
    "implausible_event_time",
    "unknown_event_type",
    "unparseable_price",
    "unparseable_position",
    "outside_dates",
    # item and user files
    "null_value",
    "unparseable_in_stock",
    "unparseable_signup_date",
    "null_ds",
    "unparseable_ds",
    "null_category_id",
    "duplicate_category_id",
    "invalid_encoding",
)
# the encoding of the CSV inputs of the current ingest (None: UTF-8); set by mtl_model.sources.ingest
ENCODING: ContextVar[str | None] = ContextVar("tandem_ingest_encoding", default=None)
# quarantined lines whose whole raw line (bytes) is kept in the quarantine file's raw_line
RAW_LINE_REASONS = ("invalid_encoding", "malformed_line", "truncated_line")
EXTRA = "_extra"  # catches the fields of a line beyond the expected ones
CHUNK = 1 << 20  # bytes read at a time when decompressing
EDGE = 1 << 16  # bytes kept of a file's beginning and end (its first and last line)


class IngestError(Exception):
    """Nothing could be read: the file is missing, empty, or its header lacks required columns; or the
    landing zone stayed locked by another ingest for longer than ``lock_timeout``."""


@dataclass(frozen=True)
class _File:
    """An input file, ready for polars: ``scan`` is the file itself (plain or gzip) or a plain copy of
    it in the work folder (a zip member, a gzip stream cut short)."""

    path: Path  # the file named by the caller (its name goes into the quarantine)
    scan: Path
    first_line: bytes
    last_line: bytes | None  # the last line when the file does not end in a newline, else None
    compression: str | None = None
    bad_lines: frozenset[int] = field(default_factory=frozenset)  # lines (1-based) not valid text


class _Utf8Lines:
    """Finds the lines (1-based) that are not valid UTF-8 in a stream fed chunk by chunk: whole
    blocks of lines are decoded at C speed; only a block that fails is split into its lines."""

    def __init__(self) -> None:
        self.bad: set[int] = set()
        self.line = 1
        self.rest = b""

    def feed(self, chunk: bytes) -> None:
        data = self.rest + chunk
        cut = data.rfind(b"\n") + 1
        block, self.rest = data[:cut], data[cut:]
        self._check(block)

    def close(self) -> frozenset[int]:
        self._check(self.rest)
        self.rest = b""
        return frozenset(self.bad)

    def _check(self, block: bytes) -> None:
        try:
            block.decode("utf-8")
        except UnicodeDecodeError:
            for k, line in enumerate(block.split(b"\n")):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    self.bad.add(self.line + k)
        self.line += block.count(b"\n")


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _bad_utf8_lines(chunks: Iterable[bytes]) -> frozenset[int]:
    finder = _Utf8Lines()
    for chunk in chunks:
        finder.feed(chunk)
    return finder.close()


def _gunzip_chunks(path: Path) -> Iterator[bytes]:
    """The decompressed bytes of a gzip file (every member; a cut stream as far as it goes)."""
    d = zlib.decompressobj(31)
    for chunk in _chunks(path):
        while chunk:
            if d.eof:  # another member, or zero padding after the last one
                if not chunk.strip(b"\0"):
                    break
                d = zlib.decompressobj(31)
            try:
                data = d.decompress(chunk)
            except zlib.error:
                return
            if data:
                yield data
            chunk = d.unused_data if d.eof else b""


def _source_chunks(path: Path) -> Iterator[bytes]:
    """The bytes of an input as read (gzip and zip decompressed; a cut gzip stream as far as it goes)."""
    with path.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        yield from _gunzip_chunks(path)
        return
    if magic == b"PK\x03\x04":
        with zipfile.ZipFile(path) as archive:
            members = [
                m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
            ]
            with archive.open(members[0]) as f:
                while chunk := f.read(CHUNK):
                    yield chunk
        return
    yield from _chunks(path)


def raw_lines(path: Path, wanted: Iterable[int]) -> dict[int, bytes]:
    """The raw bytes of the lines ``wanted`` (1-based, without the newline) of the input ``path``."""
    todo, out = set(wanted), {}
    line, rest = 1, b""
    for chunk in _source_chunks(path):
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        block, rest = data[:cut], data[cut:]
        n = block.count(b"\n")
        if any(line <= w < line + n for w in todo):
            for k, text in enumerate(block.split(b"\n")[:n]):
                if line + k in todo:
                    out[line + k] = text.rstrip(b"\r")
        line += n
        if len(out) == len(todo):
            return out
    if rest and line in todo:
        out[line] = rest.rstrip(b"\r")
    return out


def _transcode(file: _File, work: Path, encoding: str) -> _File:
    """A UTF-8 copy of the file's text decoded from ``encoding``; a line that does not decode is
    written with U+FFFD and marked bad (it is quarantined, its raw bytes kept)."""
    dest = Path(tempfile.mkstemp(dir=work, suffix=".utf8.csv")[1])
    bad: set[int] = set()
    decode = codecs.getdecoder(encoding)
    line, rest = 1, b""
    with dest.open("wb") as out:
        for chunk in itertools.chain(_source_chunks(file.path), [b""]):
            data = rest + chunk
            cut = data.rfind(b"\n") + 1 if chunk else len(data)
            block, rest = data[:cut], data[cut:]
            pieces = block.split(b"\n")
            for k, text in enumerate(pieces):
                end = b"\n" if k < len(pieces) - 1 else b""
                try:
                    out.write(decode(text)[0].encode("utf-8") + end)
                except UnicodeDecodeError:
                    bad.add(line + k)
                    out.write(text.decode(encoding, "replace").encode("utf-8") + end)
            line += len(pieces) - 1
    plain = _plain(file.path, dest, file.compression)
    return _File(plain.path, dest, plain.first_line, plain.last_line, plain.compression, frozenset(bad))


def _with_encoding(file: _File, work: Path) -> _File:
    """The file as UTF-8 text for polars: as it is, its invalid lines found; or decoded from the
    encoding the caller named (:data:`ENCODING`)."""
    encoding = ENCODING.get()
    if encoding is not None and codecs.lookup(encoding).name != "utf-8":
        return _transcode(file, work, encoding)
    chunks = _source_chunks(file.scan) if file.compression == "gzip" else _chunks(file.scan)
    bad = _bad_utf8_lines(chunks)
    return _File(file.path, file.scan, file.first_line, file.last_line, file.compression, bad)


def _edges(data_head: bytes, data_tail: bytes) -> tuple[bytes, bytes | None]:
    first = data_head.split(b"\n", 1)[0]
    if not data_tail or data_tail.endswith(b"\n"):
        return first, None
    return first, data_tail[data_tail.rfind(b"\n") + 1 :]


def _plain(path: Path, scan: Path, compression: str | None = None) -> _File:
    size = scan.stat().st_size
    with scan.open("rb") as f:
        head = f.read(EDGE)
        f.seek(max(0, size - EDGE))
        tail = f.read()
    return _File(path, scan, *_edges(head, tail), compression)


def _gunzip(path: Path, dest: Path | None) -> tuple[bytes, bytes, bool]:
    """Decompress a gzip file (every member) in 1 MiB steps, into ``dest`` if given: its first and
    last bytes, and whether the stream was complete (False: cut short; what could be read is kept)."""
    head, tail = bytearray(), b""
    with path.open("rb") as f, dest.open("wb") if dest else contextlib.nullcontext() as out:
        d, rest = zlib.decompressobj(31), b""
        while True:
            chunk, rest = rest or f.read(CHUNK), b""
            if not chunk:
                break
            if d.eof:  # another member, or zero padding after the last one
                if not chunk.strip(b"\0"):
                    continue
                d = zlib.decompressobj(31)
            try:
                data = d.decompress(chunk)
            except zlib.error as exc:
                raise IngestError(f"{path}: broken gzip data ({exc})") from exc
            if data:
                if len(head) < EDGE:
                    head += data[: EDGE - len(head)]
                tail = (tail + data)[-EDGE:]
                if out is not None:
                    out.write(data)
            if d.eof:
                rest = d.unused_data
        return bytes(head), tail, d.eof


def _prepare(path: Path, work: Path) -> _File:
    """The file at ``path`` for scanning, as UTF-8 text (see :func:`_with_encoding`)."""
    return _with_encoding(_open_file(path, work), work)


def _open_file(path: Path, work: Path) -> _File:
    """The file at ``path`` for scanning; compressed files are recognised by their first bytes."""
    if not path.is_file() or path.stat().st_size == 0:
        raise IngestError(f"{path}: no such file, or empty")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b":
        head, tail, complete = _gunzip(path, None)
        if complete:  # polars scans gzip itself, streaming
            return _File(path, path, *_edges(head, tail), "gzip")
        dest = Path(tempfile.mkstemp(dir=work, suffix=".csv")[1])
        head, tail, _ = _gunzip(path, dest)  # the readable part: its cut last line is quarantined
        return _File(path, dest, *_edges(head, tail), "gzip (cut short)")
    if magic == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile as exc:
            raise IngestError(f"{path}: not a readable zip ({exc}); an interrupted download?") from exc
        with archive:
            members = [
                m for m in archive.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")
            ]
            if len(members) != 1:
                names = [m.filename for m in members]
                raise IngestError(f"{path}: a zip must hold exactly one file, this one holds {names}")
            dest = Path(tempfile.mkstemp(dir=work, suffix=".csv")[1])
            try:
                with archive.open(members[0]) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except (NotImplementedError, zipfile.BadZipFile, zlib.error, EOFError) as exc:
                raise IngestError(f"{path}: cannot unzip {members[0].filename} ({exc})") from exc
        return _plain(path, dest, "zip")
    return _plain(path, path)


def _is_parquet(path: Path) -> bool:
    if path.suffix.lower() in (".parquet", ".pq"):
        return True
    with path.open("rb") as f:
        return f.read(4) == b"PAR1"


@dataclass
class _Input:
    lf: pl.LazyFrame  # raw text columns, "_line", and normalised contract columns
    raw: list[str]  # the source columns kept for the quarantine file
    extra_columns: list[str]
    missing_columns: list[str]
    last_raw: dict[str, str | None] | None = None  # fields of a last line without newline, by column
    short_last: bool = False  # ... which has fewer fields than the header


def _fields(line: bytes, bom: bool = False) -> list[str]:
    text = line.decode("utf-8-sig" if bom else "utf-8", "replace").rstrip("\r")
    return [v.strip() for v in next(csv.reader([text]), [])]


def _open_csv(
    file: _File, name: str, header: bool, columns: tuple[str, ...], required: tuple[str, ...]
) -> _Input:
    if header:
        names = _fields(file.first_line, bom=True)
        missing_req = [c for c in required if c not in names]
        if missing_req:
            raise IngestError(
                f"{file.path}: header {names} lacks {missing_req} (expected {list(columns)} for {name})"
            )
    else:
        names = list(columns)
    # unique names for the scan (a header may repeat a name); the first of each is used
    scan_names = [n if n not in names[:k] else f"_dup{k}_{n}" for k, n in enumerate(names)]
    schema = {n: pl.String for n in [*scan_names, EXTRA]}
    lf = pl.scan_csv(
        file.scan,
        has_header=False,
        skip_lines=1 if header else 0,
        schema=schema,
        missing_columns="insert",
        truncate_ragged_lines=True,
        quote_char='"',
        row_index_name="_row",
        encoding="utf8-lossy",
    )
    present = [c for c in columns if c in scan_names]
    missing = [c for c in columns if c not in scan_names]
    stripped = [pl.col(c).str.strip_chars().replace("", None) for c in [*present, EXTRA]]
    lf = lf.with_columns(stripped).with_columns(
        _line=pl.col("_row").cast(pl.Int64) + (2 if header else 1),
        **{c: pl.lit(None, pl.String) for c in missing},
    )
    blank = pl.all_horizontal(pl.col(c).is_null() for c in present)
    bad_text = pl.col("_line").is_in(sorted(file.bad_lines)) if file.bad_lines else pl.lit(False)
    lf = lf.with_columns(_malformed=pl.col(EXTRA).is_not_null() | blank, _bad_encoding=bad_text)
    extra_cols = [n for n in names if n not in columns]
    src = _Input(lf, present, extra_cols, missing)
    if file.last_line is not None:
        fields = _fields(file.last_line)
        src.last_raw = {
            c: (fields[names.index(c)] or None) if names.index(c) < len(fields) else None for c in present
        }
        src.short_last = len(fields) < len(names)
    return src


def _open_parquet(path: Path, name: str, columns: tuple[str, ...], required: tuple[str, ...]) -> _Input:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # not a Parquet file
        raise IngestError(f"{path}: cannot read as Parquet ({exc})") from exc
    missing_req = [c for c in required if c not in schema]
    if missing_req:
        raise IngestError(f"{path}: columns {list(schema)} lack {missing_req} ({name})")
    present = [c for c in columns if c in schema]
    missing = [c for c in columns if c not in schema]
    lf = pl.scan_parquet(path).with_row_index("_row")
    typed: dict[str, pl.Expr] = {}
    if "event_time" in schema and isinstance(schema["event_time"], pl.Datetime):
        dt = schema["event_time"]
        t = pl.col("event_time")
        t = t.dt.convert_time_zone("UTC") if dt.time_zone else t.dt.replace_time_zone("UTC")
        typed["_typed_time"] = t.dt.cast_time_unit("us")
    lf = lf.with_columns(**typed).with_columns(
        [pl.col(c).cast(pl.String).str.strip_chars().replace("", None) for c in present],
        _line=pl.col("_row").cast(pl.Int64) + 1,
        _malformed=pl.lit(False),
        **{c: pl.lit(None, pl.String) for c in missing},
    )
    return _Input(lf, present, [n for n in schema if n not in columns], missing)


def _reason(spec: SourceFormat, cols: set[str], start: date | None, end: date | None) -> pl.Expr:
    """The first rule a normalised row breaks, or null."""
    t = pl.col("event_time")
    epoch_s = t.dt.epoch("s")
    bad_text = pl.col("_bad_encoding") if "_bad_encoding" in cols else pl.lit(False)
    r = pl.when(bad_text).then(pl.lit("invalid_encoding"))
    r = r.when(pl.col("_malformed")).then(pl.lit("malformed_line"))
    if spec.id_prefix is None:
        r = r.when(pl.col("event_id").is_null()).then(pl.lit("null_event_id"))
    r = (
        r.when(pl.col("user_id").is_null())
        .then(pl.lit("null_user_id"))
        .when(pl.col("item_id").is_null())
        .then(pl.lit("null_item_id"))
        .when(pl.col("_time_raw").is_null())
        .then(pl.lit("null_event_time"))
    )
    if "_implausible" in cols:
        r = r.when(pl.col("_implausible")).then(pl.lit("implausible_event_time"))
    r = (
        r.when(t.is_null())
        .then(pl.lit("unparseable_event_time"))
        .when(~epoch_s.is_between(EARLIEST_S, LATEST_S, closed="left"))
        .then(pl.lit("implausible_event_time"))
        .when(pl.col("event_type").is_null())
        .then(pl.lit("unknown_event_type"))
    )
    if "_bad_number" in cols:
        r = r.when(pl.col("_bad_number").is_not_null()).then(pl.col("_bad_number"))
    if start is not None:
        r = r.when(pl.col("ds") < start).then(pl.lit("outside_dates"))
    if end is not None:
        r = r.when(pl.col("ds") > end).then(pl.lit("outside_dates"))
    return r.otherwise(pl.lit(None, pl.String))


@dataclass
class _Checked:
    """The rows of an item / user file: the rows kept (``_line`` and the columns asked for), the rows to
    quarantine (``_line``, ``reason``, source fields as text), and counts."""

    source: Path
    good: pl.DataFrame
    bad: pl.DataFrame
    raw: list[str]
    read: int
    skipped: int = 0  # rows without a reason that are not needed

    @property
    def used(self) -> int:
        return self.good.height


def _check(
    src: _Input, source: Path, reason: pl.Expr, keep: list[pl.Expr], used: pl.Expr | None = None
) -> _Checked:
    """One streaming scan of a file (the three queries share it): the rows that break no rule (and are
    ``used``), the rows that break one, and the count; a cut last line goes to the quarantine."""
    if "_bad_encoding" in src.lf.collect_schema().names():
        reason = pl.when(pl.col("_bad_encoding")).then(pl.lit("invalid_encoding")).otherwise(reason)
    lf = src.lf.with_columns(reason=reason)
    ok = pl.col("reason").is_null() if used is None else pl.col("reason").is_null() & used
    try:
        good, bad, stats = pl.collect_all(
            [
                lf.filter(ok).select("_line", *keep),
                lf.filter(pl.col("reason").is_not_null()).select("_line", "reason", *src.raw),
                lf.select(pl.len().alias("n"), pl.col("_line").max().alias("last")),
            ],
            engine="streaming",
        )
    except pl.exceptions.PolarsError as exc:
        raise IngestError(f"{source}: cannot read ({exc})") from exc
    n, last = stats.row(0)
    if src.last_raw is not None and n and (src.short_last or (bad["_line"] == last).any()):
        cut = {"_line": [last], "reason": ["truncated_line"], **{c: [src.last_raw[c]] for c in src.raw}}
        good = good.filter(pl.col("_line") != last)
        bad = pl.concat([bad.filter(pl.col("_line") != last), pl.DataFrame(cut, schema=bad.schema)])
    checked = _Checked(source, good, bad.sort("_line"), src.raw, n)
    checked.skipped = n - good.height - bad.height
    return checked


def _conform(df: pl.DataFrame, schema: dict) -> pl.DataFrame:
    """``df`` with exactly the columns of ``schema`` (missing ones null), cast."""
    return df.select(
        [(pl.col(c) if c in df.columns else pl.lit(None)).cast(d).alias(c) for c, d in schema.items()]
    )
