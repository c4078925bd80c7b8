"""`docker compose up` without Docker: each service of docker-compose.yml as a local process.

The services are read from `docker-compose config` (so variables are interpolated by compose itself)
and started as compose would, in `depends_on` order, each waiting for its service's own healthcheck.
What a container would give a service is given locally, explicitly:

- its own PID and mount namespace (`unshare`): its command runs as PID 1 with its own /proc, as in a
  container, and its healthcheck runs inside the same namespaces (`nsenter`), as `docker exec` would;
- its own free loopback port for each port it listens on (`ports:` targets, `expose:`), so nothing
  collides with the machine's Redis or another test; `<service>:<port>` in another service's
  settings, and `127.0.0.1:<port>` or a bare `<port>` in its own, become that local port;
- one filesystem root for the stack: a mount target `/x` is `<root>/x`, a link to the named volume's
  directory or to the bind mount's source;
- the image's environment (our Dockerfile's `ENV`s; the ZenML server image's, written out below).

Services whose image is not here are replaced, narrowly: `redis` by the local `redis-server` with the
service's own flags, `mysql` by the machine's MariaDB (a fresh database and user per stack, with the
service's password; dropped at the end), `zenml` by the installed ZenML server started the way its
image starts it. Only the services without a `profiles:` key start (the default profile).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.tools import tool

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
MARIADB = ("127.0.0.1", 3306)

# zenmldocker/zenml-server (ZenML's docker/base.Dockerfile, `server` stage): its ENV, WORKDIR and CMD.
ZENML_IMAGE_ENV = {
    "PYTHONUNBUFFERED": "1",
    "PYTHONFAULTHANDLER": "1",
    "ZENML_CONTAINER": "1",
    "ZENML_CONFIG_PATH": "/zenml/.zenconfig",
    "ZENML_DEBUG": "false",
    "ZENML_ANALYTICS_OPT_IN": "true",
}
ZENML_IMAGE_WORKDIR = "/zenml"
ZENML_IMAGE_COMMAND = [
    "uvicorn", "zenml.zen_server.zen_server_api:app", "--no-server-header", "--proxy-headers",
    "--forwarded-allow-ips", "*", "--port", "8080", "--host", "0.0.0.0",
]  # fmt: skip
REDIS_IMAGE_WORKDIR = "/data"
OUR_IMAGE_WORKDIR = REPO  # /app in the image: the same files (pyproject.toml, README.md, the packages)


class StackError(AssertionError):
    """The stack did not come up as compose would bring it up; the message has the logs."""


def compose_config(project: Path, env_file: Path) -> dict[str, Any]:
    """`docker-compose config` of the project with `env_file` as its .env, `$$` unescaped as compose runs it."""
    command = [tool("docker-compose"), "--project-directory", str(project), "--env-file", str(env_file)]
    result = subprocess.run(
        [*command, "-f", str(project / "docker-compose.yml"), "config"], capture_output=True, text=True, timeout=60
    )
    if result.returncode != 0:
        raise StackError(f"docker-compose config failed:\n{result.stderr}")
    return unescaped(yaml.safe_load(result.stdout))


def unescaped(value: Any) -> Any:
    """The config with compose's `$$` escapes turned back into the `$` the container sees."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, list):
        return [unescaped(item) for item in value]
    if isinstance(value, dict):
        return {key: unescaped(item) for key, item in value.items()}
    return value


def dockerfile_env(path: Path) -> dict[str, str]:
    """The `ENV` instructions of a Dockerfile (continuation lines joined, comment lines inside skipped)."""
    env: dict[str, str] = {}
    for instruction in _instructions(path.read_text()):
        if instruction.upper().startswith("ENV "):
            for part in shlex.split(instruction[4:]):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def _instructions(text: str) -> Iterator[str]:
    """Each instruction of a Dockerfile on one line."""
    current = ""
    for line in text.splitlines():
        if line.strip().startswith("#"):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            if current.strip():
                yield current.strip()
            current = ""


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def duration(text: str | None, default: float) -> float:
    """Seconds of a compose duration (`10s`, `1m30s`, `500ms`)."""
    if not text:
        return default
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(ms|h|m|s)", text))


