import pytest

from crn_deploy.families.crn import PRESETS, CRNConfig
from crn_deploy.sizes import parse_resolution
from crn_deploy.families import find_preset
from crn_deploy.families.crn import CRN
from crn_deploy.errors import UsageError


def test_released_presets_match_the_paper_cost():
    # docs/families/crn.md: the 1024p model needs ~1.58 T MACs at 1024x2048 and has ~99 M parameters;
    # the 256p model ~1.08 T MACs at 256x512.
    big = find_preset("cityscapes-1024p")[1]
    assert big.num_modules == 9 and big.native_resolution == (1024, 2048)
    assert big.macs((1024, 2048)) == pytest.approx(1.58e12, rel=0.01)
    assert big.num_parameters() == pytest.approx(99e6, rel=0.01)
    assert find_preset("cityscapes-256p")[1].macs((256, 512)) == pytest.approx(1.08e12, rel=0.01)


def test_released_widths_by_module_height():
    assert find_preset("cityscapes-1024p")[1].widths == (1024,) * 5 + (512, 512, 128, 32)
    assert find_preset("cityscapes-512p")[1].widths == (1024,) * 5 + (512, 512, 128)
    assert find_preset("cityscapes-256p")[1].widths == (1024,) * 5 + (512, 512)
    assert find_preset("cityscapes-256p")[1].k == find_preset("gta-256p")[1].k == 9
    assert find_preset("cityscapes-512p")[1].k == find_preset("cityscapes-1024p")[1].k == 1


def test_unknown_preset_suggests_the_near_miss():
    with pytest.raises(UsageError, match="did you mean 'cityscapes-512p'"):
        find_preset("cityscape-512p")[1]


@pytest.mark.parametrize("text, expected", [("512x1024", (512, 1024)), ("256X512", (256, 512)), ("64*64", (64, 64))])
def test_parse_resolution(text, expected):
    assert parse_resolution(text) == expected


@pytest.mark.parametrize("text", ["512", "axb", "1x2x3"])
def test_parse_resolution_refuses_garbage(text):
    with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
        parse_resolution(text)


def test_any_multiple_of_the_scale_works_including_other_aspects():
    config = find_preset("cityscapes-1024p")[1]  # 9 modules: multiples of 256
    for resolution in [(1024, 2048), (256, 256), (768, 1280), (512, 512)]:
        CRN.check_resolution(resolution, config)
        assert config.base_for(resolution) == (resolution[0] // 256, resolution[1] // 256)


def test_invalid_resolution_names_the_nearest_valid_sizes():
    with pytest.raises(UsageError) as e:
        CRN.check_resolution((1080, 1920), find_preset("cityscapes-1024p")[1])
    message = str(e.value)
    assert "multiple of 256" in message and "1024x1792" in message and "1280x2048" in message


def test_config_round_trips_and_validates():
    config = CRNConfig(num_classes=7, widths=(8, 4), base=(2, 3), k=2)
    assert CRNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(UsageError):
        CRNConfig(widths=())
    with pytest.raises(UsageError):
        CRNConfig(num_classes=300, widths=(4,))


def test_every_preset_has_a_valid_native_resolution():
    for config in PRESETS.values():
        CRN.check_resolution(config.native_resolution, config)


@pytest.mark.parametrize("text, message", [("0x0", "must be positive"), ("-4x8", "must be positive"),
                                           ("512", "not HEIGHTxWIDTH"), ("axb", "not HEIGHTxWIDTH")])
def test_bad_resolutions_say_what_is_wrong(text, message):
    with pytest.raises(UsageError, match=message):
        parse_resolution(text)


def test_the_precision_table_names_the_types_each_tool_uses():
    from onnx import TensorProto

    from crn_deploy.precisions import NAMES, TABLE, precision

    assert TABLE["fp32"].onnx_type == TensorProto.FLOAT and TABLE["fp16"].onnx_type == TensorProto.FLOAT16
    assert (precision("FP16").numpy_type, precision("fp16").tensorrt_type) == ("float16", "HALF")
    # BF16 is what a CPU engine computes an FP32 artifact in (OpenVINO's hint), never an ONNX artifact's precision
    assert precision("bf16").onnx_type == TensorProto.BFLOAT16 and not precision("bf16").graph
    assert NAMES == ("fp32", "fp16") and (TABLE["bf16"].openvino_hint, TABLE["fp32"].openvino_hint) == ("bf16", "f32")
    with pytest.raises(UsageError, match="unknown precision 'int8': choose one of fp32, fp16, bf16"):
        precision("int8")
