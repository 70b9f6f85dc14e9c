"""Reference models, checkpoint readers and ONNX graph writers of the generator families (build side: torch)."""
