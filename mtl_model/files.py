"""The one way to write a file: to a temporary name unique to the writer, then an atomic rename.

A reader sees the old file or the new one, never half of one, and two writers of the same path never
share a temporary file (the name carries the process id and a random suffix).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other writer uses: ``.<name>.tmp-<pid>-<random>``."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically (parents are
    created), on error it is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_atomic(path: Path | str, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file, then move it onto ``path``. Returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_text_atomic(path: Path | str, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_bytes(data))


def write_parquet_atomic(df: Any, path: Path | str, **options: Any) -> Path:
    """A Polars DataFrame or a pyarrow Table to Parquet at ``path``, atomically."""
    if hasattr(df, "write_parquet"):
        return write_atomic(path, lambda tmp: df.write_parquet(tmp, **options))
    import pyarrow.parquet as pq

    return write_atomic(path, lambda tmp: pq.write_table(df, tmp, **options))


def replace_dir(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` onto ``final``: a rename when ``final`` does not exist, else
    ``final`` is renamed aside first and removed after (a reader sees the old folder or the new one)."""
    if not final.exists():
        os.replace(tmp, final)
        return
    trash = temporary_path(final)
    os.replace(final, trash)
    os.replace(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)


def glob_literal(path: Path | str) -> str:
    """``path`` as the literal part of a DuckDB or Polars glob pattern: ``[``, ``*`` and ``?`` each in
    a one-character class (a ``TANDEM_HOME`` under ``/data/shop[eu]/`` matches itself, not ``e`` or
    ``u``). The dbt twin is the ``glob_literal`` macro."""
    return str(path).replace("[", "[[]").replace("*", "[*]").replace("?", "[?]")
