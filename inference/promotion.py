"""The promotion policy: promote a shadow candidate that beats the active model by a margin
over enough labels (the same rule as River's challenger, `RollingComparison`), pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from inference.prequential import HIGHER_IS_BETTER


@dataclass(frozen=True)
class PromotionPolicy:
    """Promote when `metric` of the candidate beats the active one's by more than `margin`
    over at least `min_labels` labelled events both scored."""

    metric: str = "roc_auc"
    margin: float = 0.01
    min_labels: int = 500

    def __post_init__(self) -> None:
        if self.metric not in HIGHER_IS_BETTER:
            raise ValueError(
                f"metric {self.metric!r} is not one of {sorted(HIGHER_IS_BETTER)}: choose one"
            )

    def decide(
        self,
        labels: int,
        candidate: Mapping[str, float | None],
        active: Mapping[str, float | None],
    ) -> tuple[bool, str]:
        """(promote?, why) for the two outputs' metrics over the same events."""
        if labels < self.min_labels:
            return False, f"{labels} labels so far, the policy waits for {self.min_labels}"
        c, a = candidate.get(self.metric), active.get(self.metric)
        if c is None or a is None:
            return False, f"{self.metric} is not defined yet (one class only?)"
        gain = c - a if HIGHER_IS_BETTER[self.metric] else a - c
        verdict = "beats" if gain > self.margin else "does not beat"
        return (
            gain > self.margin,
            f"{self.metric} {c:.4f} vs active {a:.4f} over {labels} labels: {verdict} "
            f"it by more than {self.margin}",
        )
