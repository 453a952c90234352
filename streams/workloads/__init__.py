"""Workloads: synthetic payments, producing, labelled CSV replay, the demo model and the demos."""
