"""What an operator or analyst sees after a run: the CLI summary (``tandem show``), the page of a
night (``reports/ds=D/report.html``) and the index of every night (``reports/index.html``).

The pages are rendered with Jinja2 (``templates/``), their charts with matplotlib as inline SVG:
no script, no CDN, nothing fetched, so they read the same offline.
"""

from mtl_model.outputs.report.page import write_index, write_report
from mtl_model.outputs.report.summary import print_summary

__all__ = ["print_summary", "write_index", "write_report"]
