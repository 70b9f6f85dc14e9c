"""Embedding the runtime in a simulation loop: a toy simulator produces a semantic map per step,
the engine turns it into a picture, and the simulator consumes it — no torch needed at run time.

    python examples/simulation_loop.py engines/demo-small-256p-256x512-fp16.onnx  [--steps 50]

(``crn-demo`` writes that file; any exported .onnx or built .engine works.)

Two ways are shown: calling the synthesizer directly each step (simplest, synchronous), and
handing the simulator to the streaming loop (decode, synthesis and encode overlap; the live
policy keeps a deadline per frame and drops stale maps when synthesis falls behind).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from crn_deploy import runtime
from crn_deploy.data.streams import CallbackSink, IterableSource
from crn_deploy.data.synthetic import street_layout
from crn_deploy.runtime.stream import StreamOptions, run_stream


class ToySimulator:
    """Stands in for a driving simulator: its semantic camera gives uint8 Cityscapes train ids."""

    def __init__(self, height: int, width: int, steps: int, hz: float | None = None) -> None:
        self.height, self.width, self.steps, self.t = height, width, steps, 0
        self.period, self.next_tick = (1.0 / hz if hz else 0.0), time.perf_counter()

    def semantic_camera(self) -> np.ndarray | None:
        if self.t >= self.steps:
            return None
        self.next_tick += self.period  # a simulator ticks at its own rate
        time.sleep(max(0.0, self.next_tick - time.perf_counter()))
        ids = street_layout(self.height, self.width, seed=3, t=self.t * 0.1)  # traffic moves each step
        self.t += 1
        return ids

    def show(self, rgb: np.ndarray) -> None:
        self.last_frame = rgb  # a real simulator would texture a screen or send it to a client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifact", help="an exported .onnx or a built .engine")
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()

    with runtime.load(args.artifact) as synth:
        height, width = synth.resolution

        # 1. Synchronous: one call per simulation step.
        sim = ToySimulator(height, width, args.steps)
        started = time.perf_counter()
        while (ids := sim.semantic_camera()) is not None:
            sim.show(synth(ids))
        print(f"direct calls: {args.steps / (time.perf_counter() - started):.1f} steps/s")

        # 2. Streaming: the simulator's camera is the source, its display the sink.
        sim = ToySimulator(height, width, args.steps, hz=30)
        options = StreamOptions(policy="live", fps=30)
        stats = run_stream(synth, IterableSource(sim.semantic_camera), CallbackSink(sim.show), options)
        print(f"streaming loop: {stats.line()}")


if __name__ == "__main__":
    main()
