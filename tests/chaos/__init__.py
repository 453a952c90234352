"""The chaos harness of issue 11: faults on a seeded schedule against real processes, a
recorded history, and checks over the whole history (see tests/chaos/runner.py)."""
