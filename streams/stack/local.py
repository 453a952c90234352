"""The embedded local stack behind `streamfer up` / `streamfer down`.

A real single-node Apache Kafka 4 broker (KRaft: broker and controller in one JVM) and a
redis-server, both bound to 127.0.0.1 and run as detached background processes. All their
state (data, logs, pid files, `stack.json`) lives under one home directory, and `down()`
stops exactly the processes that home started, so a developer or a CI job gets the same
services the pipeline uses in production without Docker.

Kafka's jars come from `$KAFKA_HOME/libs` when set, otherwise Maven fetches them once into
`${XDG_CACHE_HOME:-~/.cache}/streamfer/kafka-<version>/libs` (see `streams/kafka/pom.xml`).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

DEFAULT_KAFKA_VERSION = "4.1.1"
MIN_JAVA_MAJOR = 17
LOCALHOST = "127.0.0.1"
READY_TOPIC = "__streamfer_ready"

# A small heap and the JVM flags of Kafka's own start scripts: enough for a dev node on a
# 2-core machine, and it leaves memory for the workers and the model.
KAFKA_JVM_OPTS = (
    "-Xms256m",
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
KAFKA_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"

_LOG_TAIL_LINES = 20
_MVN_TIMEOUT_S = 900.0
_ANSI_RE = re.compile(r"\x1b\[[0-9;]*m")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:[.-][0-9A-Za-z.-]+)?$")


class StackError(Exception):
    """A user-facing failure of the local stack: names what is wrong and how to fix it."""


def _parse_port(name: str, raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise StackError(f"{name}={raw!r} is not a port number: set it to an integer 1-65535")
    return port


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state, the ports it listens on and the Kafka it runs."""

    home: Path = Path(".streamfer")
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_home: Path | None = None
    kafka_version: str = DEFAULT_KAFKA_VERSION

    def __post_init__(self) -> None:
        ports = {
            "kafka_port": self.kafka_port,
            "controller_port": self.controller_port,
            "redis_port": self.redis_port,
        }
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise StackError(f"{name}={port} is not a port number (1-65535)")
        if len(set(ports.values())) != len(ports):
            raise StackError(f"the stack's ports must differ, got {ports}")
        match = _VERSION_RE.match(self.kafka_version)
        if match is None or int(match.group(1)) < 4:
            raise StackError(
                f"kafka_version={self.kafka_version!r} is not a Kafka 4.x+ version "
                f"(e.g. {DEFAULT_KAFKA_VERSION}): set STREAMFER_KAFKA_VERSION accordingly"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StackConfig:
        """Build the config from STREAMFER_* and KAFKA_HOME variables; unset or empty = default."""
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        kwargs: dict[str, object] = {}
        if (home := get("STREAMFER_HOME")) is not None:
            kwargs["home"] = Path(home).expanduser()
        for var, key in (
            ("STREAMFER_KAFKA_PORT", "kafka_port"),
            ("STREAMFER_CONTROLLER_PORT", "controller_port"),
            ("STREAMFER_REDIS_PORT", "redis_port"),
        ):
            if (raw := get(var)) is not None:
                kwargs[key] = _parse_port(var, raw)
        if (kafka_home := get("KAFKA_HOME")) is not None:
            kwargs["kafka_home"] = Path(kafka_home).expanduser()
        if (version := get("STREAMFER_KAFKA_VERSION")) is not None:
            kwargs["kafka_version"] = version
        return cls(**kwargs)  # type: ignore[arg-type]

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOCALHOST}:{self.redis_port}/0"


@dataclass(frozen=True)
class StackStatus:
    """What `status()` and `up()` report; `running` only when both services serve."""

    running: bool
    bootstrap_servers: str
    redis_url: str
    kafka_pid: int | None
    redis_pid: int | None


def render_server_properties(config: StackConfig, data_dir: Path) -> str:
    """The broker's server.properties: the shipped template with this config's ports."""
    shipped = resources.files("streams.stack").joinpath("kafka/server.properties")
    template = shipped.read_text("utf-8")
    return string.Template(template).substitute(
        kafka_port=config.kafka_port,
        controller_port=config.controller_port,
        data_dir=str(data_dir),
    )


