"""Figure ``tls_ingest``: ingest with identity on and TLS, against a raw kombu consumer over the
same TLS listener (issue 23).

A RabbitMQ node of the figure's own, started as the TLS tests start theirs
(``tests/support/tls_rabbit.py``: a TLS listener that requires a client certificate,
``rabbitmq_auth_mechanism_ssl``, the certificate's CN as the user), loaded with the definitions
``bus-tasks broker-setup`` prints for one subsystem and one aggregator (least privilege,
certificate login only). The subsystem, logged in by its certificate, fills the event log (the
stream) once with publisher-confirmed events, each stamped with its ``user_id``. Each repetition
reads all of it from the first offset twice, as ``ingest`` does: by a new aggregator made as
``bus-tasks serve`` makes it (``wiring.aggregator``) with ``identity = "broker"``, logged in by
the aggregator's certificate, every event's ``user_id`` checked against its subsystem; and by a
raw kombu consumer logged in by the same certificate over the same listener, with the same
prefetch, acking in the aggregator's batches (``multiple=True``). The node is stopped after.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench import workload
from bench.harness import Figure, HarnessError, Sizes, at_least, fmt_rate, median, say, side_by_side
from bench.ingest import fill, through_aggregator, through_raw_consumer
from bus_tasks import names
from bus_tasks.aggregator import AggregatorPolicy
from bus_tasks.broker_setup import Deployment, definitions
from bus_tasks.config import Settings

TASKS = Sizes(full=4_000, quick=300)  # three events each, as in ``ingest``
REPS = Sizes(full=7, quick=2)
VHOST = "bus"
SUBSYSTEM = workload.SUBSYSTEM  # the events' owner, and the identity that publishes them
AGGREGATOR = "agg1"
# The node starter lives with the tests that start the same node (they import it as ``support``).
TESTS = Path(__file__).resolve().parents[1] / "tests"


def run(quick: bool) -> list[Figure]:
    n_tasks, reps = TASKS.pick(quick), REPS.pick(quick)
    if str(TESTS) not in sys.path:
        sys.path.append(str(TESTS))
    from support.own_rabbit import available
    from support.tls_rabbit import tls_rabbit

    if not available():
        raise HarnessError("no RabbitMQ server installed to start a TLS node of the figure's own")
    with (
        tempfile.TemporaryDirectory(prefix="bus_tasks_bench_tls_") as files,
        tempfile.TemporaryDirectory(prefix="bus_tasks_bench_rabbit_") as base,
        tls_rabbit(Path(files), Path(base), VHOST) as rabbit,
    ):
        document = Path(files) / "definitions.json"
        deployment = Deployment(subsystems=(SUBSYSTEM,), aggregators=(AGGREGATOR,), vhost=VHOST)
        document.write_text(json.dumps(definitions(deployment)))
        rabbit.node.import_definitions(document, vhost=VHOST, users={SUBSYSTEM, AGGREGATOR})

        def settings_of(identity: str) -> Settings:
            return rabbit.settings(identity, identity="broker", aggregators=[AGGREGATOR])

        publisher, aggregator = settings_of(SUBSYSTEM), settings_of(AGGREGATOR)
        prefetch, ack_batch = aggregator.prefetch_count, AggregatorPolicy().ack_batch
        count = fill(aggregator.broker, list(workload.bodies(n_tasks)), settings=publisher)
        store_note = ""
        # CPU of this process per event (both sides run here, the aggregator in a thread of its
        # own), start-up included: on a loaded machine the rates follow it.
        cpu_us: dict[str, list[float]] = {"ours": [], "raw": []}

        def ours() -> float:
            nonlocal store_note
            cpu_at = time.process_time()
            read = through_aggregator(aggregator.broker, count, prefetch, settings=aggregator)
            cpu_us["ours"].append((time.process_time() - cpu_at) / count * 1e6)
            store_note = read.store
            return read.per_s

        def baseline() -> float:
            cpu_at = time.process_time()
            read = through_raw_consumer(
                aggregator.broker, count, prefetch, settings=aggregator, ack_batch=ack_batch
            )
            cpu_us["raw"].append((time.process_time() - cpu_at) / count * 1e6)
            return read.per_s

        speed = side_by_side(ours, baseline, reps)
    cpu = f"CPU per event ours {median(cpu_us['ours']):.0f} us, raw {median(cpu_us['raw']):.0f} us"
    say(f"  tls ingest: ours {median(speed.ours):,.0f} ev/s, raw {median(speed.baseline):,.0f} ev/s; {cpu}")
    return [
        Figure(
            "tls ingest",
            fmt_rate(median(speed.ours), "ev"),
            fmt_rate(median(speed.baseline), "ev"),
            speed.ratio,
            at_least(0.9),
            f"{count:,} events ({n_tasks:,} tasks), prefetch {prefetch}, ack batch {ack_batch}, {reps} reps",
            note=(
                f"TLS with certificate login (EXTERNAL), broker-setup's least-privilege users,"
                f' identity = "broker": a new aggregator as serve makes it ({store_note}) reading'
                f" {names.EVENT_LOG} from the first offset as {AGGREGATOR} vs a raw kombu consumer"
                f" logged in by the same certificate over the same listener; {cpu}; {speed.spread()}"
            ),
        )
    ]
