"""`tandem docs`: build the dbt docs site for this home and say where every page is.

``dbt docs generate --static`` runs with the home's settings (``Settings.as_env()`` and the vars of
:meth:`Settings.dbt_vars`, as every dbt call of Tandem), against the home's warehouse, and writes
one self-contained page (manifest and catalog inlined, so it opens from ``file://`` offline) to
``reports/dbt_docs/index.html``. The other pages are the nightly report of each night, the index of
every night and the GX Data Docs; :func:`pages` lists them for the demo and the CLI.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from mtl_model.config import Settings
from mtl_model.files import write_bytes_atomic
from mtl_model.outputs.report.nights import day_folders, published_days
from mtl_model.outputs.report.page import dbt_docs_path, index_path, report_path
from mtl_model.pipeline.dbt import dbt_command


class DocsError(RuntimeError):
    """dbt could not build the docs (the message carries the end of dbt's output)."""


@dataclass(frozen=True)
class Pages:
    """Where the pages of a home are (None: not there yet)."""

    report: Path | None  # the newest night's report
    index: Path | None
    data_docs: Path | None
    dbt_docs: Path | None

    def lines(self, settings: Settings) -> list[str]:
        """What to open, one line each, and the command that serves the Airflow UI on this home."""
        named = {
            "nightly report": self.report,
            "every night": self.index,
            "GX Data Docs": self.data_docs,
            "dbt docs": self.dbt_docs,
        }
        out = [
            f"  {label + ':':<16} {_url(path) if path else '(not built yet)'}"
            for label, path in named.items()
        ]
        if self.dbt_docs is None:
            out.append(f"  {'':<16} (build the dbt docs with `tandem docs`)")
        passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
        out.append(f"  {'Airflow UI:':<16} {airflow_ui_command(settings)}")
        out.append(f"  {'':<16} then http://localhost:8080, user admin, password in {passwords}")
        return out


def _url(path: Path) -> str:
    """``file://`` and the path as it is (readable, clickable in most terminals) unless it has spaces."""
    path = path.resolve()
    return path.as_uri() if " " in str(path) else f"file://{path}"


def airflow_ui_command(settings: Settings) -> str:
    """The command that serves the Airflow UI (api-server) on the same metadata DB as the nights."""
    return f"TANDEM_HOME={settings.home} .venv/bin/tandem airflow api-server --port 8080"


def pages(settings: Settings) -> Pages:
    """The pages that exist now under ``settings.reports_dir``."""
    days = published_days(settings)
    reports = [report_path(settings, d) for d in days if report_path(settings, d).exists()]
    data_docs = settings.reports_dir / "data_docs" / "index.html"
    return Pages(
        report=reports[-1] if reports else None,
        index=index_path(settings) if index_path(settings).exists() else None,
        data_docs=data_docs if data_docs.exists() else None,
        dbt_docs=dbt_docs_path(settings) if dbt_docs_path(settings).exists() else None,
    )


def _run_date(settings: Settings) -> date:
    """The day the SQL compiles for: the newest published night, else the newest landed day."""
    days = published_days(settings) or day_folders(settings.landing_dir / "events")
    return days[-1] if days else date.today()


def build_docs(settings: Settings, timeout_s: float = 900.0) -> Path:
    """``dbt docs generate --static`` for this home; returns ``reports/dbt_docs/index.html``.

    Needs the home's warehouse (run a night first): dbt reads the tables' columns from it, the
    published tables included. Raises :class:`DocsError` when dbt fails (e.g. a night holds the
    warehouse's lock), with the end of its output."""
    if not settings.warehouse_path.exists():
        raise DocsError(f"no warehouse at {settings.warehouse_path}: run a night first (tandem run --ds …)")
    target = settings.home / "dbt_target" / "docs"
    command = dbt_command(
        "docs", "generate", "--static", target=target, settings=settings, run_date=_run_date(settings)
    )
    env = {**os.environ, **settings.as_env(), "DO_NOT_TRACK": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    page = target / "static_index.html"
    if done.returncode != 0 or not page.exists():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-25:])
        raise DocsError(f"dbt docs generate failed (exit {done.returncode}):\n{tail}")
    return write_bytes_atomic(dbt_docs_path(settings), page.read_bytes())


def docs(settings: Settings) -> int:
    """`tandem docs`: build the dbt docs, then print where every page is; exit code 0, or 1 when dbt
    failed (the other pages are listed all the same)."""
    started = time.perf_counter()
    code = 0
    try:
        path = build_docs(settings)
        print(f"dbt docs built in {time.perf_counter() - started:.0f}s: {path}")
    except DocsError as exc:
        print(f"tandem docs: {exc}")
        code = 1
    print("Pages of this home (open them in a browser; they work offline):")
    print("\n".join(pages(settings).lines(settings)))
    return code