def kafka_cache_dir(version: str, environ: Mapping[str, str] | None = None) -> Path:
    """The per-version jar cache, `${XDG_CACHE_HOME:-~/.cache}/streamfer/kafka-<version>`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamfer" / f"kafka-{version}"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (22 chars)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # Kafka's own generator avoids these too
            return cluster_id


# ---------------------------------------------------------------------------------------
# Processes


def _alive(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) process; reaps it if it is our dead child."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # An orphan whose parent never reaps it lingers as a zombie: it is gone for our purposes.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _process_args(pid: int) -> list[str] | None:
    """The argv of a process, or None when it cannot be read (gone, or no /proc and no ps)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
    except OSError:
        return None
    else:
        return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]
    try:  # no procfs (macOS): ps splits on spaces, good enough for our own paths
        out = subprocess.run(
            ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return None
    return out.split() or None


def _spawn_detached(args: list[str], log: Path) -> int:
    """Start `args` in a new session, reparented to init, stdout+stderr appended to `log`.

    A throwaway shell starts the command in the background and exits, so the service is not
    our child: it survives the caller and never lingers as our zombie.
    """
    script = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'
    launcher = subprocess.run(
        ["/bin/sh", "-c", script, "streamfer-launch", str(log), *args],
        capture_output=True,
        text=True,
        start_new_session=True,
        check=False,
    )
    pid = launcher.stdout.strip()
    if launcher.returncode != 0 or not pid.isdigit():
        raise StackError(f"could not start {args[0]}: {launcher.stderr.strip() or pid}")
    return int(pid)


def _port_free(port: int) -> bool:
    """Whether 127.0.0.1:`port` can be bound (a listener on 0.0.0.0 also makes it busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOCALHOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _accepts(port: int, timeout_s: float = 0.25) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection((LOCALHOST, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _last_lines(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    """The last non-blank `lines` lines of a tool's output, without terminal colour codes."""
    kept = [line for line in _ANSI_RE.sub("", text).splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def _tail(paths: list[Path], lines: int = _LOG_TAIL_LINES) -> str:
    """The last `lines` lines of each existing, non-empty log, labelled by file name."""
    parts = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            body = "\n".join(text.rstrip("\n").splitlines()[-lines:])
            parts.append(f"--- last lines of {path} ---\n{body}")
    return "\n".join(parts) if parts else "(no log output)"


@contextlib.contextmanager
def _file_lock(path: Path, deadline: float, what: str) -> Iterator[None]:
    """An exclusive flock on `path`, so concurrent `up`/`down`/jar fetches take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StackError(f"timed out waiting for {what} (lock {path})") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------
# Prerequisites


def find_java(environ: Mapping[str, str] | None = None) -> str:
    """The java binary (JAVA_HOME first, then PATH), checked to be Java 17 or newer."""
    env = os.environ if environ is None else environ
    java: str | None = None
    if java_home := env.get("JAVA_HOME"):
        candidate = Path(java_home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            java = str(candidate)
    java = java or shutil.which("java")
    install = "apt-get install openjdk-17-jre-headless (or set JAVA_HOME to a JDK 17+)"
    if java is None:
        raise StackError(f"java {MIN_JAVA_MAJOR}+ not found (Kafka 4 needs it): {install}")
    try:
        probe = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"could not run {java} -version ({exc}): {install}") from exc
    output = probe.stderr + probe.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', output)
    if match is None:
        raise StackError(f"could not read the Java version of {java}: {output.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA_MAJOR:
        raise StackError(
            f"java {MIN_JAVA_MAJOR}+ not found: {java} is Java {major}, "
            f"Kafka 4 needs {MIN_JAVA_MAJOR}+: {install}"
        )
    return java


def find_redis_server() -> str:
    """The redis-server binary on PATH."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise StackError("redis-server not found: apt-get install redis-server")
    return redis_server


def find_mvn() -> str:
    """The Maven binary on PATH (needed only to fetch Kafka's jars the first time)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "mvn not found (needed once to fetch the Kafka jars): apt-get install maven, "
            "or set KAFKA_HOME to an unpacked Kafka 4.x distribution"
        )
    return mvn


def kafka_classpath(config: StackConfig, deadline: float | None = None) -> str:
    """The broker's class path: `$KAFKA_HOME/libs/*`, or the Maven-fetched cache (once)."""
    if config.kafka_home is not None:
        libs = config.kafka_home / "libs"
        if not any(libs.glob("kafka_2.13-*.jar")):
            raise StackError(
                f"KAFKA_HOME={config.kafka_home} has no libs/kafka_2.13-*.jar: point it at an "
                "unpacked Kafka 4.x distribution, or unset it to fetch the jars with Maven"
            )
        return f"{libs}/*"
    cache = kafka_cache_dir(config.kafka_version)
    libs, marker = cache / "libs", cache / "complete"
    if marker.exists():
        return f"{libs}/*"
    mvn = find_mvn()
    deadline = time.monotonic() + _MVN_TIMEOUT_S if deadline is None else deadline
    with _file_lock(cache / ".lock", deadline, "another jar fetch"):
        if marker.exists():  # fetched by whoever held the lock before us
            return f"{libs}/*"
        shutil.rmtree(libs, ignore_errors=True)
        pom = cache / "pom.xml"
        pom.write_text(
            resources.files("streams.stack").joinpath("kafka/pom.xml").read_text("utf-8")
        )
        command = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            f"-Dkafka.version={config.kafka_version}",
        ]
        try:
            fetch = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"fetching Kafka {config.kafka_version} jars with Maven timed out: check access "
                "to Maven Central, or set KAFKA_HOME to an unpacked Kafka 4.x distribution"
            ) from exc
        if fetch.returncode != 0:
            shutil.rmtree(libs, ignore_errors=True)
            raise StackError(
                f"fetching Kafka {config.kafka_version} jars with Maven failed "
                f"({' '.join(command)}):\n{_last_lines(fetch.stdout + fetch.stderr)}\n"
                "Check the version exists on Maven Central and that it is reachable, "
                "or set KAFKA_HOME to an unpacked Kafka 4.x distribution."
            )
        marker.write_text(f"{config.kafka_version}\n")
    return f"{libs}/*"


