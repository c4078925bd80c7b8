"""A replicated Redis of a test's own: a primary, one replica and three sentinels on free loopback ports.

Used by the failover test and `benchmarks/failover.py`. Quorum 2, a primary is judged down after
`down_after_ms` and failed over within `failover_timeout_ms`; nothing is persisted. Every process is
stopped by `stop()` (the context manager calls it, whatever happened).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import redis

MASTER_NAME = "trigger-primary"


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `check` until it holds; `RuntimeError` naming `what` when it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} within {timeout:g}s")


class SentinelGroup:
    """The five `redis-server` processes, and the sentinel URL that reaches whichever one is primary."""

    def __init__(self, workdir: Path, down_after_ms: int = 1000, failover_timeout_ms: int = 3000) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("the failover test needs redis-server on PATH")
        self.binary, self.workdir = binary, workdir
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        """`TRIGGER_REDIS_URL` for this group (db 0, master name in the query)."""
        parts = [f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports]
        return ";".join(parts) + f"?master_name={MASTER_NAME}"

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Primary, then its replica in sync, then three sentinels that see both and each other."""
        self._server("primary", self.primary_port)
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.primary_port))
        wait_for(lambda: self._in_sync(self.replica_port), 10, "the replica did not sync with the primary")
        for number, port in enumerate(self.sentinel_ports):
            self._sentinel(number, port)
        wait_for(self._sentinels_ready, 20, "the sentinels did not find the replica and each other")

    def primary_port_now(self) -> int:
        """The port the sentinels name as primary at this moment (the first that answers)."""
        for port in self.sentinel_ports:
            try:
                return self._named_primary(port)
            except (redis.RedisError, OSError, TypeError):
                continue
        raise RuntimeError("no sentinel answers")

    def kill_primary(self) -> None:
        """SIGKILL the current primary: no shutdown, no last write to its replica."""
        port = self.primary_port_now()
        name = "primary" if port == self.primary_port else "replica"
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.killed = (name, port)

    def pause_replica(self) -> None:
        """SIGSTOP the replica: it reads nothing more, as a replica fallen behind (a stall, a slow link)."""
        self._replica_process().send_signal(signal.SIGSTOP)

    def resume_replica(self) -> None:
        """SIGCONT the replica: it applies what reached it before the primary died, and can be promoted."""
        self._replica_process().send_signal(signal.SIGCONT)

    def _replica_process(self) -> subprocess.Popen[bytes]:
        return self.processes["replica" if self.primary_port_now() == self.primary_port else "primary"]

    def restart_killed_as_replica(self) -> None:
        """Start the killed server again, empty, as the replica of the new primary (what Sentinel would make it)."""
        assert self.killed is not None, "nothing was killed"
        name, port = self.killed
        primary = self.primary_port_now()
        self._server(name, port, "--replicaof", "127.0.0.1", str(primary))
        wait_for(lambda: self._in_sync(port), 10, f"the restarted {name} did not sync with the new primary")
        self.killed = None

    def wait_for_failover(self, timeout: float = 30) -> int:
        """Block until every sentinel names the same new primary and it says it is one; its port."""

        def promoted() -> bool:
            named = {self._named_primary(port) for port in self.sentinel_ports}
            return len(named) == 1 and named != {killed} and self._role(named.pop()) == "master"

        killed = self.killed[1] if self.killed else None
        wait_for(promoted, timeout, "the sentinels did not promote the replica")
        return self.primary_port_now()

    def stop(self) -> None:
        """Kill every process of the group (SIGKILL: nothing here is worth a clean shutdown)."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)  # a paused process dies of SIGKILL too; this keeps it simple
                process.kill()
        for process in self.processes.values():
            process.wait(timeout=10)

    def _server(self, name: str, port: int, *extra: str) -> None:
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        options += ["--dir", str(self.workdir), "--logfile", str(self.workdir / f"{name}.log"), *extra]
        self.processes[name] = subprocess.Popen([self.binary, *options], stdout=subprocess.DEVNULL)
        wait_for(lambda: bool(redis.Redis(port=port, socket_timeout=1).ping()), 10, f"the {name} did not answer")

    def _sentinel(self, number: int, port: int) -> None:
        config = self.workdir / f"sentinel-{number}.conf"
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {self.workdir}\nlogfile {self.workdir / f'sentinel-{number}.log'}\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER_NAME} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER_NAME} 1\n"
        )
        self.processes[f"sentinel-{number}"] = subprocess.Popen(
            [self.binary, str(config), "--sentinel"], stdout=subprocess.DEVNULL
        )

    def _in_sync(self, port: int) -> bool:
        info = redis.Redis(port=port, socket_timeout=1).info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for port in self.sentinel_ports:
            master = self._client(port).sentinel_master(MASTER_NAME)
            if master.get("num-slaves") != 1 or master.get("num-other-sentinels") != 2:
                return False
        return True

    def _named_primary(self, sentinel_port: int) -> int:
        return int(self._client(sentinel_port).sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def _role(self, port: int) -> str:
        return str(self._client(port).role()[0])

    def _client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1, decode_responses=True)