def container_ports(spec: Mapping[str, Any]) -> list[int]:
    """The ports a service listens on inside its container: its `ports:` targets and its `expose:`."""
    published = [int(entry["target"]) for entry in spec.get("ports", [])]
    return sorted({*published, *(int(str(port).split("/")[0]) for port in spec.get("expose", []))})


@dataclass(frozen=True)
class Rewrite:
    """How one service's strings read on this machine: hosts, ports and container paths made local."""

    own_ports: Mapping[int, int]
    """This service's container port -> its local port."""
    peers: Mapping[str, str]
    """`<service>:<port>` (and the MySQL URL's `user:password@mysql:3306/db`) -> its local address."""
    paths: Mapping[str, str]
    """A container path -> the local path standing for it."""

    def text(self, value: str) -> str:
        """One string (an argument, an environment value, a shell line) as it reads here."""
        if value.isdigit() and int(value) in self.own_ports:
            return str(self.own_ports[int(value)])
        for before in sorted(self.peers, key=len, reverse=True):
            value = _replace(rf"(?<![\w.-]){re.escape(before)}(?!\d)", self.peers[before], value)
        for port, local in self.own_ports.items():
            value = _replace(rf"\b(?:127\.0\.0\.1|localhost|0\.0\.0\.0):{port}\b", f"127.0.0.1:{local}", value)
        value = value.replace("0.0.0.0", "127.0.0.1")
        for before in sorted(self.paths, key=len, reverse=True):
            value = _replace(rf"(?<![\w/.-]){re.escape(before)}(?=$|[/\s\"':)])", self.paths[before], value)
        return value

    def argv(self, values: Iterable[str]) -> list[str]:
        return [self.text(value) for value in values]

    def env(self, values: Mapping[str, Any]) -> dict[str, str]:
        return {name: self.text("" if value is None else str(value)) for name, value in values.items()}


def _replace(pattern: str, replacement: str, value: str) -> str:
    """`re.sub` with a literal replacement (a password may hold backslashes)."""
    return re.sub(pattern, lambda _: replacement, value)


@dataclass
class MySQLStandIn:
    """The `mysql` service as a fresh database and user on the machine's MariaDB (the image's job: it
    creates MYSQL_DATABASE and MYSQL_USER with MYSQL_PASSWORD on first start)."""

    environment: Mapping[str, str]
    suffix: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def database(self) -> str:
        return f"compose_smoke_{self.suffix}"

    @property
    def user(self) -> str:
        return f"compose_smoke_{self.suffix}"

    def peers(self) -> dict[str, str]:
        """The service's own URL (its user, password and database) -> the stand-in's; then the bare host."""
        env, (host, port) = self.environment, MARIADB
        password = env["MYSQL_PASSWORD"]
        before = f"{env['MYSQL_USER']}:{password}@mysql:3306/{env['MYSQL_DATABASE']}"
        return {before: f"{self.user}:{password}@{host}:{port}/{self.database}", "mysql:3306": f"{host}:{port}"}

    def create(self) -> None:
        password = self.environment["MYSQL_PASSWORD"].replace("'", "''")
        self._sql(
            f"CREATE DATABASE `{self.database}`; CREATE USER '{self.user}'@'%' IDENTIFIED BY '{password}';"
            f" GRANT ALL ON `{self.database}`.* TO '{self.user}'@'%';"
        )

    def drop(self) -> None:
        self._sql(f"DROP DATABASE IF EXISTS `{self.database}`; DROP USER IF EXISTS '{self.user}'@'%';")

    def _sql(self, statements: str) -> None:
        host, port = MARIADB
        command = ["mysql", "-h", host, "-P", str(port), "-u", "root", "-e", statements]
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise StackError(f"MariaDB at {host}:{port} (root, no password) refused: {result.stderr}")


