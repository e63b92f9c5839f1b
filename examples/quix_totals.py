"""A Quix Streams application, unmodified, on ``tidelog serve --kafka``.

It reads orders (JSON ``{"customer": ..., "amount": ...}``, keyed by customer) from the topic
``orders``, keeps each customer's running total in Quix's state (a local RocksDB store backed
by a changelog topic on the broker, so a new instance recovers it), and writes
``{"customer", "total", "orders"}`` to the topic ``totals``. Nothing in it knows about
tidelog: it is the program you would run against Apache Kafka, pointed at a store instead.

    tidelog serve ./store --kafka 127.0.0.1:9092 &
    python examples/quix_totals.py --broker 127.0.0.1:9092 --produce 100
    python examples/quix_totals.py --broker 127.0.0.1:9092 --produce 50 --exactly-once

``--produce N`` first produces N orders (through the application's own producer), then
processes until N outputs went out (or nothing arrived for ``--timeout`` seconds), and prints
the totals it wrote last. Both processing guarantees work: ``--exactly-once`` commits the
outputs, the changelog and the input offsets in one Kafka transaction.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from quixstreams import Application, State

CUSTOMERS = 7


def order(i: int) -> tuple[str, dict[str, Any]]:
    """The i-th order of a run: customers in turn, amounts 1..50."""
    customer = f"customer-{i % CUSTOMERS}"
    return customer, {"customer": customer, "amount": i % 50 + 1}


def add_to_total(value: dict[str, Any], state: State) -> dict[str, Any]:
    total = state.get("total", 0) + value["amount"]
    count = state.get("orders", 0) + 1
    state.set("total", total)
    state.set("orders", count)
    return {"customer": value["customer"], "total": total, "orders": count}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="127.0.0.1:9092", help="Kafka bootstrap address")
    parser.add_argument("--group", default="quix-totals", help="the consumer group")
    parser.add_argument("--state-dir", default="state", help="where Quix keeps its state")
    parser.add_argument("--produce", type=int, default=0, metavar="N", help="orders to add")
    parser.add_argument("--start", type=int, default=0, help="number of the first order")
    parser.add_argument("--timeout", type=float, default=30.0, help="idle seconds to stop after")
    parser.add_argument("--exactly-once", action="store_true", help="exactly-once processing")
    args = parser.parse_args()

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        processing_guarantee="exactly-once" if args.exactly_once else "at-least-once",
    )
    orders = app.topic("orders", key_deserializer="str", value_deserializer="json")
    totals = app.topic("totals", key_serializer="str", value_serializer="json")
    sdf = app.dataframe(orders)
    sdf = sdf.apply(add_to_total, stateful=True)
    sdf.to_topic(totals)

    if args.produce:
        with app.get_producer() as producer:
            for i in range(args.start, args.start + args.produce):
                customer, value = order(i)
                producer.produce(orders.name, key=customer, value=json.dumps(value))

    outputs = app.run(count=args.produce, timeout=args.timeout)
    last: dict[str, dict[str, Any]] = {}
    for value in outputs:
        last[value["customer"]] = value
    print(f"processed {len(outputs)} orders")
    for customer, value in sorted(last.items()):
        print(f"{customer}: total {value['total']} over {value['orders']} orders")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
