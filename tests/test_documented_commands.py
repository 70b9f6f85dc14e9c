"""Every crn-* command that README.md and docs/ show runs here, on tiny data, as a reader would run it: one fresh
folder per page, the page's commands in the page's order (what an earlier one writes feeds the later ones), each
in the environment the docs name: crn-run and crn-bench in the torch-free one (README: "A deployment box needs
no torch at all"), `crn-run --ray` and crn-serve with Ray, the rest in-process in the full environment.

ADAPTATIONS says, for each command as shown, what the test changes to make it tiny and why: the files a reader is
assumed to have, placed first (a checkpoint at the shown path, Cityscapes files, the authors' TensorFlow
checkpoint), and substring swaps (sizes, step counts, a TensorRT engine that needs a GPU -> its ONNX). A command
shown in the docs without an entry fails the suite, and so does an entry no page shows. Each command must exit 0
(crn-serve: 143 after SIGTERM) and write, or say, what the docs say it does. The table's check is quick; walking
the pages is slow (local Ray instances and Ray Serve endpoints among them)."""

from __future__ import annotations

import glob
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from crn_deploy.cli.demo import DEMO_MODEL
from crn_deploy.data.paired import street_photo
from crn_deploy.data.synthetic import cityscapes_scene, street_layout
from crn_deploy.families import find_preset
from crn_deploy.families.oasis import DATASETS
from crn_deploy.labels import cityscapes_label_ids_to_train_ids
from crn_deploy.models.checkpoint import random_model, save_checkpoint

from . import oasis_official, spade_official
from .pix2pixhd_official import write_checkpoint as write_pix2pixhd
from .simulator_frames import bgra, palette_of, replicator_folder, tags_of, write_png
from .ports import free_port
from .shown_commands import ROOT, pages, shown_commands, without_optional_parts
from .vgg_files import random_vgg_weights, write_matconvnet

COMMANDS = {  # the module each command's main(argv) lives in (pyproject's [project.scripts])
    "crn-export": "crn_deploy.cli.export", "crn-build": "crn_deploy.cli.build", "crn-bench": "crn_deploy.cli.bench",
    "crn-run": "crn_deploy.cli.run", "crn-serve": "crn_deploy.cli.serve", "crn-train": "crn_deploy.cli.train",
    "crn-import": "crn_deploy.cli.import_tf", "crn-demo": "crn_deploy.cli.demo",
}
TORCH_FREE = ("crn-run", "crn-bench")  # the README's deployment box: pip install 'crn-deploy[ort]'
TF_CHECKPOINT = ROOT / "tests" / "fixtures" / "tf_k1_4modules"  # written by TensorFlow from the authors' graph code
NO_GPU = "no GPU here: a TensorRT engine cannot be built or run, so its ONNX artifact stands in"


@dataclass
class Walk:
    """One page's folder, walked in order."""

    folder: Path
    request: pytest.FixtureRequest

    @property
    def s3(self):
        return self.request.getfixturevalue("s3")


@dataclass
class Ran:
    stdout: str
    before: dict[Path, tuple[int, int]]  # (inode, mtime) of every file before the command

    def written(self, path: Path) -> bool:
        """Whether the command wrote this file: new, or replaced (a rename into place) or changed since."""
        stat = path.stat()
        return self.before.get(path) != (stat.st_ino, stat.st_mtime_ns)


Given = Callable[[Walk], None]
Expect = Callable[[Walk, Ran], None]


@dataclass(frozen=True)
class Adaptation:
    why: str  # what the test changes and why; "as shown" where it changes nothing
    expect: tuple[Expect, ...]  # what the command writes or says
    given: tuple[Given, ...] = ()  # files the reader is assumed to have, placed before the command
    swaps: tuple[tuple[str, str], ...] = ()  # substring swaps in the shown text
    extra: tuple[str, ...] = ()  # arguments appended


# files the reader has ------------------------------------------------------------------------------------------
def crn_checkpoint(path: str) -> Given:
    """A tiny CRN (4 modules, native 32x64) as crn-train or crn-import writes it."""
    def place(walk: Walk) -> None:
        source = random_model(find_preset("tiny")[1], seed=1)
        (walk.folder / path).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(walk.folder / path, source.model, source.label_set)
    return place


def posgen_checkpoint(path: str) -> Given:
    def place(walk: Walk) -> None:
        source = random_model(find_preset("posgen-tiny")[1], seed=1)
        save_checkpoint(walk.folder / path, source.model, source.label_set)
    return place


def pix2pixhd_checkpoint(path: str) -> Given:
    """A tiny local-enhancer generator, saved as NVIDIA's trainer saves latest_net_G.pth (no opt.txt)."""
    return lambda walk: write_pix2pixhd(walk.folder / path, find_preset("pix2pixhd-tiny")[1])


def spade_run(path: str, opt: str | None = "beside") -> Given:
    """A tiny SPADE checkpoint as NVlabs' trainer saves it, with the run's opt.txt beside it, at ``opt``, or none."""
    def place(walk: Walk) -> None:
        config = find_preset("spade-tiny")[1]
        checkpoint = spade_official.write_run((walk.folder / path).parent, config, with_opt=opt == "beside")
        checkpoint.rename(walk.folder / path)
        if opt not in ("beside", None):
            (walk.folder / opt).parent.mkdir(parents=True, exist_ok=True)
            (walk.folder / opt).write_text(spade_official.opt_lines(config))
    return place


