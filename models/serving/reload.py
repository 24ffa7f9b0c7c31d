"""Live reload: load a new snapshot when the manifests change, and swap it in atomically.

A thread polls the manifests (models, index, embeddings, user_histories, ranking) every
`reload_seconds`; when what they name changes, it loads a new snapshot in the background
(reusing what did not change) and swaps it in with one reference assignment. A snapshot that
does not load or does not fit together is refused: logged, counted in /metrics, the old one
keeps serving, and it is retried only once the manifests change again (or after
`retry_seconds`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from models.artifacts import SERVED
from models.serving.config import ServeConfig
from models.serving.service import Service
from models.serving.snapshot import SnapshotError, identity, load_snapshot

log = logging.getLogger("towerflow.serve")


class Reloader(threading.Thread):
    """Loads snapshots of `artifacts` into `service`: `reload()` once (the first load), and as a
    thread, whenever the manifests change."""

    def __init__(self, service: Service, artifacts: Path, config: ServeConfig, ranker_hook=None):
        super().__init__(name="towerflow-reload", daemon=True)
        self.service, self.artifacts, self.config, self.ranker_hook = service, Path(artifacts), config, ranker_hook
        self.stopped = threading.Event()
        self._refused: tuple[dict, float] | None = None  # identity last refused, when
        self._lock = threading.Lock()  # one load at a time

    def reload(self) -> bool:
        """Load and swap in a new snapshot if the manifests name other artifacts; True if swapped."""
        service = self.service
        with self._lock:
            current = service.snapshot
            try:
                ident = identity(self.artifacts)
            except (OSError, ValueError) as e:  # a manifest unreadable right now
                ident = {"error": str(e)}
            if current is not None and ident == current.ident:
                return False
            if (
                self._refused
                and self._refused[0] == ident
                and time.time() - self._refused[1] < self.config.retry_seconds
            ):
                return False
            t0 = time.perf_counter()
            try:
                snap = load_snapshot(self.artifacts, previous=current, ranker_hook=self.ranker_hook)
            except SnapshotError as e:
                self._refused = (ident, time.time())
                service.metrics.refused()
                if current is None:
                    service.not_ready = str(e)
                log.error(
                    "towerflow serve: refused new artifacts, %s: %s",
                    "still not ready"
                    if current is None
                    else f"still serving model {current.version} index {current.ident['index_delta']}",
                    e,
                )
                return False
            service.snapshot = snap  # the swap: batches already running keep their reference
            self._refused = None
            service.metrics.loaded()
            info = snap.index_info
            log.info(
                "towerflow serve: serving model %s, index %s/%s (%s, %s items, search %s), %s known users "
                "(loaded in %.2f s)",
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
            refused = self._refused
            retry = refused is not None and time.time() - refused[1] >= self.config.retry_seconds
            if stamp != last or retry:
                try:
                    self.reload()
                except Exception:  # noqa: BLE001 - a reload bug must not stop the watcher; logged
                    log.exception("towerflow serve: reload failed; still serving the previous snapshot")
                last = stamp
