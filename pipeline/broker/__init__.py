"""The local single-node Kafka broker (KRaft) for development, tests and ``ma-pipeline run``."""

from pipeline.broker.local import BrokerError, LocalBroker, wait_until_ready

__all__ = ["BrokerError", "LocalBroker", "wait_until_ready"]
