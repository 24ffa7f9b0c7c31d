"""Training curves as a PNG (loss and validation metrics per epoch; tokenizer epochs shaded)."""

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
        rows = [r for r in history if key in r]  # epochs without validation (ETEGRec's tokenizer epochs) are skipped
        if rows:
            b.plot([r["epoch"] for r in rows], [r[key] for r in rows], marker="o", label=key.replace("valid_", ""))
    shaded = [r["epoch"] for r in history if r.get("tokenizer_epoch")]  # ETEGRec (models/generative/etegrec.py)
    for e in shaded:
        for ax in (a, b):
            ax.axvspan(e - 0.5, e + 0.5, color="0.9", zorder=0)
    if shaded:
        a.set(title="training loss (shaded: tokenizer epochs)")
    b.set(title="validation (full ranking)", xlabel="epoch")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
