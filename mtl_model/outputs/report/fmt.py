"""Numbers for people: thousands separators, 3–4 significant digits, no float noise, in the page's
tables and in the text of published rows (anomaly reasons, observed values of the data checks)."""

from __future__ import annotations

import json
import math
import re
from typing import Any

DASH = "–"
MINUS = "−"
# a decimal or exponent number not glued to a word (ids such as u000312 and dates stay as they are)
_FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+)(?![\w.])")


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def num(x: Any, sig: int = 4, keep_zeros: bool = False) -> str:
    """``x`` with ``sig`` significant digits (trailing zeros dropped unless ``keep_zeros``), whole
    numbers from 1,000 up with separators: 0.74007 → 0.7401, 7.000000000000001 → 7,
    149713.2 → 149,713, 1e-5 → 0.00001; None / NaN → –."""
    if _missing(x):
        return DASH
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}".replace("-", MINUS)
    x = float(x)
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude >= sig - 1:
        return f"{round(x):,}".replace("-", MINUS)
    text = f"{x:,.{sig - 1 - magnitude}f}"
    if not keep_zeros and "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.replace("-", MINUS)


def metric(x: Any) -> str:
    """A model or feedback metric: 4 significant digits, zeros kept so a column lines up."""
    return num(x, 4, keep_zeros=True)


def count(x: Any) -> str:
    """A count with thousands separators."""
    return DASH if _missing(x) else f"{int(round(float(x))):,}"


def pct(x: Any, sig: int = 3) -> str:
    """A share as a percentage: 0.01234 → 1.23 %."""
    return DASH if _missing(x) else f"{num(100 * float(x), sig)} %"


def signed(x: Any, sig: int = 3) -> str:
    """A difference with its sign: +0.0096, −0.0096, ±0."""
    if _missing(x):
        return DASH
    return "±0" if x == 0 else ("+" if x > 0 else "") + num(x, sig)


def seconds(x: Any) -> str:
    """A duration: 0.4 s, 12.3 s, 2 min 05 s."""
    if _missing(x):
        return DASH
    x = float(x)
    if x < 60:
        return f"{num(x, 3 if x >= 1 else 2)} s"
    minutes, rest = divmod(round(x), 60)
    return f"{minutes} min {rest:02d} s"


def human(text: Any, sig: int = 4) -> str:
    """Every decimal number inside ``text`` rounded to ``sig`` significant digits:
    ``7.000000000000001 of its clicks`` → ``7 of its clicks``, ``1.497e+05`` → ``149,700``."""
    if text is None:
        return ""
    return _FLOAT.sub(lambda m: num(float(m[0]), sig), str(text))


def observed(text: Any) -> str:
    """The ``observed`` column of ``data_checks`` (JSON) in words: ``6,619``,
    ``3 unexpected (0.05 %)``, ``14 columns: category_id, ds, …``."""
    try:
        values = json.loads(text) if isinstance(text, str) else dict(text or {})
    except (TypeError, ValueError):
        return human(text)
    parts = []
    value = values.get("observed_value")
    if isinstance(value, list):
        shown = ", ".join(str(v) for v in value[:6]) + (", …" if len(value) > 6 else "")
        parts.append(f"{len(value)} columns: {shown}")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        parts.append(num(value, 4))
    elif value is not None:
        parts.append(human(value))
    if "unexpected_count" in values:
        share = values.get("unexpected_percent")
        tail = f" ({num(share, 3)} %)" if not _missing(share) else ""
        parts.append(f"{count(values['unexpected_count'])} unexpected{tail}")
    return "; ".join(parts) or DASH


FILTERS = {
    "num": num,
    "metric": metric,
    "n": count,
    "pct": pct,
    "signed": signed,
    "seconds": seconds,
    "human": human,
    "observed": observed,
}
