"""The aggregator: the service loop, ingest of events, the RPC method table, control relay, retention."""

from bus_tasks.aggregator.ingest import StoreHealth
from bus_tasks.aggregator.service import Aggregator, AggregatorPolicy

__all__ = ["Aggregator", "AggregatorPolicy", "StoreHealth"]
