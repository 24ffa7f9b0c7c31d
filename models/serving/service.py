"""The service's state: the snapshot being served, and the batched answers computed from it.

The reloader (models/serving/reload.py) swaps `Service.snapshot` with one reference assignment;
`answer` reads the reference once per batch, so a batch that started on one snapshot finishes
on it.
"""

from __future__ import annotations

from models.serving.metrics import ServiceMetrics
from models.serving.snapshot import RequestError, Snapshot


class Service:
    """Holds the current snapshot; answers batches of jobs from whichever is current."""

    def __init__(self):
        self.snapshot: Snapshot | None = None
        self.not_ready = "loading"  # why there is no snapshot yet (the last refusal's message)
        self.metrics = ServiceMetrics(lambda: self.snapshot)

    def answer(self, jobs: list[tuple[str, dict]]) -> list:
        """Batch entry: (kind, request) jobs -> results (dicts or RequestError), one snapshot."""
        snap = self.snapshot
        if snap is None:
            return [RequestError(f"not ready: {self.not_ready}", "", 503)] * len(jobs)
        self.metrics.batch_size.observe(len(jobs))
        out: list = [None] * len(jobs)
        for kind, fn in (("recommend", snap.recommend), ("similar", snap.similar)):
            idx = [n for n, (k, _) in enumerate(jobs) if k == kind]
            if idx:
                for n, r in zip(idx, fn([jobs[n][1] for n in idx])):
                    out[n] = r
        for n, (kind, req) in enumerate(jobs):
            if kind == "recommend" and req.get("rank") and isinstance(out[n], dict):
                out[n] = self._rank(snap, req, out[n])
        meta = {"model_version": snap.version, "index": snap.index_info}
        return [r if isinstance(r, RequestError) else {**r, **meta} for r in out]

    @staticmethod
    def _rank(snap: Snapshot, req: dict, res: dict):
        history = snap.history_items(req.get("user_id")) + list(req.get("recent_items") or [])
        ranked = snap.ranker.rank(
            req.get("user_id"), history, [i["item_id"] for i in res["items"]], [i["score"] for i in res["items"]]
        )
        return {
            **res,
            "ranked": True,
            "items": [{"item_id": i, "score": float(s)} for i, s in ranked][: req.get("rank_k", req["k"])],
        }
