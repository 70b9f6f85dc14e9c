"""Manifests as every earlier crn-deploy wrote them read as before, into typed values parsed once: committed
examples of each generation (tests/fixtures/manifests: the first CRN-only one without a family, the one after
families, one with a TensorRT-RTX engine record, a PosGen one whose picture is larger than its label map)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from crn_deploy.families import FAMILIES
from crn_deploy.manifest import Manifest
from crn_deploy.precisions import FP16
from crn_deploy.records import EngineRecord, Parity, Source
from crn_deploy.sizes import Sizes
from crn_deploy.targets import RTX, TARGETS

EXAMPLES = Path(__file__).parent / "fixtures" / "manifests"
EXPECTED = {  # file: (family, label map size, picture size, engine targets)
    "crn-only-first.json": ("crn", (32, 64), (32, 64), set()),
    "families.json": ("crn", (32, 64), (32, 64), set()),
    "rtx-engine.json": ("crn", (32, 64), (32, 64), {RTX}),
    "posgen-out-res.json": ("posgen", (32, 64), (64, 128), set()),
}


def test_every_generation_is_here():
    assert {p.name for p in EXAMPLES.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_earlier_manifest_reads_into_typed_values(name, tmp_path):
    family, labels, picture, engines = EXPECTED[name]
    manifest = Manifest.read(EXAMPLES / name)
    assert manifest.family is FAMILIES[family] and manifest.precision is FP16
    assert manifest.sizes == Sizes(labels, picture) and manifest.sizes.decoupled == (labels != picture)
    assert set(manifest.engines) == engines and all(isinstance(r, EngineRecord) for r in manifest.engines.values())
    assert isinstance(manifest.parity, Parity) and isinstance(manifest.source, Source)
    assert manifest.config == FAMILIES[family].config_from_dict(json.loads((EXAMPLES / name).read_text())["config"])
    shutil.copy(EXAMPLES / name, tmp_path / name)  # written again: what it held is kept, in today's form
    again = Manifest.read(tmp_path / name)
    again.write(tmp_path / name)
    written = json.loads((tmp_path / name).read_text())
    original = json.loads((EXAMPLES / name).read_text())
    assert {t.manifest_key for t in engines} <= set(written) and written["family"] == family
    for key in ("onnx", *(t.manifest_key for t in TARGETS.values() if t.manifest_key in original)):
        assert written[key] == original[key], key
    assert Parity.from_dict(written["parity"]) == Parity.from_dict(original["parity"])
    assert Manifest.read(tmp_path / name).to_dict() == written  # a round trip changes nothing more
