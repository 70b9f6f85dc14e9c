"""crn-deploy: export, build and run semantic image synthesis generators (CRN, pix2pixHD, SPADE, PosGen):
label maps in, pictures out, from ONNX Runtime, TensorRT or TensorRT-RTX engines."""

__version__ = "0.1.0"
