"""The artifact side: ONNX graph writing, the exporter that validates what it writes, and the TensorRT engine
builder (``engine.py`` needs no torch, so crn-build runs on a deployment box)."""
