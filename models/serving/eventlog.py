"""The service's event log: impressions and feedback appended as landing events, never a line lost.

Lines are JSON objects in the landing contract (user_id, item_id, event_type, timestamp in epoch
ms, event_id, extra keys kept by the ingest as `extra`), appended to
`<folder>/<prefix>-<UTC yyyymmddTHHMMSS>-<pid>.jsonl.part`: each `append` writes whole lines,
flushes and fsyncs before it returns, so a line a client was answered about survives a crash
of the process (and of the machine, as far as fsync reaches). The file is renamed to `.jsonl`
(and the folder fsynced) when it passes `rotate_bytes`, when its first line is `rotate_seconds`
old (a background thread checks every second, so an idle service still hands its last lines
over), and on `close()`. The ingest and the sensors skip `*.part` names
(models/ingest/changes.py), so they only ever read whole files.

A process killed before its rotation leaves a `.part`; `recover()` (run when a log opens)
renames every `.part` of `prefix` whose writing process is gone, cutting a torn last line (a
kill in the middle of a write) so the file holds whole lines only.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from models.artifacts import fsync_dir
from models.ingest.changes import IN_PROGRESS as PART

log = logging.getLogger("towerflow.serve")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class EventLog:
    """Append-only JSON Lines in `folder`, rotated by size or age; thread-safe."""

    def __init__(self, folder: Path, prefix: str, rotate_bytes: int, rotate_seconds: float):
        self.folder, self.prefix = Path(folder), prefix
        self.rotate_bytes, self.rotate_seconds = rotate_bytes, rotate_seconds
        self._lock = threading.Lock()
        self._fh = None
        self._path: Path | None = None
        self._opened = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lines = 0  # lines appended by this process
        self.files = 0  # files handed over (renamed to .jsonl)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Hand over what dead processes left, then rotate by age in the background."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._age_loop, name=f"towerflow-{self.prefix}-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._rotate()

    def recover(self) -> list[Path]:
        """Rename the `.part` files of `prefix` whose process is gone to `.jsonl`; returns them."""
        done = []
        for part in sorted(self.folder.glob(f"{self.prefix}-*.jsonl{PART}")):
            try:
                stem = part.name[len(self.prefix) + 1 : -len(".jsonl" + PART)]  # <stamp>-<pid>[-<n>]
                pid = int(stem.split("-")[1])
            except (IndexError, ValueError):
                continue  # not a name this log writes
            if pid == os.getpid() or _alive(pid):
                continue
            _cut_torn_line(part)
            if part.stat().st_size == 0:
                part.unlink()
                continue
            target = part.with_name(part.name[: -len(PART)])
            os.replace(part, target)
            done.append(target)
            log.warning("towerflow serve: handed over %s, left by process %d", target.name, pid)
        if done:
            fsync_dir(self.folder)
        return done

    # -- writing ------------------------------------------------------------------------------

    def append(self, lines: list[dict]) -> None:
        """Write `lines` whole, flush and fsync them before returning; rotate if due."""
        if not lines:
            return
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        with self._lock:
            if self._fh is None:
                self._open()
            self._fh.write(data)
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self.lines += len(lines)
            if self._fh.tell() >= self.rotate_bytes:
                self._rotate()

    def rotate_if_due(self) -> bool:
        with self._lock:
            if self._fh is not None and time.time() - self._opened >= self.rotate_seconds:
                self._rotate()
                return True
        return False

    def _open(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        name, n = f"{self.prefix}-{stamp}-{os.getpid()}.jsonl", 1
        while (self.folder / name).exists() or (self.folder / (name + PART)).exists():
            n += 1  # a second file within one second (a size rotation): keep both
            name = f"{self.prefix}-{stamp}-{os.getpid()}-{n}.jsonl"
        self._path = self.folder / (name + PART)
        self._fh = open(self._path, "ab")
        fsync_dir(self.folder)  # the new name survives a crash too
        self._opened = time.time()

    def _rotate(self) -> None:
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        os.replace(self._path, self._path.with_name(self._path.name[: -len(PART)]))
        fsync_dir(self.folder)
        self.files += 1

    def _age_loop(self) -> None:
        while not self._stop.wait(min(1.0, self.rotate_seconds)):
            try:
                self.rotate_if_due()
            except OSError:  # a full disk or a removed folder: logged, retried on the next tick
                log.exception("towerflow serve: could not rotate the %s log", self.prefix)


def _cut_torn_line(path: Path) -> None:
    """Truncate `path` after its last newline (a write cut by a kill leaves a partial line)."""
    with open(path, "r+b") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(max(0, size - 1))
        if fh.read(1) == b"\n":
            return
        block, end = 1 << 16, size
        while end > 0:
            start = max(0, end - block)
            fh.seek(start)
            chunk = fh.read(end - start)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                fh.truncate(start + nl + 1)
                break
            end = start
        else:
            fh.truncate(0)
        fh.flush()
        os.fsync(fh.fileno())
