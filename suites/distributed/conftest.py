"""Services for the tests of several processes and machines: a throwaway PostgreSQL server and a
two-node local Ray cluster.

Every service listens on loopback only. A test that needs a service which cannot be started here
is skipped, or fails when the service is named in ``MTLCHECK_REQUIRE_SERVICES`` (``postgresql``,
``ray``, comma-separated; CI sets it, where a skip would hide a missing service). The Ray cluster
starts only in a network namespace with loopback alone (Ray listens on every interface): outside
one its tests skip, and CI runs them again inside one.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest


def services_required(service: str) -> bool:
    return service in os.environ.get("MTLCHECK_REQUIRE_SERVICES", "").split(",")


def unavailable(reason: str, service: str):
    """Skip the test, or fail it where `service` is required."""
    if services_required(service):
        pytest.fail(f"{reason} (MTLCHECK_REQUIRE_SERVICES names {service})", pytrace=False)
    pytest.skip(reason)


def _need(module: str, service: str) -> None:
    try:
        __import__(module)
    except ImportError:
        unavailable(f"{module} is not installed (pip install 'mtlcheck[{service}]')", service)


def loopback_only() -> bool:
    """Whether this process runs in a network namespace whose only interface is loopback."""
    try:  # not /sys/class/net: that shows the namespace sysfs was mounted in, not this process's
        return {name for _, name in socket.if_nameindex()} == {"lo"}
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the system's postgres user."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        unavailable("running as root without runuser: cannot start PostgreSQL as another user", "postgresql")
    return [runuser, "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server of its own on 127.0.0.1 (trust authentication, user ``mtlcheck``);
    yields its base URL ``postgresql://mtlcheck@127.0.0.1:PORT``. Stopped after the session."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("PostgreSQL's server programs (initdb, pg_ctl) are not installed", "postgresql")
    _need("psycopg", "postgresql")
    root = Path(tempfile.mkdtemp(prefix="mtlcheck-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    os.chmod(root, 0o755)
    port = free_port()
    try:
        subprocess.run(
            _as_postgres_user([initdb, "-D", str(data), "-U", "mtlcheck", "-A", "trust", "--no-sync"]),
            check=True,
            capture_output=True,
            text=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(root, ignore_errors=True)
        unavailable(f"could not start PostgreSQL: {exc.stderr or exc.stdout}", "postgresql")
    try:
        yield f"postgresql://mtlcheck@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres_user([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's server (dropped after the test)."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield f"{postgres_server}/{name}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            break
        except psycopg.Error:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- Ray: a two-node local cluster ------------------------------------------------------------------
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",  # a token file a cluster leaves in ~/.ray would break the next one's nodes
    "RAY_USAGE_STATS_ENABLED": "0",
    # the head declares a node dead ~2 s after its raylet stops answering (default: ~30 s)
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


@dataclass
class RayCluster:
    """A head node and one worker node, each its own ``ray start --block`` process group."""

    address: str
    head: subprocess.Popen
    worker: subprocess.Popen
    worker_node_id: str
    hidden: Path | None  # the folder the worker node sees as an empty tmpfs (no shared filesystem)

    def hidden_from_worker(self) -> list[str]:
        """What the worker node sees in `hidden` (its own tmpfs), through its mount namespace."""
        assert self.hidden is not None
        return sorted(os.listdir(f"/proc/{self.worker.pid}/root{self.hidden}"))

    def kill_worker_node(self) -> None:
        """SIGKILL the worker node's raylet and everything else in its process group."""
        _kill_group(self.worker, signal.SIGKILL)

    def alive_nodes(self) -> set[str]:
        import ray

        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def _ray_start(args: list[str], log: Path, prefix: list[str] = ()) -> subprocess.Popen:
    ray_bin = shutil.which("ray")
    if ray_bin is None:
        unavailable("the `ray` command is not installed (pip install mtlcheck[ray])", "ray")
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*prefix, ray_bin, "start", *args, *common],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the node is killed as a whole
            env={**os.environ, **RAY_ENV},
        )


@pytest.fixture
def ray_cluster(monkeypatch):
    """A factory: ``ray_cluster(hide=None)`` starts a head node (1 CPU) and a worker node (1 CPU) on
    loopback, and returns a `RayCluster`. With `hide` (a folder), the worker node runs in its own
    mount namespace with an empty tmpfs over that folder: it shares no files there with the driver.
    Only in a loopback-only network namespace (Ray listens on every interface). Stopped after the
    test."""
    _need("ray", "ray")
    if not loopback_only():
        unavailable("Ray tests need a network namespace with loopback only (unshare -n; ip link set lo up)", "ray")
    for name, value in RAY_ENV.items():
        monkeypatch.setenv(name, value)  # the driver and the workers it starts
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    started: list[subprocess.Popen] = []
    temp = Path(tempfile.mkdtemp(prefix="mr-"))  # short: Ray's socket paths must fit in 107 bytes

    def start(hide: Path | None = None) -> RayCluster:
        import ray

        port = free_port()
        address = f"127.0.0.1:{port}"
        head = _ray_start(
            ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={temp}"], temp / "head.log"
        )
        started.append(head)
        prefix: list[str] = []
        if hide is not None:
            hide.mkdir(parents=True, exist_ok=True)
            mount = 'mount -t tmpfs hidden "$0" && exec "$@"'
            prefix = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, str(hide)]
        deadline = time.monotonic() + 60
        while not _listening(port):
            if head.poll() is not None or time.monotonic() > deadline:
                unavailable(f"the Ray head node did not start: {(temp / 'head.log').read_text()[-2000:]}", "ray")
            time.sleep(0.2)
        worker = _ray_start([f"--address={address}"], temp / "worker.log", prefix)
        started.append(worker)
        ray.init(address=address, configure_logging=False, log_to_driver=False)
        try:
            while len([n for n in ray.nodes() if n["Alive"]]) < 2:
                if worker.poll() is not None or time.monotonic() > deadline:
                    unavailable(
                        f"the Ray worker node did not start: {(temp / 'worker.log').read_text()[-2000:]}", "ray"
                    )
                time.sleep(0.2)
            head_id = ray.get_runtime_context().get_node_id()
            (worker_id,) = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["NodeID"] != head_id]
        finally:
            ray.shutdown()
        return RayCluster(address, head, worker, worker_id, hide)

    try:
        yield start
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for proc in reversed(started):  # the whole node: raylet, its workers, the head's services
            _kill_group(proc, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
