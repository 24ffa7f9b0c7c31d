"""One source of truth per default: the Dagster configs (assets/config.py) and the library
dataclasses they feed (TrainConfig, TowerConfig, IndexSpec) agree, field by field."""

from __future__ import annotations

import dataclasses

from assets.config import IndexConfig, TrainingConfig
from assets.training.two_tower_model import tower_config, train_config
from models.index.item_index import IndexSpec
from models.retrieval.data import WarehouseShape, tower_config_for
from models.retrieval.towers import TowerConfig
from models.retrieval.training import TrainConfig

# Dagster-only fields, each with the reason it has no library twin (or a different default).
DAGSTER_ONLY = {
    "resume": "which checkpoint to start from is the asset's business",
    "workers": "how many processes run training is the asset's business",
    "item_buckets": "0 asks tower_config_for to size the table from the warehouse",
    "user_buckets": "0 asks tower_config_for to size the table from the warehouse",
}


def _defaults(dc) -> dict:
    return {f.name: f.default for f in dataclasses.fields(dc) if f.default is not dataclasses.MISSING}


def test_every_training_field_has_one_default_shared_with_the_library():
    library = {**_defaults(TowerConfig), **_defaults(TrainConfig)}
    for name, field in TrainingConfig.model_fields.items():
        if name in DAGSTER_ONLY:
            continue
        # a new config field must reach a library dataclass (or be listed above with a reason)
        assert name in library, f"TrainingConfig.{name} has no TrainConfig/TowerConfig twin"
        assert field.default == library[name], (name, field.default, library[name])


def test_default_training_config_builds_the_library_defaults():
    # what the asset builds from an empty Dagster config is exactly what the library builds by default
    assert train_config(TrainingConfig()) == TrainConfig()
    shape = WarehouseShape(n_items=300, n_users=200, n_categories=40, n_tokens=90)
    assert tower_config(TrainingConfig(), shape) == tower_config_for(shape)


def test_index_config_defaults_are_the_index_spec_defaults():
    library = _defaults(IndexSpec)
    for name, field in IndexConfig.model_fields.items():
        if name in library:
            assert field.default == library[name], (name, field.default, library[name])
    assert IndexConfig().spec() == IndexSpec()


def test_the_guard_sees_a_drifted_default():
    # the comparison above is not vacuous: a config whose literal drifted from the library fails it
    class Drifted(TrainingConfig):
        batch_size: int = TrainConfig().batch_size * 2

    assert train_config(Drifted()) != TrainConfig()


def test_generative_config_defaults_are_the_library_defaults():
    from assets.config import GenerativeConfig, SemanticIdConfig
    from models.generative.semantic_ids import TokenizerConfig
    from models.generative.seq2seq import Seq2SeqConfig
    from models.generative.training import GenTrainConfig

    dagster_only = {"max_minutes": "the asset bounds a training the library leaves unbounded", "retrain": "asset"}
    library = {**_defaults(Seq2SeqConfig), **_defaults(GenTrainConfig)}
    for name, field in GenerativeConfig.model_fields.items():
        if name not in dagster_only:
            assert name in library, f"GenerativeConfig.{name} has no Seq2SeqConfig/GenTrainConfig twin"
            assert field.default == library[name], (name, field.default, library[name])
    tok = _defaults(TokenizerConfig)
    for name, field in SemanticIdConfig.model_fields.items():
        if name not in dagster_only:
            assert name in tok, f"SemanticIdConfig.{name} has no TokenizerConfig twin"
            assert field.default == (list(tok[name]) if name == "hidden" else tok[name]), name
    # what the asset builds from an empty config is the library's run, but for the time budget
    built = GenerativeConfig().train_config()
    assert dataclasses.replace(built, max_minutes=GenTrainConfig().max_minutes) == GenTrainConfig()
    assert SemanticIdConfig().tokenizer_config() == TokenizerConfig()
