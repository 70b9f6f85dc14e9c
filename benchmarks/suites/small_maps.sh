# Sourced by the suites of the Ray path: the small model and the 2,000 small label maps they all time (the
# rehearsal: 40). Needs $py, $results and $work; leaves the artifact at $work/engines/spade-tiny-seed0-64x128-fp32.onnx
# and $maps Cityscapes-style label and instance files of 64x128 in four city folders under $labels (made once).
. "$(dirname "${BASH_SOURCE[0]}")/rehearsal.sh"
maps=2000
if rehearsal; then maps=40; fi
labels="$work/labels-$maps/gtFine"
mkdir -p "$results" "$work"
"$py" -m crn_deploy.cli.export --preset spade-tiny --random-weights --res 64x128 --precision fp32 \
    --out "$work/engines" --no-engine --samples 1 > "$results/export.log"
"$py" - "$labels" "$maps" <<'PY'
import sys
from pathlib import Path

import cv2
import numpy as np

from crn_deploy.data.synthetic import cityscapes_scene

labels = Path(sys.argv[1])
if not labels.is_dir():
    for i in range(int(sys.argv[2])):
        city = labels / f"city{i % 4}"
        city.mkdir(parents=True, exist_ok=True)
        ids, inst = cityscapes_scene(64, 128, seed=5000 + i % 50)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_labelIds.png"), ids)
        cv2.imwrite(str(city / f"c_{i:06d}_000019_gtFine_instanceIds.png"), inst.astype(np.uint16))
PY
