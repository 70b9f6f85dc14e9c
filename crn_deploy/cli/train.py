"""crn-train: train or fine-tune a model of a family that declares a trainer (today CRN and PosGen) on paired label
maps and photos (synthetic, Cityscapes, folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..sizes import format_resolution, parse_resolution
from ..families import find_preset
from ..errors import UsageError
from ._main import log, parse_or_exit, require, run_command

PROG = "crn-train"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--data", help="synthetic (default; with --resume, the run's), cityscapes:ROOT or pairs:DIR")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--preset", default=None, help="architecture to train from scratch (default small-256p); "
                                                       "a PosGen preset (posgen-demo) trains a PosGen")
    start.add_argument("--widths", help="a custom architecture from scratch: module widths, coarsest first, e.g. "
                                        "128,128,64 (with --k)")
    start.add_argument("--init-from", type=Path, help="progressive: grow this lower-resolution checkpoint by one "
                                                       "module (--width sets the new module's width)")
    start.add_argument("--resume", type=Path, help="continue a crn-train checkpoint exactly where it stopped")
    p.add_argument("--width", type=int, help="with --init-from: the new module's width (default: the last one's)")
    p.add_argument("--k", type=int, default=1, help="with --widths: images per label map (default 1)")
    p.add_argument("--res", help="training resolution HxW (default: the model's native one; with --resume, the "
                                 "run's)")
    p.add_argument("--steps", type=int, default=1000, help="train until this step (default 1000)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4, as the authors)")
    p.add_argument("--vgg", type=Path, help="VGG-19 weights (torchvision .pth or MatConvNet .mat) for the perceptual "
                                            "loss; without it: an image-space L1 loss")
    p.add_argument("--out", type=Path, help="run folder (default runs/crn; with --resume, the folder of the checkpoint "
                                            "it continues)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--amp", action="store_true", help="mixed precision on CUDA")
    p.add_argument("--seed", type=int, help="weights and sample order (default 0; with --resume, the run's)")
    p.add_argument("--preview-every", type=int, default=100, help="write a preview picture every N steps")
    p.add_argument("--save-every", type=int, default=500, help="write checkpoint.pt every N steps")
    p.add_argument("--log-every", type=int, default=10)
    return p


def _check(args) -> None:
    if args.steps < 1 or args.lr <= 0 or min(args.preview_every, args.save_every, args.log_every) < 1:
        raise UsageError("--steps, --preview-every, --save-every and --log-every must be >= 1, --lr > 0")
    if args.preset:
        find_preset(args.preset)
    if args.widths:
        try:
            args.width_list = tuple(int(w) for w in args.widths.split(","))
        except ValueError:
            raise UsageError(f"--widths '{args.widths}' is not a comma-separated list of integers") from None
    if args.width is not None and not args.init_from:
        raise UsageError("--width only applies with --init-from")
    args.resolution = parse_resolution(args.res) if args.res else None
    if args.out is None:  # a resumed run goes on writing where it stopped
        args.out = args.resume.parent if args.resume else Path("runs/crn")


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _train(args))


def _start(args, dataset):
    from ..models.checkpoint import load_checkpoint
    from ..models.registry import model_family, model_family_of, trainable_families
    from ..training.train import new_state

    if args.init_from:
        lower = load_checkpoint(args.init_from)
        training = model_family(lower.family).training
        grow = training.grow if training else None
        if grow is None:
            raise UsageError(f"--init-from grows a model by one module; {lower.family} models do not grow (families "
                             f"that do: {', '.join(n for n, f in trainable_families().items() if f.training.grow)})")
        return new_state(grow(lower.model, args.width, args.seed or 0), dataset.label_set, args.lr)
    config = _custom_config(args) if args.widths else find_preset(args.preset or DEFAULT_PRESET)[1]
    fam = model_family_of(config)
    if fam.training is None:
        raise UsageError(f"crn-train has no trainer for {fam.name} models (it trains "
                         f"{' and '.join(trainable_families())} presets); deploy their official checkpoints with "
                         "crn-export")
    model = fam.random_model(config, args.seed or 0)
    classes = fam.contract.label_set_for(config).num_classes
    if classes != dataset.label_set.num_classes:
        raise UsageError(f"{args.preset or 'the model'} takes {classes} classes, the dataset's label set "
                         f"'{dataset.label_set.name}' has {dataset.label_set.num_classes}; pick a preset for it "
                         "(small-256p or posgen-demo for the synthetic and Cityscapes train-id data)")
    return new_state(model.train(), dataset.label_set, args.lr)


DEFAULT_PRESET = "small-256p"


def _custom_config(args):
    """--widths (and --k): the architecture of the family whose trainer takes module widths."""
    from ..models.registry import trainable_families

    takers = [f for f in trainable_families().values() if f.training.custom_config]
    if not takers:
        raise UsageError("--widths: no family here takes a custom architecture of module widths; give --preset")
    return takers[0].training.custom_config(args.width_list, args.k)



def _train(args) -> int:
    require(PROG, ("torch",))
    from ..models.checkpoint import save_checkpoint
    from ..training.train import TrainOptions, held_out_psnr, resume, train, write_preview
    from ..training.vgg import load_vgg19
    from ..models.registry import model_family_of
    from ..data.paired import open_dataset
    from ..files import ensure_writable_dir

    resumed = resume(args.resume, args.lr) if args.resume else None
    data = args.data or (resumed.trained_with.get("data") if resumed else None) or "synthetic"
    dataset = open_dataset(data)  # a resumed run goes on with its own data
    state = resumed or _start(args, dataset)
    config = state.model.config
    fam = model_family_of(config)
    trained_with = state.trained_with  # a resumed run goes on at its own size and sample order
    resolution = args.resolution or tuple(trained_with.get("resolution") or fam.contract.native_resolution(config))
    seed = args.seed if args.seed is not None else trained_with.get("seed", 0)
    fam.contract.check_resolution(resolution, config)
    vgg = load_vgg19(args.vgg) if args.vgg else None
    options = TrainOptions(args.steps, resolution, args.out, args.lr, seed, args.device, args.amp,
                           args.preview_every, args.save_every, args.log_every, data)
    ensure_writable_dir(args.out)
    diversity = getattr(config, "k", 1) > 1
    log(f"{PROG}: {fam.contract.describe(config)} at "
        f"{format_resolution(resolution)}, {len(dataset)} pairs, loss: "
        f"{'VGG-19 perceptual' if vgg else 'image L1 (no --vgg)'}{' + diversity' if diversity else ''}; "
        f"from step {state.step} to {args.steps}")

    def preview(st, opts):
        write_preview(opts.out_dir / f"preview_{st.step:06d}.png", st.model, dataset, opts.resolution, st.label_set)

    train(state, dataset, options, vgg, log, preview)
    final = args.out / "final.safetensors"
    save_checkpoint(final, state.model.cpu(), state.label_set)
    if hasattr(dataset, "held_out_seed"):
        log(f"{PROG}: held-out synthetic PSNR {held_out_psnr(state.model, dataset, resolution):.2f} dB")
    log(f"{PROG}: wrote {final} and {args.out / 'checkpoint.pt'}. Next: crn-export {final} "
        f"--res {format_resolution(resolution)}")  # the size it learned at
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
