"""One home per default: a library dataclass field that carries its reason.

`setting(default, "why")` is a dataclass field whose default and description are written once,
here in models/. The Dagster configs are derived from these dataclasses (assets/_config.py), so
the launchpad shows the same reason and a new field is written in one place; tests, benchmarks
and the CLI read the same defaults without importing Dagster. Bounds (`ge`, `gt`, `le`, `lt`)
are checked where a Dagster run's config is validated.
"""

from __future__ import annotations

import copy
import dataclasses

BOUNDS = ("ge", "gt", "le", "lt")


def setting(default, doc: str, **bounds) -> dataclasses.Field:
    """A dataclass field with its default, its reason (`doc`) and optional bounds."""
    if unknown := set(bounds) - set(BOUNDS):
        raise TypeError(f"setting() takes bounds {BOUNDS}, got {sorted(unknown)}")
    metadata = {"doc": doc, **bounds}
    if isinstance(default, (list, dict, set)):  # a mutable default: every instance gets its own copy
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def default_of(field: dataclasses.Field):
    """A dataclass field's default (calling its factory); MISSING when it has none."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING
