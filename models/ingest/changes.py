"""Which landing files are new or changed: one rule, used by the ingest ledger and the sensors.

The rule: a file is its path under its landing folder, its content is (size, sha256). A file is
new or changed exactly when no earlier record of that path holds the same size and sha256. A
file written again with the same bytes (touched, copied over itself, restored from a backup) is
not new; a file whose bytes differ is, whatever its mtime says.

- The ingest ledger (`ingested_files`, `landing.ingest_folder`) records size and sha256 per file
  and skips a file whose content it already holds (`same_content`).
- The sensors (orchestration/sensors.py) keep a `FileState` per file in their cursor and ask
  `changed`. Hashing the whole landing folder on every tick would read every byte every 30 s,
  so `scan` hashes again only a file whose size or mtime differ from the state it was given,
  and reuses that state's sha256 otherwise: size and mtime decide when to look, never whether a
  file changed. A rewrite that keeps both the size and the nanosecond mtime (a copy that
  preserves times onto a same-sized file) is not seen by a sensor; the ingest, which always
  hashes, still loads it on its next run.
- The ledger's live records of a folder (`landing.ingested`) are published on each raw table's
  materialization in the same `dump_states` form as a sensor's cursor, so a sensor with no
  cursor yet starts from what was already ingested instead of calling every file new.
- `fingerprint` is the data version of a landing folder (the observable source assets): it
  follows content, so a touched file does not make `raw_events` stale.

No Dagster here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from models.artifacts import file_sha256


@dataclass(frozen=True)
class FileState:
    size: int
    sha256: str
    mtime_ns: int = 0  # when to hash again (sensors); not part of the content


def same_content(a: FileState, b: FileState | None) -> bool:
    """The rule: same size and sha256 (mtime ignored)."""
    return b is not None and (a.size, a.sha256) == (b.size, b.sha256)


IN_PROGRESS = ".part"  # a file still being appended to (the service's event log): not landed yet


def discover(folder: Path) -> list[Path]:
    """Every regular, non-hidden file below `folder` but those still being written (`*.part`,
    renamed when whole), sorted for a stable ingest order."""
    if not folder.exists():
        return []
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".") and not p.name.endswith(IN_PROGRESS)
    )


def file_state(path: Path, known: FileState | None = None) -> FileState:
    """`path`'s state; `known`'s sha256 is reused when size and mtime still match it."""
    st = path.stat()
    if known is not None and (known.size, known.mtime_ns) == (st.st_size, st.st_mtime_ns):
        return known
    return FileState(st.st_size, file_sha256(path), st.st_mtime_ns)


def scan(folder: Path, known: dict[str, FileState] | None = None) -> dict[str, FileState]:
    """{path relative to folder: FileState} for every landed file (see `file_state`)."""
    known = known or {}
    out = {}
    for p in discover(folder):
        rel = p.relative_to(folder).as_posix()
        out[rel] = file_state(p, known.get(rel))
    return out


def changed(files: dict[str, FileState], known: dict[str, FileState]) -> dict[str, FileState]:
    """The files of `files` that are new or changed against `known` (the rule above)."""
    return {k: v for k, v in files.items() if not same_content(v, known.get(k))}


def dump_states(files: dict[str, FileState]) -> dict[str, list]:
    """{path: [size, sha256, mtime_ns]}: a sensor cursor and the ledger in metadata, one form."""
    return {k: [v.size, v.sha256, v.mtime_ns] for k, v in sorted(files.items())}


def load_states(data: dict | None) -> dict[str, FileState]:
    """The inverse of `dump_states`; entries of another form (an older cursor) are left out."""
    return {k: FileState(*v) for k, v in (data or {}).items() if isinstance(v, list)}


def fingerprint(files: dict[str, FileState]) -> str:
    """A short digest of a folder's content: paths, sizes and sha256s (mtimes left out)."""
    text = "\n".join(f"{k}\t{v.size}\t{v.sha256}" for k, v in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:24]
