"""The Faust worker: stitching, scoring and triggers as thin agents over the pure step functions
in ``steps``, and the ClickHouse sink as a plain aiokafka consumer beside them (``sink``)."""
