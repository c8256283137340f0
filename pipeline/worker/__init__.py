"""The Faust worker: stitching, scoring, triggers and the ClickHouse sink, as thin agents over
the pure step functions in ``steps``."""
