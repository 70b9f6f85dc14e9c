import numpy as np
import pytest
import torch

from crn_deploy.models.checkpoint import load_checkpoint
from crn_deploy.training.losses import diversity_loss, masked_errors, perceptual_loss
from crn_deploy.models.crn import CRN, random_init
from crn_deploy.models.crn import grow
from crn_deploy.training.train import TrainOptions, new_state, resume, train
from crn_deploy.training.vgg import load_vgg19
from crn_deploy.cli.train import main as train_main
from crn_deploy.families.crn import CRNConfig
from crn_deploy.families import find_preset
from crn_deploy.data.paired import SyntheticPairs, street_photo
from crn_deploy.data.synthetic import street_layout
from crn_deploy.errors import CheckpointError, UsageError
from crn_deploy.labels import CITYSCAPES

from .vgg_files import random_vgg_weights, torchvision_state, write_matconvnet

pytestmark = pytest.mark.numerics  # float rounding could move these verdicts: CI reruns them (pyproject)

TINY = (32, 64)


def _state(seed=0, lr=1e-3):
    return new_state(random_init(CRN(find_preset("tiny")[1]), seed), CITYSCAPES, lr)


def _options(tmp_path, steps, **kw):
    return TrainOptions(steps, TINY, tmp_path, lr=1e-3, log_every=1000, save_every=1000, **kw)


def test_loss_decreases_over_a_few_dozen_steps(tmp_path):
    losses = train(_state(), SyntheticPairs(), _options(tmp_path, 40), log=lambda _: None)
    assert len(losses) == 40
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


def test_resume_continues_exactly(tmp_path):
    straight = _state(seed=1)
    train(straight, SyntheticPairs(), _options(tmp_path / "a", 6), log=lambda _: None)
    split = _state(seed=1)
    train(split, SyntheticPairs(), _options(tmp_path / "b", 3, ), log=lambda _: None)  # saves at its last step
    resumed = resume(tmp_path / "b" / "checkpoint.pt", lr=1e-3)
    assert resumed.step == 3
    train(resumed, SyntheticPairs(), _options(tmp_path / "b", 6), log=lambda _: None)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_diversity_loss_takes_the_best_image_per_class():
    per_class = torch.tensor([[1.0, 5.0, 4.0], [3.0, 0.5, 4.0], [2.0, 2.0, 1.0]])  # [k=3 images, 3 classes]
    best = 1.0 + 0.5 + 1.0
    mean = (6.0 + 7.5 + 9.0) / 3
    assert float(diversity_loss(per_class)) == pytest.approx(0.999 * best + 0.001 * mean)


def test_masked_errors_follow_each_class_mask():
    layout = torch.zeros(1, 2, 4, 4)
    layout[0, 0, :2] = 1  # class 0: top half
    layout[0, 1, 2:] = 1  # class 1: bottom half
    real = torch.zeros(1, 3, 4, 4)
    fake = torch.zeros(2, 3, 4, 4)
    fake[0, :, :2] = 6.0  # image 0 is wrong on class 0 only
    fake[1, :, 2:] = 2.0  # image 1 is wrong on class 1 only
    table = masked_errors(fake, real, layout)
    assert torch.allclose(table, torch.tensor([[3.0, 0.0], [0.0, 1.0]]))  # mean over all pixels of mask * error
    assert float(diversity_loss(table)) == pytest.approx(0.001 * (1.5 + 0.5))  # each class has a perfect image


def test_k_image_models_train_with_the_diversity_loss(tmp_path):
    from dataclasses import replace

    state = new_state(random_init(CRN(replace(find_preset("tiny")[1], k=3)), 0), CITYSCAPES, 1e-3)
    losses = train(state, SyntheticPairs(), _options(tmp_path, 4), log=lambda _: None)
    assert all(np.isfinite(losses))


