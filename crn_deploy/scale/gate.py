"""The write gate of a ``crn-run --ray`` run (see ``batch``), in a module of its own that imports nothing: its
actor's process, started beside the painters' at the start of a run, need not import ``batch``'s NumPy and OpenCV
(0.4 s of CPU in a fresh process on a 2-core machine). By the first picture the gate's process still took 0.7-0.8 s
of CPU, as before the move: most of that is Ray's own worker start."""


class WriteGate:
    """One run's gate, held on the driver's node: a writing task enters it before it writes a batch under temporary
    names, asks it again before publishing them, and leaves it when the batch is in place or its temporaries are
    removed. An interrupted driver closes it (no batch is let through after, none begins) and waits until the tasks
    inside are through, so that when it says it stopped, no picture appears after and no temporary is left."""

    def __init__(self) -> None:
        self.open, self.inside = True, set()

    def enter(self, token: str) -> bool:
        if self.open:
            self.inside.add(token)
        return self.open

    def is_open(self) -> bool:
        return self.open

    def leave(self, token: str) -> None:
        self.inside.discard(token)

    def close(self) -> int:
        self.open = False
        return len(self.inside)

    def count(self) -> int:
        return len(self.inside)
