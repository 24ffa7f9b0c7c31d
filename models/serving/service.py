"""The service's state: the snapshots being served (champion, and a challenger beside it), the
batched answers computed from them, and the log of what was served.

The reloader (models/serving/reload.py) swaps `Service.snapshot` (the champion) and
`Service.challenger` with one reference assignment each; `answer` reads both references once per
batch, so a batch that started on a snapshot finishes on it.

Every answer names its `arm` and `model_version`. In `split` mode a user whom `arm_of` assigns to
the challenger (models/serving/arms.py) is answered by it; in `shadow` mode the champion answers
everyone and the challenger answers the same requests too, its answer written to the shadow log
only. The items a user was shown become `impression` events (models/serving/feedback.py),
queued to the event log's writer; each answer carries the Future of their fsync (`DURABLE`),
which the app awaits before it sends the response.
"""

from __future__ import annotations

import logging
import uuid

from models.serving.arms import arm_of
from models.serving.config import ServeConfig
from models.serving.eventlog import EventLog
from models.serving.feedback import Exposures, Served, impression_lines, now_ms
from models.serving.metrics import ServiceMetrics
from models.serving.snapshot import CHALLENGER, CHAMPION, RequestError, Snapshot

log = logging.getLogger("towerflow.serve")

# the key of an answer that carries the Future of its impressions' fsync (models/serving/eventlog.py):
# the app waits for it, removes it and only then sends the response
DURABLE = "_durable"


class Service:
    """Holds the current snapshots; answers batches of jobs from whichever are current."""

    def __init__(self, config: ServeConfig | None = None):
        self.config = config = config or ServeConfig(max_id_length=0)
        self.snapshot: Snapshot | None = None  # the champion
        self.challenger: Snapshot | None = None
        self.not_ready = "loading"  # why there is no snapshot yet (the last refusal's message)
        self.metrics = ServiceMetrics(lambda: self.snapshot, lambda: self.challenger, config)
        self.exposures = Exposures(config.remembered_requests)
        self.events = self.shadow = None
        if config.events_folder is not None:
            self.events = EventLog(config.events_folder, "served", config.rotate_bytes, config.rotate_seconds)
        if config.shadow_folder is not None:
            self.shadow = EventLog(config.shadow_folder, "shadow", config.rotate_bytes, config.rotate_seconds)

    def start(self) -> None:
        for events in (self.events, self.shadow):
            if events is not None:
                events.start()

    def close(self) -> None:
        for events in (self.events, self.shadow):
            if events is not None:
                events.close()

    def arm_for(self, kind: str, request: dict, challenger: Snapshot | None) -> str:
        cfg = self.config
        if kind != "recommend" or challenger is None or cfg.ab_mode != "split":
            return CHAMPION
        return arm_of(request.get("user_id"), cfg.challenger_share, challenger.version)

    def answer(self, jobs: list[tuple[str, dict]]) -> list:
        """Batch entry: (kind, request) jobs -> results (dicts or RequestError), one snapshot per arm."""
        snap, challenger = self.snapshot, self.challenger
        if snap is None:
            return [RequestError(f"not ready: {self.not_ready}", "", 503)] * len(jobs)
        self.metrics.batch_size.observe(len(jobs))
        arms = {CHAMPION: snap, CHALLENGER: challenger}
        which = [self.arm_for(kind, req, challenger) for kind, req in jobs]
        out: list = [None] * len(jobs)
        for arm, s in arms.items():
            mine = [n for n, a in enumerate(which) if a == arm]
            if mine:
                for n, r in zip(mine, self._answer(s, [jobs[n] for n in mine])):
                    out[n] = r
        now, lines, recommended, exposed = now_ms(), [], [], []
        for n, (kind, req) in enumerate(jobs):
            if isinstance(out[n], RequestError):
                continue
            s = arms[which[n]]
            meta = {"arm": which[n], "model_version": s.version, "index": s.index_info}
            if kind == "recommend":
                meta["request_id"] = rid = uuid.uuid4().hex
                recommended.append(n)
                if req.get("user_id") is not None:  # the landing contract needs a user
                    experiment = challenger.version if challenger is not None else None
                    served = Served(req["user_id"], which[n], s.version, _positions(out[n]), now, experiment)
                    self.exposures.add(rid, served)
                    lines += impression_lines(rid, served)
                    exposed.append(n)
            out[n] = {**out[n], **meta}
        if self.events is not None and lines:
            durable = self.events.submit(lines)  # the app sends these responses once it completes
            self.metrics.logged("impression", len(lines))
            for n in exposed:
                out[n][DURABLE] = durable
        if challenger is not None and self.config.ab_mode == "shadow" and recommended:
            self._shadow(challenger, [jobs[n] for n in recommended], [out[n]["request_id"] for n in recommended], now)
        return out

    def _answer(self, snap: Snapshot, jobs: list[tuple[str, dict]]) -> list:
        out: list = [None] * len(jobs)
        for kind, fn in (("recommend", snap.recommend), ("similar", snap.similar)):
            idx = [n for n, (k, _) in enumerate(jobs) if k == kind]
            if idx:
                for n, r in zip(idx, fn([jobs[n][1] for n in idx])):
                    out[n] = r
        for n, (kind, req) in enumerate(jobs):
            if kind == "recommend" and req.get("rank") and isinstance(out[n], dict):
                out[n] = self._rank(snap, req, out[n])
        return out

    def _shadow(self, challenger: Snapshot, jobs: list[tuple[str, dict]], request_ids: list[str], now: int) -> None:
        """The challenger's answers to requests the champion answered: logged, never returned."""
        try:
            answers = self._answer(challenger, jobs)
        except Exception:  # noqa: BLE001 - a shadow failure must not fail the champion's answers; logged
            log.exception("towerflow serve: the shadow challenger %s failed on a batch", challenger.version)
            self.metrics.shadow_failed()
            return
        lines = []
        for (_, req), rid, res in zip(jobs, request_ids, answers):
            if isinstance(res, dict) and req.get("user_id") is not None:
                served = Served(
                    req["user_id"], CHALLENGER, challenger.version, _positions(res), now, challenger.version
                )
                lines += impression_lines(rid, served, event_type="shadow")
        self.metrics.arm_answers(CHALLENGER, challenger.version, "shadow", len(jobs))
        if self.shadow is not None and lines:
            self.shadow.submit(lines)  # not waited for: a shadow answer is nobody's response
            self.metrics.logged("shadow", len(lines))

    @staticmethod
    def _rank(snap: Snapshot, req: dict, res: dict):
        if snap.ranker is None:  # a ranker promoted between the request's check and this batch's snapshot
            return {**res, "items": res["items"][: req.get("rank_k", req["k"])]}
        history = snap.history_items(req.get("user_id")) + list(req.get("recent_items") or [])
        ranked = snap.ranker.rank(
            req.get("user_id"), history, [i["item_id"] for i in res["items"]], [i["score"] for i in res["items"]]
        )
        return {
            **res,
            "ranked": True,
            "items": [{"item_id": i, "score": float(s)} for i, s in ranked][: req.get("rank_k", req["k"])],
        }


def _positions(result: dict) -> dict:
    """item id -> 1-based position in an answer."""
    return {item["item_id"]: p for p, item in enumerate(result["items"], start=1)}
