"""The A/B test's defaults, once: how the report decides (ABTestSettings, derived into the
Dagster config of `ab_test_report`) and how the simulated traffic is drawn (TrafficSettings,
read by `towerflow simulate-traffic` and the tests)."""

from __future__ import annotations

from dataclasses import dataclass

from models.settings import setting


@dataclass
class ABTestSettings:
    confidence: float = setting(
        0.95, "Two-sided level of the bootstrap intervals (per arm and for the difference).", gt=0.5, lt=1.0
    )
    bootstrap: int = setting(
        1000,
        "Bootstrap replicates over users (Poisson weights): the user is the unit of randomisation, "
        "so a heavy user's correlated impressions are resampled together.",
        ge=100,
    )
    min_users_per_arm: int = setting(
        200,
        "No decision below this many exposed users in either arm: the interval of a few users is "
        "too wide to trust and early peeking inflates false wins.",
        ge=1,
    )
    positions: int = setting(10, "Positions compared, 1..positions: the page size both arms were shown in.", ge=1)
    seed: int = setting(0, "Seeds the bootstrap: the same logs give the same intervals and the same decision.")


@dataclass
class TrafficSettings:
    requests: int = setting(5000, "Recommendation requests simulated (users drawn by their activity).", ge=1)
    share: float = setting(0.5, "Share of users bucketed into the challenger arm.", gt=0.0, lt=1.0)
    k: int = setting(10, "Items per response: positions 1..k.", ge=1)
    position_bias: float = setting(
        1.0,
        "Examination probability at position p is p ** -position_bias (the power-law position "
        "bias of Joachims et al. 2017): position 1 is always seen, position 10 one time in ten.",
        ge=0.0,
    )
    seed: int = setting(0, "Seeds users, examination and feedback draws: same arms + seed = same files.")
    salt: str = setting(
        "",
        "Bucketing salt; empty: the challenger's model version, as the HTTP service salts, so a new "
        "challenger reshuffles which users see it.",
    )
