"""Each generator family's torch side, one file a family (reference model, checkpoint reading, ONNX graph
writer): crn.py, pix2pixhd.py; checkpoint.py (loading and saving for every family), tf_bundle.py and
tf_import.py (the authors' TensorFlow CRN checkpoints), registry.py (family name -> the above)."""
