"""Dagster configs derived from the library's dataclasses: a field, its default, its reason and
its bounds are written once, in models/ (`models.settings.setting`), and the launchpad shows them.

    TrainingConfig = config_from(
        "TrainingConfig",
        without(TowerConfig, n_tokens="read from the vocabularies", ...),
        without(TrainConfig, max_steps="tests and smoke runs"),
        TrainingRun,
    )

A source is a dataclass, or `without(dataclass, field=reason, ...)` to leave fields out (each
with its reason: the drift test, tests/test_config_defaults.py, demands that every library field
is exposed or left out by name). A field name may come from one source only, unless every other
source leaves it out. The way back is `to_library(config, Dataclass, **fixed)` (or
`fields_for(config, Dataclass)` for a builder such as `tower_config_for`): the config's values
of the dataclass's fields, by name, with lists turned back into tuples where the dataclass
holds a tuple.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field

import dagster as dg
from pydantic import Field, create_model

from models.settings import BOUNDS, default_of


@dataclass(frozen=True)
class Source:
    cls: type
    left_out: dict[str, str] = field(default_factory=dict)  # field name -> why the config has no such field


def without(cls: type, **reasons: str) -> Source:
    """`cls` as a source of a Dagster config, less the named fields (each with its reason)."""
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := set(reasons) - names:
        raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)} to leave out")
    return Source(cls, dict(reasons))


def _as_source(s) -> Source:
    return s if isinstance(s, Source) else Source(s)


def _is_tuple(tp) -> bool:
    return typing.get_origin(tp) is tuple or tp is tuple


def _dagster_type(tp):
    """The field type Dagster's config schema takes: tuples become lists."""
    if _is_tuple(tp):
        args = typing.get_args(tp)
        return list[args[0]] if args else list
    return tp


def config_from(name: str, *sources, doc: str | None = None) -> type[dg.Config]:
    """A `dg.Config` class named `name` whose fields are the sources' fields, in order, with the
    dataclass default, its `doc` as the description and its bounds."""
    srcs = [_as_source(s) for s in sources]
    fields: dict[str, tuple] = {}
    origin: dict[str, str] = {}
    for src in srcs:
        hints = typing.get_type_hints(src.cls)
        for f in dataclasses.fields(src.cls):
            if f.name in src.left_out:
                continue
            if f.name in fields:
                raise TypeError(
                    f"{name}: field {f.name!r} comes from both {origin[f.name]} and {src.cls.__name__}; "
                    f"leave it out of one of them with without(..., {f.name}='why')"
                )
            if "doc" not in f.metadata:
                raise TypeError(
                    f"{name}: {src.cls.__name__}.{f.name} has no reason: declare it with "
                    f"models.settings.setting(default, 'why') or leave it out with without(..., {f.name}='why')"
                )
            default = default_of(f)
            if default is dataclasses.MISSING:
                raise TypeError(f"{name}: {src.cls.__name__}.{f.name} has no default; leave it out and pass it")
            if isinstance(default, tuple):
                default = list(default)
            bounds = {k: f.metadata[k] for k in BOUNDS if k in f.metadata}
            fields[f.name] = (
                _dagster_type(hints[f.name]),
                Field(default=default, description=f.metadata["doc"], **bounds),
            )
            origin[f.name] = src.cls.__name__
    module = sys._getframe(1).f_globals.get("__name__", __name__)
    config = create_model(name, __base__=dg.Config, __doc__=doc, __module__=module, **fields)
    config.__sources__ = tuple(srcs)  # read by the drift test
    return config


def fields_for(config: dg.Config, cls: type) -> dict:
    """The config's values of `cls`'s fields, by name (tuples where `cls` holds tuples)."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if f.name in type(config).model_fields:
            value = getattr(config, f.name)
            out[f.name] = tuple(value) if _is_tuple(hints[f.name]) and value is not None else value
    return out


def to_library(config: dg.Config, cls: type, **fixed):
    """The library dataclass `cls` built from a Dagster config: its fields the config holds, plus
    `fixed` (what the run decides, not the user: a vocabulary size, a codebook size)."""
    return cls(**{**fields_for(config, cls), **fixed})
