"""Each generator family's torch side, one file a family (``crn.py``, ``pix2pixhd.py``, ``spade.py``, ``oasis.py``,
``posgen.py``: reference model, checkpoint recognition and loading, ONNX graph writer, each ending in
``MODEL = ModelFamily(...)``, which declares what else the family supports); ``registry.py`` finds them by the
family's name; ``checkpoint.py`` loads and saves checkpoints of every family, ``state.py`` reads state dicts,
``shared.py`` holds the numerics several families share and ``spade_trunk.py`` the SPADE generator SPADE and
PosGen build on; ``tf_bundle.py`` and ``tf_import.py`` read the authors' TensorFlow CRN checkpoints (CRN's
``foreign_import``)."""