def oasis_run(path: str, dataset_mode: str, with_opt: bool) -> Given:
    """A tiny OASIS EMA generator for ``dataset_mode``'s label count, as boschresearch's trainer saves it in
    checkpoints/<name>/models/ (its opt.txt one folder up), or alone at ``path``."""
    def place(walk: Walk) -> None:
        config = replace(find_preset("oasis-tiny")[1], **{k: v for k, v in DATASETS[dataset_mode].items()
                                                          if k in ("label_nc", "contain_dontcare_label", "shift_ids")})
        target = walk.folder / path
        if with_opt:  # checkpoints/<name>/models/<file>
            oasis_official.write_run(target.parents[2], config, dataset_mode, checkpoint=target.name,
                                     name=target.parents[1].name)
        else:
            torch.save(oasis_official.official_state(config), target)
    return place


def tf_checkpoint(folder: str, data: bool = True) -> Given:
    """The authors' TensorFlow tensor bundle (model.ckpt.index, and the data shard unless ``data`` is False)."""
    def place(walk: Walk) -> None:
        (walk.folder / folder).mkdir(parents=True, exist_ok=True)
        for file in TF_CHECKPOINT.glob("model.ckpt.*"):
            if data or file.suffix == ".index":
                shutil.copy(file, walk.folder / folder / file.name)
    return place


def cityscapes(root: str, split: str, photos: bool = False) -> Given:
    """Cityscapes' layout: gtFine/<split>/<city>/*_gtFine_labelIds.png (label ids) with *_instanceIds.png, and
    leftImg8bit/<split>/<city>/*_leftImg8bit.png photographs where ``photos``; two maps, 64x128."""
    def place(walk: Walk) -> None:
        base = walk.folder / root
        for i in range(2):
            labels, instances = cityscapes_scene(64, 128, seed=40 + i)
            stem = f"aachen_{i:06d}_000019"
            (base / "gtFine" / split / "aachen").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(base / "gtFine" / split / "aachen" / f"{stem}_gtFine_labelIds.png"), labels)
            cv2.imwrite(str(base / "gtFine" / split / "aachen" / f"{stem}_gtFine_instanceIds.png"),
                        instances.astype(np.uint16))
            if photos:
                (base / "leftImg8bit" / split / "aachen").mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(base / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png"),
                            street_photo(cityscapes_label_ids_to_train_ids(labels))[..., ::-1])
    return place


def uploaded_cityscapes(bucket: str, split: str) -> Given:
    """The Cityscapes label files in object storage (an S3-compatible server on loopback), under gtFine/."""
    def place(walk: Walk) -> None:
        cityscapes("", split)(walk)
        if bucket not in {b["Name"] for b in walk.s3.list_buckets()["Buckets"]}:
            walk.s3.create_bucket(Bucket=bucket)
        for file in sorted((walk.folder / "gtFine").rglob("*.png")):
            walk.s3.upload_file(str(file), bucket, str(file.relative_to(walk.folder)))
    return place


def vgg_mat(path: str) -> Given:
    """imagenet-vgg-verydeep-19.mat at small widths with random weights (the loader takes widths from the file)."""
    return lambda walk: write_matconvnet(walk.folder / path, random_vgg_weights())


def recipe(name: str, swaps: tuple[tuple[str, str], ...]) -> Given:
    """The repository's export/<name> build recipe, its sizes shrunk as the command's are."""
    def place(walk: Walk) -> None:
        text = (ROOT / "export" / name).read_text()
        for old, new in swaps:
            text = text.replace(old, new)
        (walk.folder / "export").mkdir(exist_ok=True)
        (walk.folder / "export" / name).write_text(text)
    return place


def carla_frames(folder: str, palette: bool) -> Given:
    """Two frames of CARLA's semantic camera as saved to disk: raw tags (BGRA, the tag in red), or colours after its
    CityScapesPalette converter."""
    def place(walk: Walk) -> None:
        (walk.folder / folder).mkdir()
        for i in range(2):
            tags = tags_of(street_layout(32, 64, seed=60 + i))
            write_png(walk.folder / folder / f"{i:06d}.png", palette_of(tags) if palette else bgra(tags, seed=i)[
                ..., [2, 1, 0, 3]])  # raw bytes are BGRA; the PNG writer takes RGBA
    return place


def replicator_output(folder: str) -> Given:
    """Replicator's BasicWriter output folder: three semantic frames (ids, colours, NumPy ids) with their labels."""
    def place(walk: Walk) -> None:
        replicator_folder(walk.folder / folder, [street_layout(32, 64, seed=70 + i) for i in range(3)])
    return place


def demo_checkpoint(path: str) -> Given:
    """The shipped demo model (a trained small CRN) at ``path``, saved in that path's format."""
    def place(walk: Walk) -> None:
        from crn_deploy.models.checkpoint import load_checkpoint

        demo = load_checkpoint(DEMO_MODEL)
        save_checkpoint(walk.folder / path, demo.model, demo.label_set)
    return place


