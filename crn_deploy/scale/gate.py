"""The write gate of a ``crn-run --ray`` run (see ``batch``), in a module of its own that imports nothing: its
actor's process starts beside the painters' at the start of a run, and importing ``batch`` (NumPy, OpenCV) there
took 0.4 s of a 2-core machine's CPU."""


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
