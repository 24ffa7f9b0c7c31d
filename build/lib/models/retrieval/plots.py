"""Training curves as a PNG (loss and validation metrics per epoch)."""

from __future__ import annotations

from pathlib import Path


def training_curves(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [r["loss"] for r in history], marker="o")
    a.set(title="training loss", xlabel="epoch")
    for key in ("valid_ndcg@10", "valid_hr@10"):
        if any(key in r for r in history):
            b.plot(epochs, [r.get(key, float("nan")) for r in history], marker="o", label=key.replace("valid_", ""))
    b.set(title="validation (full ranking)", xlabel="epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