@dataclass
class Service:
    """One service: what it runs here, and its process once started."""

    name: str
    spec: dict[str, Any]
    argv: list[str] | None
    """The command; None for a stand-in that needs no process (mysql)."""
    env: dict[str, str]
    cwd: Path
    healthcheck: list[str] | None
    log: Path
    mounts: list[Mount] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    state: str = "pending"
    """pending -> started -> healthy | completed."""
    next_probe: float = 0.0

    @property
    def one_shot(self) -> bool:
        return self.spec.get("restart") == "no"

    def namespace_pid(self) -> int:
        """The host pid of the service's PID 1 (the child `unshare --fork` made)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
            time.sleep(0.05)
        raise StackError(f"{self.name}: its namespace has no PID 1")

    def tail(self, size: int = 3000) -> str:
        return f"--- {self.name} ({self.state}) ---\n" + self.log.read_text(errors="replace")[-size:]


def volume_mount(volume: str | Mapping[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read-only) of a volume entry, short (`source:target[:mode]`) or long syntax; a
    named volume's source is its name, a bind mount's an absolute path (config resolves relative ones)."""
    if isinstance(volume, str):
        source, target, *mode = volume.split(":")
        return source, target, "ro" in mode
    return volume["source"], volume["target"], bool(volume.get("read_only"))


@dataclass(frozen=True)
class Mount:
    """A volume as a bind mount inside the service's mount namespace, as Docker mounts it."""

    source: Path
    target: Path
    read_only: bool

    def shell(self) -> str:
        target = shlex.quote(str(self.target))
        bind = f"mount --bind {shlex.quote(str(self.source))} {target}"
        return f"{bind} && mount -o remount,bind,ro {target}" if self.read_only else bind


def container_argv(argv: list[str], mounts: list[Mount], workdir: Path) -> list[str]:
    """Mount the volumes, enter the workdir, exec the command (so it is the namespace's PID 1)."""
    steps = [mount.shell() for mount in sorted(mounts, key=lambda mount: len(mount.target.parts))]
    script = " && ".join([*steps, f"cd {shlex.quote(str(workdir))}", 'exec "$@"'])
    return ["sh", "-c", script, "sh", *argv]


def healthcheck_argv(spec: Mapping[str, Any]) -> list[str] | None:
    """The healthcheck's `test:` as an argv (CMD-SHELL through sh); None when it has none or is disabled."""
    test = spec.get("healthcheck", {}).get("test")
    if not test or test[0] == "NONE" or spec.get("healthcheck", {}).get("disable"):
        return None
    if test[0] == "CMD-SHELL":
        return ["sh", "-c", test[1]]
    return list(test[1:]) if test[0] == "CMD" else ["sh", "-c", " ".join(test)]


def command_argv(command: Any) -> list[str]:
    """A compose `command:` as an argv (a string is split as compose splits it, without a shell)."""
    return shlex.split(command) if isinstance(command, str) else list(command)


