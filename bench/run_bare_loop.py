"""``python -m bench.run_bare_loop IN OUT GROUP``: the worker's baseline, a bare aiokafka
consume → transform → produce loop in its own process (as the worker runs in its own).

Per batch (``getmany``, up to ``BATCH`` records, as the worker's agents take up to 500):
decode each value with orjson, add a field, encode, ``send()`` it keyed as it came to ``OUT``
(``acks=all``, idempotent, linger 2 ms, as the worker's producer), wait for every
acknowledgement, then commit: outputs durable before the input is acknowledged, the worker's
order too. Bootstrap from ``MA_KAFKA_BOOTSTRAP``. Prints ``bare loop ready`` once its
partitions are assigned; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

BATCH = 500


async def run(source: str, target: str, group: str) -> None:
    bootstrap = os.environ["MA_KAFKA_BOOTSTRAP"]
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=BATCH,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await producer.start()
    await consumer.start()
    try:
        while not consumer.assignment():
            await asyncio.sleep(0.01)
        print("bare loop ready", flush=True)
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=BATCH)
            if not batches:
                continue
            pending = []
            for records in batches.values():
                for record in records:
                    value = orjson.loads(record.value)
                    value["processed"] = True  # the trivial transform
                    pending.append(await producer.send(target, orjson.dumps(value), key=record.key))
            await asyncio.gather(*pending)
            await consumer.commit()
    finally:
        await consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run_bare_loop")
    parser.add_argument("source")
    parser.add_argument("target")
    parser.add_argument("group")
    args = parser.parse_args()
    asyncio.run(run(args.source, args.target, args.group))


if __name__ == "__main__":
    main()
