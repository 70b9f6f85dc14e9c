"""pix2pixHD's generator (Wang et al., CVPR 2018; NVIDIA/pix2pixHD), as its official code computes it
at inference (../shared/notes/families.md): the config and presets, the reference model, the
checkpoint reader and the ONNX graph writer.

The reference model is laid out module for module like the official ``nn.Sequential`` models, so
``latest_net_G.pth`` (``torch.save(net.state_dict())``: keys ``model.1.weight`` ... and, for the local
enhancer, ``model1_1.*`` / ``model1_2.*``) loads with ``load_state_dict`` as it is.

Input as the official ``encode_input`` builds it: one-hot of ``label_nc`` label ids (Cityscapes
``labelIds``, 0..33, not train ids), then the instance edge map as the last channel. Ids >= label_nc
(the official code would fail on them) give an all-zero one-hot. Output as the official
``tensor2im``: ``(x + 1) / 2 * 255``, clipped, then **truncated** to uint8.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config import format_resolution
from ..errors import CheckpointError, UsageError

INSTANCE_NORM_EPS = 1e-5  # nn.InstanceNorm2d's default, as the official get_norm_layer('instance') uses it


@dataclass(frozen=True)
class Pix2PixHDConfig:
    """``n_local_enhancers`` 0 is the official ``--netG global``; 1 or more is ``--netG local``."""

    label_nc: int = 35
    instances: bool = True  # the instance edge map as an extra input channel (official default)
    ngf: int = 64
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 0
    n_blocks_local: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.label_nc <= 255:
            raise UsageError(f"label_nc must be 1..255 (uint8 label ids), got {self.label_nc}")
        if min(self.ngf, self.n_downsample_global) < 1 or min(self.n_blocks_global, self.n_blocks_local,
                                                              self.n_local_enhancers) < 0:
            raise UsageError(f"malformed pix2pixHD config {self}")

    @property
    def input_nc(self) -> int:
        return self.label_nc + int(self.instances)

    @property
    def scale(self) -> int:
        """Height and width must be multiples of this."""
        return 2 ** (self.n_downsample_global + self.n_local_enhancers)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Pix2PixHDConfig:
        try:
            return cls(**{k: data[k] for k in asdict(cls()) if k in data})
        except TypeError as e:
            raise UsageError(f"malformed pix2pixHD config {data!r}: {e}") from None


PRESETS: dict[str, tuple[Pix2PixHDConfig, tuple[int, int]]] = {
    # The two released Cityscapes models (scripts/test_512p.sh, test_1024p.sh), with their native size.
    "label2city_512p": (Pix2PixHDConfig(), (512, 1024)),
    "label2city_1024p": (Pix2PixHDConfig(ngf=32, n_local_enhancers=1), (1024, 2048)),
    # A few hundred kilobytes: for tests. Local, so the enhancer's paths are exercised too.
    "tiny": (Pix2PixHDConfig(ngf=4, n_downsample_global=2, n_blocks_global=2, n_local_enhancers=1,
                             n_blocks_local=1), (32, 64)),
}


def preset(name: str) -> Pix2PixHDConfig:
    try:
        return PRESETS[name][0]
    except KeyError:
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise UsageError(f"unknown pix2pixHD preset '{name}': {hint}choose one of {', '.join(PRESETS)}") from None


def check_resolution(resolution: tuple[int, int], config: Pix2PixHDConfig) -> None:
    """Refuse sizes the encoder-decoder cannot return unchanged, naming the nearest valid ones."""
    step = config.scale
    h, w = resolution
    if h > 0 and w > 0 and h % step == 0 and w % step == 0:
        return
    near = sorted({(a, b) for a in _near(h, step) for b in _near(w, step)})
    raise UsageError(f"resolution {format_resolution(resolution)} is not a multiple of {step} on both sides "
                     f"({config.n_downsample_global} downsamplings x {config.n_local_enhancers} local enhancers); "
                     f"nearest valid: {', '.join(format_resolution(r) for r in near)}")


def _near(n: int, step: int) -> list[int]:
    below = max(step, n // step * step)
    return sorted({below, below + step} if n % step else {n})


# reference model ------------------------------------------------------------------------------
class ResnetBlock(nn.Module):
    """``x + [ReflectionPad(1), Conv3x3, IN, ReLU, ReflectionPad(1), Conv3x3, IN](x)``; keys conv_block.{1,5}."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), _norm(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, eps=INSTANCE_NORM_EPS)


