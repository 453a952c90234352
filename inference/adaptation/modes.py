"""What adaptation does (`AdaptationMode`) and on which kind of target (`AdaptationTask`).

Apart from the spec so that building River models (which checks the task) and the spec
(which builds models to validate them) do not import each other.
"""

from __future__ import annotations

from enum import StrEnum


class AdaptationMode(StrEnum):
    OFF = "off"
    STACK = "stack"
    CHALLENGER = "challenger"


class AdaptationTask(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"
