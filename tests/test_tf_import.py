"""crn-import: TensorFlow bundles written by tests/tf_writer.py, checked against the released graph
transcribed to NumPy (tests/reference_tf_numpy.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crn_deploy.models.checkpoint import load_checkpoint
from crn_deploy.models.tf_bundle import TensorBundle
from crn_deploy.models.tf_import import import_tf_checkpoint, infer_architecture
from crn_deploy.cli.import_tf import main as import_main
from crn_deploy.families.crn import PRESETS, released_widths
from crn_deploy.data.synthetic import street_layout
from crn_deploy.errors import CheckpointError

from .reference_tf_numpy import tf_generator

# The export extra brings google-crc32c; an environment without it (the GPU image) skips this module.
pytest.importorskip("google_crc32c", reason="crn-import's tests need google-crc32c (the export extra)")
from .tf_writer import write_checkpoint  # noqa: E402

# Every released layout (module count, k) at tiny widths, evaluated at a small valid size.
LAYOUTS = {
    "256p": dict(widths=(8, 8, 8, 8, 8, 6, 6), k=9, res=(64, 128)),
    "512p": dict(widths=(8, 8, 8, 8, 8, 6, 6, 4), k=1, res=(128, 256)),
    "1024p": dict(widths=(6, 6, 6, 6, 6, 5, 5, 4, 3), k=1, res=(256, 512)),
    "GTA": dict(widths=(8, 8, 8, 8, 8, 6, 6), k=9, res=(64, 128)),
}


def tf_variables(widths, k, classes=19, seed=0, optimizer_state=True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    variables, cin = {}, classes + 1
    for i, width in enumerate(widths):
        sp = 4 << i
        for j, fan_in in ((1, cin + (widths[i - 1] if i else 0)), (2, width)):
            scope = f"g_{sp}_conv{j}"
            variables[f"{scope}/weights"] = rng.normal(0, (2 / (9 * fan_in)) ** 0.5, (3, 3, fan_in, width))
            variables[f"{scope}/LayerNorm/gamma"] = rng.uniform(0.5, 1.5, width)
            variables[f"{scope}/LayerNorm/beta"] = rng.normal(0, 0.2, width)
    last = 4 << (len(widths) - 1)
    variables[f"g_{last}_conv100/weights"] = rng.normal(0, 0.5 / widths[-1] ** 0.5, (1, 1, widths[-1], 3 * k))
    variables[f"g_{last}_conv100/biases"] = rng.normal(0, 0.1, 3 * k)
    variables = {name: value.astype(np.float32) for name, value in variables.items()}
    if optimizer_state:  # what the released files also hold, and the importer must ignore
        for name in list(variables):
            variables[f"{name}/Adam"] = np.zeros_like(variables[name])
            variables[f"{name}/Adam_1"] = np.ones_like(variables[name])
        variables["beta1_power"] = np.array(0.9, np.float32)
        variables["beta2_power"] = np.array(0.999, np.float32)
        variables["global_step"] = np.array(1234, np.int64)
    return variables


def _one_hot(ids: np.ndarray, classes: int = 19) -> np.ndarray:
    return (np.minimum(ids, classes)[..., None] == np.arange(classes + 1)).astype(np.float64)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_import_computes_what_the_released_graph_computes(tmp_path, layout):
    spec = LAYOUTS[layout]
    variables = tf_variables(spec["widths"], spec["k"], seed=len(layout))
    write_checkpoint(tmp_path / "model.ckpt", variables)
    loaded, arch = import_tf_checkpoint(tmp_path / "model.ckpt")
    assert arch.config.widths == spec["widths"] and arch.config.k == spec["k"] and arch.config.num_classes == 19
    assert len(arch.ignored) == 2 * len(arch.variables) + 3

    ids = street_layout(*spec["res"], seed=3)
    with torch.no_grad():
        ours = loaded.model.forward_float(torch.from_numpy(ids)[None, None]).numpy()[0]
    heights = [4 << i for i in range(len(spec["widths"]))]
    theirs = tf_generator(_one_hot(ids), {k: v.astype(np.float64) for k, v in variables.items()}, heights)
    ours = ours if spec["k"] > 1 else ours[None]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-3)
    assert theirs.std() > 10


def test_cli_writes_a_checkpoint_that_loads_and_exports(tmp_path, capsys):
    write_checkpoint(tmp_path / "model.ckpt", tf_variables(LAYOUTS["512p"]["widths"], 1))
    assert import_main([str(tmp_path), "-o", str(tmp_path / "crn.pt")]) == 0  # the folder works as PREFIX
    assert "Next: crn-export" in capsys.readouterr().out
    loaded = load_checkpoint(tmp_path / "crn.pt")
    assert loaded.model.config.widths == LAYOUTS["512p"]["widths"] and loaded.label_set.name == "cityscapes"
    from crn_deploy.cli.export import main as export_main

    assert export_main([str(tmp_path / "crn.pt"), "--res", "128x128", "--precision", "fp32",
                        "--out", str(tmp_path / "engines")]) == 0


@pytest.mark.parametrize("preset", ["cityscapes-256p", "cityscapes-1024p"])
def test_inspect_reads_the_index_alone_and_names_the_preset(tmp_path, capsys, preset):
    config = PRESETS[preset]
    variables = {name: np.broadcast_to(np.float32(0), value.shape)  # full-size shapes, no memory
                 for name, value in _full_size_shapes(config).items()}
    write_checkpoint(tmp_path / "model.ckpt", variables, block_size=4096, index_only=True)
    assert not (tmp_path / "model.ckpt.data-00000-of-00001").exists()
    assert import_main(["--inspect", str(tmp_path / "model.ckpt.index")]) == 0
    out = capsys.readouterr().out
    assert f"preset {preset}" in out and f"widths {list(config.widths)}" in out
    assert "g_4_conv1/weights" in out and "[3, 3, 20, 1024]" in out and "other variables ignored" in out


def _full_size_shapes(config) -> dict[str, np.ndarray]:
    """The preset's variables as zero-stride arrays (shapes only), plus a few optimizer variables."""
    shapes, cin = {}, 20
    for i, width in enumerate(config.widths):
        sp = 4 << i
        fan_in = cin + (config.widths[i - 1] if i else 0)
        shapes[f"g_{sp}_conv1/weights"] = (3, 3, fan_in, width)
        shapes[f"g_{sp}_conv2/weights"] = (3, 3, width, width)
        for j in (1, 2):
            shapes[f"g_{sp}_conv{j}/LayerNorm/gamma"] = shapes[f"g_{sp}_conv{j}/LayerNorm/beta"] = (width,)
    last = 4 << (config.num_modules - 1)
    shapes[f"g_{last}_conv100/weights"] = (1, 1, config.widths[-1], 3 * config.k)
    shapes[f"g_{last}_conv100/biases"] = (3 * config.k,)
    shapes.update({f"{name}/Adam": shape for name, shape in list(shapes.items())})
    shapes["beta1_power"] = ()
    return {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}


