"""A local Redis Cluster: N redis-server primaries in cluster mode, behind `--redis-cluster N`,
each with R replicas behind `--redis-replicas R`.

Each node runs as the single Redis of `streamfer up` does (AOF fsync'd once a second,
noeviction, the same ACL file and passwords, a TLS port when secure), plus
`--cluster-enabled yes` with its own folder and `nodes.conf`. A fresh set of nodes is joined
with `redis-cli --cluster create` (as the admin user, its password in REDISCLI_AUTH, never
on a command line); a set restarted on its folders finds its cluster again in `nodes.conf`.
With replicas, every node (any of them may be a replica after a failover) authenticates to
its primary as `admin`, from a private config file (`replication.conf`, mode 0600: no
password on a command line either), and a failed primary is replaced by its replica after
`node_timeout_ms`.
Ports come in three blocks from one base: clients `base…base+N-1`, TLS `base+N…`, the
cluster bus `base+2N…`, so one variable (STREAMFER_REDIS_CLUSTER_PORT) places them all.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streams.security.tls import Certificates
from streams.stack.config import LOCALHOST, REDIS_CLUSTER_PORT_ENV, StackError
from streams.stack.processes import (
    alive,
    args_contain,
    last_lines,
    pid_if_ours,
    port_free,
    process_args,
    run_until,
    spawn_detached,
    stop,
    tail,
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

if TYPE_CHECKING:
    import redis

SLOTS = 16384
MIN_PRIMARIES = 3  # redis-cli --cluster create refuses fewer
# Linux's ephemeral ports start here: below it no client's outgoing port can take one later.
EPHEMERAL_START = 32768


def free_cluster_base(count: int, start: int, stop: int = EPHEMERAL_START) -> int:
    """The first base port in [start, stop) whose 3 × `count` ports (clients, TLS, cluster
    bus of `count` nodes) are free."""
    width = 3 * count
    for base in range(start, stop - width + 1, width):
        if all(port_free(base + i) for i in range(width)):
            return base
    raise StackError(f"no {width} free ports from {start} below {stop}")


@dataclass(frozen=True)
class ClusterNode:
    """One primary: its three ports and its folder (data, nodes.conf, log, pid file)."""

    port: int
    tls_port: int
    bus_port: int
    folder: Path

    @property
    def pid_file(self) -> Path:
        return self.folder / "redis.pid"

    @property
    def logs(self) -> list[Path]:
        return [self.folder / "redis.log", self.folder / "redis.out"]

    @property
    def marker(self) -> tuple[str, ...]:
        return ("--dir", str(self.folder))


@dataclass(frozen=True)
class ClusterUrls:
    """Where clients reach the cluster: the seed node as each ACL user, and every node."""

    url: str  # the streamfer user, first node
    admin_url: str
    node_admin_urls: tuple[str, ...]
    secure_url: str | None = None  # rediss:// on the first node's TLS port, when secure


def cluster_ports(base: int, count: int) -> list[tuple[int, int, int]]:
    """(client, TLS, bus) port of each of `count` nodes placed from `base`; a StackError
    naming STREAMFER_REDIS_CLUSTER_PORT when they would not fit below 65536."""
    if count < MIN_PRIMARIES:
        raise StackError(f"a Redis Cluster needs at least {MIN_PRIMARIES} primaries, not {count}")
    if base < 1 or base + 3 * count - 1 > 65535:
        raise StackError(
            f"{REDIS_CLUSTER_PORT_ENV}={base} leaves no room for {3 * count} ports "
            f"(clients, TLS, cluster bus): set it to at most {65536 - 3 * count}"
        )
    return [(base + i, base + count + i, base + 2 * count + i) for i in range(count)]


NODE_TIMEOUT_MS = 5000
"""How long a node may not answer before the others take it for failed (Redis's default is
15 s): with replicas, about how long a failover takes to start."""


class LocalRedisCluster:
    """Starts, checks and stops the cluster nodes of one stack home: `count` primaries,
    each with `replicas` replicas (the nodes after the primaries, as `redis-cli --cluster
    create --cluster-replicas` pairs them)."""

    def __init__(
        self,
        home: Path,
        base_port: int,
        count: int,
        certificates: Certificates | None = None,
        *,
        replicas: int = 0,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self.home = home.expanduser().resolve()
        self.root = self.home / "redis-cluster"
        # The single Redis's users and passwords: one set of credentials per home.
        self.passwords_file = self.home / "redis" / "passwords.json"
        self.acl_file = self.home / "redis" / "users.acl"
        self.certificates = certificates
        if replicas < 0:
            raise StackError(f"--redis-replicas {replicas}: give 0 or more replicas per primary")
        self.primaries = count
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        if count < MIN_PRIMARIES:  # before the ports: the count is the error to name
            cluster_ports(base_port, count)
        self.nodes = [
            ClusterNode(port, tls, bus, self.root / f"node-{port}")
            for port, tls, bus in cluster_ports(base_port, count * (1 + replicas))
        ]

    @classmethod
    def recorded(cls, home: Path, certificates: Certificates | None) -> LocalRedisCluster | None:
        """The cluster this home runs, as its last `up` laid it out; None when none runs."""
        layout = home.expanduser().resolve() / "redis-cluster" / "layout.json"
        if not running_pids(home):
            return None
        try:
            raw = json.loads(layout.read_text())
            return cls(
                home,
                int(raw["base_port"]),
                int(raw["primaries"]),
                certificates,
                replicas=int(raw.get("replicas", 0)),
                node_timeout_ms=int(raw.get("node_timeout_ms", NODE_TIMEOUT_MS)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- state ----------------------------------------------------------------------------

    def pids(self) -> list[int | None]:
        """Each node's pid when its pid file names a live process of ours."""
        return [pid_if_ours(node.pid_file, node.marker) for node in self.nodes]

    def urls(self, passwords: RedisPasswords) -> ClusterUrls:
        first = self.nodes[0]
        secure = None
        if self.certificates is not None:
            ca = self.certificates.ca
            secure = redis_url(APP_USER, passwords.streamfer, LOCALHOST, first.tls_port, ca=ca)
        from features.redis_connect import with_replicas  # redis-py, only when asked

        if secure is not None:
            secure = with_replicas(secure, self.replicas)
        return ClusterUrls(
            # With replicas, the feature store waits for them (features.redis_connect).
            url=with_replicas(
                redis_url(APP_USER, passwords.streamfer, LOCALHOST, first.port), self.replicas
            ),
            admin_url=redis_url(ADMIN_USER, passwords.admin, LOCALHOST, first.port),
            node_admin_urls=tuple(
                redis_url(ADMIN_USER, passwords.admin, LOCALHOST, node.port) for node in self.nodes
            ),
            secure_url=secure,
        )

    # -- up / down ------------------------------------------------------------------------

    def up(self, redis_server: str, redis_cli: str, deadline: float) -> ClusterUrls:
        """Start the nodes not running, join them if new, and wait until all slots serve.

        Idempotent: running nodes are kept (after checking their ports and TLS). On failure
        the nodes this call started are stopped again; the StackError names the log to read.
        """
        passwords = ensure_passwords(self.passwords_file)
        pids = self.pids()
        if set(running_pids(self.home)) - set(pids):
            raise StackError(
                f"{self.home} runs Redis Cluster nodes with another layout (ports, count) than "
                "asked: run `streamfer down` first, then `streamfer up --redis-cluster` again"
            )
        for node, pid in zip(self.nodes, pids, strict=True):
            if pid is not None:
                self._check_running(node, pid)
        to_start = [node for node, pid in zip(self.nodes, pids, strict=True) if pid is None]
        self.check_ports_free()
        if to_start:
            write_acl(self.acl_file, passwords, app_commands(server_version(redis_server)))
            self.root.mkdir(parents=True, exist_ok=True)
            layout = {
                "base_port": self.nodes[0].port,
                "primaries": self.primaries,
                "replicas": self.replicas,
                "node_timeout_ms": self.node_timeout_ms,
            }
            (self.root / "layout.json").write_text(json.dumps(layout) + "\n")
        started: list[int] = []
        try:
            for node in to_start:
                started.append(self._start(redis_server, node, passwords))
            self._wait_pings(passwords, deadline)
            if self._needs_create(passwords):
                self._create(redis_cli, passwords, deadline)
            self._wait_ok(passwords, deadline)
        except BaseException:
            with contextlib.suppress(StackError):  # keep the original error for the user
                stop(started, timeout_s=10.0)
            for node in to_start:
                node.pid_file.unlink(missing_ok=True)
            raise
        return self.urls(passwords)

    def down(self, timeout_s: float = 30.0) -> None:
        """SIGTERM every node of this home (any base port: found by their folders)."""
        stop_all(self.home, timeout_s)

    # -- starting -------------------------------------------------------------------------

    def _check_running(self, node: ClusterNode, pid: int) -> None:
        args = process_args(pid) or []
        tls = self.certificates is not None
        if not args_contain(args, ("--port", str(node.port))) or (
            tls and not args_contain(args, ("--tls-port", str(node.tls_port)))
        ):
            raise StackError(
                f"the Redis Cluster node in {node.folder} is running with other ports or "
                "without TLS: run `streamfer down` first, then `streamfer up` again"
            )

    def check_ports_free(self) -> None:
        """A StackError naming the first busy port of a node that is not running yet."""
        for node, pid in zip(self.nodes, self.pids(), strict=True):
            if pid is not None:
                continue
            ports = [("client", node.port), ("cluster bus", node.bus_port)]
            if self.certificates is not None:
                ports.append(("TLS", node.tls_port))
            for what, port in ports:
                if not port_free(port):
                    raise StackError(
                        f"port {port} (Redis Cluster node {node.port}, {what}) is already in "
                        f"use by another process: stop it, or set {REDIS_CLUSTER_PORT_ENV} to a "
                        "base port with free ports after it"
                    )

    def _start(self, redis_server: str, node: ClusterNode, passwords: RedisPasswords) -> int:
        node.folder.mkdir(parents=True, exist_ok=True)
        # Replication as `admin` (the `default` user is off): in a file only we can read.
        config = node.folder / "replication.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"masteruser {ADMIN_USER}\nmasterauth {passwords.admin}\n")
        secure: list[str] = []
        if self.certificates is not None:  # clients, the cluster bus and replication: TLS
            secure = tls_args(node.tls_port, self.certificates)
            secure += ["--tls-cluster", "yes", "--tls-replication", "yes"]
        args = [
            redis_server,
            str(config),
            "--port",
            str(node.port),
            "--bind",
            LOCALHOST,
            "--dir",
            str(node.folder),
            "--daemonize",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(node.folder / "nodes.conf"),
            "--cluster-port",
            str(node.bus_port),
            "--cluster-node-timeout",
            str(self.node_timeout_ms),
            # As the single Redis (streams/stack/local.py): AOF once a second, no eviction.
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(node.logs[0]),
            "--aclfile",
            str(self.acl_file),
            "--enable-debug-command",
            "local",
            *secure,
            "--set-proc-title",
            "no",
        ]
        pid = spawn_detached(args, node.logs[1])
        node.pid_file.write_text(f"{pid}\n")
        return pid

    # -- joining and waiting --------------------------------------------------------------

    def _admin(self, passwords: RedisPasswords, node: ClusterNode) -> redis.Redis:
        """A plain client of one node as `admin` (CLUSTER INFO, before any slot map exists)."""
        import redis

        url = redis_url(ADMIN_USER, passwords.admin, LOCALHOST, node.port)
        return redis.Redis.from_url(url, socket_timeout=2.0, decode_responses=True)

    def _wait_pings(self, passwords: RedisPasswords, deadline: float) -> None:
        import redis

        for node in self.nodes:
            client = self._admin(passwords, node)
            try:
                while True:
                    pid = pid_if_ours(node.pid_file, node.marker)
                    if pid is None or not alive(pid):
                        raise self._failed(node, "exited during startup")
                    with contextlib.suppress(redis.RedisError):
                        if client.ping():
                            break
                    if time.monotonic() >= deadline:
                        raise self._failed(node, "did not answer PING before the timeout")
                    time.sleep(0.05)
            finally:
                client.close()

    def _infos(self, passwords: RedisPasswords) -> list[dict[str, str]]:
        infos = []
        for node in self.nodes:
            client = self._admin(passwords, node)
            try:
                info = client.execute_command("CLUSTER INFO")  # parsed by redis-py: a dict
            finally:
                client.close()
            infos.append({str(key): str(value) for key, value in dict(info).items()})
        return infos

    def _needs_create(self, passwords: RedisPasswords) -> bool:
        """True for nodes that know nobody (fresh); a StackError for a half-made cluster."""
        infos = self._infos(passwords)
        fresh = [
            info.get("cluster_known_nodes") == "1" and info.get("cluster_slots_assigned") == "0"
            for info in infos
        ]
        if all(fresh):
            return True
        if any(fresh):
            raise StackError(
                f"the Redis Cluster in {self.root} is half made (some nodes know no cluster): "
                f"run `streamfer down`, remove {self.root}, then `streamfer up` again"
            )
        return False

    def _create(self, redis_cli: str, passwords: RedisPasswords, deadline: float) -> None:
        command = [redis_cli, "--user", ADMIN_USER, "--no-auth-warning", "--cluster", "create"]
        command += [f"{LOCALHOST}:{node.port}" for node in self.nodes]
        command += ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        env = {**os.environ, "REDISCLI_AUTH": passwords.admin}
        what = f"`redis-cli --cluster create` of the nodes in {self.root}"
        result = run_until(command, deadline, what, env=env)
        if result.returncode != 0:
            raise StackError(f"{what} failed:\n{last_lines(result.stdout + result.stderr)}")

    def _wait_ok(self, passwords: RedisPasswords, deadline: float) -> None:
        """Until every node says cluster_state:ok with all slots assigned and knows all nodes."""
        import redis

        count, last = str(len(self.nodes)), "no answer"
        while True:
            for node, pid in zip(self.nodes, self.pids(), strict=True):
                if pid is None:
                    raise self._failed(node, "exited while the cluster formed")
            with contextlib.suppress(redis.RedisError):
                infos = self._infos(passwords)
                last = ", ".join(
                    f"{n.port}: {i.get('cluster_state')} {i.get('cluster_slots_assigned')} slots"
                    for n, i in zip(self.nodes, infos, strict=True)
                )
                if all(
                    i.get("cluster_state") == "ok"
                    and i.get("cluster_slots_assigned") == str(SLOTS)
                    and i.get("cluster_known_nodes") == count
                    for i in infos
                ):
                    synced = self._replicas_synced(passwords)
                    if synced == self.primaries * self.replicas:
                        return
                    last = f"{synced} of {self.primaries * self.replicas} replicas in sync"
            if time.monotonic() >= deadline:
                raise StackError(
                    f"the Redis Cluster in {self.root} was not ok before the timeout ({last}); "
                    f"the nodes' logs are {self.root}/node-*/redis.log"
                )
            time.sleep(0.1)

    def _replicas_synced(self, passwords: RedisPasswords) -> int:
        """How many nodes are replicas whose link to their primary is up (synced)."""
        if not self.replicas:
            return 0
        synced = 0
        for node in self.nodes:
            client = self._admin(passwords, node)
            try:
                info = client.info("replication")
            finally:
                client.close()
            synced += info.get("role") == "slave" and info.get("master_link_status") == "up"
        return synced

    def _failed(self, node: ClusterNode, why: str) -> StackError:
        return StackError(
            f"Redis Cluster node {node.port} {why} (log: {node.logs[0]})\n{tail(node.logs)}"
        )


