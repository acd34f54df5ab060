"""What a failed night tells people: the DAG's ``on_failure_callback``.

It always logs one summary line (the run log of ``tandem run``, the dag-processor log under the
scheduler). ``TANDEM_NOTIFY`` adds one of Airflow's notifiers (off by default):

- ``smtp``: ``SmtpNotifier`` of apache-airflow-providers-smtp, to ``TANDEM_NOTIFY_EMAIL_TO`` through
  the Airflow connection ``TANDEM_NOTIFY_SMTP_CONN_ID`` (default ``smtp_default``);
- ``webhook``: :class:`WebhookNotifier`, which POSTs the summary as JSON to
  ``TANDEM_NOTIFY_WEBHOOK_URL`` (the pinned set has no HTTP provider; this is a ``BaseNotifier``).

Imported by the DAG file: Airflow is loaded by then.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from airflow.sdk import BaseNotifier

from mtl_model.config import Settings
from mtl_model.dates import resolve_run_date

log = logging.getLogger(__name__)

SMTP_SUBJECT = "Tandem: a run of {{ dag.dag_id }} failed ({{ run_id }})"
SMTP_BODY = (
    "<p>The run <b>{{ run_id }}</b> of <b>{{ dag.dag_id }}</b> failed"
    "{{ (' at task ' ~ ti.task_id) if ti is defined and ti else '' }}"
    "{{ (' (' ~ reason ~ ')') if reason is defined and reason else '' }}.</p>"
    "<p>The published tables keep the last good night. See the task's log.</p>"
)


def _run_day(context: dict, business_tz: str) -> str | None:
    """The night's ``ds``: the param or the run conf, else the day that ended before the logical date."""
    run = context.get("dag_run")
    given = (context.get("params") or {}).get("ds") or (getattr(run, "conf", None) or {}).get("ds")
    if given:
        return str(given)
    logical = context.get("logical_date") or getattr(run, "logical_date", None)
    after = getattr(run, "run_after", None)
    if not isinstance(logical, datetime) and not isinstance(after, datetime):
        return None
    # today=date.max: a run that failed has started, so its day is the one it resolved (no refusal)
    return resolve_run_date(None, logical, after, business_tz, today=date.max).isoformat()


def failure_summary(context: dict, business_tz: str = "UTC") -> dict[str, Any]:
    """The facts of a failed run, from an Airflow callback context (every key may be missing)."""
    dag, run = context.get("dag"), context.get("dag_run")
    ti = context.get("ti") or context.get("task_instance")
    return {
        "dag_id": getattr(dag, "dag_id", None) or getattr(run, "dag_id", None),
        "run_id": context.get("run_id") or getattr(run, "run_id", None),
        "ds": _run_day(context, business_tz),
        "state": "failed",
        "reason": context.get("reason"),
        "task_id": getattr(ti, "task_id", None),
        "try_number": getattr(ti, "try_number", None),
    }


class _AnyDag:
    """Render the template fields with a plain sandboxed Jinja environment when the context's DAG
    cannot give one: ``dag.test`` runs the DAG callbacks with the scheduler's ``SerializedDAG``."""

    def get_template_env(self, dag: Any = None) -> Any:
        usable = dag if hasattr(dag, "get_template_env") else None
        return super().get_template_env(dag=usable)  # type: ignore[misc]

    def _render(self, template: Any, context: Any, dag: Any = None) -> Any:
        dag = dag or context.get("dag")
        usable = dag if hasattr(dag, "get_template_env") else None
        # past BaseNotifier._render (which falls back to the context's DAG) to Templater._render
        return super(BaseNotifier, self)._render(template, context, usable)  # type: ignore[misc]


class WebhookNotifier(_AnyDag, BaseNotifier):
    """POST a JSON summary of the failed run (:func:`failure_summary`) to ``url``."""

    template_fields = ("url",)

    def __init__(
        self, url: str, timeout: float = 10.0, summary: Callable[[dict], dict] = failure_summary
    ) -> None:
        super().__init__()
        self.url, self.timeout, self.summary = url, timeout, summary

    def notify(self, context: Any) -> None:
        body = json.dumps(self.summary(dict(context)), default=str).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tandem"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - http(s) only
            response.read()


def _smtp_notifier_class() -> type:
    """apache-airflow-providers-smtp's ``SmtpNotifier`` (imported when asked for), rendering as above."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    class TandemSmtpNotifier(_AnyDag, SmtpNotifier):
        pass

    return TandemSmtpNotifier


def notifier(settings: Settings) -> BaseNotifier | None:
    """The notifier ``TANDEM_NOTIFY`` names (None for ``none``)."""
    if settings.notify == "webhook":
        return WebhookNotifier(
            settings.notify_webhook_url, summary=lambda ctx: failure_summary(ctx, settings.business_tz)
        )
    if settings.notify == "smtp":
        return _smtp_notifier_class()(
            to=list(settings.notify_email_to),
            from_email=settings.notify_email_from or None,
            smtp_conn_id=settings.notify_smtp_conn_id,
            subject=SMTP_SUBJECT,
            html_content=SMTP_BODY,
        )
    return None


def failure_callbacks(settings: Settings) -> list[Callable[[Any], None]]:
    """The DAG's ``on_failure_callback``: a summary in the log, then the configured notifier."""

    def log_failure(context: Any) -> None:
        s = failure_summary(dict(context), settings.business_tz)
        log.error(
            "%s ds=%s failed (%s) at task %s; run %s",
            s["dag_id"],
            s["ds"],
            s["reason"] or "failed",
            s["task_id"],
            s["run_id"],
        )

    extra = notifier(settings)
    return [log_failure, *([extra] if extra is not None else [])]
