"""crn-run --ray on a two-raylet cluster on loopback, with the faults an operator meets, checking the pictures and the
run record together: Ctrl-C (every writer stopped before the command says so; the record lists what is on disk),
then a power loss that left pictures empty or cut short under their names (found and painted again by the rerun);
a node killed mid-run (said once; the run finishes); the driver killed (the rerun marks its run abandoned and
records its pictures as its); another artifact's pictures (refused, then repainted with --overwrite); and a
cluster that refuses the driver (token authentication on its side only, another Ray version): one line, exit 2.
Each time: every picture exactly once, byte-identical to single-process crn-run. Also crn-serve on that cluster
where it cannot listen (a port in use, Serve already listening elsewhere): one line, exit 2. The cluster runs in
its own process (tests/ray_nodes.py), with token authentication on, and each driver is a command of its own."""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from crn_deploy.data.synthetic import cityscapes_scene

from .ports import free_port

pytestmark = pytest.mark.slow  # a cluster of two raylets and a dozen commands: about two minutes on 2 cores
pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (or the ray extra)")

MAPS = 256  # four batches of 64: a run is still painting when a fault comes after its first pictures


class Lines:
    """A process's output lines as they come (read by a thread), kept, and waited for."""

    def __init__(self, stream) -> None:
        self.seen: list[str] = []
        self.queue: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.queue.put(line) for line in stream], daemon=True).start()

    def wait_for(self, text: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.queue.get(timeout=0.05)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} within {timeout} s; seen: {self.seen}")


