"""What the service served, as landing events, and the feedback that refers to it.

Every /recommend answer for a user gets a `request_id`; its items become `impression` events,
one per item with its 1-based position, written to the event log (models/serving/eventlog.py)
before the response is sent. `POST /feedback {"request_id", "item_id", "action"}` becomes an
event of type `action` for that user and item, carrying the request's arm, model version and
the item's position, so the A/B report can join an action to the exposure it answers.

The service remembers the last `capacity` answered requests (`Exposures`, an LRU: request id ->
user, arm, version, items and positions, time). Feedback for a request it no longer remembers
(evicted, or answered before a restart) is refused with 404 naming `request_id`, exactly like a
request id it never issued: the event would have no user, arm or position to carry. With the
default 100,000 requests, kept in memory at roughly 1-2 KB each for k=10, a click up to
100,000 requests after its impression is accepted.

Event ids make every line idempotent under the cleaning's duplicate rule: an impression is
`<request_id>:<position>`, a feedback `<request_id>:<item_id>:<action>` (a second identical
click is a duplicate of the first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class Served:
    user_id: str
    arm: str
    model_version: str
    positions: dict  # item id -> 1-based position in the answer
    timestamp: int  # epoch ms of the answer
    experiment: str | None = None  # the challenger version under test when answered (both arms), else None


class Exposures:
    """request id -> `Served`, the last `capacity` of them (thread-safe LRU)."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[str, Served] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def add(self, request_id: str, served: Served) -> None:
        with self._lock:
            self._items[request_id] = served
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
                self.evicted += 1

    def get(self, request_id: str) -> Served | None:
        with self._lock:
            found = self._items.get(request_id)
            if found is not None:
                self._items.move_to_end(request_id)
            return found

    def __len__(self) -> int:
        return len(self._items)


def now_ms() -> int:
    return int(time.time() * 1000)


def impression_lines(request_id: str, served: Served, event_type: str = "impression") -> list[dict]:
    """One landing event per returned item (`event_type` "shadow" for a shadow answer)."""
    return [
        {
            "event_id": f"{request_id}:{position}",
            "user_id": served.user_id,
            "item_id": item,
            "event_type": event_type,
            "timestamp": served.timestamp,
            "request_id": request_id,
            "arm": served.arm,
            "model_version": served.model_version,
            "position": position,
            **_experiment(served),
        }
        for item, position in served.positions.items()
    ]


def feedback_line(request_id: str, served: Served, item_id: str, action: str, timestamp: int) -> dict:
    return {
        "event_id": f"{request_id}:{item_id}:{action}",
        "user_id": served.user_id,
        "item_id": item_id,
        "event_type": action,
        "timestamp": timestamp,
        "request_id": request_id,
        "arm": served.arm,
        "model_version": served.model_version,
        "position": served.positions[item_id],
        **_experiment(served),
    }


def _experiment(served: Served) -> dict:
    """`experiment`: the challenger version under test, on both arms' lines, so an A/B report
    selects one experiment's traffic by name, never by time (the champion outlives experiments)."""
    return {} if served.experiment is None else {"experiment": served.experiment}
