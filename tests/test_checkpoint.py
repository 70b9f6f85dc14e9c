import pickle
from pathlib import Path
from dataclasses import replace

import pytest
import torch

from crn_deploy.models.checkpoint import load_checkpoint, model_from_source, save_checkpoint
from crn_deploy.models.crn import CRN, check_state, infer_config, random_init
from crn_deploy.families.crn import CRNConfig
from crn_deploy.families import FAMILIES, find_preset
from crn_deploy.errors import CheckpointError
from crn_deploy.labels import CITYSCAPES, LabelSet

from .conftest import export_tiny


def _shapes_only(config):
    """A state dict of meta tensors: full-size presets without allocating their weights."""
    return {k: torch.empty(v.shape, device="meta") for k, v in CRN(config).to("meta").state_dict().items()}


@pytest.mark.parametrize("name", ["cityscapes-256p", "cityscapes-512p", "cityscapes-1024p", "gta-256p", "tiny"])
def test_architecture_is_inferred_from_preset_shapes(name):
    assert infer_config(_shapes_only(find_preset(name)[1])) == find_preset(name)[1]


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
    assert manifest.parity.max_abs <= 1


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
        load_checkpoint(tmp_path / "tiny.pt", find_preset("small-256p")[1])


def test_bad_files_get_one_clear_line(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint: it is a damaged or truncated zip"):
        load_checkpoint(tmp_path / "corrupt.pt")
    torch.save({"something": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=rf"not a checkpoint of any family crn-deploy deploys \(tried "
                                              rf"{', '.join(FAMILIES)}; no key matches any family's"):
        load_checkpoint(tmp_path / "other.pt")


def test_a_truncated_safetensors_file_is_told_truncated_and_a_renamed_one_renamed(tmp_path, tiny_config):
    from crn_deploy.models.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "whole.safetensors", random_init(CRN(tiny_config), 0))
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"a truncated \.safetensors file \({len(data) // 2:,} of its "
                                              rf"{len(data):,} bytes\)") as refused:
        load_checkpoint(tmp_path / "cut.safetensors")
    assert "another suffix" not in str(refused.value)
    (tmp_path / "renamed.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match="a .safetensors file with another suffix"):
        load_checkpoint(tmp_path / "renamed.pt")


@pytest.mark.parametrize("forced", sorted(set(FAMILIES) - {"pix2pixhd"}))
def test_a_checkpoint_forced_into_another_family_is_told_what_it_looks_like(tmp_path, forced):
    from crn_deploy.models.checkpoint import random_model

    model = random_model(find_preset("pix2pixhd-tiny")[1], seed=2).model
    torch.save(model.state_dict(), tmp_path / "latest_net_G.pth")  # as the official trainer saves it
    with pytest.raises(CheckpointError, match=rf"is not a checkpoint of family {forced} \(it looks like a pix2pixhd "
                                              r"checkpoint; keys as stored: model\.1\.weight, model\.1\.bias"):
        load_checkpoint(tmp_path / "latest_net_G.pth", family=forced)
    partial = dict(list(model.state_dict().items())[:2]) | {"extra.weight": torch.zeros(1)}
    torch.save(partial, tmp_path / "partial.pth")  # recognised by no family: the closest is named
    with pytest.raises(CheckpointError, match=r"the closest by its keys is pix2pixhd, 67% of the file's keys match"):
        load_checkpoint(tmp_path / "partial.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_loading_never_executes_code_from_the_file(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    torch.save({"state_dict": _Payload()}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError, match="cannot be loaded safely|not a PyTorch checkpoint"):
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


def _bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """Files people pass as checkpoints that are not ones, with what the error must call them."""
    (folder / "text.pt").write_text("hello, this is not a checkpoint\n")  # most first letters broke torch.load
    (folder / "notes.pth").write_text("a readme saved with the wrong name\n")
    (folder / "empty.pt").write_bytes(b"")
    (folder / "folder.pt").mkdir()
    (folder / "plain.pt").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    torch.save([1, 2, 3], folder / "list.pt")
    good = folder / "good.pt"
    torch.save({"blocks.0.conv1.weight": torch.zeros(4, 20, 3, 3)}, good)
    (folder / "truncated.pt").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return {"text.pt": "a text file", "notes.pth": "a text file", "empty.pt": "empty", "folder.pt": "a folder",
            "plain.pt": "a Python pickle", "list.pt": "holds a list", "truncated.pt": "truncated zip"}


@pytest.mark.parametrize("command", ["export", "resume", "init-from"])
def test_files_that_are_not_checkpoints_get_one_line_and_exit_2(tmp_path, capsys, command):
    from crn_deploy.cli.export import main as export_main
    from crn_deploy.cli.train import main as train_main

    for name, what in _bad_checkpoints(tmp_path).items():
        path = str(tmp_path / name)
        if command == "export":
            code = export_main([path, "--res", "64x96", "--out", str(tmp_path / "out")])
        else:
            code = train_main([f"--{command}", path, "--steps", "1", "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err.strip()
        assert code == 2, (name, err)
        assert len(err.splitlines()) == 1 and name in err and what in err, err
