"""SPADE / GauGAN (Park et al., CVPR 2019; NVlabs/SPADE), contract side: the released models (Cityscapes, ADE20K,
COCO-Stuff) as presets of SPADE's generator, whose options, inputs (label ids, instance ids where trained with
them, the VAE's style vector where trained with one) and sizes are ``spade_trunk``'s. The torch side is
``crn_deploy/models/spade.py``.
"""

from __future__ import annotations

from .base import register
from .spade_trunk import SPADEConfig, SPADETrunkFamily


class SPADEFamily(SPADETrunkFamily):
    name = "spade"
    presets = {
        # The released models (the official README's checkpoints.tar.gz) with their test-time options.
        "spade_cityscapes": SPADEConfig(),
        "spade_ade20k": SPADEConfig(label_nc=150, contain_dontcare_label=True, instances=False,
                                    num_upsampling_layers="normal", crop_size=256, aspect_ratio=1.0),
        "spade_coco": SPADEConfig(label_nc=182, contain_dontcare_label=True, num_upsampling_layers="normal",
                                  crop_size=256, aspect_ratio=1.0),
        # A few hundred kilobytes, for tests: every kind of block (learned shortcuts) at 32x64.
        "spade-tiny": SPADEConfig(ngf=4, num_upsampling_layers="normal", crop_size=64, nhidden=16),
    }
    presets = {name: (config, config.native_resolution) for name, config in presets.items()}
    test_preset = "spade-tiny"
    full_preset = "spade_cityscapes"


SPADE = register(SPADEFamily())