def _down(c_in: int, c_out: int) -> list[nn.Module]:
    """Conv3x3 stride 2, zero padding 1, IN, ReLU."""
    return [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), _norm(c_out), nn.ReLU(True)]


def _up(c_in: int, c_out: int) -> list[nn.Module]:
    """ConvTranspose3x3 stride 2, padding 1, output_padding 1 (doubles the size exactly), IN, ReLU."""
    return [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1), _norm(c_out), nn.ReLU(True)]


def _head(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(3), nn.Conv2d(c_in, c_out, 7)]


def global_layers(input_nc: int, ngf: int, n_down: int, n_blocks: int) -> list[nn.Module]:
    """The official GlobalGenerator's ``model`` list, index for index."""
    layers = [*_head(input_nc, ngf), _norm(ngf), nn.ReLU(True)]
    for i in range(n_down):
        layers += _down(ngf << i, ngf << (i + 1))
    layers += [ResnetBlock(ngf << n_down) for _ in range(n_blocks)]
    for i in range(n_down, 0, -1):
        layers += _up(ngf << i, ngf << (i - 1))
    return layers + [*_head(ngf, 3), nn.Tanh()]


class Pix2PixHDGenerator(nn.Module):
    """Float input [N, input_nc, H, W] (one-hot + edges) -> tanh image [N, 3, H, W]; ``forward_ids``
    takes uint8 label ids (+ int32 instance ids) and returns uint8 RGB [N, H, W, 3] as the artifacts do."""

    def __init__(self, config: Pix2PixHDConfig) -> None:
        super().__init__()
        self.config = config
        c, levels = config, config.n_local_enhancers
        layers = global_layers(c.input_nc, c.ngf << levels, c.n_downsample_global, c.n_blocks_global)
        self.model = nn.Sequential(*(layers[:-3] if levels else layers))  # the enhancers replace the head
        for n in range(1, levels + 1):
            width = c.ngf << (levels - n)
            setattr(self, f"model{n}_1", nn.Sequential(*_head(c.input_nc, width), _norm(width), nn.ReLU(True),
                                                       *_down(width, width * 2)))
            upsample = [*(ResnetBlock(width * 2) for _ in range(c.n_blocks_local)), *_up(width * 2, width)]
            if n == levels:
                upsample += [*_head(c.ngf, 3), nn.Tanh()]
            setattr(self, f"model{n}_2", nn.Sequential(*upsample))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.config.n_local_enhancers
        pyramid = [x]
        for _ in range(levels):  # average-pooled input pyramid, padding not counted
            pyramid.append(F.avg_pool2d(pyramid[-1], 3, stride=2, padding=1, count_include_pad=False))
        out = self.model(pyramid[-1])
        for n in range(1, levels + 1):
            out = getattr(self, f"model{n}_2")(getattr(self, f"model{n}_1")(pyramid[levels - n]) + out)
        return out

    def encode(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ids [N,1,H,W] (+ integer instance ids [N,1,H,W]) -> float [N, input_nc, H, W]."""
        channels = torch.arange(self.config.label_nc, device=labels.device).view(1, -1, 1, 1)
        x = (labels.long() == channels).float()
        if self.config.instances:
            if instances is None:
                raise ValueError("this pix2pixHD model takes an instance map as well as the label map")
            x = torch.cat([x, instance_edges(instances)], dim=1)
        return x

    def forward_ids(self, labels: torch.Tensor, instances: torch.Tensor | None = None) -> torch.Tensor:
        image = self(self.encode(labels, instances).to(self.model[1].weight.dtype)).float()
        return to_uint8_images(image)


def instance_edges(instances: torch.Tensor) -> torch.Tensor:
    """1 where a pixel's instance id differs from its left, right, upper or lower neighbour (both pixels
    of a differing pair), 0 elsewhere; float [N,1,H,W]. The official ``get_edges``."""
    edge = torch.zeros_like(instances, dtype=torch.bool)
    horizontal = instances[..., :, 1:] != instances[..., :, :-1]
    vertical = instances[..., 1:, :] != instances[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def to_uint8_images(image: torch.Tensor) -> torch.Tensor:
    """tanh [N,3,H,W] -> uint8 [N,H,W,3]: ``(x + 1) / 2 * 255``, clip, truncate (the official tensor2im)."""
    return ((image + 1.0) / 2.0 * 255.0).clamp(0.0, 255.0).floor().to(torch.uint8).permute(0, 2, 3, 1)


def random_init(model: Pix2PixHDGenerator, seed: int) -> Pix2PixHDGenerator:
    """Seeded weights that keep activations in range through many normalized layers (kaiming), with
    non-zero biases so that loading them is checked (they cancel in IN but not in the heads)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = module.weight[0].numel() if isinstance(module, nn.Conv2d) else module.weight[:, 0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5, generator=generator)
                module.bias.normal_(0.0, 0.1, generator=generator)
    return model


