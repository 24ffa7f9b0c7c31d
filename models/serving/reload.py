"""Live reload: load new snapshots when the manifests change, and swap them in atomically.

A thread polls the manifests (models, index, embeddings, user_histories, ranking) every
`reload_seconds`; when what they name changes, it loads a new snapshot in the background
(reusing what did not change) and swaps it in with one reference assignment. A snapshot that
does not load or does not fit together is refused: logged, counted in /metrics, the old one
keeps serving, and it is retried only once the manifests change again (or after
`retry_seconds`).

The challenger (the models manifest's "challenger", models/serving/arms.py) is loaded the same
way from `challenger/` and checked against the champion it is served beside (one vocabulary);
a refused challenger leaves the previous challenger (or none) in place. A challenger that is
gone from the manifest, or became the champion, stops being served at the next poll.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

from models.artifacts import SERVED
from models.serving.config import ServeConfig
from models.serving.service import Service
from models.retrieval.checkpoint import challenger_version
from models.serving.snapshot import CHALLENGER, CHAMPION, SnapshotError, identity, load_snapshot

log = logging.getLogger("towerflow.serve")


class _ChallengerCounts:
    """The challenger's loads and refusals, counted apart from the champion's."""

    def __init__(self, metrics):
        self.metrics = metrics

    def loaded(self) -> None:
        self.metrics.challenger_reloads.labels("loaded").inc()

    def refused(self) -> None:
        self.metrics.challenger_reloads.labels("refused").inc()


class Reloader(threading.Thread):
    """Loads snapshots of `artifacts` into `service`: `reload()` once (the first load), and as a
    thread, whenever the manifests change."""

    def __init__(self, service: Service, artifacts: Path, config: ServeConfig, ranker_hook=None):
        super().__init__(name="towerflow-reload", daemon=True)
        self.service, self.artifacts, self.config, self.ranker_hook = service, Path(artifacts), config, ranker_hook
        self.stopped = threading.Event()
        self._refused: dict[str, tuple[dict, float]] = {}  # arm -> identity last refused, when
        self._lock = threading.Lock()  # one load at a time

    def reload(self) -> bool:
        """Load and swap in new snapshots where the manifests name other artifacts (the champion,
        then the challenger beside it); True if the champion was swapped."""
        with self._lock:
            swapped = self._reload(CHAMPION)
            self._reload(CHALLENGER)
            return swapped

    def _reload(self, arm: str) -> bool:
        service = self.service
        attr = "snapshot" if arm == CHAMPION else "challenger"
        current, champion = getattr(service, attr), service.snapshot
        if arm == CHALLENGER:
            version = challenger_version(self.artifacts) if champion is not None else None
            if version is None or version == champion.version:  # none, or promoted: one arm
                if current is not None:
                    log.info("towerflow serve: challenger %s retired; the champion answers everyone", current.version)
                service.challenger = None
                self._refused.pop(arm, None)
                return False
        try:
            ident = identity(self.artifacts, arm=arm)
        except (OSError, ValueError) as e:  # a manifest unreadable right now
            ident = {"error": str(e)}
        if arm == CHALLENGER:  # a challenger is checked against the champion it is served beside
            ident = {**ident, "champion": champion.version}
        if current is not None and ident == current.ident:
            return False
        refused = self._refused.get(arm)
        if refused and refused[0] == ident and time.time() - refused[1] < self.config.retry_seconds:
            return False
        t0 = time.perf_counter()
        counter = service.metrics if arm == CHAMPION else _ChallengerCounts(service.metrics)
        try:
            snap = load_snapshot(
                self.artifacts,
                previous=current,
                ranker_hook=self.ranker_hook,
                arm=arm,
                champion=champion if arm == CHALLENGER else None,
            )
        except SnapshotError as e:
            self._refused[arm] = (ident, time.time())
            counter.refused()
            if arm == CHAMPION and current is None:
                service.not_ready = str(e)
            log.error(
                "towerflow serve: refused new %s artifacts, %s: %s",
                arm,
                ("still not ready" if arm == CHAMPION else "no challenger served")
                if current is None
                else f"still serving model {current.version} index {current.ident['index_delta']}",
                e,
            )
            return False
        if arm == CHALLENGER:
            snap = dataclasses.replace(snap, ident=ident)
        setattr(service, attr, snap)  # the swap: batches already running keep their reference
        self._refused.pop(arm, None)
        counter.loaded()
        info = snap.index_info
        log.info(
            "towerflow serve: %s: serving model %s, index %s/%s (%s, %s items, search %s), %s known users "
            "(loaded in %.2f s)",
            arm,
            snap.version,
            info["build"],
            info["delta"],
            info["type"],
            f"{info['items']:,}",
            info["search"] or "-",
            f"{len(snap.histories):,}",
            time.perf_counter() - t0,
        )
        return True

    def _stamp(self) -> tuple:
        out = []
        for sub in SERVED:
            try:
                st = os.stat(self.artifacts / sub / "manifest.json")
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append(None)
        return tuple(out)

    def run(self) -> None:
        last = None
        while not self.stopped.wait(self.config.reload_seconds):
            stamp = self._stamp()
            retry = any(time.time() - t >= self.config.retry_seconds for _, t in list(self._refused.values()))
            if stamp != last or retry:
                try:
                    self.reload()
                except Exception:  # noqa: BLE001 - a reload bug must not stop the watcher; logged
                    log.exception("towerflow serve: reload failed; still serving the previous snapshot")
                last = stamp
