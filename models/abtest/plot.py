"""The A/B report's picture: each rate per arm with its interval, and CTR by position."""

from __future__ import annotations

from pathlib import Path

from models.abtest.stats import ARMS

LABELS = {"ctr_standardised": "CTR (position-standardised)", "ctr": "CTR (pooled)", "like_rate": "like rate"}


def ab_test_plot(report: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    colours = {"champion": "tab:blue", "challenger": "tab:orange"}
    for j, arm in enumerate(ARMS):
        fig_arm = report["arms"][arm]
        for i, name in enumerate(LABELS):
            r = fig_arm[name]
            a.errorbar(
                [i + (j - 0.5) * 0.25],
                [r["value"]],
                yerr=[[r["value"] - r["lo"]], [r["hi"] - r["value"]]],
                fmt="o",
                capsize=4,
                color=colours[arm],
                label=f"{arm} ({fig_arm['users']} users)" if i == 0 else None,
            )
        rows = [p for p in report["positions"] if p[f"{arm}_impressions"]]
        b.plot(
            [p["position"] for p in rows], [p[f"{arm}_ctr"] for p in rows], marker="o", color=colours[arm], label=arm
        )
    a.set_xticks(range(len(LABELS)), list(LABELS.values()), fontsize=8)
    a.set(title=f"{report['decision']} ({report['confidence']:.0%} intervals, users resampled)")
    a.legend(fontsize=8)
    b.set(title="CTR by position", xlabel="position")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
