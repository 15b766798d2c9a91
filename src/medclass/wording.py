"""How results are named for people: class names wrapped the same way in every plot and table, file names
shortened without losing their extension, and numbers, sizes, times and durations in words. One place, so that a
class reads the same in the report, the plots, the comparison and the console (metric labels live with the metrics
in their registry, medclass.metrics)."""

from __future__ import annotations

import datetime as _dt
import math
import re
import textwrap
from typing import Any

PER_CLASS_LABELS = {
    "class": "class", "support": "images", "sensitivity": "sensitivity", "specificity": "specificity",
    "ppv": "PPV", "npv": "NPV", "f1": "F1", "auc": "AUC",
}  # fmt: skip
CLASS_WIDTH = 18  # characters per line of a class name in plots


def class_name(name: str) -> str:
    """A class name as shown: as the dataset spells it, but with a space before an opening bracket that lacks one
    (BloodMNIST's "immature granulocytes(myelocytes, ...)"), so that it can break there."""
    return re.sub(r"(?<=\S)\(", " (", name)


def wrap_class(name: str, width: int = CLASS_WIDTH) -> str:
    """A class name on as many lines as it needs, broken between words only (a single word longer than the width
    stays whole), so that no class name is ever cut. Used for every plot label of a class."""
    return "\n".join(textwrap.wrap(class_name(name), width, break_long_words=False)) or name


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def limited_epochs(limit: int | float | None) -> str:
    """`` of at most 3 batches`` / `` of 10% of the batches`` for trainer.limit_train_batches; "" without a limit."""
    if limit is None:
        return ""
    if isinstance(limit, int):
        return f" of at most {limit} batch{'' if limit == 1 else 'es'}"
    return f" of {limit:.0%} of the batches"


def short_file(name: str, limit: int = 24) -> str:
    """A file name that fits ``limit`` characters, shortened in its middle so the start and the extension stay."""
    if len(name) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or len(suffix) > 6:
        stem, suffix = name, ""
    tail = (stem[-4:] + "." + suffix) if suffix else name[-6:]
    head = limit - len(tail) - 1
    return name[:head] + "…" + tail


def number(value: Any, digits: int = 3) -> str:
    """A metric or a probability: fixed digits, n/a for missing or NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def percent(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


def count(value: float) -> str:
    """11177538 -> 11.2 M; 2400 -> 2,400."""
    if value >= 1e6:
        return f"{value / 1e6:.1f} M"
    return f"{int(value):,}"


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def when(timestamp: str | None) -> str:
    """An ISO timestamp as ``2026-12-04 13:06 UTC+00:00`` (the zone it was recorded in)."""
    if not timestamp:
        return "n/a"
    try:
        moment = _dt.datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    zone = moment.strftime("%z")
    zone = " UTC" if zone == "+0000" else (f" UTC{zone[:3]}:{zone[3:]}" if zone else "")
    return moment.strftime("%Y-%m-%d %H:%M") + zone


def listing(items: list[str], limit: int = 6) -> str:
    """'a, b and c'; long lists end in 'and 5 more'."""
    shown = items[:limit] if len(items) > limit else items
    rest = len(items) - len(shown)
    if rest:
        return ", ".join(shown) + f" and {rest} more"
    return ", ".join(shown[:-1]) + (" and " if len(shown) > 1 else "") + shown[-1] if shown else ""


def file_slug(text: str, fallback: str) -> str:
    """A name safe as a file or folder name (letters, digits, ``._-``; anything else becomes ``_``), or
    ``fallback`` when nothing is left: class names in plot files, experiment names from folders, model labels."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_.-") or fallback


def interval_text(bounds: Any, digits: int = 3, scale: float = 1.0, dash: str = " – ", computed: bool = False) -> str:
    """``low – high``; "undefined" where an interval was computed for a value but none exists (the reason is
    given beside it), never a zero-width range; "" where no interval was computed."""
    if bounds:
        return f"{bounds[0] * scale:.{digits}f}{dash}{bounds[1] * scale:.{digits}f}"
    return "undefined" if computed else ""


RULE_WORDS = {
    "youden": "the highest sensitivity + specificity there (Youden's J)",
    "sensitivity": "the highest threshold whose sensitivity there reaches {target:.0%}",
}


def rule_words(operating_point: dict) -> str:
    """How the operating threshold was chosen on validation, in words to follow "chosen on validation: "."""
    words = RULE_WORDS.get(str(operating_point.get("rule")), str(operating_point.get("rule")))
    return words.format(target=operating_point.get("target_sensitivity") or 0.9)
