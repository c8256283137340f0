"""ClickHouse: the one client factory and the schema migrations (DDL in ``schemas/clickhouse``)."""

from pipeline.clickhouse.client import ClickHouse, connect, describe_url
from pipeline.clickhouse.migrate import migrate

__all__ = ["ClickHouse", "connect", "describe_url", "migrate"]
