"""The gate in front of a model at prediction time: for every image, its out-of-distribution score, what the
quality check found, and whether it is accepted (and if not, why). ``--gate`` says what a rejection does:
``warn`` (the default) still answers and flags the image, ``refuse`` gives no class for it, ``off`` checks nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from medclass.data.quality import MEASURES, measure, verdicts
from medclass.errors import UserError

GATE_MODES = ("off", "warn", "refuse")
LOOKS_FOREIGN = "looks unlike the training images"


@dataclass
class GateVerdict:
    ood_score: float
    measures: dict[str, float]
    problems: list[str]

    @property
    def accepted(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)

    def as_dict(self) -> dict[str, Any]:
        quality = [p for p in self.problems if p != LOOKS_FOREIGN]
        return {
            "accepted": self.accepted,
            "reason": self.reason or None,
            "ood_score": round(self.ood_score, 6),
            "quality": {"verdict": "; ".join(quality) or "ok", **{k: round(v, 4) for k, v in self.measures.items()}},
        }


def check_mode(mode: str, gate: dict[str, Any], description: str) -> bool:
    """Whether the gate runs for ``mode``; an error when it must (refuse) and the model has none."""
    if mode not in GATE_MODES:
        raise UserError(f"--gate {mode!r}: choose off, warn or refuse")
    if mode == "refuse" and not gate:
        raise UserError(
            f"--gate refuse: {description} has no gate (an ensemble, or a run from before gates, or one trained "
            "with gate.fit false); fit one with `medclass gate fit RUN` and export again, or use --gate warn/off"
        )
    return mode != "off" and bool(gate)


def judge(
    gate: dict[str, Any], images: np.ndarray, ood: np.ndarray, short_sides: list[int | None]
) -> list[GateVerdict]:
    """Verdicts for a uint8 (B, C, H, W) batch, its out-of-distribution scores (1 = the threshold) and the source
    images' shorter sides (None where unknown)."""
    measures = measure(images)
    problems = verdicts(measures, short_sides, gate.get("quality", {}))
    result = []
    for i, found in enumerate(problems):
        score = float(ood[i])
        reasons = ([LOOKS_FOREIGN] if not score <= 1.0 else []) + found  # a NaN score is not accepted either
        result.append(GateVerdict(score, {name: float(measures[name][i]) for name in MEASURES}, reasons))
    return result
