"""Checkpoints: state dict (torch.save, read back with weights_only=True), JSON config and the
vocabulary fingerprint, written atomically into versioned folders with a manifest.

    artifacts/models/<version>/model.pt      state dict + optimizer states (tensors only)
    artifacts/models/<version>/config.json   tower + train config, fingerprint, metrics
    artifacts/models/manifest.json           {"current": <promoted version>, "latest": ..., "versions": [...]}
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from models.towers import TowerConfig, TwoTower


class VocabularyMismatch(ValueError):
    """A checkpoint trained against other vocabularies than the ones it is asked to serve."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: Path, model: TwoTower, config: dict, fingerprint: str, *, metrics: dict | None = None,
                    optimizer_states: list | None = None, version: str | None = None) -> Path:
    """Write <root>/<version>/ atomically (temp folder, fsync, rename); returns its path."""
    version = version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{version}."))
    try:
        torch.save({"model": model.state_dict(), "optimizers": optimizer_states or []}, tmp / "model.pt")
        meta = {"version": version, "config": config, "vocabulary_fingerprint": fingerprint,
                "metrics": metrics or {}, "created_at": datetime.now(timezone.utc).isoformat()}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        final = root / version
        os.rename(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_checkpoint(path: Path, expected_fingerprint: str | None = None) -> tuple[TwoTower, dict, dict]:
    """(model in eval mode, metadata, raw state) from a checkpoint folder; refuses a mismatched vocabulary."""
    meta = json.loads((path / "config.json").read_text())
    if expected_fingerprint is not None and meta["vocabulary_fingerprint"] != expected_fingerprint:
        raise VocabularyMismatch(
            f"checkpoint {path.name} was trained with vocabulary {meta['vocabulary_fingerprint'][:12]}, "
            f"but the current vocabularies are {expected_fingerprint[:12]}: retrain (materialize two_tower_model)")
    state = torch.load(path / "model.pt", weights_only=True)  # never arbitrary pickle
    model = TwoTower(TowerConfig(**meta["config"]["tower"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model, meta, state


def read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {"current": None, "latest": None, "versions": []}


def update_manifest(root: Path, **changes) -> dict:
    manifest = read_manifest(root)
    version = changes.get("latest")
    if version and version not in manifest["versions"]:
        manifest["versions"].append(version)
    manifest.update(changes)
    write_json_atomic(root / "manifest.json", manifest)
    return manifest
