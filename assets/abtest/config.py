"""The abtest group's Dagster config, derived from the library's dataclass
(models/abtest/settings.py): the defaults and their reasons live there once."""

import dagster as dg

from assets._config import config_from
from models.abtest.settings import ABTestSettings

ABTestConfig: type[dg.Config] = config_from("ABTestConfig", ABTestSettings)
