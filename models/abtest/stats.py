"""The A/B test's statistics and its decision rule (no Dagster here).

Input: one row per (user, arm, position) with the impressions shown there and the clicks and
likes they received (sql/ab_test_exposures.sql builds them from the logged events).

- **Rates per arm**: CTR = clicks / impressions and like rate = likes / impressions, pooled.
- **Position-aware primary metric**: the position-standardised CTR, sum_p w_p * CTR_arm(p),
  with w_p the share of all impressions (both arms) shown at position p. Under the examination
  hypothesis CTR_arm(p) = examination(p) * attractiveness_arm(p), and the examination curve is
  the same in both arms (same page), so comparing the arms position by position and weighting
  every position the same way in both removes the position mix from the comparison: an arm that
  returns fewer items (a fallback with 3 items has no low, rarely seen positions) is not credited
  for a higher pooled CTR it did not earn. We do not divide by an estimated examination curve
  (inverse propensity): that needs randomised rankings to estimate, and a wrong curve would bias
  the difference, while standardisation needs none.
- **Intervals**: a Poisson bootstrap over users (each user's rows get one Poisson(1) weight per
  replicate), the two arms resampled independently (per-user bucketing makes their users
  disjoint). The user is the unit of randomisation: a heavy user's impressions are correlated,
  and treating impressions as independent would make the interval too narrow.
- **Decision** (`decide`): the challenger wins when both arms reached `min_users_per_arm` and the
  lower bound of (challenger - champion) is above 0; it loses when the upper bound is below 0;
  otherwise the test is inconclusive and the champion keeps serving while the challenger keeps
  collecting traffic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.abtest.settings import ABTestSettings
from models.serving.snapshot import CHALLENGER as CHALLENGER_ARM
from models.serving.snapshot import CHAMPION as CHAMPION_ARM

WINS, LOSES, INCONCLUSIVE, NO_CHALLENGER = "challenger_wins", "challenger_loses", "inconclusive", "no_challenger"
ARMS = (CHAMPION_ARM, CHALLENGER_ARM)


@dataclass
class ArmCounts:
    """One arm's (users, positions) matrices of impressions, clicks and likes."""

    users: list[str]
    impressions: np.ndarray  # (U, P)
    clicks: np.ndarray  # (U, P)
    likes: np.ndarray  # (U, P)


def arm_counts(rows: list[tuple], positions: int) -> dict[str, ArmCounts]:
    """{arm: ArmCounts} from (user_id, arm, position, impressions, clicks, likes) rows; positions
    run 1..`positions`."""
    out = {}
    for arm in ARMS:
        mine = [r for r in rows if r[1] == arm]
        users = sorted({r[0] for r in mine})
        row = {u: i for i, u in enumerate(users)}
        m = np.zeros((3, len(users), positions))  # (3, U, P)
        for user, _, pos, imp, clk, lik in mine:
            m[:, row[user], int(pos) - 1] += (imp, clk, lik)
        out[arm] = ArmCounts(users, m[0], m[1], m[2])
    return out


def position_weights(counts: dict[str, ArmCounts]) -> np.ndarray:
    """(P,) the share of all impressions (both arms) at each position: the common standard."""
    total = sum(c.impressions.sum(axis=0) for c in counts.values())  # (P,)
    return total / total.sum() if total.sum() else total


