"""A single-node KRaft Apache Kafka broker on loopback, for the tests and the benchmarks.

The jars come from Maven Central (``benches/kafka/fetch.sh``, which needs ``mvn`` and Java 17)
and are cached in ``~/.cache/tidelog-bench/kafka/<version>``, so only the first run on a machine
downloads anything. The broker binds 127.0.0.1 on free ports, keeps its data in a directory the
caller owns, runs in its own process group (so a killed test run can take it down with one
``killpg``) and has share groups (KIP-932) enabled for ``store.work_queue``.

This is test and bench infrastructure: the ``tidelog`` package never imports it.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Share groups are production-ready from Apache Kafka 4.2 on (KIP-932).
KAFKA_VERSION = os.environ.get("TIDELOG_KAFKA_VERSION", "4.2.2")
_STORAGE_TOOLS = ("kafka.tools.StorageTool", "org.apache.kafka.tools.StorageTool")


class BrokerUnavailable(RuntimeError):
    """Java, Maven or the jars are missing, or the broker did not start (the message says why)."""


def kafka_home(version: str = KAFKA_VERSION) -> Path:
    """Where ``benches/kafka/fetch.sh`` puts (or put) the broker's jars."""
    env = os.environ.get("TIDELOG_KAFKA_HOME")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "tidelog-bench" / "kafka" / version


def fetch(version: str = KAFKA_VERSION) -> Path:
    """Returns the jar directory, fetching the jars from Maven Central first if needed.

    Raises:
        BrokerUnavailable: java or mvn is missing, or the download failed.
    """
    home = kafka_home(version)
    libs = home / "libs"
    if (home / ".complete").exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("java") is None:
        raise BrokerUnavailable("java not found: `apt-get install -y openjdk-17-jre-headless`")
    if shutil.which("mvn") is None:
        raise BrokerUnavailable("mvn not found (it fetches the broker): `apt-get install -y maven`")
    env = {**os.environ, "TIDELOG_KAFKA_HOME": str(home)}
    out = subprocess.run(
        ["bash", str(REPO / "benches" / "kafka" / "fetch.sh"), version],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if out.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise BrokerUnavailable(
            f"fetching Kafka {version} from Maven Central failed:\n{out.stdout}{out.stderr}"
        )
    return libs


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free now; the caller binds it soon after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def java_version() -> str:
    """The first line of ``java -version``, or ``"?"``."""
    try:
        out = subprocess.run(
            ["java", "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = (out.stderr or out.stdout).splitlines()
    return first[0].strip() if first else "?"


def _storage_tool(libs: Path) -> str:
    wanted = {c.replace(".", "/") + ".class": c for c in _STORAGE_TOOLS}
    for jar in sorted(libs.glob("kafka*.jar")):
        with zipfile.ZipFile(jar) as z:
            for name in z.namelist():
                if name in wanted:
                    return wanted[name]
    raise BrokerUnavailable(f"no StorageTool class in {libs}")


def _die_with_parent() -> None:
    # atexit does not run when the test run is SIGKILLed: the kernel then kills the broker
    # (PR_SET_PDEATHSIG survives exec). The broker has its own process group, so a Ctrl-C
    # in the terminal reaches only pytest, which stops the broker in order.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class KafkaBroker:
    """A single KRaft broker+controller from the Maven Central jars, on loopback ports.

    Args:
        root: Directory for the broker's configuration, data and log (``root/kafka``).
        heap: The JVM's maximum heap (the machine is shared: keep it small).
        version: The Kafka version to fetch and run.
    """

    def __init__(self, root: Path, *, heap: str = "512m", version: str = KAFKA_VERSION) -> None:
        self.root = root / "kafka"
        self.heap = heap
        self.version = version
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.java = "?"

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT`` of the running broker."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's combined stdout and stderr."""
        return self.root / "broker.log"

    def start(self, timeout: float = 180.0) -> None:
        """Fetches the jars if needed, formats the storage and starts the broker.

        Returns once the broker accepts connections; :meth:`stop` is also registered with
        ``atexit``, and the broker runs in its own process group.

        Raises:
            BrokerUnavailable: Java or the jars are missing, or the broker did not start.
        """
        libs = fetch(self.version)
        self.java = java_version()
        self.root.mkdir(parents=True, exist_ok=True)
        self.port, controller = free_port(), free_port()
        props = self.root / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},"
                    f"CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"log.dirs={self.root / 'data'}",
                    "num.partitions=1",
                    "auto.create.topics.enable=false",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=1",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "transaction.state.log.num.partitions=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "share.coordinator.state.topic.num.partitions=1",
                    "group.initial.rebalance.delay.ms=0",
                    # Tests open and close many members: a short session timeout lets a
                    # group rebalance quickly after a member is killed. A group's session
                    # timeout must exceed its heartbeat interval (at least 5 s by default):
                    # the lower bound lets a test's group have both short.
                    "group.consumer.min.session.timeout.ms=1000",
                    "group.consumer.min.heartbeat.interval.ms=250",
                    "group.classic.min.session.timeout.ms=1000",
                    "group.share.min.record.lock.duration.ms=1000",
                    "num.network.threads=2",
                    "num.io.threads=2",
                    "log.flush.scheduler.interval.ms=9223372036854775807",
                ]
            )
            + "\n"
        )
        java = [
            "java",
            "-Xms128m",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            str(libs / "*"),
        ]
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        with open(self.log_path, "wb") as log:
            fmt = subprocess.run(
                [
                    *java,
                    _storage_tool(libs),
                    "format",
                    # One argument: an id starting with "-" (1 in 64 of them) would be
                    # read as an option and fail the format.
                    f"--cluster-id={cluster}",
                    "-c",
                    str(props),
                    "--feature",
                    "share.version=1",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=120,
                check=False,
            )
            if fmt.returncode != 0:
                raise BrokerUnavailable(f"kafka-storage format failed; see {self.log_path}")
            self.proc = subprocess.Popen(
                [*java, "kafka.Kafka", str(props)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        if not self._wait_ready(timeout):
            self.stop()
            raise BrokerUnavailable(
                f"the Kafka broker did not start; see {self.log_path}:\n{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def _wait_ready(self, timeout: float) -> bool:
        # The port opens before the broker has registered with its controller: ask for the
        # cluster's metadata until a broker is listed.
        from confluent_kafka.admin import AdminClient

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                time.sleep(0.2)
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while time.monotonic() < end:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                meta = admin.list_topics(timeout=2.0)
                if meta.brokers:
                    return True
            except Exception:
                time.sleep(0.3)
        return False

    def stop(self) -> None:
        """Stops the broker (SIGTERM to its process group, then SIGKILL); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass
