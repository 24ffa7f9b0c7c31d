"""One home per default: every Dagster config (assets/<group>/config.py) is derived from the
library dataclasses in models/, field for field, and builds them back unchanged."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
import re
from pathlib import Path

import dagster as dg
import pytest

import assets
from assets._config import config_from, fields_for, to_library, without
from models.clean.gx import GxSettings
from models.ranking.model import RankerConfig, ranker_config_for
from models.retrieval.data import WarehouseShape, tower_config_for
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig
from models.settings import default_of, setting

REPO = Path(__file__).resolve().parents[1]
# what the run decides, not the user: a library dataclass that has no default for it
FIXED = {RankerConfig: {"n_actions": 3}}
EXPECTED = {
    "ABTestConfig",
    "CleaningConfig",
    "EventCleaningConfig",
    "GxConfig",
    "SplitConfig",
    "VocabularyConfig",
    "TrainingConfig",
    "ModelEvaluationConfig",
    "IndexConfig",
    "EmbeddingConfig",
    "RecommendationConfig",
    "RankingConfig",
    "SemanticIdConfig",
    "GenerativeConfig",
    "GenerativeEvaluationConfig",
}


def _dagster_configs() -> dict[str, type[dg.Config]]:
    """Every dg.Config class defined anywhere under assets/ (a hand-written one included)."""
    found = {}
    for info in pkgutil.walk_packages(assets.__path__, "assets."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, dg.Config)
                and not issubclass(obj, dg.ConfigurableResource)
                and obj.__module__ == info.name
            ):
                found[name] = obj
    return found


CONFIGS = _dagster_configs()


def drift(config: type[dg.Config]) -> list[str]:
    """How `config` departs from its library dataclasses (empty: it doesn't)."""
    sources = getattr(config, "__sources__", None)
    if sources is None:
        return [f"{config.__name__} is not derived from library dataclasses (assets._config.config_from)"]
    problems, owner = [], {}
    for src in sources:
        for f in dataclasses.fields(src.cls):
            where = f"{config.__name__}.{f.name} ({src.cls.__name__})"
            if f.name in src.left_out:
                if not src.left_out[f.name].strip():
                    problems.append(f"{where} is left out without a reason")
                continue
            owner[f.name] = src.cls.__name__
            exposed = config.model_fields.get(f.name)
            if exposed is None:
                problems.append(f"{where} is neither exposed nor left out")
                continue
            library = default_of(f)
            library = list(library) if isinstance(library, tuple) else library
            if exposed.default != library:
                problems.append(f"{where} default {exposed.default!r} != library {library!r}")
            if exposed.description != f.metadata.get("doc"):
                problems.append(f"{where} description differs from the library's reason")
    for name in config.model_fields:
        if name not in owner:
            problems.append(f"{config.__name__}.{name} has no library field")
    return problems


def test_every_config_is_found_under_its_groups_name():
    assert set(CONFIGS) == EXPECTED
    assert not (REPO / "assets" / "config.py").exists()  # one home per group, none shared
    for name, config in CONFIGS.items():
        assert re.fullmatch(r"assets\.\w+\.config", config.__module__), (name, config.__module__)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_field_is_a_library_field_with_its_default_and_reason(name):
    assert drift(CONFIGS[name]) == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_empty_config_builds_the_library_defaults(name):
    # what an asset builds from an empty Dagster config is what the library builds by default,
    # except a field another source of the same config owns (TrainingRun.item_buckets: 0 = sized
    # from the warehouse)
    config = CONFIGS[name]()
    for src in type(config).__sources__:
        fixed = FIXED.get(src.cls, {})
        owned_elsewhere = {n: getattr(config, n) for n in src.left_out if n in type(config).model_fields}
        expected = dataclasses.replace(src.cls(**fixed), **owned_elsewhere)
        assert to_library(config, src.cls, **fixed) == expected, src.cls.__name__


def test_the_builders_give_the_library_defaults():
    training, ranking = CONFIGS["TrainingConfig"](), CONFIGS["RankingConfig"]()
    shape = WarehouseShape(n_items=300, n_users=200, n_categories=40, n_tokens=90)
    assert tower_config_for(shape, **fields_for(training, TowerConfig)) == tower_config_for(shape)
    assert to_library(training, TrainConfig) == TrainConfig()
    weights = [1.0, 0.5, -2.0]
    assert ranker_config_for(weights, 300, 200, **fields_for(ranking, RankerConfig)) == ranker_config_for(
        weights, 300, 200
    )
    # a user's value travels back: tuples stay tuples where the library holds tuples
    semantic = CONFIGS["SemanticIdConfig"](hidden=[64, 32], epochs=3)
    tok = to_library(semantic, semantic.__sources__[0].cls)
    assert (tok.hidden, tok.epochs) == ((64, 32), 3)


def test_the_guard_sees_a_drifted_default_an_undocumented_field_and_a_field_of_its_own():
    training = CONFIGS["TrainingConfig"]

    class Drifted(training):
        batch_size: int = TrainConfig().batch_size * 2
        warmup: int = 0

    problems = drift(Drifted)
    assert any("batch_size" in p and "default" in p for p in problems), problems
    assert any("warmup" in p and "no library field" in p for p in problems), problems
    assert to_library(Drifted(), TrainConfig) != TrainConfig()

    @dataclasses.dataclass
    class Undocumented:
        size: int = 3  # a comment is not a launchpad description

    with pytest.raises(TypeError, match="has no reason"):
        config_from("Bad", Undocumented)
    assert drift(config_from("Fine", without(Undocumented, size="not a user's choice"))) == []

    @dataclasses.dataclass
    class Twin:
        seed: int = setting(1, "a second home for the same field")

    with pytest.raises(TypeError, match="comes from both"):
        config_from("Twice", GxSettings, Twin)


def test_bounds_and_reasons_reach_the_launchpad_schema():
    from orchestration.definitions import defs

    job = defs.resolve_job_def("all_assets_job")
    ops = job.run_config_schema.config_type.fields["ops"].config_type.fields
    training = ops["two_tower_model"].config_type.fields["config"].config_type.fields
    assert (
        training["content_alignment"].description
        == TrainConfig.__dataclass_fields__["content_alignment"].metadata["doc"]
    )
    assert training["workers"].default_value == 1
    with pytest.raises(ValueError, match="greater than or equal to 1"):  # pydantic ValidationError
        CONFIGS["TrainingConfig"](workers=0)


def test_the_makefile_demo_config_is_a_valid_run_config():
    from orchestration.definitions import defs

    make = (REPO / "Makefile").read_text()
    parts = {
        k: re.search(rf"^{k} := (.*)$", make, re.M).group(1) for k in ("RANKING_DEMO", "GENERATIVE_DEMO", "LOGS_DEMO")
    }
    for workers in (None, 2):  # `make demo` and `make demo WORKERS=2`
        extra = f', "two_tower_model": {{"config": {{"workers": {workers}}}}}' if workers else ""
        run_config = json.loads(
            "{"
            + parts["LOGS_DEMO"]
            + ', "ops": {'
            + parts["RANKING_DEMO"]
            + ", "
            + parts["GENERATIVE_DEMO"]
            + extra
            + "}}"
        )
        job = defs.resolve_job_def("all_assets_job")
        dg.validate_run_config(job, run_config)  # raises DagsterInvalidConfigError on a stale field
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.validate_run_config(job, {"ops": {"ranking_model": {"config": {"no_such_field": 1}}}})
