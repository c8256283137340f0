"""The ClickHouse sink: every event, identity decision, contact, score and trigger lands in the
analyst tables (CONTRACT §6) exactly once."""

from pipeline.sink.rows import TABLE_COLUMNS, rows_for
from pipeline.sink.writer import SinkWriter

__all__ = ["TABLE_COLUMNS", "SinkWriter", "rows_for"]
