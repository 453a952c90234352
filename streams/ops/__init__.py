"""Operator tools: consumer lag, state rebuild, topic creation, progress, the web dashboard."""
