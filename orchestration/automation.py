"""Declarative automation: what runs when, declared on the assets themselves (Dagster's
`AutomationCondition`), evaluated by one sensor the daemon runs.

- **The retrain**: every materializable asset is `AutomationCondition.on_cron(TOWERFLOW_RETRAIN_CRON)`
  (default daily 03:00 UTC). At a tick the roots (`raw_events`, `raw_items`) are due and every
  asset below them is due because its parents will be requested on the same tick, so the sensor
  requests the whole graph at once: one run, with every asset's checks riding along (blocking
  ones still gate promotion). The landing sources are left out of "all parents updated since the
  tick": they are observed only when a file lands, and the retrain runs on its cron whether or
  not one did (what the former `retrain_schedule` did; it is gone, so the cron is declared once).
- **The serving assets** (`item_embeddings`, `item_index`, `batch_recommendations`,
  `user_histories`) are also `AutomationCondition.eager()`: when a parent updates outside a run
  that covered them (a `training_job` that promoted a new champion, a `data_job` with new splits,
  the new-items job's index for `batch_recommendations`), the next evaluation requests them, so
  what users read follows a promotion without waiting for the next retrain. A run that covered
  them does not trigger a second one: a parent's update from a run that selected the asset is
  ignored (`any_deps_updated`), and in a run that records no selection (a job launched whole)
  the asset is in progress until its own materialization, which resets the trigger.
- **Freshness** on what users read (`item_index`, `batch_recommendations`): a time-window policy
  derived from the same cron, warn after the longest gap between two retrain ticks plus
  `RETRAIN_GRACE`, fail after two such gaps (a retrain missed, refused or failed).
- `new_items_sensor` stays a sensor: it reacts to files, not to asset state (orchestration/sensors.py).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import dagster as dg
from dagster_shared.check import CheckError

DEFAULT_CRON = "0 3 * * *"
CRON_TIMEZONE = "UTC"
# The landing folders: observed by the sensors when a file lands, never materialized.
LANDING_SOURCES = dg.AssetSelection.assets("landing_events", "landing_items")
EAGER_GROUPS = ("serving",)  # what the service and `towerflow recommend` read
FRESH_ASSETS = ("item_index", "batch_recommendations")
# How long a retrain may take before what it refreshes counts as late (the graph at 1M items
# takes about this long on a laptop-sized box).
RETRAIN_GRACE = timedelta(hours=2)

SENSOR_NAME = "automation_sensor"


def retrain_cron() -> str:
    return os.environ.get("TOWERFLOW_RETRAIN_CRON", "").strip() or DEFAULT_CRON


def retrain_condition(cron: str | None = None, ignored: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """on_cron, not waiting for the landing sources (nor for `ignored`: assets a sensor keeps up to date)."""
    cron = cron or retrain_cron()
    try:  # Dagster validates the cron string itself; say which setting holds the bad one
        condition = dg.AutomationCondition.on_cron(cron, CRON_TIMEZONE)
    except CheckError as e:
        raise ValueError(f"TOWERFLOW_RETRAIN_CRON={cron!r} is not a cron expression (e.g. {DEFAULT_CRON!r})") from e
    return condition.ignore(LANDING_SOURCES | dg.AssetSelection.assets(*ignored))


def serving_condition(cron: str | None = None, ignored: tuple[str, ...] = ()) -> dg.AutomationCondition:
    cron = cron or retrain_cron()
    return (retrain_condition(cron, ignored) | dg.AutomationCondition.eager()).with_label(f"on_cron({cron}) or eager")


def longest_gap(cron: str, ticks: int = 64) -> timedelta:
    """The longest wait between two of the cron's next `ticks` ticks (a weekday-only cron waits
    over the weekend)."""
    from dagster._utils.schedules import cron_string_iterator  # Dagster's own cron walker

    it = cron_string_iterator(time.time(), cron, CRON_TIMEZONE)
    times = [next(it) for _ in range(ticks)]
    return max(b - a for a, b in zip(times, times[1:]))


def freshness_policy(cron: str | None = None) -> dg.FreshnessPolicy:
    gap = longest_gap(cron or retrain_cron())
    return dg.FreshnessPolicy.time_window(fail_window=2 * gap + RETRAIN_GRACE, warn_window=gap + RETRAIN_GRACE)


def automate(assets: list, sensor_driven: tuple[str, ...] = ()) -> list:
    """`assets` with their automation conditions and freshness policies (observable sources as
    they are). `sensor_driven` assets (the event assets when partitioned per landing file:
    orchestration/partitions.py) get none, as their sensor requests their runs, and the retrain
    does not wait for them: at the tick it reads what is clean."""
    cron = retrain_cron()
    retrain, serving = retrain_condition(cron, sensor_driven), serving_condition(cron, sensor_driven)
    fresh = freshness_policy(cron)

    def apply(spec: dg.AssetSpec) -> dg.AssetSpec:
        if spec.key.to_user_string() in sensor_driven:
            return spec.replace_attributes(automation_condition=None)
        condition = serving if spec.group_name in EAGER_GROUPS else retrain
        return spec.replace_attributes(
            automation_condition=condition,
            freshness_policy=fresh if spec.key.to_user_string() in FRESH_ASSETS else spec.freshness_policy,
        )

    def materializable(a) -> bool:
        return isinstance(a, dg.AssetsDefinition) and a.is_materializable

    return [dg.map_asset_specs(apply, [a])[0] if materializable(a) else a for a in assets]


automation_sensor = dg.AutomationConditionSensorDefinition(
    SENSOR_NAME,
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Evaluates the assets' automation conditions: the whole graph on TOWERFLOW_RETRAIN_CRON, "
    "the serving assets eagerly after their parents update outside a run that covered them.",
)
