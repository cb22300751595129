"""A picker with a handheld working the tasks the server pushes (CONTRACT 3.1).

``TaskPicker`` decides, without I/O, what the worker scans for a task: now and then the wrong bin
first (the server refuses it; the worker walks to the right bin), now and then a short pick (the
bin holds one less than the task wants). ``work_tasks`` is the closed loop on a real MQTT
connection: it reads the retained ``tasks`` topic, scans, and waits for the ``feedback`` beep
before the next task, recording how long each beep took.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson


def task_code(task: dict[str, Any]) -> str:
    """The GS1-128 label of the task's item and lot, as the scanner reads it at the bin."""
    code = "]C101" + str(task["gtin"])
    return code + "10" + str(task["lot"]) if task.get("lot") else code


@dataclass
class TaskPicker:
    device_id: str
    rng: random.Random
    wrong_bin_rate: float = 0.0
    short_rate: float = 0.0
    decoy_bins: Sequence[str] = ()
    seq: int = field(default=0, init=False)

    def _msg_id(self) -> str:
        self.seq += 1
        return f"{self.device_id}-t{self.seq:07d}"

    def scans_for(self, task: dict[str, Any], ts_ms: int) -> list[dict[str, Any]]:
        """The scans a worker makes for one task: maybe a refused wrong-bin scan, then the pick."""
        out: list[dict[str, Any]] = []
        base = {"code": task_code(task), "mode": "pick" if task["type"] == "pick" else task["type"]}
        others = [b for b in self.decoy_bins if b != task.get("from_location")]
        if others and self.rng.random() < self.wrong_bin_rate:
            out.append({**base, "msg_id": self._msg_id(), "ts": ts_ms, "location": self.rng.choice(others),
                        "qty": task["qty"]})
        qty = task["qty"]
        short = qty > 1 and self.rng.random() < self.short_rate
        pick: dict[str, Any] = {**base, "msg_id": self._msg_id(), "ts": ts_ms + 1, "location": task["from_location"],
                                "qty": qty - 1 if short else qty, "task_id": task["task_id"]}
        if short:
            pick["short"] = True
        if task.get("to_location"):
            pick["to_location"] = task["to_location"]
        out.append(pick)
        return out


@dataclass
class WorkLog:
    feedback_ms: list[float] = field(default_factory=list)   # publish -> feedback, per scan answered
    refused: int = 0
    done: int = 0
    short: int = 0
    timeouts: int = 0


async def work_tasks(client: aiomqtt.Client, prefix: str, picker: TaskPicker, stop: asyncio.Event, log: WorkLog,
                     *, think_s: float = 0.0, feedback_timeout_s: float = 10.0) -> None:
    """Work the device's tasks until ``stop``: newest list wins (by version), one task at a time."""
    own = f"{prefix}/dev/{picker.device_id}"
    await client.subscribe([(f"{own}/tasks", 1), (f"{own}/feedback", 1)])
    latest: dict[str, Any] = {"version": -1, "tasks": []}
    changed = asyncio.Event()
    answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
    attempted: set[str] = set()

    async def listen() -> None:
        async for message in client.messages:
            body = orjson.loads(message.payload if isinstance(message.payload, bytes) else b"{}")
            if message.topic.matches(f"{own}/tasks"):
                if int(body.get("version", -1)) > int(latest["version"]):
                    latest.update(body)
                    changed.set()
            elif message.topic.matches(f"{own}/feedback"):
                waiter = answers.pop(str(body.get("msg_id")), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(body)

    listener = asyncio.create_task(listen())
    try:
        while not stop.is_set():
            todo = [t for t in latest["tasks"] if t["task_id"] not in attempted]
            if not todo:
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=0.5)
                continue
            task = todo[0]
            attempted.add(task["task_id"])
            for scan in picker.scans_for(task, int(time.time() * 1000)):
                future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
                answers[scan["msg_id"]] = future
                sent = time.perf_counter()
                await client.publish(f"{own}/scan", orjson.dumps(scan), qos=1)
                try:
                    answer = await asyncio.wait_for(future, timeout=feedback_timeout_s)
                except TimeoutError:
                    log.timeouts += 1
                    answers.pop(scan["msg_id"], None)
                    continue
                log.feedback_ms.append((time.perf_counter() - sent) * 1000)
                if not answer["ok"]:
                    log.refused += 1
                elif answer["reason"] == "short":
                    log.short += 1
                else:
                    log.done += 1
                if think_s:
                    await asyncio.sleep(think_s)
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await listener