# checkpoints ----------------------------------------------------------------------------------
_GLOBAL_CONV = re.compile(r"^model\.(\d+)\.weight$")
_BLOCK = re.compile(r"^model\.(\d+)\.conv_block\.1\.weight$")
_ENHANCER = re.compile(r"^model(\d+)_1\.")
_UNSUPPORTED = {"netE": "--instance_feat / --label_feat feature encoder"}


def infer_config(state: dict[str, torch.Tensor], *, instances: bool = True,
                 path: str = "checkpoint") -> Pix2PixHDConfig:
    """global vs local, ngf, downsampling and block counts from the keys and shapes of an official
    ``latest_net_G.pth``. Whether the last input channel is the instance edge map cannot be read from
    the weights: ``instances`` says (the official default, on)."""
    if "model.1.weight" not in state:
        raise CheckpointError(f"{path} is not a pix2pixHD generator: no model.1.weight (found e.g. "
                              f"{', '.join(list(state)[:3])}); pass latest_net_G.pth, not the discriminator")
    levels = len({int(m.group(1)) for k in state if (m := _ENHANCER.match(k))})
    blocks = sorted(int(m.group(1)) for k in state if (m := _BLOCK.match(k)))
    if not blocks:
        raise CheckpointError(f"{path}: no residual blocks (model.N.conv_block.1.weight) in a pix2pixHD generator")
    convs = {int(m.group(1)): state[k] for k in state if (m := _GLOBAL_CONV.match(k))}
    n_down = sum(1 for i, w in convs.items() if i < blocks[0] and w.shape[2:] == (3, 3))
    first = state["model1_1.1.weight"] if levels else state["model.1.weight"]
    input_nc = first.shape[1]
    label_nc = input_nc - int(instances)
    local_blocks = len({k.split(".")[1] for k in state if k.startswith(f"model{levels}_2.")
                        and k.endswith("conv_block.1.weight")}) if levels else 3
    return Pix2PixHDConfig(label_nc=label_nc, instances=instances, ngf=state["model.1.weight"].shape[0] >> levels,
                           n_downsample_global=n_down, n_blocks_global=len(blocks), n_local_enhancers=levels,
                           n_blocks_local=local_blocks)


def check_state(state: dict[str, torch.Tensor], config: Pix2PixHDConfig, path: str = "checkpoint") -> None:
    """One error naming every missing, unexpected and wrongly-shaped key."""
    expected = {k: tuple(v.shape) for k, v in Pix2PixHDGenerator(config).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} != {list(s)}" for k, s in expected.items()
             if k in state and tuple(state[k].shape) != s]
    if missing or unexpected or wrong:
        parts = [f"{label}: {', '.join(items[:6])}{f' (+{len(items) - 6} more)' if len(items) > 6 else ''}"
                 for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                 if items]
        raise CheckpointError(f"{path} does not fit the pix2pixHD config {config.to_dict()} — {'; '.join(parts)}")


def load_state(state: dict[str, torch.Tensor], config: Pix2PixHDConfig | None = None, *, instances: bool = True,
               path: str = "checkpoint") -> Pix2PixHDGenerator:
    """The reference model (eval, float32) from an official generator state_dict."""
    config = config or infer_config(state, instances=instances, path=path)
    check_state(state, config, path)
    model = Pix2PixHDGenerator(config)
    model.load_state_dict(state)
    return model.eval()
