"""A simulator farm's client for the crn-serve endpoint: each step the simulator's semantic camera gives
a label map, the service paints it, the simulator consumes the picture.

    crn-serve engines/demo-small-256p-256x512-fp16.onnx --port 8000 --replicas 2 &
    python examples/simulator_client.py http://127.0.0.1:8000 --steps 50 --clients 4

Several clients run at once (threads standing in for simulators); each reports its latency. Raw arrays
travel both ways (no PNG coding); an error response ends that client's run with its one-line message.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from crn_deploy.data.synthetic import scenes
from crn_deploy.scale.client import ServiceError, SynthesisClient


def simulate(client: SynthesisClient, label_set: str, size: tuple[int, int], steps: int, seed: int,
             takes_instances: bool) -> list[float]:
    latencies = []
    for step in range(steps):
        ids, instances = scenes(label_set, 1, *size, seed=seed, t=step / 10)  # the semantic camera
        started = time.perf_counter()
        picture = client.synthesize(ids[0, 0], instances[0, 0] if takes_instances and instances is not None
                                    else None)
        latencies.append((time.perf_counter() - started) * 1000)
        assert picture.dtype == np.uint8  # the simulator would show or record it here
    return latencies


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("url")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--clients", type=int, default=2)
    args = p.parse_args()
    client = SynthesisClient(args.url)
    ready = client.ready()
    size = tuple(ready["resolution"])
    takes_instances = "instances" in ready["inputs"]
    print(f"{args.url}: {ready['artifact']} ({ready['family']}, {ready['precision']}), label maps {size}")
    try:
        with ThreadPoolExecutor(args.clients) as pool:
            runs = list(pool.map(lambda i: simulate(client, ready["label_set"], size, args.steps, i, takes_instances),
                                 range(args.clients)))
    except ServiceError as e:
        raise SystemExit(f"the service refused a request: {e}") from None
    for i, latencies in enumerate(runs):
        print(f"client {i}: {len(latencies)} steps, p50 {np.percentile(latencies, 50):.1f} ms, "
              f"p99 {np.percentile(latencies, 99):.1f} ms")


if __name__ == "__main__":
    main()
