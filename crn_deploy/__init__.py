"""crn-deploy: export, build and run semantic image synthesis generators (CRN, pix2pixHD, SPADE/GauGAN, OASIS,
PosGen): label maps in, pictures out, from ONNX Runtime or the engines built from its artifacts."""

__version__ = "0.1.0"
