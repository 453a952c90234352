"""The embedded local stack behind `streamfer up` / `streamfer down`.

A real single-node Apache Kafka 4 broker (KRaft: broker and controller in one JVM) and a
redis-server, both bound to 127.0.0.1 and run as detached background processes. All their
state (data, logs, pid files, `stack.json`) lives under one home directory, and `down()`
stops exactly the processes that home started, so a developer or a CI job gets the same
services the pipeline uses in production without Docker.

What the stack is asked to be is in `config`, where its programs come from in `discovery`,
and the process primitives in `processes`; this module only composes them.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.security.redaction import redact_url
from streams.security.tls import Certificates, TlsError, ensure_certificates
from streams.stack.config import (
    CONTROLLER_PORT_ENV,
    KAFKA_PORT_ENV,
    KAFKA_SECURE_PORT_ENV,
    LOCALHOST,
    REDIS_PORT_ENV,
    REDIS_TLS_PORT_ENV,
    StackConfig,
    StackError,
    StackStatus,
    new_cluster_id,
    properties_settings,
    render_server_properties,
    shipped_file,
)
from streams.stack.discovery import find_java, find_redis_cli, find_redis_server, kafka_classpath
from streams.stack.kafka_security import (
    KAFKA_USER,
    SecureKafka,
    ensure_scram_user,
    format_args,
    kafka_password,
    secure_bootstrap,
    wait_secure_listener,
)
from streams.stack.processes import (
    accepts,
    alive,
    args_contain,
    file_lock,
    last_lines,
    pid_if_ours,
    port_free,
    process_args,
    run_until,
    spawn_detached,
    stop,
    tail,
)
from streams.stack.redis_cluster import (
    LocalRedisCluster,
    check_one_redis_kind,
    cluster_of_home,
    stop_all,
)
from streams.stack.redis_security import (
    ADMIN_USER,
    APP_USER,
    RedisPasswords,
    app_commands,
    ensure_passwords,
    redis_url,
    server_version,
    tls_args,
    write_acl,
)

# Importers outside the stack use these three (and StackStatus) from here.
__all__ = ["LocalStack", "StackConfig", "StackError", "StackStatus"]

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
            port_env=KAFKA_PORT_ENV,
            marker=(KAFKA_MAIN, str(self.server_properties)),
        )
        self.redis = _Service(
            name="redis-server",
            pid_file=self.redis_dir / "redis.pid",
            logs=(self.redis_dir / "redis.log", self.redis_dir / "redis.out"),
            port=config.redis_port,
            port_env=REDIS_PORT_ENV,
            marker=("--dir", str(self.redis_dir)),
        )
        # Redis requires a password: ACL users made once per home (streams.stack.redis_security).
        self.redis_passwords = self.redis_dir / "passwords.json"
        self.redis_acl = self.redis_dir / "users.acl"
        self.tls_dir = self.home / "tls"

    # -- public API ---------------------------------------------------------------------

    def status(self) -> StackStatus:
        """Pids of this home's live processes; `running` when both also accept connections."""
        kafka_pid = self._our_pid(self.kafka)
        redis_pid = self._our_pid(self.redis)
        redis_serves = accepts(self.config.redis_port) and (
            not self.config.secure or accepts(self.config.redis_tls_port)
        )
        if (cluster := self._cluster()) is not None:  # it replaces the single Redis
            node_pids = cluster.pids()
            redis_pid, redis_serves = node_pids[0], None not in node_pids
        running = (
            kafka_pid is not None and redis_pid is not None and accepts(self.config.kafka_port)
        ) and redis_serves
        made = self.redis_passwords.exists()
        passwords = ensure_passwords(self.redis_passwords) if made else None
        return self._status(running, kafka_pid, redis_pid, passwords)

    def up(self, timeout_s: float = 180.0) -> StackStatus:
        """Start whatever of the two is not already running, and wait until both serve.

        Idempotent: processes this home already runs are kept. `timeout_s` bounds startup;
        the one-time Maven jar fetch is not counted. On failure the processes this call
        started are stopped again and a StackError quotes the relevant log.
        """
        deadline = time.monotonic() + timeout_s
        self.home.mkdir(parents=True, exist_ok=True)
        with file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            java = find_java()
            redis_server = find_redis_server()
            kafka_pid = self._our_pid(self.kafka)
            redis_pid = self._our_pid(self.redis)
            check_one_redis_kind(self.home, self.config.redis_cluster, redis_pid is not None)
            cluster = self._cluster()
            if kafka_pid is not None:
                self._check_running_kafka_config()
            if redis_pid is not None:
                self._check_running_redis_config(redis_pid)
            single = ((self.redis, redis_pid),) if cluster is None else ()
            to_start = [s for s, pid in ((self.kafka, kafka_pid), *single) if pid is None]
            self._check_ports_free(to_start)
            if cluster is not None:  # before Kafka starts: a busy port fails fast
                cluster.check_ports_free()
            fetch_start = time.monotonic()
            classpath = kafka_classpath(self.config) if kafka_pid is None else ""
            deadline += time.monotonic() - fetch_start  # a one-time jar fetch is not startup

            started: list[tuple[_Service, int]] = []
            try:
                if redis_pid is None and cluster is None:
                    redis_pid = self._start_redis(redis_server)
                    started.append((self.redis, redis_pid))
                if kafka_pid is None:
                    kafka_pid = self._start_kafka(java, classpath, deadline)
                    started.append((self.kafka, kafka_pid))
                if cluster is not None:  # stops the nodes it started itself if it fails
                    cluster.up(redis_server, find_redis_cli(), deadline)
                    redis_pid = cluster.pids()[0]
                assert redis_pid is not None
                self._wait_redis(redis_pid, deadline)
                self._wait_kafka(kafka_pid, deadline)
                if self.config.secure:
                    self._wait_secure_kafka(kafka_pid, deadline)
            except BaseException:
                with contextlib.suppress(StackError):  # keep the original error for the user
                    stop([pid for _, pid in started], timeout_s=10.0)
                for service, _ in started:
                    service.pid_file.unlink(missing_ok=True)
                raise
            self._write_stack_json(kafka_pid, redis_pid)
        return self._status(True, kafka_pid, redis_pid, ensure_passwords(self.redis_passwords))

    def _status(
        self,
        running: bool,
        kafka_pid: int | None,
        redis_pid: int | None,
        passwords: RedisPasswords | None,
    ) -> StackStatus:
        """What `status()`/`up()` report; Redis URLs carry the ACL users' passwords (a home
        that never started Redis has none yet: its URL has no user)."""
        if passwords is None:
            return StackStatus(
                running, self.config.bootstrap_servers, self.config.redis_url, kafka_pid, redis_pid
            )
        port, tls_port = self.config.redis_port, self.config.redis_tls_port
        secure_url = None
        if self.config.secure:
            ca = self._certificates().ca
            secure_url = redis_url(APP_USER, passwords.streamfer, LOCALHOST, tls_port, ca=ca)
        if (cluster := self._cluster()) is not None:  # the seed node's URLs
            urls = cluster.urls(passwords)
            return StackStatus(
                running, self.config.bootstrap_servers, urls.url, kafka_pid, redis_pid,
                urls.admin_url, urls.secure_url, tuple(p for p in cluster.pids() if p),
            )  # fmt: skip
        return StackStatus(
            running=running,
            bootstrap_servers=self.config.bootstrap_servers,
            redis_url=redis_url(APP_USER, passwords.streamfer, LOCALHOST, port),
            kafka_pid=kafka_pid,
            redis_pid=redis_pid,
            redis_admin_url=redis_url(ADMIN_USER, passwords.admin, LOCALHOST, port),
            secure_redis_url=secure_url,
        )

    def stop_kafka(self, timeout_s: float = 30.0) -> None:
        """Stop only this home's broker (SIGTERM, SIGKILL after `timeout_s`): an outage.

        Redis keeps running; `start_kafka()` (or `up()`) brings the broker back on its data.
        """
        deadline = time.monotonic() + timeout_s
        with file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            pid = self._our_pid(self.kafka)
            if pid is not None:
                stop([pid], timeout_s=max(deadline - time.monotonic(), 1.0))
            self.kafka.pid_file.unlink(missing_ok=True)

    def start_kafka(self, timeout_s: float = 180.0) -> StackStatus:
        """Start the broker again after `stop_kafka()`; waits until it serves, as `up()`."""
        return self.up(timeout_s)

    def stop_redis(self, timeout_s: float = 30.0, *, keep_data: bool = True) -> None:
        """Stop only this home's redis-server (SIGTERM: it writes its AOF out first).

        `keep_data=False` then deletes its AOF and RDB files, so that `up()` starts it
        empty: a restart without data, as a host lost with its disk would come back.
        """
        deadline = time.monotonic() + timeout_s
        with file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            pid = self._our_pid(self.redis)
            if pid is not None:
                stop([pid], timeout_s=max(deadline - time.monotonic(), 1.0))
            self.redis.pid_file.unlink(missing_ok=True)
            if not keep_data:
                shutil.rmtree(self.redis_dir / "appendonlydir", ignore_errors=True)
                (self.redis_dir / "dump.rdb").unlink(missing_ok=True)

    def down(self, timeout_s: float = 30.0) -> None:
        """SIGTERM this home's broker and redis-server (SIGKILL after `timeout_s`).

        A pid file whose process is gone, or whose pid now belongs to another program, is
        removed without signalling anything.
        """
        if not self.home.exists():
            return
        deadline = time.monotonic() + timeout_s
        with file_lock(self.home / ".lock", deadline, "another `streamfer up/down` on this home"):
            pids = [pid for s in (self.kafka, self.redis) if (pid := self._our_pid(s)) is not None]
            stop(pids, timeout_s=max(deadline - time.monotonic(), 1.0))
            stop_all(self.home, timeout_s=max(deadline - time.monotonic(), 1.0))
            for service in (self.kafka, self.redis):
                service.pid_file.unlink(missing_ok=True)
            (self.home / "stack.json").unlink(missing_ok=True)

    # -- identity of our processes ------------------------------------------------------

    def _our_pid(self, service: _Service) -> int | None:
        """The pid of `service` if its pid file names a live process of this home."""
        return pid_if_ours(service.pid_file, service.marker)

    def _cluster(self) -> LocalRedisCluster | None:
        """The Redis Cluster asked for (`--redis-cluster N`) or, if none is, the one running."""
        certs, c = (self._certificates() if self.config.secure else None), self.config
        return cluster_of_home(
            self.home, c.redis_cluster, c.redis_cluster_port, certs, c.redis_replicas
        )

    def _check_running_kafka_config(self) -> None:
        try:
            current = self.server_properties.read_text()
        except OSError:
            return
        # Settings, not comments: a reworded template must not disown a running broker.
        running = properties_settings(current)
        # A broker with the SASL_SSL listener serves plaintext clients as well.
        running_secure = any(line.startswith("listener.name.sasl_ssl.") for line in running)
        if running == properties_settings(self._server_properties(secure=running_secure)):
            if self.config.secure and not running_secure:
                raise StackError(
                    f"the Kafka broker of {self.home} is running without the SASL_SSL listener: "
                    "run `streamfer down` first, then `streamfer up --secure` again"
                )
            return
        raise StackError(
            f"the Kafka broker of {self.home} is running with other settings (ports) than "
            "requested: run `streamfer down` first, then `streamfer up` again"
        )

    def _check_running_redis_config(self, pid: int) -> None:
        args = process_args(pid) or []
        if not args_contain(args, ("--port", str(self.config.redis_port))):
            raise StackError(
                f"the redis-server of {self.home} is running on another port than "
                f"{self.config.redis_port}: run `streamfer down` first, then `streamfer up` again"
            )
        if not args_contain(args, ("--aclfile", str(self.redis_acl))):
            raise StackError(
                f"the redis-server of {self.home} is running without a password (started by an "
                "older streamfer): run `streamfer down` first, then `streamfer up` again"
            )
        tls_port = str(self.config.redis_tls_port)
        if self.config.secure and not args_contain(args, ("--tls-port", tls_port)):
            raise StackError(
                f"the redis-server of {self.home} is running without TLS on port {tls_port}: "
                "run `streamfer down` first, then `streamfer up --secure` again"
            )

    def _check_ports_free(self, services: list[_Service]) -> None:
        checks = [(s.name, s.port, s.port_env) for s in services]
        if self.kafka in services:
            checks.append(("Kafka controller", self.config.controller_port, CONTROLLER_PORT_ENV))
        if self.kafka in services and self.config.secure:
            port = self.config.kafka_secure_port
            checks.append(("Kafka SASL_SSL listener", port, KAFKA_SECURE_PORT_ENV))
        if self.redis in services and self.config.secure:
            checks.append(("redis-server TLS", self.config.redis_tls_port, REDIS_TLS_PORT_ENV))
        for name, port, env in checks:
            if not port_free(port):
                raise StackError(
                    f"port {port} ({name}) is already in use by another process: stop it, or "
                    f"set {env} to a free port"
                )

    # -- starting -----------------------------------------------------------------------

    def _certificates(self) -> Certificates:
        """The home's throwaway CA and server certificate (`streamfer up --secure`)."""
        try:
            return ensure_certificates(self.tls_dir)
        except TlsError as exc:
            raise StackError(str(exc)) from None

    def _start_redis(self, redis_server: str) -> int:
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        passwords = ensure_passwords(self.redis_passwords)
        write_acl(self.redis_acl, passwords, app_commands(server_version(redis_server)))
        secure = (
            tls_args(self.config.redis_tls_port, self._certificates()) if self.config.secure else []
        )
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
            # Persistence: a plain restart must not lose the feature state (a loss is caught,
            # see features/epoch.py, but then needs a rebuild). AOF, fsync'd once a second.
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            # Evicting a key is losing state too: refuse writes instead when memory is full.
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.redis.logs[0]),
            # Users and password digests; no password on the command line, where `ps` shows it.
            "--aclfile",
            str(self.redis_acl),
            # DEBUG for the admin user (tests); the ACL keeps it from the streamfer user.
            "--enable-debug-command",
            "local",
            *secure,
            # Keep argv as given: it names our --dir, which is how we recognise our process.
            "--set-proc-title",
            "no",
        ]
        pid = spawn_detached(args, self.redis.logs[1])
        self.redis.pid_file.write_text(f"{pid}\n")
        return pid

    def _start_kafka(self, java: str, classpath: str, deadline: float) -> int:
        data_dir = self.kafka_dir / "data"
        logs_dir = self.kafka_dir / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        self.server_properties.write_text(self._server_properties(secure=self.config.secure))
        log4j = self.kafka_dir / "log4j2.xml"
        log4j.write_text(shipped_file("log4j2.xml"))
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
        pid = spawn_detached(args, self.kafka.logs[1])
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
        if self.config.secure:  # the SCRAM user, created with the storage
            command += format_args(KAFKA_USER, kafka_password(self.kafka_dir))
        result = run_until(command, deadline, f"formatting the Kafka storage in {self.kafka_dir}")
        if result.returncode != 0:
            raise StackError(
                f"formatting the Kafka storage in {self.kafka_dir} failed:\n"
                f"{last_lines(result.stdout + result.stderr)}\n"
                f"If the data there is from another Kafka, remove {self.kafka_dir / 'data'}."
            )

    # -- the SASL_SSL listener (`streamfer up --secure`) -----------------------------------

    def secure_kafka(self) -> SecureKafka | None:
        """How clients reach the SASL_SSL listener; None without `--secure`."""
        if not self.config.secure:
            return None
        return SecureKafka(
            bootstrap=secure_bootstrap(self.config.kafka_secure_port),
            user=KAFKA_USER,
            password=kafka_password(self.kafka_dir),
            ca=self._certificates().ca,
        )

    def _server_properties(self, *, secure: bool) -> str:
        keystore = self._certificates().chain_and_key if secure else None
        return render_server_properties(self.config, self.kafka_dir / "data", keystore)

    def _wait_secure_kafka(self, pid: int, deadline: float) -> None:
        """The SCRAM user exists (a storage formatted without it gets it now) and logs in."""
        secure = self.secure_kafka()
        assert secure is not None
        left = max(deadline - time.monotonic(), 1.0)
        ensure_scram_user(self.config.bootstrap_servers, secure.user, secure.password, left)

        def check_alive() -> None:
            if not alive(pid):
                raise self._failed(self.kafka, "exited during startup")

        wait_secure_listener(secure, deadline, check_alive)

    # -- waiting until they serve ---------------------------------------------------------

    def _failed(self, service: _Service, why: str) -> StackError:
        return StackError(f"{service.name} {why}\n{tail(list(service.logs))}")

    def _wait_redis(self, pid: int, deadline: float) -> None:
        """Wait until the admin user's PING is answered (on the TLS port too, if asked);
        for a cluster, its seed node's (the cluster has waited for all its slots)."""
        import redis

        from features.redis_connect import connect, with_cluster_mode

        status = self._status(False, None, pid, ensure_passwords(self.redis_passwords))
        urls = [status.redis_admin_url]
        if status.secure_redis_url is not None:
            urls.append(status.secure_redis_url)
        for url in urls:
            # A single server, known: no `INFO cluster` asked while it may not listen yet.
            client = connect(with_cluster_mode(url, "no"), socket_timeout=1.0)
            try:
                while True:
                    if not alive(pid):
                        raise self._failed(self.redis, "exited during startup")
                    with contextlib.suppress(redis.RedisError):
                        if client.ping():
                            break
                    if time.monotonic() >= deadline:
                        raise self._failed(
                            self.redis,
                            f"did not answer PING at {redact_url(url)} before the timeout",
                        )
                    time.sleep(0.05)
            finally:
                client.close()

    def _wait_kafka(self, pid: int, deadline: float) -> None:
        """Wait until the broker answers metadata and a topic round trip through the controller."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        def check_alive() -> None:
            if not alive(pid):
                raise self._failed(self.kafka, "exited during startup")
            if time.monotonic() >= deadline:
                raise self._failed(self.kafka, "was not ready before the timeout")

        # The TCP probe first keeps librdkafka from logging "connection refused" while the
        # JVM starts.
        while not accepts(self.config.kafka_port):
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

    # -- the record of a running stack -------------------------------------------------

    def _write_stack_json(self, kafka_pid: int, redis_pid: int) -> None:
        settings = {
            "bootstrap_servers": self.config.bootstrap_servers,
            "redis_url": self.config.redis_url,  # no password here: it is in redis/
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
