"""Where the stack's programs come from: Java, redis-server, Maven and the Kafka jars.

Each finder either returns a usable path or raises a StackError that says what to install
(or which variable to set). Kafka's jars come from `$KAFKA_HOME/libs` when set, otherwise
Maven fetches them once into `${XDG_CACHE_HOME:-~/.cache}/streamfer/kafka-<version>/libs`
(see `streams/stack/kafka/pom.xml`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from streams.stack.config import StackConfig, StackError, shipped_file
from streams.stack.processes import file_lock, last_lines, run_until

MIN_JAVA_MAJOR = 17
_MVN_TIMEOUT_S = 900.0


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
        raise StackError(
            f"could not read the Java version of {java} ({output.strip()!r}): {install}"
        )
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


def find_redis_cli() -> str:
    """The redis-cli binary on PATH (`streamfer up --redis-cluster` creates the cluster with it)."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise StackError(
            "redis-cli not found, and `--redis-cluster` needs it to create the cluster: "
            "apt-get install redis-tools (it comes with redis-server)"
        )
    return redis_cli


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
    with file_lock(cache / ".lock", deadline, "another jar fetch"):
        if marker.exists():  # fetched by whoever held the lock before us
            return f"{libs}/*"
        shutil.rmtree(libs, ignore_errors=True)
        pom = cache / "pom.xml"
        pom.write_text(shipped_file("pom.xml"))
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
        fetch = run_until(
            command,
            deadline,
            f"fetching Kafka {config.kafka_version} jars with Maven",
            "check access to Maven Central, or set KAFKA_HOME to an unpacked Kafka 4.x "
            "distribution",
        )
        if fetch.returncode != 0:
            shutil.rmtree(libs, ignore_errors=True)
            raise StackError(
                f"fetching Kafka {config.kafka_version} jars with Maven failed "
                f"({' '.join(command)}):\n{last_lines(fetch.stdout + fetch.stderr)}\n"
                "Check the version exists on Maven Central and that it is reachable, "
                "or set KAFKA_HOME to an unpacked Kafka 4.x distribution."
            )
        marker.write_text(f"{config.kafka_version}\n")
    return f"{libs}/*"


def kafka_cache_dir(version: str, environ: Mapping[str, str] | None = None) -> Path:
    """The per-version jar cache, `${XDG_CACHE_HOME:-~/.cache}/streamfer/kafka-<version>`."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamfer" / f"kafka-{version}"
