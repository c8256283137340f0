"""Infrastructure settings: the one settings object, read from ``MA_*`` environment variables.

Business rules (sites, scoring, triggers, segments, merge rules) are not here: they live in the
rules file named by ``MA_CONFIG`` (see ``pipeline.rules``).

Every variable read (defaults in brackets):

- ``MA_KAFKA_BOOTSTRAP``     Kafka bootstrap servers; unset means the local broker [unset]
- ``MA_TOPIC_PREFIX``        prefix of every topic name [``ma.``]
- ``MA_TOPIC_PARTITIONS``    partitions of the topics the pipeline creates [8]
- ``MA_TOPIC_REPLICATION``   replication factor of created topics [1]
- ``MA_CLICKHOUSE_URL``      ``chdb:///path`` or ``http(s)://user:pass@host:8123`` [``chdb://./data/clickhouse``]
- ``MA_CLICKHOUSE_DATABASE`` database of the analyst tables [``ma``]
- ``MA_CONFIG``              the rules file (YAML) [``config/rules.yaml``]
- ``MA_DATA_DIR``            local state: broker log dirs, worker tables [``./data``]
- ``MA_CACHE_DIR``           downloaded Kafka jars [``./.cache``]
- ``MA_HTTP_HOST``, ``MA_HTTP_PORT``   collector bind address [``127.0.0.1``, 8080]
- ``MA_TRUST_FORWARDED``     take the client IP from ``X-Forwarded-For`` (behind a proxy) [false]
- ``MA_PUBLIC_URL``          the collector's public base URL, for signed links [``http://127.0.0.1:8080``]
- ``MA_WORKER_WEB_HOST``     the worker API's bind address [``127.0.0.1``]
- ``MA_WORKER_WEB_PORT``     the worker API's port (queries, segments, profiles) [6066]
- ``MA_WORKER_URL``          where the collector and CLI reach the worker API
                             [``http://127.0.0.1:<MA_WORKER_WEB_PORT>``]
- ``MA_SINK``                write to ClickHouse from the worker (``false``: the sink runs as
                             ``ma-pipeline sink``, or not at all) [true]
- ``MA_SINK_WEB_HOST``, ``MA_SINK_WEB_PORT``  ``ma-pipeline sink``'s API (health, metrics,
                             queries when it owns embedded chDB) [``127.0.0.1``, 6067]
- ``MA_DELIVER_WEB_HOST``, ``MA_DELIVER_WEB_PORT``  ``ma-pipeline deliver``'s API (health,
                             metrics) [``127.0.0.1``, 6068]
- ``MA_SEGMENT_REFRESH``     seconds between recomputing segment membership for profiles [60]
- ``MA_CONSOLE_TOKEN``       the console's token (``/console`` on the worker API) [unset]
- ``MA_COLLECTOR_METRICS_URL`` where the console reads the collector's counters [its /metrics]
- ``MA_APP_ID``              Faust application id and consumer-group prefix [``ma-pipeline``]
- ``MA_STORE``               Faust table store, ``rocksdb://`` or ``memory://`` [``rocksdb://``]
- ``MA_ORDER_WAIT``          seconds an event may take from the collector stamping it to Kafka;
                             stage 2 waits that long before applying a contact's records, to
                             apply them in event-time order (adds up to that to POST → trigger
                             latency; a later event is applied as it comes) [0.25]
- ``MA_BATCH_WINDOW``        seconds each worker stage waits for a batch to fill: longer means
                             fewer Kafka round trips per event, and that much more POST →
                             trigger latency at low rates [0.05]
- ``MA_LINK_SECRETS``        signing keys for email links, ``kid:secret,kid:secret``; the first
                             signs, all verify [a development key; set it in production]
- ``MA_KAFKA_VERSION``       Apache Kafka version the local broker fetches [4.1.1]
- ``MA_BROKER_PORT``, ``MA_BROKER_CONTROLLER_PORT``  local broker ports [9092, 9093]
- ``MA_BROKER_HEAP``         local broker JVM heap [``512m``]
- ``MA_CLOCK_FILE``          a file holding a clock shift in seconds, for tests and demos [unset]
- ``MA_LOG_LEVEL``           ``debug``, ``info``, ``warning``, ``error`` [``info``]

Example::

    settings = Settings(kafka_bootstrap="127.0.0.1:9092")
    settings.topic("events")  # 'ma.events'
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.clock import Clock, FileClock, SystemClock

#: Signs links in development only; production sets MA_LINK_SECRETS.
DEV_LINK_SECRET = "dev:change-me-this-is-the-development-link-secret"  # noqa: S105


class Settings(BaseSettings):
    """Infrastructure configuration, immutable once read."""

    model_config = SettingsConfigDict(env_prefix="MA_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = None
    topic_prefix: str = "ma."
    topic_partitions: int = Field(default=8, ge=1, le=1024)
    topic_replication: int = Field(default=1, ge=1, le=16)
    clickhouse_url: str = "chdb://./data/clickhouse"
    clickhouse_database: str = Field(default="ma", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    config: Path = Path("config/rules.yaml")
    data_dir: Path = Path("data")
    cache_dir: Path = Path(".cache")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    trust_forwarded: bool = False
    public_url: str = "http://127.0.0.1:8080"
    worker_web_host: str = "127.0.0.1"
    worker_web_port: int = Field(default=6066, ge=0, le=65535)
    worker_url: str | None = None
    sink: bool = True
    sink_web_host: str = "127.0.0.1"
    sink_web_port: int = Field(default=6067, ge=0, le=65535)
    deliver_web_host: str = "127.0.0.1"
    deliver_web_port: int = Field(default=6068, ge=0, le=65535)
    segment_refresh: float = Field(default=60.0, gt=0)
    console_token: SecretStr | None = None
    collector_metrics_url: str | None = None
    app_id: str = "ma-pipeline"
    store: str = "rocksdb://"
    order_wait: float = Field(default=0.25, ge=0, le=3600)
    batch_window: float = Field(default=0.05, gt=0, le=5)
    link_secrets: SecretStr = SecretStr(DEV_LINK_SECRET)
    kafka_version: str = "4.1.1"
    broker_port: int = Field(default=9092, ge=1, le=65535)
    broker_controller_port: int = Field(default=9093, ge=1, le=65535)
    broker_heap: str = Field(default="512m", pattern=r"^[0-9]+[kmgKMG]$")
    clock_file: Path | None = None
    log_level: str = Field(default="info", pattern=r"^(debug|info|warning|error)$")

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_is_a_topic_name(cls, value: str) -> str:
        if value and not all(c.isalnum() or c in "._-" for c in value):
            raise ValueError("may only contain letters, digits, '.', '_' and '-'")
        return value

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers to use: ``MA_KAFKA_BOOTSTRAP`` or the local broker's address."""
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    @property
    def worker_api(self) -> str:
        """The base URL of the worker API."""
        return (self.worker_url or f"http://127.0.0.1:{self.worker_web_port}").rstrip("/")

    @property
    def collector_metrics(self) -> str:
        """Where the console reads the collector's counters (``MA_COLLECTOR_METRICS_URL``)."""
        return self.collector_metrics_url or f"http://127.0.0.1:{self.http_port}/metrics"

    @property
    def embedded_clickhouse(self) -> bool:
        """chDB: one process at a time opens its files (the worker, or ``ma-pipeline sink``)."""
        return self.clickhouse_url.startswith("chdb://")

    @property
    def uses_local_broker(self) -> bool:
        return self.kafka_bootstrap is None

    def topic(self, name: str) -> str:
        """The full name of a topic, e.g. ``events`` → ``ma.events``."""
        return f"{self.topic_prefix}{name}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``MA_*`` variables, to hand to a child process."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[f"MA_{name.upper()}"] = str(value)
        return env

    def clock(self) -> Clock:
        """The clock of this process: the system clock, or one shifted by ``MA_CLOCK_FILE``."""
        return FileClock(self.clock_file) if self.clock_file else SystemClock()

    @cached_property
    def link_keys(self) -> dict[str, bytes]:
        """Link-signing secrets by key id, the signing key first."""
        return parse_link_secrets(self.link_secrets.get_secret_value())


def parse_link_secrets(text: str) -> dict[str, bytes]:
    """Parse ``kid:secret,kid:secret``; the first pair is the one that signs new links."""
    keys: dict[str, bytes] = {}
    for index, part in enumerate(p for p in text.split(",") if p.strip()):
        kid, sep, secret = part.strip().partition(":")
        if not sep or not kid or not secret:
            raise ValueError(f"MA_LINK_SECRETS entry {index + 1}: expected 'kid:secret'")
        if len(secret) < 16:
            raise ValueError(f"MA_LINK_SECRETS key {kid!r}: secret shorter than 16 characters")
        keys[kid] = secret.encode()
    if not keys:
        raise ValueError("MA_LINK_SECRETS: at least one 'kid:secret' is required")
    return keys