def demo_fp32_artifact(walk: Walk) -> None:
    """What crn-demo leaves in engines/ before the README's next steps: the shipped demo model's FP32 artifact (at
    64x128 here)."""
    from crn_deploy.cli.export import main as export_main

    assert export_main([str(DEMO_MODEL), "--res", "64x128", "--precision", "fp32", "--name", "demo-small-256p",
                        "--no-engine", "--out", str(walk.folder / "engines")]) == 0


def tiny_artifact(walk: Walk) -> None:
    """An exported tiny CRN (tiny-64x96-fp16.onnx and .json) in engines/: what crn-export wrote earlier."""
    manifest = walk.request.getfixturevalue("tiny_artifacts")["fp16"]
    (walk.folder / "engines").mkdir(exist_ok=True)
    for path in (manifest.artifact_path, manifest.path):
        shutil.copy(path, walk.folder / "engines" / path.name)


# what a command writes or says ----------------------------------------------------------------------------------
def wrote(*patterns: str) -> Expect:
    """Each pattern (a glob in the page's folder) matches a file this command wrote or rewrote."""
    def check(walk: Walk, ran: Ran) -> None:
        for pattern in patterns:
            fresh = [p for p in walk.folder.glob(pattern) if ran.written(p)]
            assert fresh, f"nothing written at {pattern}; the folder holds {sorted(_files(walk.folder))}"
    return check


def pictures(folder: str, count: int = 2) -> Expect:
    """``count`` pictures written below ``folder``, each a decodable RGB image."""
    def check(walk: Walk, ran: Ran) -> None:
        fresh = [p for p in (walk.folder / folder).rglob("*.png") if ran.written(p)]
        assert len(fresh) == count, f"{folder}: {len(fresh)} pictures written, expected {count}"
        assert all(cv2.imread(str(p)).ndim == 3 for p in fresh)
    return check


def printed(*texts: str) -> Expect:
    def check(walk: Walk, ran: Ran) -> None:
        for text in texts:
            assert text in ran.stdout, f"{text!r} not in the command's output:\n{ran.stdout[-3000:]}"
    return check


def benched(walk: Walk, ran: Ran) -> None:
    """A table row for every artifact in engines/."""
    stems = sorted(p.stem for p in (walk.folder / "engines").glob("*.onnx"))
    assert stems and all(stem in ran.stdout for stem in stems), ran.stdout[-3000:]


def video(path: str, frames: int, size: tuple[int, int]) -> Expect:
    def check(walk: Walk, ran: Ran) -> None:
        assert ran.written(walk.folder / path)
        capture = cv2.VideoCapture(str(walk.folder / path))
        shape = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
        assert (int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), shape) == (frames, size)
        capture.release()
    return check


def in_bucket(bucket: str, prefix: str, count: int = 2) -> Expect:
    def check(walk: Walk, ran: Ran) -> None:
        listed = walk.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
        names = [o["Key"] for o in listed if o["Key"].endswith(".png")]
        assert len(names) == count, names
        body = walk.s3.get_object(Bucket=bucket, Key=names[0])["Body"].read()
        assert cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).ndim == 3
    return check


def served(walk: Walk, ran: Ran) -> None:
    """crn-serve said it served and stopped (the picture it painted is checked while it ran, in ``serve``)."""
    assert "crn-serve: serving" in ran.stdout and "crn-serve: stopping" in ran.stdout, ran.stdout[-3000:]


# the table -------------------------------------------------------------------------------------------------------
QUICK_BENCH = ("--warmup", "0", "--iterations", "2", "--duration", "0")
BENCH = Adaptation("timing cut to two calls per row (every artifact still runs on every backend, with parity)",
                   (benched,), extra=QUICK_BENCH)
CRN_1024P = (("1024x2048", "64x128"), ("512x1024", "32x64"))  # the imported 4-module test checkpoint's sizes

ADAPTATIONS: dict[str, Adaptation] = {
    # README.md
    "crn-export YOUR_CHECKPOINT.pt --res 1024x2048     # CPU + torch; family recognised from the file's keys":
        Adaptation("a tiny CRN checkpoint at YOUR_CHECKPOINT.pt, exported at its size", (
            wrote("engines/YOUR_CHECKPOINT-32x64-fp16.onnx", "engines/YOUR_CHECKPOINT-32x64-fp16.json"),),
            given=(crn_checkpoint("YOUR_CHECKPOINT.pt"),), swaps=(("1024x2048", "32x64"),)),
    "crn-build engines/*.onnx                          # TensorRT on the target GPU (or --target rtx: any CPU)":
        Adaptation("as shown (no GPU: it builds TensorRT-RTX engines)", (wrote("engines/*-fp16*.engine"),)),
    "crn-build engines/*-fp32.onnx --target openvino   # CPU engines: BF16 where the CPU has it, else FP32":
        Adaptation("the FP32 artifact crn-demo leaves in engines/ placed (the export above writes FP16 only)",
                   (wrote("engines/demo-small-256p-64x128-fp32.openvino.engine"), printed("OpenVINO")),
                   given=(demo_fp32_artifact,)),
    "crn-bench engines/                                # latency and parity against the PyTorch reference": BENCH,
    # docs/commands.md
    "crn-export CKPT --res 256x512 --res 512x1024 --precision fp32 --precision fp16 --out engines/":
        Adaptation("a tiny CRN checkpoint at CKPT, at its size and twice it", (
            wrote(*(f"engines/CKPT-{r}-{p}.onnx" for r in ("32x64", "64x128") for p in ("fp32", "fp16"))),),
            given=(crn_checkpoint("CKPT"),), swaps=(("256x512", "32x64"), ("512x1024", "64x128"))),
    "crn-export latest_net_G.pth --res 512x1024           # pix2pixHD (family recognised; --family pix2pixhd)":
        Adaptation("a tiny official-format pix2pixHD latest_net_G.pth, at its size",
                   (wrote("engines/latest_net_G-32x64-fp16.onnx"), printed("pix2pixHD")),
                   given=(pix2pixhd_checkpoint("latest_net_G.pth"),), swaps=(("512x1024", "32x64"),)),
    "crn-export latest_net_G.pth --res 256x512 [--opt opt.txt] [--option num_upsampling_layers=more]  # SPADE":
        Adaptation("a tiny SPADE latest_net_G.pth with its opt.txt beside it (over the pix2pixHD one), optional "
                   "parts dropped", (wrote("engines/latest_net_G-32x64-fp16.onnx"), printed("SPADE")),
                   given=(spade_run("latest_net_G.pth"),), swaps=(("256x512", "32x64"),)),
    "crn-export posgen.safetensors --res 256x512 --out-res 512x1024     # PosGen: labels 256x512, pictures 512x1024":
        Adaptation("a tiny PosGen checkpoint, at its size and pictures twice it",
                   (wrote("engines/posgen-32x64-out64x128-fp16.onnx"),),
                   given=(posgen_checkpoint("posgen.safetensors"),),
                   swaps=(("256x512", "32x64"), ("512x1024", "64x128"))),
    "crn-export --preset cityscapes-1024p --random-weights --seed 0 --res 1024x2048":
        Adaptation("the tiny preset for cityscapes-1024p (99 M parameters: 5 minutes and 9.2 GB at 1024x2048)",
                   (wrote("engines/tiny-seed0-32x64-fp16.onnx"),),
                   swaps=(("cityscapes-1024p", "tiny"), ("1024x2048", "32x64"))),
    "crn-export model.pt @export/cityscapes-1024p.args        # a build recipe (see export/)":
        Adaptation("a tiny CRN checkpoint at model.pt; the repository's recipe with its sizes shrunk alike",
                   (wrote("engines/model-32x64-fp16.onnx", "engines/model-64x128-fp32.onnx"),),
                   given=(crn_checkpoint("model.pt"), recipe("cityscapes-1024p.args", CRN_1024P))),
    "crn-build engines/*.onnx [--workspace 8G] [--opt-level 3] [--timing-cache F] [--detailed-profiling] "
    "[--triton REPO]": Adaptation("optional parts dropped (no GPU: TensorRT-RTX engines)",
                                  (wrote("engines/CKPT-32x64-fp16*.engine", "engines/model-64x128-fp32*.engine"),)),
    "crn-build engines/*.onnx --target rtx [--compute-capability 86,89] [--verbose]   # TensorRT-RTX, no GPU needed":
        Adaptation("optional parts dropped", (wrote("engines/CKPT-32x64-fp16.rtx.engine",
                                                   "engines/posgen-32x64-out64x128-fp16.rtx.engine"),)),
    "crn-build engines/x-256x512-fp32.onnx --target openvino [--precision bf16] [--threads 2]   # a CPU engine":
        Adaptation("x: the tiny CRN's FP32 artifact exported above; optional parts dropped",
                   (wrote("engines/CKPT-32x64-fp32.openvino.engine"),),
                   swaps=(("engines/x-256x512-fp32.onnx", "engines/CKPT-32x64-fp32.onnx"),)),
    "crn-bench engines/ --backend openvino --backend onnxruntime --threads 2   # CPU engines beside ONNX Runtime":
        Adaptation("timing cut to two calls per row", (benched, printed("openvino")), extra=QUICK_BENCH),
    "crn-run engines/x.onnx --input carla_frames/ --output out/ --label-map carla   # a simulator's label space":
        Adaptation("x: the tiny CRN exported above; two raw CARLA tag frames (BGRA PNGs, the tag in red) placed",
                   (pictures("out"),), given=(carla_frames("carla_frames", palette=False),),
                   swaps=(("engines/x.onnx", "engines/tiny-seed0-32x64-fp16.onnx"),)),
    "crn-run engines/x.onnx --input 'gtFine/**/*_labelIds.png' --output out/ --ray [auto|ADDRESS] --workers 4":
        Adaptation("x: the tiny CRN exported above; Cityscapes label files placed; optional parts dropped (a local "
                   "Ray instance); one worker on this 2-core machine", (pictures("out"),),
                   given=(cityscapes("", "val"),),
                   swaps=(("engines/x.onnx", "engines/tiny-seed0-32x64-fp16.onnx"), ("--workers 4", "--workers 1"))),
    "crn-serve engines/x.engine --port 8000 --replicas 2 [--max-batch B --batch-wait-ms T] [--label-map carla]":
        Adaptation(f"x: the tiny CRN exported above ({NO_GPU}); a free port; optional parts dropped",
                   (served,),
                   swaps=(("engines/x.engine", "engines/tiny-seed0-32x64-fp16.onnx"),
                          ("--port 8000", "--port {port}"))),
    "crn-bench engines/ [--labels DIR [--label-map NAME|FILE]] [--json r.json] [--csv r.csv] [--min-psnr 40]":
        replace(BENCH, why=f"optional parts dropped; {BENCH.why}"),
    "crn-import result_1024p/model.ckpt -o crn_1024p.pt        # the authors' TensorFlow weights":
        Adaptation("a TensorFlow CRN checkpoint in the authors' format (4 modules) at result_1024p/",
                   (wrote("crn_1024p.pt"),), given=(tf_checkpoint("result_1024p"),)),
    "crn-import --inspect result_1024p/model.ckpt.index          # what a checkpoint is, from its index alone":
        Adaptation("as shown, on the checkpoint placed above", (printed("4 modules", "LayerNorm/gamma"),),
                   given=(tf_checkpoint("result_1024p"),)),
    "crn-demo                                   # the shipped demo model (trained), as in the README":
        Adaptation("at 64x128 and 2 video frames, not the model's 256x512 and 30 (a minute on two cores)", (
            wrote("out/demo.png", "out/demo.mp4", "out/bench.json", "engines/demo-small-256p-64x128-fp16.onnx"),),
            extra=("--res", "64x128", "--frames", "2")),
    "crn-demo --preset small-256p               # random weights, a speed test: out/demo-random-*.png, beside demo.png":
        Adaptation("at 64x128 and 2 video frames, as crn-demo above", (
            wrote("out/demo-random-*.png", "out/demo-random-*.mp4", "out/demo-random-*-bench.json"),),
            extra=("--res", "64x128", "--frames", "2")),
    # docs/engines.md
    "crn-export --preset small-256p --random-weights --res 256x512 --precision fp16   # ONNX, and the .rtx.engine":
        Adaptation("at 64x128", (wrote("engines/small-256p-seed0-64x128-fp16.onnx",
                                       "engines/small-256p-seed0-64x128-fp16.rtx.engine"),),
                   swaps=(("256x512", "64x128"),)),
    "crn-build engines/*.onnx --target rtx --compute-capability 86,89                 # or rebuild for chosen GPUs":
        Adaptation("as shown", (wrote("engines/small-256p-seed0-64x128-fp16.rtx.engine"),
                                printed("for compute capabilities 8.6, 8.9 ("))),
    "crn-export YOUR_CHECKPOINT.pt --res 256x512 --precision fp32 --target openvino   # export and build at once":
        Adaptation("the shipped demo model (trained: BF16 holds its floor) at YOUR_CHECKPOINT.pt, at 64x128",
                   (wrote("engines/YOUR_CHECKPOINT-64x128-fp32.onnx",
                          "engines/YOUR_CHECKPOINT-64x128-fp32.openvino.engine"),),
                   given=(demo_checkpoint("YOUR_CHECKPOINT.pt"),), swaps=(("256x512", "64x128"),)),
    "crn-build engines/x-256x512-fp32.onnx --target openvino [--precision bf16|fp32] [--threads N]   # or later":
        Adaptation("x: the FP32 artifact exported above (built again); optional parts dropped",
                   (wrote("engines/YOUR_CHECKPOINT-64x128-fp32.openvino.engine"),),
                   swaps=(("engines/x-256x512-fp32.onnx", "engines/YOUR_CHECKPOINT-64x128-fp32.onnx"),)),
    # docs/families/crn.md
    "crn-import --inspect result_1024p/model.ckpt.index   # architecture + variable table; works before the data is "
    "downloaded": Adaptation("the index of a TensorFlow CRN checkpoint (4 modules) alone, as the comment says",
                             (printed("4 modules", "LayerNorm/gamma"),),
                             given=(tf_checkpoint("result_1024p", data=False),)),
    "crn-import result_1024p/model.ckpt -o crn_1024p.pt    # reads and checks every tensor (CRC32C), maps it, "
    "writes .pt":
        Adaptation("the checkpoint's data shard downloaded beside its index", (wrote("crn_1024p.pt"),),
                   given=(tf_checkpoint("result_1024p"),)),
    "crn-export crn_1024p.pt --res 1024x2048 --res 512x1024 --precision fp16 --precision fp32":
        Adaptation("the imported 4-module model at twice and at its own size",
                   (wrote(*(f"engines/crn_1024p-{r}-{p}.onnx" for r in ("64x128", "32x64")
                            for p in ("fp16", "fp32"))),),
                   swaps=CRN_1024P),
    "crn-build engines/*.onnx                              # on the GPU machine, if crn-export could not build there":
        Adaptation("as shown (no GPU: TensorRT-RTX engines)", (wrote("engines/crn_1024p-64x128-fp16*.engine"),)),
    "crn-bench engines/": BENCH,
    # docs/families/oasis.md
    "crn-export checkpoints/oasis_cityscapes/models/best_EMA.pth --res 256x512 --precision fp16":
        Adaptation("a tiny OASIS EMA generator for Cityscapes with the run's opt.txt, as the official trainer leaves "
                   "them", (wrote("engines/best_EMA-32x64-fp16.onnx"), printed("opt.txt")),
                   given=(oasis_run("checkpoints/oasis_cityscapes/models/best_EMA.pth", "cityscapes", True),),
                   swaps=(("256x512", "32x64"),)),
    "crn-export best_EMA.pth --option dataset_mode=ade20k --res 256x256     # without the run's opt.txt":
        Adaptation("a tiny OASIS EMA generator for ADE20K's 151 channels, alone", (
            wrote("engines/best_EMA-32x32-fp16.onnx"),), given=(oasis_run("best_EMA.pth", "ade20k", False),),
            swaps=(("256x256", "32x32"),)),
    "crn-run engines/best_EMA-256x512-fp16.onnx --input 'gtFine/val/**/*_labelIds.png' --style-seed 3 --output out/":
        Adaptation("the artifact exported above; Cityscapes label files placed", (pictures("out"),),
                   given=(cityscapes("", "val"),), swaps=(("256x512", "32x64"),)),
    # docs/families/pix2pixhd.md
    "crn-export checkpoints/label2city_512p/latest_net_G.pth --res 512x1024 --name label2city_512p  --precision fp16 "
    "--precision fp32              # the family is recognised from the keys (or --family pix2pixhd)":
        Adaptation("a tiny official-format pix2pixHD latest_net_G.pth (local enhancer), at its size",
                   (wrote("engines/label2city_512p-32x64-fp16.onnx", "engines/label2city_512p-32x64-fp32.onnx"),
                    printed("pix2pixHD")),
                   given=(pix2pixhd_checkpoint("checkpoints/label2city_512p/latest_net_G.pth"),),
                   swaps=(("512x1024", "32x64"),)),
    "crn-build engines/label2city_512p-512x1024-*.onnx  # on the GPU machine":
        Adaptation("the artifacts' size above (no GPU: TensorRT-RTX engines)",
                   (wrote("engines/label2city_512p-32x64-fp16*.engine", "engines/label2city_512p-32x64-fp32*.engine"),),
                   swaps=(("512x1024", "32x64"),)),
    "crn-run engines/label2city_512p-512x1024-fp16.engine --input 'gtFine/val/**/*_labelIds.png' --output out/":
        Adaptation(f"the artifact's size above; {NO_GPU}; Cityscapes label and instance files placed",
                   (pictures("out"),), given=(cityscapes("", "val"),),
                   swaps=(("512x1024", "32x64"), ("fp16.engine", "fp16.onnx"))),
    # docs/families/posgen.md
    "crn-train --preset posgen-demo --res 128x256 --steps 1500 --lr 5e-4 --out runs/posgen   # on the synthetic "
    "streets": Adaptation("2 steps at 64x128", (wrote("runs/posgen/final.safetensors", "runs/posgen/checkpoint.pt"),),
                          swaps=(("128x256", "64x128"), ("--steps 1500", "--steps 2"))),
    "crn-export runs/posgen/final.safetensors --res 128x256 --out-res 256x512 --precision fp16 --precision fp32":
        Adaptation("the size it trained at above, pictures twice it; the FP16 floor at 50 dB and 8 levels, not 55 and "
                   "4: two steps leave posgen-demo near its random start, whose FP16 graph sits at about 55 dB (the "
                   "page's 1500 steps give 65.5 dB), and 32x64 would leave 2 pixels to its first instance norms",
                   (wrote("engines/final-64x128-out128x256-fp16.onnx", "engines/final-64x128-out128x256-fp32.onnx"),),
                   swaps=(("128x256", "64x128"), ("256x512", "128x256")), extra=("--min-psnr", "50", "--max-abs", "8")),
    # docs/streaming.md
    "crn-run engines/x.onnx --input carla_out/ --output pictures/ --label-map carla-palette":
        Adaptation("x: the tiny CRN artifact; two palette-converted CARLA frames placed", (pictures("pictures"),),
                   given=(tiny_artifact, carla_frames("carla_out", palette=True)),
                   swaps=(("engines/x.onnx", "engines/tiny-64x96-fp16.onnx"),)),
    "crn-run engines/x.onnx --input replicator_out/ --output pictures/ [--label-map synonyms.toml]":
        Adaptation("x: the tiny CRN artifact; a Replicator output folder placed; the optional mapping dropped (the "
                   "frames' own labels name Cityscapes' classes)", (pictures("pictures", 3),),
                   given=(replicator_output("replicator_out"),),
                   swaps=(("engines/x.onnx", "engines/tiny-64x96-fp16.onnx"),)),
    "crn-run engines/final-128x256-out256x512-fp16.onnx --input synthetic --output out.mp4   # says the picture size":
        Adaptation("the artifact exported above; 10 frames of the synthetic scene, not 100",
                   (video("out.mp4", 10, (128, 256)), printed("128x256 pictures")),
                   swaps=(("128x256", "64x128"), ("256x512", "128x256")), extra=("--frames", "10")),
    "crn-bench engines/                                   # parity against PyTorch at the picture's size": BENCH,
    # docs/families/spade.md
    "crn-export checkpoints/cityscapes_pretrained/latest_net_G.pth --res 256x512  --precision fp16 --precision fp32"
    "              # family from the keys (or --family spade)":
        Adaptation("a tiny SPADE run (latest_net_G.pth, opt.txt) as NVlabs' trainer leaves it, at its size",
                   (wrote("engines/latest_net_G-32x64-fp16.onnx", "engines/latest_net_G-32x64-fp32.onnx"),
                    printed("SPADE")),
                   given=(spade_run("checkpoints/cityscapes_pretrained/latest_net_G.pth"),),
                   swaps=(("256x512", "32x64"),)),
    "crn-export checkpoints/ade20k_pretrained/latest_net_G.pth --preset spade_ade20k":
        Adaptation("the tiny preset for spade_ade20k (about 97 M parameters), a checkpoint of its shape without "
                   "opt.txt", (wrote("engines/latest_net_G-32x64-fp16.onnx"),),
                   given=(spade_run("checkpoints/ade20k_pretrained/latest_net_G.pth", opt=None),),
                   swaps=(("spade_ade20k", "spade-tiny"),)),
    "crn-export latest_net_G.pth --opt checkpoints/my_run/opt.txt --res 512x512":
        Adaptation("a tiny SPADE checkpoint here and its run's opt.txt in checkpoints/my_run/; square, as shown",
                   (wrote("engines/latest_net_G-32x32-fp16.onnx"),),
                   given=(spade_run("latest_net_G.pth", opt="checkpoints/my_run/opt.txt"),),
                   swaps=(("512x512", "32x32"),)),
    "crn-run engines/latest_net_G-256x512-fp16.onnx --input 'gtFine/val/**/*_labelIds.png' --output out/":
        Adaptation("the artifact exported above; Cityscapes label and instance files placed", (pictures("out"),),
                   given=(cityscapes("", "val"),), swaps=(("256x512", "32x64"),)),
    # docs/scaling-out.md
    "crn-run engines/x-fp16.engine --input 's3://maps/gtFine/**/*_labelIds.png' --output s3://maps/pictures "
    "--ray auto --workers 8 --gpus-per-worker 1":
        Adaptation(f"x-fp16: a tiny CRN artifact ({NO_GPU}); the label files in an S3-compatible server on loopback; "
                   "a local Ray instance, not a running cluster ('auto' would join whatever Ray this machine runs); "
                   "one CPU worker on this 2-core machine without GPUs", (in_bucket("maps", "pictures/"),),
                   given=(tiny_artifact, uploaded_cityscapes("maps", "val")),
                   swaps=(("engines/x-fp16.engine", "engines/tiny-64x96-fp16.onnx"), ("--ray auto", "--ray"),
                          ("--workers 8", "--workers 1"), (" --gpus-per-worker 1", ""))),
    "crn-serve engines/x-fp16.engine --port 8000 --replicas 4 --gpus-per-replica 1 --max-batch 4 --batch-wait-ms 5":
        Adaptation(f"x-fp16: the tiny CRN artifact above ({NO_GPU}); a free port; two CPU replicas on this 2-core "
                   "machine without GPUs", (served,),
                   given=(tiny_artifact,),
                   swaps=(("engines/x-fp16.engine", "engines/tiny-64x96-fp16.onnx"), ("--port 8000", "--port {port}"),
                          ("--replicas 4", "--replicas 2"), (" --gpus-per-replica 1", ""))),
    # docs/training.md
    "crn-train --data synthetic --preset small-256p --res 256x512 --steps 3000 --out runs/demo":
        Adaptation("2 steps at 64x128", (wrote("runs/demo/final.safetensors", "runs/demo/checkpoint.pt"),),
                   swaps=(("256x512", "64x128"), ("--steps 3000", "--steps 2"))),
    "crn-train --data cityscapes:/data/cityscapes --preset cityscapes-256p --vgg imagenet-vgg-verydeep-19.mat "
    "--device cuda --amp --out runs/256p":
        Adaptation("a tiny Cityscapes tree at data/cityscapes (not /data); the tiny preset for cityscapes-256p (1.08 T "
                   "multiply-adds per picture); a small random VGG-19 .mat; on the CPU without --amp (no GPU); 2 "
                   "steps at 32x64, not the default 1000 at 256x512",
                   (wrote("runs/256p/final.safetensors", "runs/256p/checkpoint.pt"), printed("VGG-19 perceptual")),
                   given=(cityscapes("data/cityscapes", "train", photos=True), vgg_mat("imagenet-vgg-verydeep-19.mat")),
                   swaps=(("/data/cityscapes", "data/cityscapes"), ("cityscapes-256p", "tiny"),
                          ("--device cuda --amp", "--device cpu")),
                   extra=("--res", "32x64", "--steps", "2")),
    "crn-train --data cityscapes:/data/cityscapes --init-from runs/256p/final.safetensors --width 128 --res 512x1024 "
    "--out runs/512p":
        Adaptation("the Cityscapes tree above; the tiny 32x64 model trained above grown by a module of width 8 to "
                   "64x128; 2 steps, not the default 1000",
                   (wrote("runs/512p/final.safetensors"), printed("5 modules")),
                   swaps=(("/data/cityscapes", "data/cityscapes"), ("--width 128", "--width 8"),
                          ("512x1024", "64x128")),
                   extra=("--steps", "2")),
    "crn-train --resume runs/demo/checkpoint.pt --steps 6000":
        Adaptation("to step 4 from the 2 above", (wrote("runs/demo/checkpoint.pt", "runs/demo/final.safetensors"),
                                                   printed("at 64x128", "from step 2 to 4")),
                   swaps=(("--steps 6000", "--steps 4"),)),
}


