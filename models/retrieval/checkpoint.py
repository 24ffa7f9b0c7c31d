"""Checkpoints: state dict (torch.save, read back with weights_only=True), JSON config and the
vocabulary fingerprint, written atomically into versioned folders with a manifest.

    artifacts/models/<version>/model.pt      state dict + optimizer states (tensors only)
    artifacts/models/<version>/config.json   tower + train config, fingerprint, metrics
    artifacts/models/manifest.json           {"current": <promoted version>, "latest": ..., "versions": [...]}
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch

from models import artifacts
from models.artifacts import Layout, atomic_folder
from models.retrieval.towers import TowerConfig, TwoTower


class VocabularyMismatch(ValueError):
    """A checkpoint trained against other vocabularies than the ones it is asked to serve."""


def save_checkpoint(
    root: Path,
    model: TwoTower,
    config: dict,
    fingerprint: str,
    *,
    metrics: dict | None = None,
    optimizer_states: list | None = None,
    version: str | None = None,
) -> Path:
    """Write <root>/<version>/ atomically (temp folder, fsync, rename); returns its path."""
    version = version or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    with atomic_folder(root, version) as tmp:
        torch.save({"model": model.state_dict(), "optimizers": optimizer_states or []}, tmp / "model.pt")
        meta = {
            "version": version,
            "config": config,
            "vocabulary_fingerprint": fingerprint,
            "metrics": metrics or {},
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return root / version


def load_checkpoint(path: Path, expected_fingerprint: str | None = None) -> tuple[TwoTower, dict, dict]:
    """(model in eval mode, metadata, raw state) from a checkpoint folder; refuses a mismatched vocabulary."""
    meta = json.loads((path / "config.json").read_text())
    if expected_fingerprint is not None and meta["vocabulary_fingerprint"] != expected_fingerprint:
        raise VocabularyMismatch(
            f"checkpoint {path.name} was trained with vocabulary {meta['vocabulary_fingerprint'][:12]}, "
            f"but the current vocabularies are {expected_fingerprint[:12]}: retrain (materialize two_tower_model)"
        )
    state = torch.load(path / "model.pt", weights_only=True)  # never arbitrary pickle
    # checkpoints written before the recency option had none: build them without it
    model = TwoTower(TowerConfig(**{"recency": False, **meta["config"]["tower"]}))
    model.load_state_dict(state["model"])
    model.eval()
    return model, meta, state


def read_manifest(root: Path) -> dict:
    """The models manifest ({"current", "latest", "versions"}), empty when nothing was trained."""
    return artifacts.read_manifest(root) or {"current": None, "latest": None, "versions": []}


def champion_version(artifacts_root: Path) -> str | None:
    """The version everything that serves follows (the champion), or None before the first
    promotion. The one place that answers "which two-tower checkpoint serves?": the models
    manifest's "current", which promotion writes as the local mirror of the registry alias."""
    return read_manifest(Layout(artifacts_root).models).get("current")


def challenger_version(artifacts_root: Path) -> str | None:
    """The version served beside the champion to a share of users (A/B), or None: the models
    manifest's "challenger", the local mirror of the registry alias `challenger`, written by
    `towerflow promote --alias challenger` once the challenger's embeddings and index are built
    (models/serving/arms.py)."""
    return read_manifest(Layout(artifacts_root).models).get("challenger")


def update_manifest(root: Path, **changes) -> dict:
    manifest = read_manifest(root)
    version = changes.get("latest")
    if version and version not in manifest["versions"]:
        manifest["versions"].append(version)
    manifest.update(changes)
    artifacts.write_manifest(root, manifest)
    return manifest
