"""The service's event log: impressions and feedback appended as landing events, never a line lost.

Lines are JSON objects in the landing contract (user_id, item_id, event_type, timestamp in epoch
ms, event_id, extra keys kept by the ingest as `extra`), appended to
`<folder>/<prefix>-<UTC yyyymmddTHHMMSS>-<pid>.jsonl.part` by one writer thread: lines are
written whole, flushed and fsynced before the Future `submit` returned completes, and the
service answers only then, so a line a client was answered about survives a crash of the
process (and of the machine, as far as fsync reaches). The file is renamed to `.jsonl` (and
the folder fsynced) when it passes `rotate_bytes`, when its first line is `rotate_seconds` old
(the writer checks every second, so an idle service still hands its last lines over), and on
`close()`. The ingest and the sensors skip `*.part` names
(models/ingest/changes.py), so they only ever read whole files.

A process killed before its rotation leaves a `.part`; `recover()` (run when a log opens)
renames every `.part` of `prefix` whose writing process is gone, cutting a torn last line (a
kill in the middle of a write) so the file holds whole lines only.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
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
    """Append-only JSON Lines in `folder`, rotated by size or age, written by one thread.

    `submit(lines)` queues whole lines and returns a Future that completes once they are
    written, flushed and fsynced (group commit: the writer takes everything queued, writes it
    and fsyncs once, so lines of concurrent batches share one fsync and the event loop never
    waits on the disk itself). `append(lines)` submits and waits."""

    def __init__(self, folder: Path, prefix: str, rotate_bytes: int, rotate_seconds: float):
        self.folder, self.prefix = Path(folder), prefix
        self.rotate_bytes, self.rotate_seconds = rotate_bytes, rotate_seconds
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._fh = None
        self._path: Path | None = None
        self._opened = 0.0
        self._thread: threading.Thread | None = None
        self.lines = 0  # lines appended by this process
        self.files = 0  # files handed over (renamed to .jsonl)
        self.fsyncs = 0

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Hand over what dead processes left, then start the writer."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._run, name=f"towerflow-{self.prefix}-log", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, hand the open file over, stop the writer."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
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

    def submit(self, lines: list[dict]) -> Future:
        """Queue `lines`; the Future completes (None, or the OSError) once they are on disk."""
        done: Future = Future()
        if not lines:
            done.set_result(None)
            return done
        if self._thread is None:
            done.set_exception(RuntimeError(f"the {self.prefix} log is not started"))
            return done
        data = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines).encode()
        self._queue.put((data, len(lines), done))
        return done

    def append(self, lines: list[dict]) -> None:
        """Write `lines` whole, flushed and fsynced, before returning."""
        self.submit(lines).result()

    def _run(self) -> None:
        tick = min(1.0, self.rotate_seconds)
        while True:
            try:
                first = self._queue.get(timeout=tick)
            except queue.Empty:
                first = ()
            batch = [] if first in ((), None) else [first]
            stop = first is None
            while not stop:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            if self._fh is not None and time.time() - self._opened >= self.rotate_seconds:
                try:
                    self._rotate()
                except OSError:  # a full disk or a removed folder: logged, retried on the next tick
                    log.exception("towerflow serve: could not rotate the %s log", self.prefix)
            if stop:
                return

    def _write(self, batch: list) -> None:
        try:
            if self._fh is None:
                self._open()
            self._fh.write(b"".join(data for data, _, _ in batch))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as e:
            log.exception(
                "towerflow serve: could not write %d lines to the %s log", sum(n for _, n, _ in batch), self.prefix
            )
            for _, _, done in batch:
                done.set_exception(e)
            return
        self.fsyncs += 1
        self.lines += sum(n for _, n, _ in batch)
        if self._fh.tell() >= self.rotate_bytes:  # handed over before the writers return (one rename)
            try:
                self._rotate()
            except OSError:  # the lines are safe in the .part file: retried at the next write or tick
                log.exception("towerflow serve: could not rotate the %s log", self.prefix)
        for _, _, done in batch:
            done.set_result(None)

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
