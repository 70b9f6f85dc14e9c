"""The run record, ``crn-run-record.json`` beside the pictures: every complete picture in the output with the
artifact that painted it and the run that wrote it, and every run that wrote there with its final state.

The disk is the truth and the record is kept to it. Each picture carries the SHA-256 of the artifact that painted
it (a PNG text chunk: the same picture, the same bytes), and every run reconciles the record with a listing of
the output when it starts and when it ends, however it ends: a picture the record lacks (a killed driver never
got its row) is checked whole, given its artifact from its chunk and its run by time (the latest run that started
before it was written: runs into one output one at a time); a picture cut short (a crash, a power loss) is
dropped from the record and painted again; an entry whose picture is gone is dropped. Between those, rows from
the writing tasks add their pictures as they arrive (with the node that wrote each). A run the record still says
is ``running`` when the next one starts was killed: it becomes ``abandoned``; unless its driver still runs on
this machine, in which case the next run is refused (two runs into one output would each rewrite the other's
record).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..data.images import ARTIFACT_KEY, png_text
from ..data.storage import Store
from ..errors import UsageError

RECORD_NAME = "crn-run-record.json"
FORMAT = 2
PICTURE_SUFFIX = ".png"
SAVE_EVERY_S = 2.0  # while rows arrive; the listing at the end catches what came after the last save


@dataclass
class Reconciled:
    """What a listing of the output said: the complete pictures (label name -> the SHA-256 of the artifact that
    painted it; None where the picture does not say), those cut short, and how the record changed."""
    artifacts: dict[str, str | None] = field(default_factory=dict)
    damaged: list[str] = field(default_factory=list)
    found: int = 0  # pictures the record lacked (or had otherwise), entered from the disk
    gone: int = 0  # entries whose picture is no longer there, dropped


class RunRecord:
    """The record of one output: ``crn-run-record.json`` in a folder or prefix of pictures (``store``), or
    ``<name>.record.json`` beside a Parquet output (``store`` None: runs and rows only, nothing to list)."""

    def __init__(self, output: str, store: Store | None) -> None:
        self.pictures_store = store
        output = self.output = str(output).rstrip("/")
        self.store = store if store is not None else Store(output.rsplit("/", 1)[0] if "/" in output else ".")
        self.name = RECORD_NAME if store is not None else f"{output.rsplit('/', 1)[-1]}.record.json"
        self.path = self.store.uri(self.name)
        self.run_id = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"
        self.data = self._previous()
        self.pictures: dict[str, dict] = {p["name"]: p for p in self.data["written"]}
        self.run: dict | None = None
        self.counts = {"found": 0, "gone": 0, "damaged": 0}
        self.pids: set[int] = set()
        self.saved = 0.0

    def _previous(self) -> dict:
        try:
            data = json.loads(self.store.read(self.name))
            if isinstance(data.get("written"), list) and isinstance(data.get("runs"), list):
                return {**data, "format": FORMAT}
        except (UsageError, ValueError):
            pass
        return {"format": FORMAT, "written": [], "runs": []}

    def refuse_a_live_run(self) -> None:
        """One line for a run the record says is ``running`` whose driver process still runs on this machine: two
        runs into one output would each rewrite the other's record."""
        for run in self.data["runs"]:
            driver = run.get("driver") or {}
            if run.get("state") == "running" and _is_running(driver):
                raise UsageError(f"another run is writing into {self.output} (run {run['run']}, process "
                                 f"{driver['pid']} on this machine, started {run.get('started')}): let it end (or "
                                 "stop it) and run again, or give another --output")

    def abandon_running(self) -> list[str]:
        """Runs still ``running``: their drivers were killed or lost. They become ``abandoned`` (one whose driver
        still runs here is refused, see ``refuse_a_live_run``)."""
        self.refuse_a_live_run()
        left = [r for r in self.data["runs"] if r.get("state") == "running"]
        for run in left:
            run["state"] = "abandoned"
        return [r["run"] for r in left]

    def reconcile(self, inputs: dict[str, str]) -> Reconciled:
        """Bring the record to what the output holds (see the module's notes). ``inputs``: label name -> input,
        for pictures entered from the disk."""
        result = Reconciled()
        if self.pictures_store is None:
            return result
        on_disk = {name[:-len(PICTURE_SUFFIX)]: stat for name, stat in self.pictures_store.listing().items()
                   if is_picture(name)}
        for name in [n for n in self.pictures if n not in on_disk]:
            del self.pictures[name]
            result.gone += 1
        unsure = [n for n, stat in on_disk.items() if not self._known(n, *stat)]
        for name, text in zip(unsure, self._texts(unsure), strict=True):
            if text is None:  # cut short (or gone meanwhile): painted again
                self.pictures.pop(name, None)
                result.damaged.append(name)
                continue
            self._enter(name, text.get(ARTIFACT_KEY), *on_disk[name], inputs)
            result.found += 1
        result.damaged.sort()
        result.artifacts = {n: p.get("artifact_sha256") for n, p in self.pictures.items()}
        self.counts["found"] += result.found
        self.counts["gone"] += result.gone
        self.counts["damaged"] += len(result.damaged)
        for run in self.data["runs"]:
            if run.get("state") == "abandoned" and "written" not in run:  # what it left, once known
                run["written"] = self.written(run["run"])
        return result

    def _known(self, name: str, size: int, mtime: float) -> bool:
        """Whether the entry matches the listing: its size, and its time once a listing has given it one (a row's
        entry takes its time from its first listing)."""
        entry = self.pictures.get(name)
        if entry is None or entry.get("bytes") != size or "artifact_sha256" not in entry:
            return False
        if entry.get("mtime") is None:
            entry["mtime"] = mtime  # a row's picture, listed for the first time
            return True
        return abs(entry["mtime"] - mtime) < 1e-3

    def _texts(self, names: list[str]) -> list[dict | None]:
        """Each picture's text chunks, read whole (None: not a complete PNG), several at once from object stores."""
        def text_of(name: str) -> dict | None:
            try:
                return png_text(self.pictures_store.read(name + PICTURE_SUFFIX))
            except UsageError:
                return None

        with ThreadPoolExecutor(16 if self.pictures_store.remote else 4) as pool:
            return list(pool.map(text_of, names))

    def _enter(self, name: str, artifact: str | None, size: int, mtime: float, inputs: dict[str, str]) -> None:
        run = self._run_at(mtime)
        previous = self.pictures.get(name, {})
        self.pictures[name] = {
            "name": name, "input": inputs.get(name, previous.get("input", "")),
            "output": self.pictures_store.uri(name + PICTURE_SUFFIX), "artifact_sha256": artifact,
            "run": run["run"] if run is not None and run.get("artifact_sha256") == artifact else None,
            "bytes": size, "mtime": mtime, "found": self.run_id}

    def _run_at(self, mtime: float) -> dict | None:
        """The run that wrote a picture last modified at ``mtime``: the latest to start before it (an object
        store's whole-second times read as any moment of that second)."""
        slack = 1.0 if float(mtime).is_integer() else 0.0
        started = [r for r in self.data["runs"] if _timestamp(r.get("started")) < mtime + slack]
        return max(started, key=lambda r: _timestamp(r["started"]), default=None)

    def begin(self, artifact: Path, artifact_sha256: str, pattern: str, workers: int) -> None:
        self.run = {"run": self.run_id, "artifact": str(Path(artifact).resolve()), "artifact_sha256": artifact_sha256,
                    "input": str(pattern), "workers": workers, "started": datetime.now(timezone.utc).isoformat(),
                    "driver": {"host": socket.gethostname(), "pid": os.getpid(), **process_identity(os.getpid())},
                    "state": "running"}
        self.data["runs"].append(self.run)
        self.save()

    def add(self, row: dict) -> None:
        """A picture a writing task reports written (saved every few seconds)."""
        name = str(row["name"])
        self.pictures[name] = {"name": name, "input": str(row["input"]), "output": str(row.get("output", "")),
                               "artifact_sha256": self.run["artifact_sha256"], "run": self.run_id,
                               "bytes": int(row.get("bytes", 0)), "mtime": None, "host": str(row.get("host", "")),
                               "node": str(row.get("node", "")), "address": str(row.get("address", "")),
                               "pid": int(row["pid"])}
        self.pids.add(int(row["pid"]))
        if time.monotonic() - self.saved > SAVE_EVERY_S:
            self.save()

    def finish(self, state: str, skipped: int, seconds: float, unreadable: list[str] = ()) -> None:
        self.run.update(state=state, skipped=skipped, seconds=round(seconds, 3),
                        written=self.written(self.run_id), **{k: v for k, v in self.counts.items() if v},
                        **({"unreadable": list(unreadable)} if unreadable else {}))
        self.save()

    def written(self, run_id: str) -> int:
        """Pictures of that run in the output (and in the record)."""
        return sum(1 for p in self.pictures.values() if p.get("run") == run_id)

    def save(self) -> None:
        self.data["written"] = sorted(self.pictures.values(), key=lambda p: p["name"])
        self.store.write(self.name, json.dumps(self.data, indent=1).encode())
        self.saved = time.monotonic()