# running a page ------------------------------------------------------------------------------------------------
def _files(folder: Path) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()}


def adapted_argv(text: str, adaptation: Adaptation, folder: Path) -> list[str]:
    """The command as the test runs it: swaps made, optional parts and comment dropped, arguments appended, and
    unquoted globs expanded in ``folder`` as a shell would (one that matches nothing stays as it is)."""
    for old, new in adaptation.swaps:
        assert old in text, f"{text!r}: the swap {old!r} no longer applies"
        text = text.replace(old, new)
    argv = []
    for token in shlex.split(without_optional_parts(text), posix=False):
        if token[0] in "'\"":
            argv.append(token[1:-1])
        elif glob.has_magic(token):
            argv += sorted(glob.glob(token, root_dir=folder)) or [token]
        else:
            argv.append(token)
    return [*argv, *adaptation.extra]


def _thin_command(request: pytest.FixtureRequest, prog: str) -> Path:
    return request.getfixturevalue("thin_python").parent / prog


def run_command(walk: Walk, argv: list[str]) -> str:
    """Run one command in the environment the docs name; its output."""
    prog, args = argv[0], argv[1:]
    if prog == "crn-serve":
        return serve(walk, args)
    if prog in TORCH_FREE and "--ray" not in args:
        return _subprocess([str(_thin_command(walk.request, prog)), *args], walk.folder)
    if "--ray" in args:  # Ray is in the full environment only; a process of its own starts and ends its Ray
        return _subprocess([sys.executable, "-m", COMMANDS[prog], *args], walk.folder)
    import importlib

    capsys = walk.request.getfixturevalue("capsys")
    capsys.readouterr()
    code = importlib.import_module(COMMANDS[prog]).main(args)
    out, err = capsys.readouterr()
    assert code == 0, f"{shlex.join(argv)} exited {code}:\n{out[-3000:]}\n{err[-3000:]}"
    return out