@dataclass
class LocalStack:
    """The stack of one compose config, started as local processes under `workdir`."""

    config: dict[str, Any]
    workdir: Path
    image_env: dict[str, str]
    """The environment our Dockerfile's ENVs give every service built from it."""
    services: dict[str, Service] = field(default_factory=dict)
    ports: dict[str, dict[int, int]] = field(default_factory=dict)
    mysql: MySQLStandIn | None = None

    @property
    def root(self) -> Path:
        return self.workdir / "root"

    def specs(self) -> dict[str, dict[str, Any]]:
        """The default profile's services."""
        return {name: spec for name, spec in self.config["services"].items() if not spec.get("profiles")}

    def local_port(self, service: str, container_port: int) -> int:
        return self.ports[service][container_port]

    def prepare(self) -> None:
        """Ports, volumes and the MySQL stand-in allocated; every service's argv, env and healthcheck made local."""
        self.root.mkdir(parents=True)
        specs = self.specs()
        self.ports = {name: {port: free_port() for port in container_ports(spec)} for name, spec in specs.items()}
        if "mysql" in specs:
            self.mysql = MySQLStandIn(specs["mysql"].get("environment", {}))
        for name, spec in specs.items():
            self.services[name] = self._service(name, spec)
            self.services[name].mounts = self._mounts(spec)

    def _peers(self) -> dict[str, str]:
        pairs = ((name, port, local) for name, ports in self.ports.items() for port, local in ports.items())
        peers = {f"{name}:{port}": f"127.0.0.1:{local}" for name, port, local in pairs}
        return {**peers, **(self.mysql.peers() if self.mysql else {})}

    def _mounts(self, spec: Mapping[str, Any]) -> list[Mount]:
        """The service's volumes: a named one is a directory of the stack's, mounted at `<root>/<target>`."""
        mounts = []
        for source, target, read_only in map(volume_mount, spec.get("volumes", [])):
            local = Path(source) if source.startswith("/") else self.workdir / "volumes" / source
            if not source.startswith("/"):
                local.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(local, self._mountpoint(target, local.is_dir()), read_only))
        return mounts

    def _mountpoint(self, target: str, directory: bool) -> Path:
        """`<root>/<target>`, made a directory or an empty file (what a bind mount needs to land on)."""
        mountpoint = self.root / target.lstrip("/")
        mountpoint.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            mountpoint.mkdir(exist_ok=True)
        else:
            mountpoint.touch()
        return mountpoint

    def _rewrite(self, name: str, spec: Mapping[str, Any], image_paths: Iterable[str]) -> Rewrite:
        targets = [volume_mount(volume)[1] for volume in spec.get("volumes", [])]
        paths = {path: str(self.root / path.lstrip("/")) for path in [*targets, *image_paths]}
        return Rewrite(own_ports=self.ports[name], peers=self._peers(), paths=paths)

    def _service(self, name: str, spec: dict[str, Any]) -> Service:
        """What the service runs here: a stand-in for an image we do not have, else its own command."""
        base = {"PATH": f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin", "HOME": str(self._home(name)), "LANG": "C.UTF-8"}
        if "build" in spec:
            return self._our_image(name, spec, base)
        if name == "redis":
            return self._redis(spec, base)
        if name == "mysql":
            return self._service_from(name, spec, None, base, Path(self.workdir), self._rewrite(name, spec, []))
        if name == "zenml":
            return self._zenml(spec, base)
        raise StackError(f"service {name!r}: image {spec.get('image')} has no local stand-in")

    def _home(self, name: str) -> Path:
        """Each container has a home of its own (ZenML keeps its client config there)."""
        home = self.workdir / "homes" / name
        home.mkdir(parents=True, exist_ok=True)
        return home

    def _our_image(self, name: str, spec: dict[str, Any], base: dict[str, str]) -> Service:
        rewrite = self._rewrite(name, spec, [])
        env = {**base, **self.image_env, "PYTHONPATH": str(REPO)}
        return self._service_from(name, spec, command_argv(spec["command"]), env, OUR_IMAGE_WORKDIR, rewrite)

    def _redis(self, spec: dict[str, Any], base: dict[str, str]) -> Service:
        """The local redis-server with the service's flags, on its local port; redis-cli asks that port."""
        rewrite = self._rewrite("redis", spec, [REDIS_IMAGE_WORKDIR])
        port = str(self.local_port("redis", 6379))
        workdir = Path(rewrite.text(REDIS_IMAGE_WORKDIR))
        service = self._service_from("redis", spec, command_argv(spec["command"]), base, workdir, rewrite)
        assert service.argv is not None and service.argv[0] == "redis-server", service.argv
        service.argv += ["--port", port, "--bind", "127.0.0.1"]
        if service.healthcheck and service.healthcheck[0] == "redis-cli":
            service.healthcheck[1:1] = ["-p", port]
        return service

    def _zenml(self, spec: dict[str, Any], base: dict[str, str]) -> Service:
        """The installed ZenML server, started the way the zenml-server image starts it."""
        rewrite = self._rewrite("zenml", spec, [ZENML_IMAGE_WORKDIR])
        workdir = Path(rewrite.text(ZENML_IMAGE_WORKDIR))
        (workdir / ".zenconfig").mkdir(parents=True, exist_ok=True)
        env = {**base, **ZENML_IMAGE_ENV}
        return self._service_from("zenml", spec, spec.get("command") or ZENML_IMAGE_COMMAND, env, workdir, rewrite)

    def _service_from(
        self, name: str, spec: dict[str, Any], argv: list[str] | None, env: dict[str, str], cwd: Path, rewrite: Rewrite
    ) -> Service:
        environment = rewrite.env({**env, **spec.get("environment", {})})
        check = healthcheck_argv(spec)
        return Service(
            name=name,
            spec=spec,
            argv=rewrite.argv(argv) if argv is not None else None,
            env=environment,
            cwd=cwd,
            healthcheck=rewrite.argv(check) if check else None,
            log=self.workdir / f"{name}.log",
        )

    # --- running -------------------------------------------------------------------------------

    def up(self, timeout: float) -> None:
        """Start every service once what it depends on is met; return when all are healthy or done."""
        if self.mysql is not None:
            self.mysql.create()
        deadline = time.monotonic() + timeout
        while not all(service.state in {"healthy", "completed"} for service in self.services.values()):
            if time.monotonic() > deadline:
                raise StackError(f"the stack was not up within {timeout:g} s:\n{self.logs()}")
            for service in self.startable():
                self.start(service)
            self.advance()
            time.sleep(0.5)

    def startable(self) -> list[Service]:
        """Pending services whose every `depends_on` condition is met."""
        return [s for s in self.services.values() if s.state == "pending" and self._dependencies_met(s)]

    def _dependencies_met(self, service: Service) -> bool:
        wanted = {"service_healthy": {"healthy"}, "service_completed_successfully": {"completed"}}
        for needed, rule in service.spec.get("depends_on", {}).items():
            accepted = wanted.get(rule["condition"], {"started", "healthy", "completed"})
            if self.services[needed].state not in accepted:
                return False
        return True

    def start(self, service: Service) -> None:
        """Its command as PID 1 of its own PID and mount namespace, in a process group of its own."""
        service.state = "started"
        if service.argv is None:
            return
        namespaces = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--"]
        command = [*namespaces, *container_argv(service.argv, service.mounts, service.cwd)]
        with open(service.log, "ab") as log:
            service.process = subprocess.Popen(
                command, env=service.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def advance(self) -> None:
        """Started services become healthy (their check passed) or completed (a one-shot exited 0)."""
        for service in self.services.values():
            if service.state != "started":
                continue
            self._check_alive(service)
            if service.one_shot:
                service.state = "completed" if service.process and service.process.poll() == 0 else "started"
            elif service.healthcheck is None or self._probe(service):
                service.state = "healthy"

    def _probe(self, service: Service, every: float = 2.0) -> bool:
        """The healthcheck, at most every `every` seconds (each run starts a process)."""
        if time.monotonic() < service.next_probe:
            return False
        service.next_probe = time.monotonic() + every
        return self.healthy(service)

    def _check_alive(self, service: Service) -> None:
        code = service.process.poll() if service.process else None
        if code is not None and (code != 0 or not service.one_shot):
            raise StackError(f"{service.name} exited with {code}:\n{self.logs()}")

    def healthy(self, service: Service) -> bool:
        """The service's own healthcheck, run inside its namespaces with its environment, passes."""
        timeout = duration(service.spec.get("healthcheck", {}).get("timeout"), 30.0)
        command = [*self._inside(service), *(service.healthcheck or [])]
        try:
            result = subprocess.run(command, env=service.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        service_log_note(service, result)
        return result.returncode == 0

    def _inside(self, service: Service) -> list[str]:
        """`nsenter` into the service's namespaces and workdir, as `docker exec` runs a healthcheck."""
        if service.process is None:
            return []
        target = str(service.namespace_pid())
        return ["nsenter", "--target", target, "--pid", "--mount", f"--wd={service.cwd}", "--"]

    def assert_running(self) -> None:
        """Every long-running service is still running."""
        for service in self.services.values():
            if service.process is not None:
                self._check_alive(service)

    def logs(self) -> str:
        return "\n".join(service.tail() for service in self.services.values() if service.log.exists())

    def down(self, grace: float = 15.0) -> None:
        """SIGTERM every process group, SIGKILL what is left after `grace` seconds; drop the MySQL stand-in."""
        started = [service.process for service in self.services.values() if service.process is not None]
        for process in started:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(process, signal.SIGKILL)
            process.wait()
        if self.mysql is not None:
            self.mysql.drop()


def service_log_note(service: Service, result: subprocess.CompletedProcess[bytes]) -> None:
    """A failing healthcheck's output goes to the service's log, so a test failure shows why."""
    if result.returncode != 0:
        with open(service.log, "ab") as log:
            log.write(b"[healthcheck failed] " + result.stdout[-500:] + result.stderr[-1000:] + b"\n")


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the process's whole group (its namespace's processes included); gone already is fine."""
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass
