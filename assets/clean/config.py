"""The clean group's Dagster configs, derived from the library's rules (models/clean/): the
defaults and their reasons live there once."""

import dagster as dg

from assets._config import config_from
from models.clean.cleaning import EventCleaningRun
from models.clean.gx import GxSettings
from models.clean.rules import CleaningRules

CleaningConfig: type[dg.Config] = config_from("CleaningConfig", CleaningRules)
EventCleaningConfig: type[dg.Config] = config_from("EventCleaningConfig", CleaningRules, EventCleaningRun)
# also the splits group's: both groups' expectation checks validate a table or a sample of it
GxConfig: type[dg.Config] = config_from("GxConfig", GxSettings)