def _subprocess(argv: list[str], cwd: Path) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{shlex.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}\n" \
                                   f"{result.stderr[-3000:]}"
    return result.stdout


def serve(walk: Walk, args: list[str]) -> str:
    """Start crn-serve, wait until it says it serves and GET /ready answers, paint one label map of the artifact's
    size, then SIGTERM: exit 143."""
    from crn_deploy.manifest import Manifest, manifest_for
    from crn_deploy.scale.client import SynthesisClient

    port = free_port()
    args = [a.replace("{port}", str(port)) for a in args]
    height, width = Manifest.read(walk.folder / manifest_for(Path(args[0]))).resolution
    with tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([sys.executable, "-m", COMMANDS["crn-serve"], *args], cwd=walk.folder,
                                   stdout=subprocess.PIPE, stderr=err, text=True)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
        reader.start()
        client = SynthesisClient(f"http://127.0.0.1:{port}", timeout=30)
        try:
            deadline, ready = time.time() + 180, False
            while process.poll() is None and time.time() < deadline and not (ready := _ready(client, lines)):
                time.sleep(0.3)
            picture = client.synthesize(street_layout(height, width, seed=5)) if ready else None  # train ids
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
            reader.join(timeout=10)
            err.seek(0)
            errors = err.read()
    said = f"crn-serve exited {process.returncode}{'' if ready else ', never ready'}:\n{''.join(lines)[-3000:]}\n" \
           f"{errors[-3000:]}"
    assert ready and process.returncode == 143, said
    assert picture.shape == (height, width, 3) and picture.std() > 0  # a picture, not a blank
    return "".join(lines)


