"""The Ray Serve endpoint on a local Ray instance of its own: responses equal direct runtime calls, bad input gets a
4xx and the replica keeps serving, a replica killed mid-load is replaced without a silently lost request, clean
shutdown, simulator frames through a label mapping; crn-serve as a command (a port in use, SIGTERM); the replica
and the client without Ray. Bounded request counts."""

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from crn_deploy import runtime
from crn_deploy.cli.export import main as export_main
from crn_deploy.data.synthetic import cityscapes_scene

pytestmark = pytest.mark.slow  # a local Ray instance and Serve: a minute on 2 cores
ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[test]' (or the ray extra)")

from crn_deploy.scale import serve  # noqa: E402
from crn_deploy.errors import UsageError  # noqa: E402
from crn_deploy.scale.client import ServiceError, SynthesisClient  # noqa: E402

from .ports import free_port  # noqa: E402
from .ray_processes import actor_pids, listening, loopback  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """spade-tiny (label + instance maps) at 32x64, FP32 ONNX."""
    out = tmp_path_factory.mktemp("serve-engines")
    assert export_main(["--preset", "spade-tiny", "--random-weights", "--res", "32x64", "--precision", "fp32",
                        "--out", str(out), "--samples", "1"]) == 0
    return {"small": out / "spade-tiny-seed0-32x64-fp32.onnx"}


@pytest.fixture(scope="module")
def service(cluster, artifacts):
    options = serve.ServeOptions(port=free_port(), replicas=2, gpus_per_replica=0, max_batch=4, batch_wait_ms=20)
    url = serve.start(artifacts["small"], options, log=lambda line: None)
    client = SynthesisClient(url, timeout=60)
    deadline = time.time() + 120
    while not client.healthy() and time.time() < deadline:
        time.sleep(0.2)
    yield client
    serve.shutdown()