def is_picture(name: str) -> bool:
    """A picture in an output: a PNG, hidden nowhere on its path (temporaries and probes are hidden)."""
    return name.endswith(PICTURE_SUFFIX) and not any(part.startswith(".") for part in name.split("/"))


def read_record(output: str | Path) -> dict:
    return json.loads(Store(output).read(RECORD_NAME))


def process_identity(pid: int) -> dict:
    """What tells process ``pid`` from any other, ever, on Linux: this boot of the machine, the PID namespace its
    number belongs to (a container's numbers are its own) and its start time in clock ticks since boot (a later
    process given the same number starts later). Empty elsewhere, or for a process that is gone."""
    return _identity_and_state(pid)[0]


def _identity_and_state(pid: int) -> tuple[dict, str]:
    """(``process_identity``, the process's state letter from /proc/PID/stat); ({}, "") where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()  # the name may hold ")"
        return {"boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip(),
                "pid_namespace": os.readlink("/proc/self/ns/pid"), "start_ticks": int(fields[19])}, fields[0]
    except (OSError, IndexError, ValueError):
        return {}, ""


def _is_running(driver: dict) -> bool:
    """Whether the driver a run names is a live process here: the same boot, PID namespace and start time as the
    process now under its number, and not a zombie. A record without them (written off Linux, or by an older
    version) names no live driver."""
    pid = driver.get("pid")
    if not isinstance(pid, int) or pid == os.getpid() or "start_ticks" not in driver:
        return False
    now, state = _identity_and_state(pid)
    return bool(now) and state not in ("Z", "X") and all(driver.get(k) == v for k, v in now.items())


def _timestamp(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return float("inf")


