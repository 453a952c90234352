"""Benchmarks: streamfer against its ceiling and its peers, on the same broker and Redis.

`python -m bench` runs the whole suite (see `bench/__main__.py`); `bench/gpu.py` measures
ONNX Runtime on CUDA against CPU. Method and results: docs/benchmarks.md.
"""
