"""The aggregator: the service loop, ingest of events, the RPC method table, control relay."""

from bus_tasks.aggregator.service import Aggregator, AggregatorPolicy, StoreHealth

__all__ = ["Aggregator", "AggregatorPolicy", "StoreHealth"]