def test_vgg_weights_load_from_both_layouts_into_the_same_network(tmp_path):
    weights = random_vgg_weights()
    torch.save(torchvision_state(weights), tmp_path / "vgg19.pth")
    write_matconvnet(tmp_path / "imagenet-vgg-verydeep-19.mat", weights)

    from_pth, from_mat = load_vgg19(tmp_path / "vgg19.pth"), load_vgg19(tmp_path / "imagenet-vgg-verydeep-19.mat")
    assert (from_pth.layout, from_mat.layout) == ("torchvision", "matconvnet")
    for key, value in from_pth.state_dict().items():
        assert torch.equal(value, from_mat.state_dict()[key]), key
    images = torch.rand(1, 3, 32, 32) * 255
    taps = from_mat(images)
    assert set(taps) == {"input", "conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2"}
    assert taps["conv5_2"].shape[-2:] == (2, 2)
    loss = perceptual_loss(images.clone().requires_grad_(), images * 0.5, torch.ones(1, 20, 32, 32), from_mat)
    loss.backward()


def test_vgg_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*downloads nothing"):
        load_vgg19(tmp_path / "missing.pth")
    torch.save({"features.0.weight": torch.zeros(4, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match="has no conv1_1 weights|has no conv1_2 weights"):
        load_vgg19(tmp_path / "partial.pth")


def test_progressive_growth_keeps_the_lower_modules(tmp_path):
    lower = random_init(CRN(CRNConfig(19, (16, 12, 8))), 3)
    grown = grow(lower, CRNConfig(19, (16, 12, 8, 6)))
    for mine, theirs in zip(grown.blocks[:3], lower.blocks, strict=True):
        for key, value in theirs.state_dict().items():
            assert torch.equal(mine.state_dict()[key], value)
    with pytest.raises(UsageError, match="cannot grow"):
        grow(lower, CRNConfig(19, (8, 12, 8, 6)))


def test_amp_needs_cuda(tmp_path):
    with pytest.raises(UsageError, match="needs CUDA"):
        train(_state(), SyntheticPairs(), _options(tmp_path, 1, amp=True), log=lambda _: None)


def test_synthetic_photographs_are_deterministic_and_follow_the_layout():
    ids = street_layout(64, 128, seed=4)
    photo = street_photo(ids)
    assert photo.shape == (64, 128, 3) and np.array_equal(photo, street_photo(ids))
    assert photo[ids == 255].max() == 0  # void is black
    sky, road = photo[ids == 10].mean(axis=0), photo[ids == 0].mean(axis=0)
    assert sky[2] > sky[0] and abs(road[0] - road[2]) < 20  # blue sky, grey road


def test_cli_trains_resumes_grows_and_exports(tmp_path, capsys):
    run = tmp_path / "run"
    assert train_main(["--preset", "tiny", "--steps", "4", "--out", str(run), "--lr", "1e-3",
                       "--preview-every", "2"]) == 0
    assert sorted(p.name for p in run.glob("preview_*.png")) == ["preview_000002.png", "preview_000004.png"]
    assert "held-out synthetic PSNR" in capsys.readouterr().out
    assert train_main(["--resume", str(run / "checkpoint.pt"), "--steps", "6", "--out", str(run)]) == 0
    assert "from step 4 to 6" in capsys.readouterr().out
    assert train_main(["--init-from", str(run / "final.safetensors"), "--width", "4", "--steps", "2",
                       "--out", str(tmp_path / "grown")]) == 0
    grown = load_checkpoint(tmp_path / "grown" / "final.safetensors").model
    assert grown.config.widths == (16, 16, 12, 8, 4)
    from crn_deploy.cli.export import main as export_main

    # FP32: the trained weights differ between CPU kernels, and an FP16 floor on them would too
    assert export_main([str(run / "final.safetensors"), "--precision", "fp32", "--out", str(tmp_path / "e")]) == 0
    with pytest.raises(SystemExit):
        train_main(["--resume", str(run / "checkpoint.pt"), "--width", "3"])


DEMO_MODEL = __import__("crn_deploy.cli.demo", fromlist=["DEMO_MODEL"]).DEMO_MODEL


@pytest.mark.slow  # 256x512 twice over: CI runs it, the quick tier leaves it out
@pytest.mark.skipif(not DEMO_MODEL.is_file(), reason="the shipped demo model is not in this checkout")
def test_the_shipped_demo_model_reaches_20_db_and_exports_within_the_parity_bar(tmp_path):
    from crn_deploy.training.train import held_out_psnr

    from .conftest import export_tiny

    loaded = load_checkpoint(DEMO_MODEL)
    assert loaded.model.config == find_preset("small-256p")[1]
    assert held_out_psnr(loaded.model, SyntheticPairs(), (256, 512), count=4) >= 20.0
    fp16 = export_tiny(loaded, tmp_path, precisions=["fp16"], resolutions=[(256, 512)])[0]
    assert fp16.parity.psnr_db >= 60 and fp16.parity.max_abs <= 1  # 66.6 dB measured


def test_crn_train_takes_any_familys_preset_and_refuses_one_it_cannot_train(tmp_path, capsys):
    from crn_deploy.cli.train import main as train_main

    assert train_main(["--preset", "spade-tiny", "--steps", "1", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no trainer for spade models" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as usage:
        train_main(["--preset", "nosuch-preset", "--steps", "1", "--out", str(tmp_path / "n")])
    assert usage.value.code == 2 and "posgen-demo" in capsys.readouterr().err  # every family's presets listed


def _own_data(root, kind: str) -> str:
    """Two label maps with their photographs in the layout ``--data pairs:DIR`` or ``cityscapes:ROOT`` takes."""
    import cv2

    from crn_deploy.data.synthetic import cityscapes_scene

    for i in range(2):
        ids = street_layout(64, 128, seed=30 + i)
        photo = street_photo(ids)[..., ::-1]
        if kind == "pairs":  # one map as train ids, one colour-coded; photographs as JPEG and PNG
            (root / "labels").mkdir(parents=True, exist_ok=True)
            (root / "images").mkdir(exist_ok=True)
            label = ids if i == 0 else CITYSCAPES.ids_to_colors(ids)[..., ::-1]
            cv2.imwrite(str(root / "labels" / f"m{i}.png"), label)
            cv2.imwrite(str(root / "images" / f"m{i}.{'jpg' if i == 0 else 'png'}"), photo)
        else:  # Cityscapes' own layout: label ids, the official file names
            for folder in ("gtFine", "leftImg8bit"):
                (root / folder / "train" / "aachen").mkdir(parents=True, exist_ok=True)
            label_ids = cityscapes_scene(64, 128, seed=30 + i)[0]
            cv2.imwrite(str(root / "gtFine" / "train" / "aachen" / f"aachen_{i:06d}_000019_gtFine_labelIds.png"),
                        label_ids)
            cv2.imwrite(str(root / "leftImg8bit" / "train" / "aachen" / f"aachen_{i:06d}_000019_leftImg8bit.png"),
                        photo)
    return f"{kind}:{root}"


@pytest.mark.parametrize("kind", ["pairs", "cityscapes"])
def test_training_on_your_own_data_trains_resumes_exports_and_runs(tmp_path, capsys, kind):
    from crn_deploy.cli.export import main as export_main
    from crn_deploy.cli.run import main as run_main

    data, run = _own_data(tmp_path / "data", kind), tmp_path / "run"
    assert train_main(["--data", data, "--preset", "tiny", "--res", "64x128", "--steps", "2", "--out", str(run),
                       "--save-every", "2", "--preview-every", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 pairs" in out
    assert f"Next: crn-export {run / 'final.safetensors'} --res 64x128" in out  # the size it learned at
    assert train_main(["--data", data, "--resume", str(run / "checkpoint.pt"), "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "at 64x128" in out and "from step 2 to 3" in out  # at the run's size, not the model's native 32x64
    assert resume(run / "checkpoint.pt", lr=1e-3).step == 3  # without --out, it goes on in the checkpoint's folder
    assert export_main([str(run / "final.safetensors"), "--res", "64x128", "--precision", "fp32", "--out",
                        str(tmp_path / "engines"), "--no-engine"]) == 0
    labels = tmp_path / "data" / ("labels" if kind == "pairs" else "gtFine/train/aachen")
    assert run_main([str(tmp_path / "engines" / "final-64x128-fp32.onnx"), "--input", str(labels), "--output",
                     str(tmp_path / "pictures")]) == 0
    assert len(list((tmp_path / "pictures").glob("*.png"))) == 2
