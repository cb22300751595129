from __future__ import annotations

import random

from simulators.models.task_worker import TaskPicker, task_code

TASK = {"task_id": "SO-1:1:1", "type": "pick", "ref": "SO-1", "sku": "A", "gtin": "09506000134352", "lot": "L1",
        "qty": 4, "from_location": "BIN-1", "to_location": "STAGE", "due_at": None}


def test_the_label_carries_gtin_and_lot() -> None:
    assert task_code(TASK) == "]C10109506000134352" + "10L1"
    assert task_code({**TASK, "lot": None}) == "]C10109506000134352"


def test_a_careful_picker_scans_the_task_once_at_its_bin() -> None:
    scans = TaskPicker("sc-1", random.Random(1), decoy_bins=["BIN-2"]).scans_for(TASK, 1000)
    assert len(scans) == 1
    s = scans[0]
    assert (s["location"], s["qty"], s["task_id"], s["mode"], s["to_location"]) == ("BIN-1", 4, "SO-1:1:1", "pick",
                                                                                   "STAGE")
    assert "short" not in s


def test_a_careless_picker_tries_a_wrong_bin_first_and_shorts() -> None:
    picker = TaskPicker("sc-1", random.Random(1), wrong_bin_rate=1.0, short_rate=1.0, decoy_bins=["BIN-1", "BIN-2"])
    wrong, right = picker.scans_for(TASK, 1000)
    assert wrong["location"] == "BIN-2" and "task_id" not in wrong
    assert (right["location"], right["qty"], right["short"]) == ("BIN-1", 3, True)
    assert wrong["msg_id"] != right["msg_id"]


def test_rates_are_honoured_over_many_tasks() -> None:
    picker = TaskPicker("sc-1", random.Random(7), wrong_bin_rate=0.1, short_rate=0.05, decoy_bins=["BIN-2"])
    results = [picker.scans_for(TASK, 0) for _ in range(2000)]
    wrong = sum(len(r) == 2 for r in results) / 2000
    short = sum(bool(r[-1].get("short")) for r in results) / 2000
    assert 0.07 < wrong < 0.13 and 0.03 < short < 0.07