def _ready(client, lines: list[str]) -> bool:
    """crn-serve said it serves, and its replicas say they can take work."""
    from crn_deploy.scale.client import ServiceError

    if not any(line.startswith("crn-serve: serving") for line in lines):
        return False
    try:
        return client.ready()["status"] == "ready"
    except (ServiceError, OSError):
        return False


def test_every_shown_command_has_one_adaptation_and_every_adaptation_a_command():
    shown = {text for _, text in shown_commands()}
    assert len(shown) > 30
    assert sorted(shown - set(ADAPTATIONS)) == [], "commands shown without an adaptation"
    assert sorted(set(ADAPTATIONS) - shown) == [], "adaptations for commands no page shows"
    for text, adaptation in ADAPTATIONS.items():
        assert adaptation.why and adaptation.expect, text
        assert all(old in text for old, _ in adaptation.swaps), f"{text!r}: a swap no longer applies"
        assert Path(without_optional_parts(text).split()[0]).name in COMMANDS, text


PAGES = [page for page in pages() if shown_commands(page)]


@pytest.mark.slow  # about 45 commands, two local Ray instances and two Ray Serve endpoints: 2-3 minutes
@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_each_page_s_commands_run_in_order_on_tiny_data(page, tmp_path, monkeypatch, request):
    walk = Walk(tmp_path / page.stem, request)
    walk.folder.mkdir()
    monkeypatch.chdir(walk.folder)
    for _, text in shown_commands(page):
        adaptation = ADAPTATIONS.get(text)
        assert adaptation is not None, f"{page.name}: {text!r} has no entry in ADAPTATIONS"
        for place in adaptation.given:
            place(walk)
        argv = adapted_argv(text, adaptation, walk.folder)
        before = _files(walk.folder)
        started = time.monotonic()
        stdout = run_command(walk, argv)
        print(f"{page.name}: {shlex.join(argv)}: {time.monotonic() - started:.1f} s", file=sys.__stderr__)
        for expect in adaptation.expect:
            expect(walk, Ran(stdout, before))