def running_pids(home: Path) -> list[int]:
    """The live cluster nodes of a stack home, whatever ports they were started with."""
    root = home.expanduser().resolve() / "redis-cluster"
    pids = []
    for folder in sorted(root.glob("node-*")):
        pid = pid_if_ours(folder / "redis.pid", ("--dir", str(folder)))
        if pid is not None:
            pids.append(pid)
    return pids


def stop_all(home: Path, timeout_s: float) -> None:
    """SIGTERM (then SIGKILL) the cluster nodes of a stack home; their pid files go."""
    stop(running_pids(home), timeout_s)
    root = home.expanduser().resolve() / "redis-cluster"
    for pid_file in root.glob("node-*/redis.pid"):
        pid_file.unlink(missing_ok=True)


def cluster_of_home(
    home: Path,
    primaries: int,
    base_port: int,
    certificates: Certificates | None,
    replicas: int = 0,
) -> LocalRedisCluster | None:
    """The cluster asked for (`primaries` > 0), else the one the home runs, else None."""
    if primaries:
        return LocalRedisCluster(home, base_port, primaries, certificates, replicas=replicas)
    return LocalRedisCluster.recorded(home, certificates)


def check_one_redis_kind(home: Path, primaries: int, single_runs: bool) -> None:
    """A StackError when `up` is asked for one kind of Redis and the home runs the other:
    a home serves one Redis, single or cluster, at a time."""
    if primaries and single_runs:
        raise StackError(
            f"{home} runs a single redis-server: run `streamfer down` first, then "
            "`streamfer up --redis-cluster N` again"
        )
    if not primaries and running_pids(home):
        raise StackError(
            f"{home} runs a Redis Cluster: run `streamfer down` first, or give "
            "`--redis-cluster N` as the running cluster was started"
        )
