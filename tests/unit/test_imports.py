"""Importing bus_tasks is cheap: the package and its pure core load no broker library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import bus_tasks

BROKER_LIBRARIES = ("kombu", "amqp", "redis")


def _loaded_after(statement: str) -> list[str]:
    """Top-level modules a fresh interpreter has loaded after running ``statement``."""
    code = f"import sys; {statement}; import json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return [name.partition(".")[0] for name in json.loads(done.stdout)]


@pytest.mark.parametrize(
    "statement",
    [
        "import bus_tasks",
        "import bus_tasks.core.model",
        "import bus_tasks.core.view",
        "import bus_tasks.errors",
        "from bus_tasks import State, TaskView",
        "from bus_tasks.transport import Bus, Delivery, Topology, TopologyOptions, BusOptions, BrokerAdmin",
        "from bus_tasks.transport.topology import QueueSpec, well_known",
        "from bus_tasks import BusOptions",
    ],
)
def test_the_package_and_its_core_load_no_broker_library(statement: str) -> None:
    loaded = set(_loaded_after(statement))
    assert loaded.isdisjoint(BROKER_LIBRARIES), sorted(loaded & set(BROKER_LIBRARIES))


def test_opening_a_bus_loads_the_transport_that_its_url_names() -> None:
    assert "kombu" in _loaded_after("from bus_tasks import transport; transport.open('memory://')")


def test_every_public_name_resolves_to_the_object_of_its_module() -> None:
    from bus_tasks.client import TasksClient
    from bus_tasks.transport import BusOptions

    assert bus_tasks.TasksClient is TasksClient
    assert bus_tasks.BusOptions is BusOptions
    assert all(getattr(bus_tasks, name) is not None for name in bus_tasks.__all__)
    assert set(bus_tasks.__all__) <= set(dir(bus_tasks))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = bus_tasks.Nope


def test_the_client_imports_the_protocol_never_the_aggregator_the_view_or_the_store() -> None:
    code = "import sys, json; import bus_tasks.client; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout))
    assert "bus_tasks.protocol.jsonrpc" in loaded
    assert not {
        m for m in loaded if m.startswith(("bus_tasks.aggregator", "bus_tasks.core.view", "bus_tasks.store"))
    }
