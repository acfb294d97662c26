"""Helpers of the test suite: brokers, processes, a fault proxy, factories, CLI parsing."""
