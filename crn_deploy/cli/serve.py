"""crn-serve: a synthesis endpoint for one artifact on Ray Serve (POST /synthesize, GET /healthz, GET /ready)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import UsageError
from ._main import interrupt_exit_code, log, parse_or_exit, require, run_command
from .build import parse_size

PROG = "crn-serve"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split(":", 1)[1].strip())
    p.add_argument("artifact", type=Path, help="an exported .onnx or a built .engine (with its .json beside it)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--replicas", type=int, default=1, help="replicas, each opening the artifact once (default 1)")
    p.add_argument("--gpus-per-replica", type=float,
                   help="GPUs per replica (default 1 where the cluster has GPUs, else 0: CPU replicas)")
    p.add_argument("--max-batch", type=int, help="requests batched into one call (default: the artifact's batch)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0, help="how long a batch waits to fill (default 5)")
    p.add_argument("--threads", type=int, help="threads per CPU replica (ONNX Runtime or an OpenVINO engine)")
    p.add_argument("--max-body", metavar="SIZE", help="largest request body, e.g. 8M (default: from the artifact's "
                                                    "label size); a larger one is a 413 before it is read whole")
    p.add_argument("--label-map", metavar="NAME|FILE",
                   help="read request bodies in another label space (carla, carla-palette, carla-0.9.13, "
                        "carla-0.9.13-palette, or a .toml/.json mapping file; see docs/streaming.md)")
    p.add_argument("--ray", metavar="auto|ADDRESS", help="an existing Ray cluster (default: a local instance)")
    return p


def _check(args) -> None:
    if not 0 < args.port < 65536:
        raise UsageError(f"--port must be 1..65535, got {args.port}")
    if args.replicas < 1 or (args.max_batch is not None and args.max_batch < 1) or args.batch_wait_ms < 0:
        raise UsageError("--replicas and --max-batch must be at least 1, --batch-wait-ms at least 0")
    if args.artifact.suffix not in (".onnx", ".engine") or not args.artifact.is_file():
        raise UsageError(f"{args.artifact}: pass an exported .onnx or a built .engine that exists")
    args.max_body_bytes = parse_size(args.max_body) if args.max_body else None
    if args.label_map is not None:
        from ..data.label_mapping import load_label_map

        args.label_map = load_label_map(args.label_map)


def main(argv: list[str] | None = None) -> int:
    args = parse_or_exit(build_parser(), argv, _check)
    return run_command(PROG, lambda: _serve(args), handles_interrupts=True)


def _serve(args) -> int:
    require(PROG, ("ray",), "ray")
    from ..scale.cluster import connected, quiet_ray
    from ..scale.serve import ServeOptions, check_label_map, check_port, shutdown, start

    options = ServeOptions(port=args.port, host=args.host, replicas=args.replicas,
                           gpus_per_replica=args.gpus_per_replica, max_batch=args.max_batch,
                           batch_wait_ms=args.batch_wait_ms, threads=args.threads, address=args.ray,
                           max_body_bytes=args.max_body_bytes, label_map=args.label_map)
    check_label_map(args.artifact, options)  # before Ray starts
    check_port(options)
    with quiet_ray("ray.serve"), connected(args.ray, log):  # Ray ends with the command where the command started it
        try:
            url = start(args.artifact, options, log)
            log(f"{PROG}: serving {args.artifact.name} at {url}/synthesize ({args.replicas} replica(s)); "
                "Ctrl-C stops it")
            while True:
                time.sleep(0.5)
        except KeyboardInterrupt as interrupt:
            log(f"{PROG}: stopping")
            shutdown()
            return interrupt_exit_code(interrupt)


if __name__ == "__main__":
    raise SystemExit(main())