# ---------------------------------------------------------------------------------------
# The stack


@dataclass(frozen=True)
class _Service:
    """One managed process: where its pid file and logs are, and which port says it serves."""

    name: str
    pid_file: Path
    logs: tuple[Path, ...]
    port: int
    port_env: str
    marker: tuple[str, ...] = field(default=())  # argv entries that only our process has


class LocalStack:
    """Starts, checks and stops the Kafka broker and redis-server of one home directory."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        # Absolute, so the argv markers that identify our processes are unambiguous.
        self.home = config.home.expanduser().resolve()
        self.kafka_dir = self.home / "kafka"
        self.redis_dir = self.home / "redis"
        self.server_properties = self.kafka_dir / "server.properties"
        self.kafka = _Service(
            name="Kafka",
            pid_file=self.kafka_dir / "kafka.pid",
            logs=(self.kafka_dir / "logs" / "server.log", self.kafka_dir / "kafka.out"),
            port=config.kafka_port,
            port_env="STREAMFER_KAFKA_PORT",
            marker=(KAFKA_MAIN, str(self.server_properties)),
        )
        self.redis = _Service(
            name="redis-server",
            pid_file=self.redis_dir / "redis.pid",
            logs=(self.redis_dir / "redis.log", self.redis_dir / "redis.out"),
            port=config.redis_port,
            port_env="STREAMFER_REDIS_PORT",
            marker=("--dir", str(self.redis_dir)),
        )

    # -- public API ---------------------------------------------------------------------

    def status(self) -> StackStatus:
        """Pids of this home's live processes; `running` when both also accept connections."""
        kafka_pid = self._our_pid(self.kafka)
        redis_pid = self._our_pid(self.redis)
        running = (
            kafka_pid is not None
            and redis_pid is not None
            and _accepts(self.config.kafka_port)
            and _accepts(self.config.redis_port)
        )
        return StackStatus(
            running=running,
            bootstrap_servers=self.config.bootstrap_servers,
            redis_url=self.config.redis_url,
            kafka_pid=kafka_pid,
            redis_pid=redis_pid,
        )

    def up(self, timeout_s: float = 180.0) -> StackStatus:
        """Start whatever of the two is not already running, and wait until both serve.

        Idempotent: processes this home already runs are kept. `timeout_s` bounds startup;
        the one-time Maven jar fetch is not counted. On failure the processes this call
        started are stopped again and a StackError quotes the relevant log.
        """
        deadline = time.monotonic() + timeout_s
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            java = find_java()
            redis_server = find_redis_server()
            kafka_pid = self._our_pid(self.kafka)
            redis_pid = self._our_pid(self.redis)
            if kafka_pid is not None:
                self._check_running_kafka_config()
            if redis_pid is not None:
                self._check_running_redis_config(redis_pid)
            to_start = [
                s for s, pid in ((self.kafka, kafka_pid), (self.redis, redis_pid)) if pid is None
            ]
            self._check_ports_free(to_start)
            fetch_start = time.monotonic()
            classpath = kafka_classpath(self.config) if kafka_pid is None else ""
            deadline += time.monotonic() - fetch_start  # a one-time jar fetch is not startup

            started: list[tuple[_Service, int]] = []
            try:
                if redis_pid is None:
                    redis_pid = self._start_redis(redis_server)
                    started.append((self.redis, redis_pid))
                if kafka_pid is None:
                    kafka_pid = self._start_kafka(java, classpath, deadline)
                    started.append((self.kafka, kafka_pid))
                self._wait_redis(redis_pid, deadline)
                self._wait_kafka(kafka_pid, deadline)
            except BaseException:
                with contextlib.suppress(StackError):  # keep the original error for the user
                    self._stop([pid for _, pid in started], timeout_s=10.0)
                for service, _ in started:
                    service.pid_file.unlink(missing_ok=True)
                raise
            self._write_stack_json(kafka_pid, redis_pid)
        return StackStatus(
            running=True,
            bootstrap_servers=self.config.bootstrap_servers,
            redis_url=self.config.redis_url,
            kafka_pid=kafka_pid,
            redis_pid=redis_pid,
        )

    def down(self, timeout_s: float = 30.0) -> None:
        """SIGTERM this home's broker and redis-server (SIGKILL after `timeout_s`).

        A pid file whose process is gone, or whose pid now belongs to another program, is
        removed without signalling anything.
        """
        if not self.home.exists():
            return
        deadline = time.monotonic() + timeout_s
        with _file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            pids = [pid for s in (self.kafka, self.redis) if (pid := self._our_pid(s)) is not None]
            self._stop(pids, timeout_s=max(deadline - time.monotonic(), 1.0))
            for service in (self.kafka, self.redis):
                service.pid_file.unlink(missing_ok=True)
            (self.home / "stack.json").unlink(missing_ok=True)

    # -- identity of our processes ------------------------------------------------------

    def _our_pid(self, service: _Service) -> int | None:
        """The pid in `service`'s pid file if that process is alive and really ours.

        Checking the argv (which names a path under this home) guards against a stale pid
        file whose pid the OS has since given to an unrelated process.
        """
        try:
            pid = int(service.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if pid <= 0 or not _alive(pid):
            return None
        args = _process_args(pid)
        if args is None:
            return None
        return pid if _contains(args, service.marker) else None

    def _check_running_kafka_config(self) -> None:
        try:
            current = self.server_properties.read_text()
        except OSError:
            return
        wanted = render_server_properties(self.config, self.kafka_dir / "data")
        if current != wanted:
            raise StackError(
                f"the Kafka broker of {self.home} is running with other settings (ports) than "
                "requested: run `streamfer down` first, then `streamfer up` again"
            )

    def _check_running_redis_config(self, pid: int) -> None:
        args = _process_args(pid) or []
        if not _contains(args, ("--port", str(self.config.redis_port))):
            raise StackError(
                f"the redis-server of {self.home} is running on another port than "
                f"{self.config.redis_port}: run `streamfer down` first, then `streamfer up` again"
            )

    def _check_ports_free(self, services: list[_Service]) -> None:
        checks = [(s.name, s.port, s.port_env) for s in services]
        if self.kafka in services:
            checks.append(
                ("Kafka controller", self.config.controller_port, "STREAMFER_CONTROLLER_PORT")
            )
        for name, port, env in checks:
            if not _port_free(port):
                raise StackError(
                    f"port {port} ({name}) is already in use by another process: stop it, or "
                    f"set {env} to a free port"
                )

    # -- starting -----------------------------------------------------------------------

    def _start_redis(self, redis_server: str) -> int:
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_server,
            "--port",
            str(self.config.redis_port),
            "--bind",
            LOCALHOST,
            "--dir",
            str(self.redis_dir),
            "--daemonize",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.redis.logs[0]),
            # Keep argv as given: it names our --dir, which is how we recognise our process.
            "--set-proc-title",
            "no",
        ]
        pid = _spawn_detached(args, self.redis.logs[1])
        self.redis.pid_file.write_text(f"{pid}\n")
        return pid

    def _start_kafka(self, java: str, classpath: str, deadline: float) -> int:
        data_dir = self.kafka_dir / "data"
        logs_dir = self.kafka_dir / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.server_properties.write_text(render_server_properties(self.config, data_dir))
        log4j = self.kafka_dir / "log4j2.xml"
        log4j.write_text(
            resources.files("streams.stack").joinpath("kafka/log4j2.xml").read_text("utf-8")
        )
        jvm = [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={logs_dir}"]
        if not (data_dir / "meta.properties").exists():
            self._format_storage(java, classpath, jvm, deadline)
        args = [
            java,
            *KAFKA_JVM_OPTS,
            *jvm,
            "-cp",
            classpath,
            KAFKA_MAIN,
            str(self.server_properties),
        ]
        pid = _spawn_detached(args, self.kafka.logs[1])
        self.kafka.pid_file.write_text(f"{pid}\n")
        return pid

    def _format_storage(self, java: str, classpath: str, jvm: list[str], deadline: float) -> None:
        """Format the KRaft metadata log once, with a cluster id kept under the home."""
        id_file = self.kafka_dir / "cluster.id"
        cluster_id = id_file.read_text().strip() if id_file.exists() else ""
        if not cluster_id:
            cluster_id = new_cluster_id()
            id_file.write_text(f"{cluster_id}\n")
        command = [
            java,
            "-Xmx256m",
            "-XX:TieredStopAtLevel=1",  # a short-lived tool: start fast, skip the C2 compiler
            *jvm,
            "-cp",
            classpath,
            STORAGE_TOOL_MAIN,
            "format",
            "--config",
            str(self.server_properties),
            "--cluster-id",
            cluster_id,
            "--ignore-formatted",
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"formatting the Kafka storage in {self.kafka_dir} timed out") from exc
        if result.returncode != 0:
            raise StackError(
                f"formatting the Kafka storage in {self.kafka_dir} failed:\n"
                f"{_last_lines(result.stdout + result.stderr)}\n"
                f"If the data there is from another Kafka, remove {self.kafka_dir / 'data'}."
            )

    # -- waiting until they serve ---------------------------------------------------------

    def _failed(self, service: _Service, why: str) -> StackError:
        return StackError(f"{service.name} {why}\n{_tail(list(service.logs))}")

    def _wait_redis(self, pid: int, deadline: float) -> None:
        import redis

        client = redis.Redis(host=LOCALHOST, port=self.config.redis_port, socket_timeout=1.0)
        try:
            while True:
                if not _alive(pid):
                    raise self._failed(self.redis, "exited during startup")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if time.monotonic() >= deadline:
                    raise self._failed(self.redis, "did not answer PING before the timeout")
                time.sleep(0.05)
        finally:
            client.close()

    def _wait_kafka(self, pid: int, deadline: float) -> None:
        """Wait until the broker answers metadata and a topic round trip through the controller."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        def check_alive() -> None:
            if not _alive(pid):
                raise self._failed(self.kafka, "exited during startup")
            if time.monotonic() >= deadline:
                raise self._failed(self.kafka, "was not ready before the timeout")

        # The TCP probe first keeps librdkafka from logging "connection refused" while the
        # JVM starts.
        while not _accepts(self.config.kafka_port):
            check_alive()
            time.sleep(0.1)
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers})
        while True:
            check_alive()
            try:
                metadata = admin.list_topics(timeout=2.0)
                if READY_TOPIC not in metadata.topics:
                    futures = admin.create_topics(
                        [NewTopic(READY_TOPIC, num_partitions=1, replication_factor=1)],
                        request_timeout=5.0,
                    )
                    with contextlib.suppress(KafkaException):  # e.g. it exists already
                        futures[READY_TOPIC].result(timeout=10.0)
                topic = admin.list_topics(topic=READY_TOPIC, timeout=2.0).topics.get(READY_TOPIC)
                if (
                    topic is not None
                    and topic.error is None
                    and topic.partitions
                    and all(p.leader >= 0 for p in topic.partitions.values())
                ):
                    return
            except KafkaException:
                pass
            time.sleep(0.2)

    # -- stopping -------------------------------------------------------------------------

    @staticmethod
    def _stop(pids: list[int], timeout_s: float) -> None:
        """SIGTERM `pids`, wait up to `timeout_s`, then SIGKILL the ones still alive."""
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
            alive = [pid for pid in pids if _alive(pid)]
            for pid in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            end = time.monotonic() + wait_s
            while alive and time.monotonic() < end:
                time.sleep(0.05)
                alive = [pid for pid in alive if _alive(pid)]
            if not alive:
                return
        raise StackError(f"processes {pids} did not exit after SIGKILL")

    def _write_stack_json(self, kafka_pid: int, redis_pid: int) -> None:
        settings = {
            "bootstrap_servers": self.config.bootstrap_servers,
            "redis_url": self.config.redis_url,
            "kafka_pid": kafka_pid,
            "redis_pid": redis_pid,
            "kafka_version": None if self.config.kafka_home else self.config.kafka_version,
            "kafka_home": str(self.config.kafka_home) if self.config.kafka_home else None,
            "home": str(self.home),
        }
        target = self.home / "stack.json"
        tmp = target.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(settings, indent=2) + "\n")
        tmp.replace(target)


def _contains(args: list[str], marker: tuple[str, ...]) -> bool:
    """Whether `marker` occurs in `args` as consecutive entries."""
    n = len(marker)
    return any(tuple(args[i : i + n]) == marker for i in range(len(args) - n + 1))
