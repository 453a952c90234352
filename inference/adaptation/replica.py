"""A worker's River replica: the learner's model rebuilt from a checkpoint and kept current
by applying the examples log in order, each sequence number once.

The learner learns each label with `learn_one` after predicting it; prediction does not
change a River model, so applying the same `learn_one` calls in the same order gives the
same model, bit for bit, in every worker. (`learn_many` would not: one mini-batch step is
not the sum of per-label steps, and the replica would drift from the learner's series.)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.adaptation.examples import DecodedExamples
from inference.adaptation.modes import AdaptationTask

log = logging.getLogger(__name__)


def learn_rows(
    model: Any, task: AdaptationTask, columns: Sequence[str], matrix: np.ndarray, y: np.ndarray
) -> None:
    """`learn_one` per row, in order, as `OnlineLearner.learn` does (classes as bools)."""
    names = list(columns)
    classify = task is AdaptationTask.CLASSIFICATION
    for row, target in zip(matrix.tolist(), np.asarray(y, dtype=np.float64).tolist(), strict=True):
        x = dict(zip(names, row, strict=True))
        model.learn_one(x, target >= 0.5 if classify else target)


@dataclass(frozen=True)
class Applied:
    """What one `RiverReplica.apply` did: examples learned, duplicates skipped, a gap seen,
    and the production times (ms) of the labels just learned (for the freshness metric)."""

    learned: int
    skipped: int
    gap: int
    label_ms: np.ndarray
    kept: np.ndarray  # which of the examples were learned (bool mask)


class RiverReplica:
    """A River model at learn sequence `applied` (the number of examples it has learned)."""

    def __init__(
        self,
        model: Any,
        task: AdaptationTask,
        columns: Sequence[str],
        applied: int,
        *,
        promoted: bool = False,
    ) -> None:
        self.model = model
        self.task = task
        self.columns = tuple(columns)
        self.applied = applied
        self.promoted = promoted

    def apply(self, examples: DecodedExamples) -> Applied:
        """Learn the examples not yet applied, in log order. A sequence number below
        `applied` was learned already (republished by a restarted learner): skipped. One
        above it means examples are missing from the log: learned anyway and reported."""
        keep = np.zeros(len(examples), dtype=bool)
        expected, gap = self.applied, 0
        for i, s in enumerate(examples.seq.tolist()):  # a scan of ints, no model work
            if s < expected:
                continue
            if s > expected:
                gap += s - expected
            keep[i] = True
            expected = s + 1
        if gap:
            log.error(
                "examples log: %d examples missing before sequence %d; replica continues",
                gap,
                expected,
            )
        learned = int(keep.sum())
        if learned:
            learn_rows(self.model, self.task, self.columns, examples.matrix[keep], examples.y[keep])
            self.promoted = examples.promoted
        self.applied = expected
        return Applied(learned, len(examples) - learned, gap, examples.label_ms[keep], keep)