def standardised_ctr(clicks: np.ndarray, impressions: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_p w_p * clicks_p / impressions_p over the last axis; a position an arm never showed
    contributes nothing (its weight is then ~0: it is rare in the other arm too, or the arm
    returned short lists, which the pooled CTR would reward)."""
    rate = np.divide(clicks, impressions, out=np.zeros_like(clicks, dtype=np.float64), where=impressions > 0)
    return (rate * w).sum(axis=-1)


def _replicates(c: ArmCounts, w: np.ndarray, rng: np.random.Generator, b: int) -> dict[str, np.ndarray]:
    """(b,) bootstrap replicates of the arm's figures, users resampled with Poisson(1) weights."""
    weights = rng.poisson(1.0, (b, len(c.users))).astype(np.float64)  # (B, U)
    imp, clk, lik = weights @ c.impressions, weights @ c.clicks, weights @ c.likes  # (B, P) each
    n = np.maximum(imp.sum(axis=1), 1e-12)  # (B,)
    return {
        "ctr_standardised": standardised_ctr(clk, imp, w),
        "ctr": clk.sum(axis=1) / n,
        "like_rate": lik.sum(axis=1) / n,
    }


def decide(lo: float, hi: float, users: dict[str, int], min_users: int) -> tuple[str, str]:
    """(decision, why) from the interval [lo, hi] of challenger - champion: the one rule."""
    short = {a: n for a, n in users.items() if n < min_users}
    if short:
        return INCONCLUSIVE, "too few users: " + ", ".join(f"{a} {n} < {min_users}" for a, n in short.items())
    if lo > 0:
        return WINS, f"the interval of challenger - champion [{lo:.4f}, {hi:.4f}] is above 0"
    if hi < 0:
        return LOSES, f"the interval of challenger - champion [{lo:.4f}, {hi:.4f}] is below 0"
    return INCONCLUSIVE, f"the interval of challenger - champion [{lo:.4f}, {hi:.4f}] contains 0"


def analyse(rows: list[tuple], positions: int, settings: ABTestSettings | None = None) -> dict:
    """The report: per arm the exposure counts and every rate with its interval, per position
    the CTR of each arm, the difference challenger - champion of each rate with its interval,
    and the decision on the primary metric (position-standardised CTR)."""
    s = settings or ABTestSettings()
    counts = arm_counts(rows, positions)
    w = position_weights(counts)
    rng = np.random.default_rng(s.seed)
    alpha = (1 - s.confidence) / 2
    report: dict = {"arms": {}, "difference": {}, "positions": [], "position_weights": w.tolist()}
    reps = {}
    for arm, c in counts.items():
        imp, clk, lik = c.impressions.sum(), c.clicks.sum(), c.likes.sum()
        point = {
            "ctr_standardised": float(standardised_ctr(c.clicks.sum(axis=0), c.impressions.sum(axis=0), w)),
            "ctr": float(clk / imp) if imp else float("nan"),
            "like_rate": float(lik / imp) if imp else float("nan"),
        }
        reps[arm] = _replicates(c, w, rng, s.bootstrap)
        report["arms"][arm] = {
            "users": len(c.users),
            "impressions": int(imp),
            "clicks": int(clk),
            "likes": int(lik),
            **{
                name: {
                    "value": v,
                    "lo": float(np.quantile(reps[arm][name], alpha)),
                    "hi": float(np.quantile(reps[arm][name], 1 - alpha)),
                }
                for name, v in point.items()
            },
        }
    for name in ("ctr_standardised", "ctr", "like_rate"):
        d = reps[CHALLENGER_ARM][name] - reps[CHAMPION_ARM][name]  # (B,)
        value = report["arms"][CHALLENGER_ARM][name]["value"] - report["arms"][CHAMPION_ARM][name]["value"]
        report["difference"][name] = {
            "value": value,
            "lo": float(np.quantile(d, alpha)),
            "hi": float(np.quantile(d, 1 - alpha)),
        }
    for p in range(positions):
        row = {"position": p + 1, "weight": float(w[p])}
        for arm, c in counts.items():
            imp = c.impressions[:, p].sum()
            row[f"{arm}_impressions"] = int(imp)
            row[f"{arm}_ctr"] = float(c.clicks[:, p].sum() / imp) if imp else float("nan")
        report["positions"].append(row)
    primary = report["difference"]["ctr_standardised"]
    decision, why = decide(
        primary["lo"], primary["hi"], {a: report["arms"][a]["users"] for a in ARMS}, s.min_users_per_arm
    )
    both = sorted(set(counts[CHAMPION_ARM].users) & set(counts[CHALLENGER_ARM].users))
    report["users_in_both_arms"] = {"count": len(both), "first": both[:20]}
    report.update(decision=decision, why=why, metric="ctr_standardised", confidence=s.confidence, bootstrap=s.bootstrap)
    return report
