"""A Ray cluster of raylets on loopback for the fault tests, run as its own process (``python tests/ray_nodes.py
NODES``): it prints the head's address, then on SIGUSR1 kills its last worker node (SIGKILL, as a lost machine)
and starts a replacement, printing ``replaced``; on SIGTERM it ends every node. Nodes are declared dead after
about 1.5 s (Ray's default is about 15 s), so that a test sees a lost node quickly."""

import os
import signal
import sys
import threading

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before Ray's import: every node on 127.0.0.1

from ray.cluster_utils import Cluster  # noqa: E402

HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}


def main() -> None:
    nodes = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "_system_config": HEALTH_CHECKS})
    workers = [cluster.add_node(num_cpus=1) for _ in range(nodes - 1)]
    cluster.wait_for_nodes()
    print(cluster.address, flush=True)
    replace = threading.Event()
    done = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: replace.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    while not done.wait(0.1):
        if replace.is_set():
            replace.clear()
            cluster.remove_node(workers.pop(), allow_graceful=False)
            workers.append(cluster.add_node(num_cpus=1))
            print("replaced", flush=True)
    cluster.shutdown()


if __name__ == "__main__":
    main()