@dataclass
class Nodes:
    address: str
    env: dict
    helper: subprocess.Popen
    lines: Lines

    def kill_a_worker_node(self) -> None:
        """SIGKILL the worker node's raylet and processes (a lost machine); a replacement joins."""
        self.helper.send_signal(signal.SIGUSR1)
        self.lines.wait_for("replaced")


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")  # its token: this machine's own ~/.ray stays out of it
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text(uuid.uuid4().hex * 2)
    ray_tmp = tempfile.mkdtemp(prefix="crnray", dir="/tmp")  # short: Ray's socket paths must fit
    env = {**os.environ, "HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_TMPDIR": ray_tmp,
           "TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # a killed driver's log stays in there
    with open(tmp_path_factory.mktemp("logs") / "ray_nodes.log", "w") as log:
        helper = subprocess.Popen([sys.executable, str(Path(__file__).with_name("ray_nodes.py")), "2"], env=env,
                                  stdout=subprocess.PIPE, stderr=log, text=True)
    lines = Lines(helper.stdout)
    try:
        address = lines.wait_for("127.0.0.1:", timeout=180).strip()
        yield Nodes(address, env, helper, lines)
    finally:
        helper.send_signal(signal.SIGTERM)
        try:
            helper.wait(60)
        except subprocess.TimeoutExpired:
            helper.kill()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def maps(tmp_path_factory):
    folder = tmp_path_factory.mktemp("maps")
    for i in range(MAPS):
        cv2.imwrite(str(folder / f"m{i:03d}.png"), cityscapes_scene(64, 96, seed=300 + i)[0])
    return folder


@pytest.fixture(scope="module")
def single(tiny_artifacts, maps, tmp_path_factory):
    """What single-process crn-run writes, per precision: {picture name: bytes}."""
    from crn_deploy.cli.run import main as run_main

    found = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path_factory.mktemp(f"single-{precision}")
        assert run_main([str(tiny_artifacts[precision].artifact_path), "--input", str(maps), "--output",
                         str(out)]) == 0
        found[precision] = _written(out)
    return found


def _driver(nodes: Nodes, artifact: Path, maps: Path, out: Path, *extra: str, env: dict | None = None,
            python: tuple[str, ...] = ("-m", "crn_deploy.cli.run")) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *python, str(artifact), "--input", str(maps), "--output", str(out),
                             "--ray", nodes.address, "--workers", "2", *extra], env=env or nodes.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _pictures(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*.png") if not p.name.startswith("."))


def _written(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in _pictures(out)}


def _wait_for_pictures(out: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180
    while len(_pictures(out)) < count and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None and len(_pictures(out)) >= count, "the run ended before the fault"


def _settled(out: Path, quiet_s: float = 2.0) -> list[Path]:
    """The pictures once none has appeared for ``quiet_s`` (a killed driver's tasks are being ended by Ray)."""
    seen, since = _pictures(out), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.2)
        now = _pictures(out)
        if now != seen:
            seen, since = now, time.monotonic()
    return seen


def _record_agrees_with_disk(out: Path) -> dict:
    """The record lists exactly the pictures on disk (their sizes), each with its artifact and a run it knows."""
    record = json.loads((out / "crn-run-record.json").read_text())
    on_disk = {str(p.relative_to(out))[:-4]: p.stat().st_size for p in _pictures(out)}
    assert {p["name"]: p["bytes"] for p in record["written"]} == on_disk
    runs = {r["run"] for r in record["runs"]}
    assert all(p["run"] in runs and len(p["artifact_sha256"]) == 64 for p in record["written"])
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    return record


def test_ctrl_c_stops_every_writer_before_it_says_so_and_a_rerun_repaints_what_a_power_loss_cut(
        nodes, maps, tiny_artifacts, single, tmp_path):
    artifact, out = tiny_artifacts["fp32"].artifact_path, tmp_path / "out"
    driver = _driver(nodes, artifact, maps, out)
    _wait_for_pictures(out, 2, driver)
    driver.send_signal(signal.SIGINT)
    stdout = Lines(driver.stdout)
    stopped = stdout.wait_for("stopped:")
    at_stop = _pictures(out)
    assert driver.wait(120) == 130, driver.stderr.read()
    time.sleep(1.5)
    assert _pictures(out) == at_stop and 2 <= len(at_stop) < MAPS  # nothing appeared after "stopped"
    assert f"{len(at_stop)} of {MAPS} picture(s) painted by this run" in stopped
    record = _record_agrees_with_disk(out)
    assert [(r["state"], r["written"]) for r in record["runs"]] == [("interrupted", len(at_stop))]

    emptied, cut = at_stop[0], at_stop[1]  # a power loss before the data reached the disk
    emptied.write_bytes(b"")
    cut.write_bytes(cut.read_bytes()[:60])
    rerun = _driver(nodes, artifact, maps, out)
    said, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "2 picture(s)" in said and "cut short" in said
    assert _written(out) == single["fp32"]  # each exactly once, byte-identical
    record = _record_agrees_with_disk(out)
    assert [r["state"] for r in record["runs"]] == ["interrupted", "finished"]
    assert record["runs"][1]["skipped"] == len(at_stop) - 2 and record["runs"][1]["written"] == MAPS - len(at_stop) + 2


def test_a_node_lost_mid_run_is_said_once_and_the_run_finishes(nodes, maps, tiny_artifacts, single, tmp_path):
    artifact, out = tiny_artifacts["fp32"].artifact_path, tmp_path / "out"
    driver = _driver(nodes, artifact, maps, out)
    _wait_for_pictures(out, 1, driver)
    nodes.kill_a_worker_node()
    said, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert said.count("lost; Ray reschedules its work") == 1 and err == "", said + err
    assert _written(out) == single["fp32"]
    record = _record_agrees_with_disk(out)
    assert [(r["state"], r["written"]) for r in record["runs"]] == [("finished", MAPS)]
    named = [p for p in record["written"] if "found" not in p]  # rows from the writing tasks
    assert named and all(len(p["node"]) == 56 and p["address"] == "127.0.0.1" for p in named)


def test_a_killed_driver_leaves_a_run_the_rerun_abandons_and_another_artifact_is_refused_until_overwrite(
        nodes, maps, tiny_artifacts, single, tmp_path):
    artifact, out = tiny_artifacts["fp32"].artifact_path, tmp_path / "out"
    driver = _driver(nodes, artifact, maps, out)
    _wait_for_pictures(out, 1, driver)
    driver.kill()
    driver.wait(60)
    left = _settled(out)
    killed = json.loads((out / "crn-run-record.json").read_text())["runs"][-1]
    assert killed["state"] == "running"

    rerun = _driver(nodes, artifact, maps, out)
    said, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"run {killed['run']} was still running" in said
    assert _written(out) == single["fp32"]
    record = _record_agrees_with_disk(out)
    assert [r["state"] for r in record["runs"]] == ["abandoned", "finished"]
    assert record["runs"][0]["written"] == len(left)
    assert {p["name"] for p in record["written"] if p["run"] == killed["run"]} == {
        str(p.relative_to(out))[:-4] for p in left}

    other = tiny_artifacts["fp16"].artifact_path
    refused = _driver(nodes, other, maps, out)
    said, err = refused.communicate(timeout=300)
    assert refused.returncode == 2 and len(err.splitlines()) == 1, said + err
    assert f"{MAPS} picture(s) of another artifact" in err and "--overwrite" in err
    assert _written(out) == single["fp32"]
    repainted = _driver(nodes, other, maps, out, "--overwrite")
    said, err = repainted.communicate(timeout=300)
    assert repainted.returncode == 0, err
    assert _written(out) == single["fp16"]
    record = _record_agrees_with_disk(out)
    assert {p["artifact_sha256"] for p in record["written"]} == {record["runs"][-1]["artifact_sha256"]}
    assert [(r["state"], r["written"]) for r in record["runs"]][-1] == ("finished", MAPS)


def test_a_cluster_that_refuses_the_driver_says_why_in_one_line(nodes, maps, tiny_artifacts, tmp_path):
    import ray

    artifact, out = tiny_artifacts["fp32"].artifact_path, tmp_path / "out"
    no_token = {k: v for k, v in nodes.env.items() if k != "RAY_AUTH_MODE"}
    no_token.update(HOME=str(tmp_path), RAY_NUM_REDIS_GET_RETRIES="3")  # Ray gives up after 3 tries, not 20
    older = ("-c", "import sys, ray; ray.__version__ = '2.0.0'; from crn_deploy.cli.run import main; "
                   "sys.exit(main(sys.argv[1:]))")
    for driver, words in ((_driver(nodes, artifact, maps, out, env=no_token), "requires token authentication"),
                          (_driver(nodes, artifact, maps, out, python=older),
                           f"the cluster runs Ray {ray.__version__}")):
        said, err = driver.communicate(timeout=300)
        assert driver.returncode == 2 and len(err.splitlines()) == 1, said + err
        assert f"--ray {nodes.address}" in err and words in err, err
    assert "this driver Ray 2.0.0" in err
    assert not _pictures(out)


def test_crn_serve_on_a_cluster_says_in_one_line_where_it_cannot_listen_and_leaves_no_serve_behind(
        nodes, tiny_artifacts):
    """On a cluster, Serve's proxy binds on the head node, so a port in use shows only when Serve starts: one line,
    and the Serve that start left half-made is taken down. Serve already running elsewhere keeps its address: a
    command asking for another is refused in one line, not told it serves where nothing listens."""
    import socket

    artifact = str(tiny_artifacts["fp32"].artifact_path)

    def crn_serve(port: int) -> tuple[int, str]:
        done = subprocess.run([sys.executable, "-m", "crn_deploy.cli.serve", artifact, "--port", str(port), "--ray",
                               nodes.address], env=nodes.env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stderr

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, err = crn_serve(taken.getsockname()[1])
        assert code == 2 and err.splitlines() == [
            f"crn-serve: error: Ray Serve's proxy cannot listen on 127.0.0.1:{taken.getsockname()[1]} (in use, or not "
            "an address of the node it runs on, the head node on a cluster): stop what holds the port there, or pick "
            "another --port or --host"], err
    assert _serve_on_cluster(nodes, "print(running() is None)") == "True"  # not left retrying its proxy
    elsewhere = free_port()
    try:
        _serve_on_cluster(nodes, f"serve.start(http_options={{'host': '127.0.0.1', 'port': {elsewhere}}})")
        code, err = crn_serve(free_port())
        assert code == 2 and err.splitlines() == [
            f"crn-serve: error: Ray Serve already runs on this Ray, listening on 127.0.0.1:{elsewhere}, and cannot "
            f"move while it runs: pass --host 127.0.0.1 --port {elsewhere}, or take it down first (`serve shutdown`, "
            "which ends all its applications)"], err
    finally:
        _serve_on_cluster(nodes, "serve.shutdown()")


def _serve_on_cluster(nodes: Nodes, code: str) -> str:
    """Run ``code`` in a driver of its own on the cluster, with ``serve`` and ``running()`` (the running Serve's
    client, or None); what it printed."""
    script = ("import ray; from ray import serve; from ray.serve.context import _get_global_client\n"
              "running = lambda: _get_global_client(raise_if_no_controller_running=False)\n"
              f"ray.init(address={nodes.address!r}, log_to_driver=False, configure_logging=False)\n{code}\n")
    done = subprocess.run([sys.executable, "-c", script], env=nodes.env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()