def test_responses_equal_direct_runtime_calls(service, artifacts):
    labels, instances = cityscapes_scene(32, 64, seed=7)
    with runtime.load(artifacts["small"], device="cpu") as synth:
        with_instances = synth(labels, instances=instances)
        without = synth(labels)
    assert np.array_equal(service.synthesize(labels, instances), with_instances)
    assert np.array_equal(service.synthesize(labels, raw=False), without)  # PNG in, PNG out
    colours = service.synthesize(synth.label_set.ids_to_colors(labels), raw=False)
    assert np.array_equal(colours, without)
    bigger = cv2.resize(labels, (128, 64), interpolation=cv2.INTER_NEAREST)
    with pytest.raises(ServiceError, match=r"400: the raw label map is 64x128; this endpoint's artifact takes 32x64"):
        service.synthesize(bigger)
    with pytest.raises(ServiceError, match=r"400: the label PNG is 64x128; this endpoint's artifact takes 32x64"):
        service.synthesize(bigger, raw=False)
    scenes = [cityscapes_scene(32, 64, seed=20 + i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:  # concurrent requests, batched by the replicas
        got = list(pool.map(lambda s: service.synthesize(*s), scenes))
    with runtime.load(artifacts["small"], device="cpu") as synth:
        assert all(np.array_equal(g, synth(s[0], instances=s[1])) for g, s in zip(got, scenes, strict=True))
    ready = service.ready()
    assert ready["status"] == "ready" and ready["inputs"] == ["labels", "instances"]


@pytest.mark.parametrize("body, headers, status, message", [
    (b"GIF89a....", {"Content-Type": "image/png"}, 400, "not a PNG"),
    (b"\x00" * 10, {"Content-Type": "application/x-crn-labels", "X-Shape": "4,4"}, 400, "needs 16"),
    (b"\x00" * 16, {"Content-Type": "application/x-crn-labels"}, 400, "X-Shape: H,W"),
    (b"{}", {"Content-Type": "application/json"}, 415, "Content-Type must be image/png"),
    (b"\x00" * (5 * 32 * 64 + (1 << 20) + 1), {"Content-Type": "application/x-crn-labels", "X-Shape": "32,64"}, 413,
     "over this endpoint's"),
])
def test_bad_input_gets_a_4xx_with_one_line_and_the_replica_keeps_serving(service, body, headers, status, message):
    with pytest.raises(ServiceError) as failed:
        service._request("/synthesize", body, headers)
    assert failed.value.status == status and message in str(failed.value) and "\n" not in str(failed.value)
    deep = np.zeros((32, 64), np.uint16)
    with pytest.raises(ServiceError, match="400: the label PNG has uint16 pixels"):
        service._request("/synthesize", cv2.imencode(".png", deep)[1].tobytes(), {"Content-Type": "image/png"})
    assert service.synthesize(cityscapes_scene(32, 64, seed=1)[0]).shape == (32, 64, 3)


def test_a_replica_killed_mid_load_is_replaced_and_no_request_is_lost_silently(service, artifacts):
    scenes = [cityscapes_scene(32, 64, seed=40 + i) for i in range(6)]
    with runtime.load(artifacts["small"], device="cpu") as synth:
        expected = [synth(s[0], instances=s[1]) for s in scenes]
    outcomes: list = []

    def one(i: int):
        try:
            picture = service.synthesize(*scenes[i % len(scenes)])
            outcomes.append("ok" if np.array_equal(picture, expected[i % len(scenes)]) else "WRONG")
        except ServiceError as e:  # an answered error is allowed; a wrong picture or a hang is not
            outcomes.append(f"error {e.status}")

    replicas = actor_pids(f"ServeReplica:{serve.ServeOptions.name}")
    assert len(replicas) == 2
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(one, i) for i in range(40)]
        time.sleep(0.3)
        os.kill(sorted(replicas)[0], signal.SIGKILL)
        for future in futures:
            future.result(timeout=120)
    assert len(outcomes) == 40 and "WRONG" not in outcomes
    assert outcomes.count("ok") >= 20
    deadline = time.time() + 120
    while len(actor_pids(f"ServeReplica:{serve.ServeOptions.name}")) < 2 and time.time() < deadline:
        time.sleep(0.5)
    after = actor_pids(f"ServeReplica:{serve.ServeOptions.name}")
    assert len(after) == 2 and sorted(replicas)[0] not in after  # replaced
    assert np.array_equal(service.synthesize(*scenes[0]), expected[0])


def test_shutdown_is_clean(cluster, service, artifacts):
    assert service.healthy()
    serve.shutdown()
    deadline = time.time() + 30
    while service.healthy() and time.time() < deadline:
        time.sleep(0.2)
    assert not service.healthy()
    assert not actor_pids(f"ServeReplica:{serve.ServeOptions.name}")


def test_serve_reads_simulator_frames_through_its_label_mapping(cluster, service, tiny_artifacts):
    """CARLA's raw frames (a PNG of the sensor's BGRA buffer, or the tags as raw ids), a Replicator frame with its
    labels (X-Frame-Labels) and CARLA's palette-converted frame of one scene: the train-id map's picture, byte for
    byte, from an endpoint started with --label-map (after the module's own endpoint was shut down)."""
    from crn_deploy.data.synthetic import street_layout

    from .simulator_frames import bgra, palette_of, replicator_frame, tags_of

    artifact = tiny_artifacts["fp32"].artifact_path
    scene = street_layout(64, 96, seed=6)
    tags = tags_of(scene)
    with runtime.load(artifact, device="cpu") as synth:
        expected = synth(scene)
    values, id_to_labels = replicator_frame(scene, seed=2, colorize=True)
    port = int(service.url.rsplit(":", 1)[1])  # Serve's proxy keeps the port it started on
    for label_map, requests in (
            ("carla", [(bgra(tags)[..., [2, 1, 0, 3]], {"raw": False}), (tags, {}),
                       (values, {"frame_labels": id_to_labels})]),
            ("carla-palette", [(palette_of(tags), {"raw": False})])):
        options = serve.ServeOptions(port=port, replicas=1, gpus_per_replica=0, label_map=label_map)
        client = SynthesisClient(serve.start(artifact, options, log=lambda line: None), timeout=60)
        try:
            deadline = time.time() + 120
            while not client.healthy() and time.time() < deadline:
                time.sleep(0.2)
            for labels, how in requests:
                assert np.array_equal(client.synthesize(labels, **how), expected), (label_map, how)
        finally:
            serve.shutdown()


def test_crn_serve_refuses_a_port_in_use_in_one_line_before_ray_starts(artifacts, capsys):
    import socket

    from crn_deploy.cli.serve import main as serve_main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert serve_main([str(artifacts["small"]), "--port", str(port)]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"crn-serve: error: cannot listen on 127.0.0.1:{port} (the port is in use): stop "
                                "what holds it, or pick another --port"]
    assert "Ray" not in out  # refused before Ray started: seconds sooner


def test_serve_started_again_in_a_process_whose_ray_was_restarted_listens_where_asked(artifacts):
    """A process that ends its Ray and starts another (the same job id in both) starts Serve anew on another port:
    what Serve left cached of the first instance is not taken for a Serve that still runs."""
    import subprocess
    import sys

    ports = [free_port(), free_port()]
    script = ("import sys, ray\nfrom crn_deploy.scale import serve\n"
              "for port in map(int, sys.argv[2:]):\n"
              "    ray.init(address='local', num_cpus=1, include_dashboard=False, log_to_driver=False,\n"
              "             configure_logging=False)\n"
              "    options = serve.ServeOptions(port=port, replicas=1, gpus_per_replica=0)\n"
              "    print(serve.start(sys.argv[1], options, log=lambda line: None), flush=True)\n"
              "    serve.shutdown()\n    ray.shutdown()\n")
    done = subprocess.run([sys.executable, "-c", script, str(artifacts["small"]), *map(str, ports)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [f"http://127.0.0.1:{port}" for port in ports]


def test_crn_serve_serves_until_sigterm_then_shuts_down(artifacts, tmp_path):
    import subprocess
    import sys

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "crn_deploy.cli.serve", str(artifacts["small"]), "--port",
                                str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = SynthesisClient(f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if client.ready()["status"] == "ready":
                    break
            except (ServiceError, OSError):
                time.sleep(0.3)
        labels, instances = cityscapes_scene(32, 64, seed=3)
        assert client.synthesize(labels, instances).shape == (32, 64, 3)
        sockets = listening(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    assert process.returncode == 143, err[-2000:]
    assert "stopping" in out  # shut down, not aborted
    assert not client.healthy()
    assert ("127.0.0.1", port) in {(ip, p) for _, ip, p in sockets}
    # A service bound to 127.0.0.1 on a local Ray opens nothing else: every Ray process listens on loopback, but
    # for Ray Serve 2.60's replicas' inter-deployment gRPC port, which Serve binds to [::] with no option to change
    assert [s for s in sockets if not loopback(s[1]) and not s[0].startswith("ray::ServeReplica")] == []
    assert err == "" and all(line.startswith(("crn-serve: ", "Ray ")) for line in out.splitlines()), out  # no noise


def test_a_replica_says_it_is_not_ready_while_it_holds_its_limit(artifacts):
    replica = serve.Replica(str(artifacts["small"]), "cpu", 1, max_in_hand=2)
    assert replica.ready() and replica.max_body_bytes == serve.body_cap(32, 64)
    replica.in_hand = 2
    assert not replica.ready()
    with pytest.raises(UsageError, match="is 16x16; this endpoint's artifact takes 32x64"):
        replica.decode("image/png", {}, cv2.imencode(".png", np.zeros((16, 16), np.uint8))[1].tobytes())
    assert serve.png_size(cv2.imencode(".png", np.zeros((7, 9), np.uint8))[1].tobytes()) == (7, 9)


def test_the_client_retries_what_failed_for_want_of_a_replica_and_never_bad_input():
    """A stand-in endpoint on loopback: two 503s (a replica being replaced), then an answer; a 400 at once."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            calls.append(self.path)
            status = 400 if self.headers.get("X-Shape") == "1,1" else 503 if len(calls) <= 2 else 200
            body = np.zeros((2, 2, 3), np.uint8).tobytes() if status == 200 else b"no replica"
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("X-Shape", "2,2,3")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = SynthesisClient(f"http://127.0.0.1:{server.server_port}", timeout=5, retries=3, backoff_s=0.01)
        assert client.synthesize(np.zeros((2, 2), np.uint8)).shape == (2, 2, 3) and len(calls) == 3
        with pytest.raises(ServiceError, match="400"):
            client.synthesize(np.zeros((1, 1), np.uint8))
        assert len(calls) == 4  # a 4xx is not retried
        few = SynthesisClient(client.url, timeout=5, retries=0)
        calls.clear()
        with pytest.raises(ServiceError, match="503"):
            few.synthesize(np.zeros((2, 2), np.uint8))
    finally:
        server.shutdown()