def _corrupt(path, offset_from_end=None, offset=None):
    data = bytearray(path.read_bytes())
    position = offset if offset is not None else len(data) - offset_from_end
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture()
def small_ckpt(tmp_path):
    write_checkpoint(tmp_path / "model.ckpt", tf_variables((6, 6, 4), 1))
    return tmp_path / "model.ckpt"


def test_missing_data_shard(small_ckpt):
    small_ckpt.with_name("model.ckpt.data-00000-of-00001").unlink()
    with pytest.raises(CheckpointError, match="data shard .*data-00000-of-00001 is missing"):
        import_tf_checkpoint(small_ckpt)


def test_truncated_files(small_ckpt):
    index = small_ckpt.with_name("model.ckpt.index")
    index.write_bytes(index.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated or another file"):
        TensorBundle(small_ckpt)


def test_truncated_data(tmp_path):
    write_checkpoint(tmp_path / "model.ckpt", tf_variables((6, 6, 4), 1))
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="is truncated"):
        import_tf_checkpoint(tmp_path / "model.ckpt")


def test_checksum_mismatch_in_data_and_in_index(small_ckpt, tmp_path):
    data = small_ckpt.with_name("model.ckpt.data-00000-of-00001")
    bundle = TensorBundle(small_ckpt)
    _corrupt(data, offset=bundle.tensors["g_4_conv1/weights"].offset + 5)
    with pytest.raises(CheckpointError, match="checksum mismatch for g_4_conv1/weights"):
        import_tf_checkpoint(small_ckpt)
    _corrupt(small_ckpt.with_name("model.ckpt.index"), offset=3)
    with pytest.raises(CheckpointError, match="checksum mismatch in .*model.ckpt.index"):
        TensorBundle(small_ckpt)


def test_a_checkpoint_that_is_not_a_crn(tmp_path, capsys):
    write_checkpoint(tmp_path / "model.ckpt", {"dense/kernel": np.zeros((3, 4), np.float32)})
    with pytest.raises(CheckpointError, match="is not a CRN checkpoint"):
        infer_architecture(TensorBundle(tmp_path / "model.ckpt"))
    assert import_main([str(tmp_path / "model.ckpt"), "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert "not a CRN checkpoint" in err and "Traceback" not in err and not (tmp_path / "x.pt").exists()


def test_usage_errors(tmp_path, capsys):
    assert import_main([str(tmp_path / "nothing" / "model.ckpt"), "--inspect"]) == 2
    assert "model.ckpt.index not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        import_main([str(tmp_path)])
    assert e.value.code == 2


def test_released_widths_are_what_the_presets_use():
    assert released_widths(9) == PRESETS["cityscapes-1024p"].widths


FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name, k, modules", [("tf_k9_5modules", 9, 5), ("tf_k1_4modules", 1, 4)])
def test_checkpoints_written_by_tensorflow_import_and_match_its_output(name, k, modules):
    """Fixtures saved by TensorFlow 2.21 running the authors' graph code (tests/fixtures/make_tf_fixtures.py)."""
    loaded, arch = import_tf_checkpoint(FIXTURES / name / "model.ckpt")
    assert arch.config.k == k and arch.config.num_modules == modules
    assert {"beta1_power", "beta2_power"} <= {v.name for v in arch.ignored}
    assert any(v.name.endswith("/Adam_1") for v in arch.ignored)
    expected = np.load(FIXTURES / name / "expected.npz")
    with torch.no_grad():
        ours = loaded.model.forward_float(torch.from_numpy(expected["ids"])[None, None]).numpy()[0]
    theirs = np.clip(expected["images"], 0, 255)  # [k,H,W,3] (k=9) or [1,H,W,3]
    ours = ours if k > 1 else ours[None]
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=2e-3)
    assert theirs.std() > 10
