"""streamfer: ONNX models (providers, signature, registry, hot swap), River adaptation, drift
detection and prequential metrics."""
