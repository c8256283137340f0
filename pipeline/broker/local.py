"""A real Apache Kafka broker on loopback, fetched from Maven Central and run as a JVM process.

Apache Kafka's jars (``org.apache.kafka:kafka_2.13``) are copied by Maven into
``$MA_CACHE_DIR/kafka/<version>/libs`` once (``deploy/kafka/pom.xml``), then reused offline.
The broker runs in KRaft combined mode (broker + controller, one node) bound to 127.0.0.1; its
data lives in ``$MA_DATA_DIR/kafka`` and survives restarts; its log is
``$MA_DATA_DIR/kafka/logs/server.log``.

Example::

    broker = LocalBroker(Settings())
    broker.start()        # fetches the jars on first use, formats storage on first start
    broker.status()       # BrokerStatus(running=True, ready=True, pid=…, …)
    broker.stop()
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from pipeline.settings import Settings

POM = Path(__file__).resolve().parents[2] / "deploy" / "kafka" / "pom.xml"
JAVA_MAIN = "kafka.Kafka"
MISSING_TOOLS = (
    "The local Kafka broker needs {what}. Install OpenJDK 17+ and Maven "
    "(e.g. `apt-get install openjdk-17-jre-headless maven`), or point MA_KAFKA_BOOTSTRAP at an "
    "existing broker, or start one with `docker compose -f deploy/docker-compose.yml up kafka`."
)


class BrokerError(RuntimeError):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    data_dir: Path
    log_file: Path

    def describe(self) -> str:
        if not self.running:
            return f"stopped (data in {self.data_dir})"
        state = "ready" if self.ready else "running, not ready"
        return (
            f"{state}: pid {self.pid}, {self.bootstrap}, data {self.data_dir}, log {self.log_file}"
        )


class LocalBroker:
    """Fetch, configure, start, stop and inspect the local single-node KRaft broker."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = settings.kafka_version
        self.libs = (settings.cache_dir / "kafka" / self.version / "libs").resolve()
        self.home = (settings.data_dir / "kafka").resolve()
        self.log_dirs = self.home / "logs-data"
        self.log_file = self.home / "logs" / "server.log"
        self.pid_file = self.home / "broker.pid"
        self.server_properties = self.home / "config" / "server.properties"
        self.log4j_properties = self.home / "config" / "log4j2.properties"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.settings.broker_port}"

    # -- fetching ---------------------------------------------------------------------------
    def fetched(self) -> bool:
        return (self.libs / ".complete").exists()

    def fetch(self) -> None:
        """Copy Kafka's jars from Maven Central into the cache (once)."""
        if self.fetched():
            return
        _require_java()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(MISSING_TOOLS.format(what="Maven (mvn) to fetch Kafka's jars"))
        self.libs.mkdir(parents=True, exist_ok=True)
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.version={self.version}",
            f"-DoutputDirectory={self.libs}",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if result.returncode != 0 or not list(self.libs.glob(f"kafka_2.13-{self.version}.jar")):
            raise BrokerError(
                f"Maven could not fetch org.apache.kafka:kafka_2.13:{self.version}:\n"
                f"{(result.stdout + result.stderr)[-3000:]}"
            )
        (self.libs / ".complete").write_text(self.version)

    # -- configuration ----------------------------------------------------------------------
    def write_config(self) -> None:
        port, controller = self.settings.broker_port, self.settings.broker_controller_port
        self.server_properties.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.server_properties.write_text(
            "\n".join(
                [
                    "# Written by ma-pipeline on every start; edit pipeline/broker/local.py.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.log_dirs}",
                    f"num.partitions={self.settings.topic_partitions}",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=8",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "min.insync.replicas=1",
                    "num.network.threads=2",
                    "num.io.threads=4",
                    "log.retention.hours=168",
                    "log.segment.bytes=268435456",
                    "",
                ]
            )
        )
        self.log4j_properties.write_text(
            "\n".join(
                [
                    "status = warn",
                    "appender.file.type = RollingFile",
                    "appender.file.name = FILE",
                    f"appender.file.fileName = {self.log_file}",
                    f"appender.file.filePattern = {self.log_file}.%i",
                    "appender.file.layout.type = PatternLayout",
                    "appender.file.layout.pattern = [%d] %p %m (%c)%n",
                    "appender.file.policies.type = Policies",
                    "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
                    "appender.file.policies.size.size = 20MB",
                    "appender.file.strategy.type = DefaultRolloverStrategy",
                    "appender.file.strategy.max = 3",
                    "rootLogger.level = INFO",
                    "rootLogger.appenderRef.file.ref = FILE",
                    "logger.state.name = state.change.logger",
                    "logger.state.level = WARN",
                    "",
                ]
            )
        )

    def _java(self, *args: str, heap: str | None = None) -> list[str]:
        java = _require_java()
        command = [java]
        if heap:
            command += [f"-Xmx{heap}", f"-Xms{_half(heap)}", "-XX:+UseG1GC"]
        return [
            *command,
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def format_storage(self) -> None:
        """Format the KRaft storage on first start (keeps existing data otherwise)."""
        if (self.log_dirs / "meta.properties").exists():
            return
        self.log_dirs.mkdir(parents=True, exist_ok=True)
        cluster = subprocess.run(  # noqa: S603
            self._java("kafka.tools.StorageTool", "random-uuid"),
            capture_output=True,
            text=True,
            check=False,
        )
        cluster_id = cluster.stdout.strip().splitlines()[-1] if cluster.stdout.strip() else ""
        if cluster.returncode != 0 or not cluster_id:
            raise BrokerError(f"kafka StorageTool random-uuid failed:\n{cluster.stderr[-2000:]}")
        result = subprocess.run(  # noqa: S603
            self._java(
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.server_properties),
                "--ignore-formatted",
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{result.stderr[-2000:]}")

    # -- lifecycle ---------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The broker's pid if our broker process is alive (a stale pid file is ignored)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return None
        if JAVA_MAIN not in cmdline or str(self.server_properties) not in cmdline:
            return None
        return pid

    def start(self, timeout: float = 90.0) -> BrokerStatus:
        """Start the broker (fetching and formatting as needed) and wait until it is ready."""
        if self.pid() is not None:
            self.wait_ready(timeout)
            return self.status()
        if _port_open(self.settings.broker_port):
            raise BrokerError(
                f"port {self.settings.broker_port} is already in use by another process; stop it, "
                "set MA_BROKER_PORT to a free port, or MA_KAFKA_BOOTSTRAP to use that broker"
            )
        self.fetch()
        self.write_config()
        self.format_storage()
        with open(self.home / "logs" / "stdout.log", "ab") as out:
            process = subprocess.Popen(  # noqa: S603
                self._java(JAVA_MAIN, str(self.server_properties), heap=self.settings.broker_heap),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the CLI; stopped by `broker stop`
            )
        self.pid_file.write_text(str(process.pid))
        try:
            self.wait_ready(timeout, process=process)
        except BrokerError:
            self.stop()
            raise
        return self.status()

    def wait_ready(self, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with code {process.returncode}; last log lines:\n"
                    + self.tail_log()
                )
            if _port_open(self.settings.broker_port) and asyncio.run(
                wait_until_ready(self.bootstrap, timeout=5)
            ):
                return
            time.sleep(0.5)
        raise BrokerError(f"the broker was not ready within {timeout:.0f}s:\n{self.tail_log()}")

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after ``timeout``); True if it ran."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> BrokerStatus:
        pid = self.pid()
        ready = pid is not None and asyncio.run(wait_until_ready(self.bootstrap, timeout=5))
        return BrokerStatus(pid is not None, ready, pid, self.bootstrap, self.home, self.log_file)

    def tail_log(self, lines: int = 30) -> str:
        for path in (self.log_file, self.home / "logs" / "stdout.log"):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                return "\n".join(text[-lines:])
        return "(no log yet)"


async def wait_until_ready(bootstrap: str, timeout: float = 30.0) -> bool:
    """True once a metadata request to ``bootstrap`` succeeds (not merely an open port)."""
    deadline = time.monotonic() + timeout
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.3)
        finally:
            await admin.close()


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise BrokerError(MISSING_TOOLS.format(what="Java 17 or newer"))
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)  # noqa: S603
    match = re.search(r'version "(\d+)', result.stderr + result.stdout)
    if match and int(match.group(1)) < 17:
        raise BrokerError(MISSING_TOOLS.format(what=f"Java 17 or newer (found {match.group(1)})"))
    return java


def _half(heap: str) -> str:
    number, unit = int(heap[:-1]), heap[-1]
    return f"{max(number // 2, 1)}{unit}"


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie child (we started it in this process) is dead for our purposes
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"
