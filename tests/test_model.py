from dataclasses import replace

import numpy as np
import pytest
import torch

from crn_deploy.models.crn import CRN, random_init
from crn_deploy.data.synthetic import street_layout

from .reference_numpy import crn_forward


def _weights(model):
    return {k: v.detach().double().numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("k", [1, 3])
def test_reference_model_matches_an_independent_numpy_forward(tiny_config, k):
    config = replace(tiny_config, k=k)
    model = random_init(CRN(config), seed=11).eval()
    ids = street_layout(32, 64, seed=3)
    ids[:2, :2] = 255  # void
    ids[2, 2] = 19  # first id past the classes is void too
    with torch.no_grad():
        ours = model.forward_float(torch.from_numpy(ids)[None, None]).numpy()[0]
    expected = crn_forward(ids, _weights(model), config.num_modules, config.num_classes, k)
    ours = ours if k > 1 else ours[None]
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-3)
    assert expected.std() > 10  # the comparison is not between two flat images


def test_slim_epsilon_matters_where_variance_is_tiny(tiny_config):
    # docs/families/crn.md: with pre-norm variance ~1e-6, PyTorch's default eps 1e-5 moves outputs by many levels.
    model = random_init(CRN(tiny_config), seed=12).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.conv1.weight.mul_(1e-3)
            block.conv2.weight.mul_(1e-3)
        ours = model.forward_float(torch.from_numpy(street_layout(32, 64, seed=1))[None, None]).numpy()[0]
    ids = street_layout(32, 64, seed=1)
    weights = _weights(model)
    slim = crn_forward(ids, weights, tiny_config.num_modules, 19, 1)[0]
    torch_default = crn_forward(ids, weights, tiny_config.num_modules, 19, 1, eps=1e-5)[0]
    np.testing.assert_allclose(ours, slim, atol=0.05)
    assert np.abs(torch_default - slim).max() > 20


def test_uint8_output_is_the_rounded_float_output(tiny_config):
    model = random_init(CRN(tiny_config), seed=13).eval()
    labels = torch.from_numpy(street_layout(32, 64, seed=2))[None, None]
    with torch.no_grad():
        out, out_float = model(labels), model.forward_float(labels)
    assert out.dtype == torch.uint8 and out.shape == (1, 32, 64, 3)
    assert torch.equal(out, torch.round(out_float).to(torch.uint8))


def test_fp16_model_keeps_the_norm_in_float32(tiny_config):
    from crn_deploy.backends.torch_ref import TorchBackend

    model = random_init(CRN(tiny_config), seed=14).eval()
    ids = street_layout(32, 64, seed=4)[None, None]
    with TorchBackend(model, "fp32") as fp32, TorchBackend(model, "fp16") as fp16:
        assert fp16._live.blocks[0].norm1.weight.dtype == torch.float32
        assert fp16._live.blocks[0].conv1.weight.dtype == torch.float16
        diff = np.abs(fp32.run(ids).astype(int) - fp16.run(ids).astype(int))
    assert diff.max() <= 3


def test_layout_refuses_non_uint8_labels(tiny_config):
    with pytest.raises(ValueError, match="uint8"):
        CRN(tiny_config).layout(torch.zeros(1, 1, 32, 64, dtype=torch.int64))
