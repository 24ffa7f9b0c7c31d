"""benchmarks/bench_quality_movielens.py: under every protocol the catalog's trained item ids are
that protocol's train split's (the product's rule), on a tiny MovieLens-like frame through the
real data half (real DuckDB file)."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from benchmarks.bench_quality_movielens import data_for, protocol_warehouse, protocols
from benchmarks.movielens import warehouse
from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
from models.sources.movielens import import_movielens_frame
from models.splits.vocab import Vocabulary
from models.splits.warehouse import build_warehouse, default_warehouse_params

USERS = (1, 2, 3, 4)
SHARED = list(range(100, 110))  # every user's first ten movies, in this order
WINDOW = 200  # every user's 11th movie of 16: back 5, last5's valid window, loo's train


def own(user: int, k: int) -> int:
    """The user's own movie at position k (11..15): nobody else rates it."""
    return 1000 + 10 * user + k


def ratings() -> pd.DataFrame:
    """The dslabs/movielens frame of 4 users x 16 movies, one a day, in the order of the ids above.

    leave-last-out: a user's 16th movie is test, the 15th valid, the rest train, so the trained
    ids are SHARED, WINDOW and each user's own 12th-14th movie. last5 (16 >= 15 pairs for every
    user): the last 5 (12th-16th) are test, the 5 before them (7th-11th: SHARED[6:] and WINDOW)
    valid, so only SHARED[:6] were trained."""
    rows = []
    for u in USERS:
        movies = [*SHARED, WINDOW, *(own(u, k) for k in range(11, 16))]
        for k, m in enumerate(movies):
            rows.append((m, f"Movie {m}", 1990.0 + k, "Drama", u, 4.0, 1_300_000_000 + 86_400 * (16 * u + k)))
    df = pd.DataFrame(rows, columns=["movieId", "title", "year", "genres", "userId", "rating", "timestamp"])
    return df.assign(genres=df.genres.astype("category"))


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quality")
    import_movielens_frame(ratings(), workdir / "landing")
    # the real data half at the library's defaults, where the benchmark's warehouse() finds it
    with duckdb.connect(str(workdir / "warehouse.duckdb")) as build:
        build_warehouse(build, workdir / "landing", **default_warehouse_params())
    con = warehouse(workdir)
    tower = tower_config_for(WarehouseShape.read(con))
    data = load_for_tower(con, tower)
    yield workdir, con, tower, data, protocols(con, data, tower, cut=0.9, valid_cut=0.8, last_k=5)
    con.close()


def trained(catalog) -> set[str]:
    return set(catalog.item_ids[np.asarray(catalog.trained)])


def test_loo_keeps_the_warehouse_trained_ids(bench):
    workdir, con, tower, data, protos = bench
    expected = {str(m) for m in (*SHARED, WINDOW)} | {str(own(u, k)) for u in USERS for k in (11, 12, 13)}
    assert trained(data.catalog) == expected
    assert trained(data_for(con, {}, tower, protos["loo"]).catalog) == expected


def test_last5_trains_only_its_train_pairs_ids(bench, tmp_path):
    workdir, con, tower, data, protos = bench
    last5 = protos["last5"]
    pcon = protocol_warehouse(workdir, last5, tmp_path / "last5.duckdb")
    try:
        mine = data_for(pcon, {}, tower, last5).catalog
        # the same items in the same order as every protocol's splits index
        assert list(mine.item_ids) == list(data.catalog.item_ids)
        assert trained(mine) == {str(m) for m in SHARED[:6]}
        # WINDOW's pairs are all in last5's valid windows: content only there, id part zero
        window = mine.index_of([str(WINDOW)])[0]
        assert not mine.id_hash[window].any() and data.catalog.id_hash[window].any()
        # the protocol's split, the warehouse's content vocabularies
        splits = pcon.execute("SELECT split, count(*) FROM interaction_splits GROUP BY 1").fetchall()
        assert dict(splits) == {"train": 4 * 6, "valid": 4 * 5, "test": 4 * 5}
        for name in ("category", "title_token"):
            assert list(Vocabulary.from_duckdb(pcon, name).keys) == list(Vocabulary.from_duckdb(con, name).keys)
    finally:
        pcon.close()


def test_a_warehouse_of_other_vocabulary_parameters_is_refused(tmp_path):
    # the protocols' vocabularies are built with the library's defaults: a warehouse whose own
    # were not (min_count_ids 2 here) would mix two rules, so it is refused, naming the file
    import_movielens_frame(ratings(), tmp_path / "landing")
    params = default_warehouse_params()
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as build:
        build_warehouse(
            build, tmp_path / "landing", **{**params, "vocabulary": {**params["vocabulary"], "min_count_ids": 2}}
        )
    con = warehouse(tmp_path)
    try:
        tower = tower_config_for(WarehouseShape.read(con))
        last5 = protocols(con, load_for_tower(con, tower), tower, cut=0.9, valid_cut=0.8, last_k=5)["last5"]
        with pytest.raises(ValueError, match=r"warehouse\.duckdb.*not built with the library's default parameters"):
            protocol_warehouse(tmp_path, last5, tmp_path / "last5.duckdb")
    finally:
        con.close()


def test_benchmark_overrides_are_read_one_way_and_refuse_what_no_config_has():
    from benchmarks.movielens import by_config, parse_overrides
    from models.generative.seq2seq import Seq2SeqConfig
    from models.generative.training import GenTrainConfig

    pairs = parse_overrides(["d_model=32", "lr=0.001", 'lr_schedule="cosine"'], "--set")
    assert by_config(pairs, Seq2SeqConfig, GenTrainConfig) == (
        {"d_model": 32},
        {"lr": 0.001, "lr_schedule": "cosine"},
    )
    with pytest.raises(ValueError, match="--set 'lr': expected FIELD=JSON"):
        parse_overrides(["lr"], "--set")
    with pytest.raises(ValueError, match="--set 'lr=cosine': expected FIELD=JSON"):
        parse_overrides(["lr=cosine"], "--set")
    with pytest.raises(ValueError, match=r"not a field of Seq2SeqConfig or GenTrainConfig: \['nope'\]"):
        by_config({"nope": 1}, Seq2SeqConfig, GenTrainConfig)


def test_a_generative_ablation_is_refused_at_parsing_and_cached_apart_from_the_defaults(capsys):
    from benchmarks.bench_quality_movielens import family_params, main

    with pytest.raises(SystemExit):  # before any warehouse is built
        main(["--generative-set", "nope=1"])
    assert "not a field of Seq2SeqConfig or GenTrainConfig: ['nope']" in capsys.readouterr().err
    assert family_params("generative", {}) == family_params("generative")  # the defaults' cache keys hold
    ablation = family_params("generative", {"window_stride": 3, "decoder_layers": 1})
    assert ablation["train"]["window_stride"] == 3 and ablation["model"]["decoder_layers"] == 1
    assert ablation != family_params("generative")
