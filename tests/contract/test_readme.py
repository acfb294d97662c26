"""The README's Python snippets run as written (on memory://, with an aggregator serving)."""

from __future__ import annotations

import re
from pathlib import Path

from support.brokers import System

from bus_tasks.testing import wait_until

README = Path(__file__).resolve().parents[2] / "README.md"
URL_LINE = 'url = "amqp://guest:guest@127.0.0.1:5672//"'


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_readme_snippets_publish_list_retag_and_stop_as_they_say(memory_system: System) -> None:
    subsystem, client, shutdown = python_blocks()
    assert URL_LINE in subsystem
    scope: dict[str, object] = {}

    exec(subsystem.replace(URL_LINE, 'url = "memory://"'), scope)
    task = scope["task"]
    wait_until(lambda: task.id in memory_system.aggregator.view, timeout_s=10, what="task listed")  # type: ignore[attr-defined]
    exec(client, scope)
    publisher = scope["publisher"]
    assert publisher.get(task.id).tags == ("hsm",)  # type: ignore[attr-defined]
    exec(shutdown, scope)

    wait_until(
        lambda: scope["client"].subsystems()["vdsm"]["state"] == "stopped",  # type: ignore[attr-defined]
        timeout_s=10,
        what="the subsystem said it stopped",
    )
    assert scope["client"].get_task_details(task.id)["tags"] == ["hsm"]  # type: ignore[attr-defined]
