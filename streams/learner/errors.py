"""What the learner cannot start with, said as a fix."""

from __future__ import annotations


class LearnerError(Exception):
    """The learner cannot start as configured; the message says what to change."""
