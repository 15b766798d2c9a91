"""Whether other libraries may speak: medclass silences their progress bars, INFO lines and routine warnings
(transformers, W&B, Lightning) around its own calls, unless the user asked for them. The CLI's --verbose sets the
root logger to INFO (WARNING otherwise); a Python user who configures INFO logging asks for the same."""

from __future__ import annotations

import logging


def third_party_wanted() -> bool:
    return logging.getLogger().getEffectiveLevel() <= logging.INFO
