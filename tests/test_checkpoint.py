import pickle
from dataclasses import replace

import pytest
import torch

from crn_deploy.build.checkpoint import (
    check_state,
    infer_config,
    load_checkpoint,
    model_from_source,
    save_checkpoint,
)
from crn_deploy.build.model import CRN, random_init
from crn_deploy.config import CRNConfig, preset
from crn_deploy.errors import CheckpointError
from crn_deploy.labels import CITYSCAPES, LabelSet

from .conftest import export_tiny


def _shapes_only(config):
    """A state dict of meta tensors: full-size presets without allocating their weights."""
    return {k: torch.empty(v.shape, device="meta") for k, v in CRN(config).to("meta").state_dict().items()}


@pytest.mark.parametrize("name", ["cityscapes-256p", "cityscapes-512p", "cityscapes-1024p", "gta-256p", "tiny"])
def test_architecture_is_inferred_from_preset_shapes(name):
    assert infer_config(_shapes_only(preset(name))) == preset(name)


def test_architecture_is_inferred_for_custom_widths():
    custom = CRNConfig(num_classes=7, widths=(40, 24, 24, 12, 6), k=2)
    assert infer_config(_shapes_only(custom)) == custom


def _state(config, seed=0):
    return random_init(CRN(config), seed).state_dict()


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module.", "model.", "module.model."])
def test_checkpoints_load_in_every_layout_people_save(tmp_path, tiny_config, layout):
    state = _state(tiny_config, seed=1)
    if layout.endswith("."):
        payload = {layout + k: v for k, v in state.items()}
    elif layout == "plain":
        payload = state
    else:
        payload = {layout: state, "epoch": 3}
    path = tmp_path / "ckpt.pt"
    torch.save(payload, path)
    loaded = load_checkpoint(path)
    assert loaded.model.config == tiny_config
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert loaded.source["kind"] == "checkpoint" and len(loaded.source["sha256"]) == 64
    manifest = export_tiny(loaded, tmp_path / "e", precisions=["fp32"], resolutions=[(32, 64)])[0]
    assert manifest.sections["parity"]["max_abs"] <= 1


def test_safetensors_plain_and_with_metadata(tmp_path, tiny_config):
    from safetensors.torch import save_file

    state = _state(tiny_config, seed=2)
    save_file({f"module.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "plain.safetensors"))
    assert load_checkpoint(tmp_path / "plain.safetensors").model.config == tiny_config
    model = random_init(CRN(replace(tiny_config, k=2)), 3)
    save_checkpoint(tmp_path / "ours.safetensors", model)
    loaded = load_checkpoint(tmp_path / "ours.safetensors")
    assert loaded.model.config == model.config and loaded.label_set == CITYSCAPES


def test_saved_checkpoint_round_trips_exactly(tmp_path):
    config = CRNConfig(num_classes=5, widths=(12, 8, 4), base=(2, 4), k=1)  # base is not inferable: stored
    labels = LabelSet("five", tuple("abcde"), ((1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5)))
    model = random_init(CRN(config), 4)
    save_checkpoint(tmp_path / "m.pt", model, labels)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.model.config == config and loaded.label_set == labels
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not list(tmp_path.glob("*.tmp"))


def test_stored_config_wins_over_inference(tmp_path, tiny_config):
    config = replace(tiny_config, base=(2, 2))
    save_checkpoint(tmp_path / "m.pt", random_init(CRN(config), 5))
    assert load_checkpoint(tmp_path / "m.pt").model.config.base == (2, 2)


def test_mismatch_names_missing_unexpected_and_wrongly_shaped_keys(tiny_config):
    state = dict(_state(tiny_config))
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(1)
    state["blocks.1.conv2.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(CheckpointError) as e:
        check_state(state, tiny_config, "ckpt.pt")
    message = str(e.value)
    assert "missing: head.bias" in message and "unexpected: extra.weight" in message
    assert "wrong shape: blocks.1.conv2.weight [3, 3, 3, 3]" in message and "\n" not in message


def test_checkpoint_of_another_architecture_is_refused_against_a_preset(tmp_path, tiny_config):
    torch.save(_state(tiny_config), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match="does not fit the CRN config"):
        load_checkpoint(tmp_path / "tiny.pt", preset("small-256p"))


def test_bad_files_get_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="corrupt or not a PyTorch file"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a crn-deploy CRN checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_executes_code_from_the_file(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    torch.save({"state_dict": _Payload()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError, match="cannot be loaded safely|corrupt"):
            load_checkpoint(tmp_path / name)
    assert "code ran" not in capsys.readouterr().out


def test_model_from_source_checks_the_checkpoint_hash(tmp_path, tiny_config):
    torch.save(_state(tiny_config, 1), tmp_path / "a.pt")
    torch.save(_state(tiny_config, 2), tmp_path / "b.pt")
    source = load_checkpoint(tmp_path / "a.pt").source
    assert isinstance(model_from_source(source, tiny_config), CRN)
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        model_from_source(source, tiny_config, tmp_path / "b.pt")
    (tmp_path / "a.pt").unlink()
    with pytest.raises(CheckpointError, match="--checkpoint"):
        model_from_source(source, tiny_config)
