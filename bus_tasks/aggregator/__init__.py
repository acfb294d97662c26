"""The aggregator: the service loop, ingest of events, the RPC method table and its call policy,
control relay, retention."""

from bus_tasks.aggregator.ingest import StoreHealth
from bus_tasks.aggregator.policy import CallPolicy, Policies
from bus_tasks.aggregator.service import Aggregator, AggregatorPolicy

__all__ = ["Aggregator", "AggregatorPolicy", "CallPolicy", "Policies", "StoreHealth"]
