"""A real Ray cluster for the tests, and the processes it runs: a head node started with `ray start --head --block`
(2 CPUs, no dashboard, its own ports and temp folder), stopped by interrupting that one process, and checks that
nothing a test started is left running. Processes are found through /proc, by parent or by an environment
marker the test sets, so that only the test's own processes are ever looked at or signalled."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field

RAY = os.path.join(os.path.dirname(sys.executable), "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_env(**extra: str) -> dict[str, str]:
    """The environment of a Ray process in the tests: no token authentication, no usage stats, and a marker that
    every process it starts inherits."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
            "PENGI_TEST_MARKER": uuid.uuid4().hex, **extra}


def parents() -> dict[int, int]:
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    found[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return found


def descendants(pid: int) -> list[int]:
    tree = parents()
    children: dict[int, list[int]] = {}
    for child, parent in tree.items():
        children.setdefault(parent, []).append(child)
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def command_line(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def marked(marker: str) -> list[int]:
    """The live processes whose environment carries ``marker`` (the test's own, and what they started)."""
    found = []
    needle = f"PENGI_TEST_MARKER={marker}".encode()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if needle in f.read().split(b"\0") and alive(int(name)):
                        found.append(int(name))
            except OSError:
                continue
    return found


def model_workers(pid: int, besides: tuple[int, ...] = ()) -> list[int]:
    """The Ray actors holding the model among the processes under ``pid``, other than ``besides`` (those of an
    earlier run, which Ray may still be stopping)."""
    return [p for p in descendants(pid) if command_line(p).startswith("ray::MapWorker(MapBatches(ModelWorker))")
            and alive(p) and p not in besides]


@dataclass
class Cluster:
    address: str
    process: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)

    def stop(self) -> list[int]:
        """Stop the head node (Ctrl-C, as `ray start --block` expects); the processes of the cluster still running
        30 s later (then killed)."""
        started = descendants(self.process.pid)
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        deadline = time.time() + 30
        left = [p for p in started if alive(p)]
        while left and time.time() < deadline:
            time.sleep(0.5)
            left = [p for p in left if alive(p)]
        for pid in left + marked(self.env["PENGI_TEST_MARKER"]):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return left


def start_cluster(timeout: float = 180) -> Cluster:
    """A head node with 2 CPUs on 127.0.0.1, its own GCS and client ports and temp folder."""
    port = free_port()
    env = ray_env()
    temp = tempfile.mkdtemp(prefix="pray", dir="/tmp")  # short: Ray's socket paths have a length limit
    log = open(os.path.join(temp, "head.log"), "w")
    process = subprocess.Popen([RAY, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0",
                                "--include-dashboard=false", "--disable-usage-stats", "--port", str(port),
                                "--ray-client-server-port", str(free_port()), "--node-ip-address", "127.0.0.1",
                                "--temp-dir", temp], stdout=log, stderr=subprocess.STDOUT, env=env)
    cluster = Cluster(f"127.0.0.1:{port}", process, env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start failed: {open(log.name).read()[-2000:]}")
        if "Ray runtime started" in open(log.name).read():
            return cluster
        time.sleep(0.5)
    cluster.stop()
    raise RuntimeError(f"ray start did not come up in {timeout} s: {open(log.name).read()[-2000:]}")
