"""The splits group's Dagster configs, derived from the library's rules (models/splits/rules.py):
the defaults and their reasons live there once."""

import dagster as dg

from assets._config import config_from
from models.splits.rules import SplitRules, VocabularyRules

SplitConfig: type[dg.Config] = config_from("SplitConfig", SplitRules)
VocabularyConfig: type[dg.Config] = config_from("VocabularyConfig", VocabularyRules)
