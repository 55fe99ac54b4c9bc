"""Models, prompts, caches, training, export and benchmarks. No Qt here; torch is imported lazily where possible
so the ONNX Runtime path works on a station install without torch."""
