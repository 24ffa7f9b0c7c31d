"""Tensors for training and evaluation, built once per run with NumPy (no per-example Python).

- `Catalog`: every item (catalog rows + any item seen in interactions) with its hashed id,
  category bag, title-token bag and numeric features, as tensors indexed by catalog position.
  An item whose id was never trained (not in the train split's item vocabulary,
  models.splits.vocab.TRAINED_ITEM_IDS_SQL) gets an all-zero `id_hash`: the item tower then
  embeds it by content alone, the path id dropout trains.
- `TrainSet`: one row per train positive, with the user's previous L positives (left-padded)
  and up to H of the user's negative-feedback items; `windows` marks rows that end a
  window of transitions: the transformer trains on every position of such windows.
- `EvalSet`: one target per user (valid or test), the history before it, and the items to
  exclude from ranking (everything the user interacted with before the target split).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import torch

from models.splits.history import SEES, first_targets, history_pairs
from models.splits.vocab import TRAINED_ITEM_IDS_SQL, Vocabulary

YEAR_SUFFIX = re.compile(r"\(([0-9]{4})\)\s*$")
TOKEN_SPLIT = re.compile(r"[^a-z0-9]+")
_SALTS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)
_MULTS = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53)


def title_tokens(title: str | None) -> list[str]:
    """The tokenisation of sql/vocabularies.sql: lower-case, no "(1995)" suffix, alphanumeric runs >= 2."""
    if not title:
        return []
    text = YEAR_SUFFIX.sub("", title.lower())
    return [t for t in TOKEN_SPLIT.split(text) if len(t) >= 2]


def hash_buckets(keys, n_hashes: int, buckets: int) -> np.ndarray:
    """(N,) string ids -> (N, n_hashes) int64 buckets in 1..buckets-1 (0 is padding).

    pandas' hash_array is a keyed SipHash with a fixed key: stable across processes, unlike
    hash(); each hash function re-mixes it with its own salt and multiplier (splitmix64).
    """
    assert 1 <= n_hashes <= len(_SALTS), n_hashes
    base = pd.util.hash_array(np.asarray(keys, dtype=object))  # (N,) uint64
    out = np.empty((len(base), n_hashes), dtype=np.int64)
    with np.errstate(over="ignore"):
        for k in range(n_hashes):
            x = (base ^ np.uint64(_SALTS[k])) * np.uint64(_MULTS[k])
            x ^= x >> np.uint64(31)
            out[:, k] = (x % np.uint64(buckets - 1)).astype(np.int64) + 1
    return out


def title_token_lists(titles: pl.Series) -> pl.Series:
    """`title_tokens` for a whole column at once (vectorised; the same tokens)."""
    return (
        titles.str.to_lowercase()
        .str.replace(YEAR_SUFFIX.pattern, "")
        .str.extract_all(r"[a-z0-9]+")
        .list.eval(pl.element().filter(pl.element().str.len_chars() >= 2))
        .fill_null([])
    )


def _encode_bags(bags: pl.Series, vocab: Vocabulary, width: int) -> np.ndarray:
    """(N,) lists of keys -> (N, width) int64 vocabulary indices, the first `width` keys of each
    list, 0-padded. Each distinct key is encoded once."""
    n = len(bags)
    flat = pl.DataFrame({"row": np.arange(n), "key": bags}).explode("key").drop_nulls("key")
    flat = flat.with_columns(pl.int_range(pl.len()).over("row").alias("slot")).filter(pl.col("slot") < width)
    out = np.zeros((n, width), dtype=np.int64)
    if flat.height:
        keys = flat.select(pl.col("key").unique())
        keys = keys.with_columns(idx=pl.Series(vocab.encode(keys["key"].to_numpy().astype(object)), dtype=pl.Int64))
        flat = flat.join(keys, on="key", how="left")
        out[flat["row"].to_numpy(), flat["slot"].to_numpy()] = flat["idx"].to_numpy()
    return out


def id_index(ids) -> pd.Index:
    """An index to look ids up in (`get_indexer`), with object keys: pandas' default string dtype
    would convert the whole index on every lookup of object keys (250 ms at 1M items, what a
    session request cost). The one rule for every id lookup table."""
    return pd.Index(np.asarray(ids, dtype=object), dtype=object)


@dataclass
class Catalog:
    item_ids: np.ndarray  # (N,) object
    id_hash: torch.Tensor  # (N + 1, n_hashes); all zeros: no trained id (content only), as the last (padding) row
    categories: torch.Tensor  # (N + 1, C)
    tokens: torch.Tensor  # (N + 1, T)
    numeric: torch.Tensor  # (N + 1, 2): (year - 2000) / 20, has_year
    content_hash: np.ndarray | None = None  # (N,) object: clean_items.content_hash (None: no catalog row)
    trained: np.ndarray | None = None  # (N,) bool: the id was trained (False: embedded by content alone)

    def __post_init__(self) -> None:
        self._index = id_index(self.item_ids)

    def __len__(self) -> int:
        return len(self.item_ids)

    def index_of(self, keys) -> np.ndarray:
        """Catalog positions of item ids; -1 where unknown."""
        return self._index.get_indexer(pd.Series(keys, dtype=object))

    def features(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather features for catalog positions of any shape; -1 gives the padding row."""
        i = torch.where(idx < 0, torch.full_like(idx, len(self)), idx)
        return {
            "id_hash": self.id_hash[i],
            "categories": self.categories[i],
            "tokens": self.tokens[i],
            "numeric": self.numeric[i],
        }

    @classmethod
    def build(
        cls,
        item_ids,
        titles,
        categories,
        years,
        category_vocab: Vocabulary,
        token_vocab: Vocabulary,
        n_hashes: int,
        buckets: int,
        *,
        trained,
        max_categories: int = 4,
        max_tokens: int = 8,
        content_hash=None,
    ) -> "Catalog":
        """Features of items from their ids, titles (str or None), category lists (or None)
        and years (number or None); each may be a polars Series (fast) or a sequence.

        `trained` (N,) bool says which ids were trained (load_catalog reads it from the train
        item vocabulary); the others get no id hash, so they never borrow the hash buckets
        trained for other items."""
        item_ids = np.asarray(item_ids, dtype=object)
        n = len(item_ids)
        trained = np.asarray(trained, dtype=bool)
        if trained.shape != (n,):
            raise ValueError(f"trained must hold one flag per item: {trained.shape} for {n} items")
        id_hash = hash_buckets(item_ids, n_hashes, buckets) * trained[:, None]  # (N, n_hashes); 0 = no id
        cats = pl.Series(categories, dtype=pl.List(pl.String)).fill_null([])
        titles = pl.Series(titles, dtype=pl.String)
        cat_idx = _encode_bags(cats, category_vocab, max_categories)
        tok_idx = _encode_bags(title_token_lists(titles), token_vocab, max_tokens)
        years = pd.to_numeric(pd.Series(years, dtype=object), errors="coerce").to_numpy(float)
        has_year = ~np.isnan(years)
        numeric = np.stack([np.where(has_year, (years - 2000.0) / 20.0, 0.0), has_year.astype(float)], axis=1)

        def with_pad(a: np.ndarray, dtype) -> torch.Tensor:
            return torch.as_tensor(np.concatenate([a, np.zeros((1, a.shape[1]), a.dtype)]), dtype=dtype)

        return cls(
            item_ids,
            with_pad(id_hash, torch.long),
            with_pad(cat_idx, torch.long),
            with_pad(tok_idx, torch.long),
            with_pad(numeric.astype(np.float32), torch.float32),
            None if content_hash is None else np.asarray(content_hash, dtype=object),
            trained,
        )


@dataclass
class TrainSet:
    user_keys: np.ndarray  # (U,) object, user code = position
    user_hash: torch.Tensor  # (U, n_hashes)
    user: torch.Tensor  # (n,) user code of each train positive
    target: torch.Tensor  # (n,) catalog position
    history: torch.Tensor  # (n, L) previous positives, left-padded with -1
    from_end: torch.Tensor  # (n,) how many of the user's train positives come after this row
    hard: torch.Tensor  # (U, H) the user's negative-feedback items, -1 padded
    item_counts: torch.Tensor  # (N,) train positives per catalog item

    def __len__(self) -> int:
        return len(self.target)

    def windows(self, stride: int) -> torch.Tensor:
        """Rows ending a window: every `stride`-th row counting back from each user's last one
        (stride = L: non-overlapping windows; smaller: overlapping, more steps per epoch)."""
        return torch.nonzero(self.from_end % stride == 0).flatten()


def sample_rows(total: int, n: int, seed: int) -> np.ndarray | None:
    """The one rule for a seeded user sample: n of `total` rows (in user order), ascending; None
    when n is 0 or covers them all."""
    if not n or n >= total:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, n, replace=False))


def sample_name(split: str, n: int) -> str:
    return f"{split} (sample of {n:,})"


@dataclass
class EvalSet:
    name: str
    user_keys: np.ndarray  # (E,)
    user_hash: torch.Tensor  # (E, n_hashes)
    history: torch.Tensor  # (E, L)
    target: torch.Tensor  # (E,)
    seen_rows: np.ndarray  # (S,) row in this set, ascending
    seen_items: np.ndarray  # (S,) catalog position to exclude

    def __post_init__(self) -> None:
        assert (np.diff(self.seen_rows) >= 0).all(), "seen_rows must be sorted"
        self._bounds = np.searchsorted(self.seen_rows, np.arange(len(self.target) + 1))

    def __len__(self) -> int:
        return len(self.target)

    def seen_of(self, rows) -> list[np.ndarray]:
        """The catalog positions each of `rows` already interacted with."""
        return [self.seen_items[self._bounds[r] : self._bounds[r + 1]] for r in rows]

    def sample(self, n: int, seed: int = 0) -> "EvalSet":
        """A seeded sample of n users (all of them when n is 0 or covers the set), in row order."""
        rows = sample_rows(len(self), n, seed)
        return self if rows is None else self.rows(rows, name=sample_name(self.name, n))

    def rows(self, rows: np.ndarray, name: str | None = None) -> "EvalSet":
        """The users `rows` (ascending) of this set, with their seen items."""
        counts = self._bounds[rows + 1] - self._bounds[rows]
        take = (
            np.concatenate([np.arange(self._bounds[r], self._bounds[r + 1]) for r in rows])
            if counts.sum()
            else np.empty(0, np.int64)
        )
        return EvalSet(
            name or self.name,
            self.user_keys[rows],
            self.user_hash[rows],
            self.history[rows],
            self.target[rows],
            np.repeat(np.arange(len(rows)), counts),
            self.seen_items[take],
        )


def _histories(codes: np.ndarray, items: np.ndarray, L: int, block_rows: int = 1 << 18) -> np.ndarray:
    """For rows sorted by (user, time): the previous L items of the same user, left-padded -1.

    (n,) -> (n, L) by one gather per block of rows: row k reads rows k-L..k-1, masked where the
    user differs. The (rows, L) temporaries of the gather (sources, their users, the mask, the
    items) are each as large as the output, so they are formed `block_rows` rows at a time: in
    one gather the peak was 4.8x the output (measured on 2.65M rows, 10M events' train rows), which
    at 100M events' ~26.5M rows (an output of 4 GiB) is ~19 GiB, over the 16 GiB goal alone."""
    n = len(items)
    out = np.empty((n, L), dtype=np.int64)
    back = np.arange(L, 0, -1)  # L..1: column L-1 is the previous row
    for a in range(0, n, block_rows):
        b = min(n, a + block_rows)
        src = np.arange(a, b)[:, None] - back[None, :]  # (b - a, L)
        ok = src >= 0
        np.clip(src, 0, None, out=src)
        ok &= codes[src] == codes[a:b, None]
        out[a:b] = np.where(ok, items[src], -1)
    return out


def _item_positions(catalog: Catalog, item_ids: pd.Series, users) -> np.ndarray:
    """Catalog positions of a frame's item ids: the ids themselves when the frame is encoded
    (`users` given: `positions_sql`'s integers), else looked up in the catalog."""
    return item_ids.to_numpy(np.int64, copy=True) if users is not None else catalog.index_of(item_ids)


def build_train_set(
    train: pd.DataFrame,
    negatives: pd.DataFrame,
    catalog: Catalog,
    *,
    history_len: int,
    n_hashes: int,
    user_buckets: int,
    max_hard: int = 8,
    users: np.ndarray | None = None,
) -> TrainSet:
    """train: user_id, item_id, ts (positives); negatives: user_id, item_id, ts (negative feedback).

    Ids are strings, or with `users` the integers `positions_sql` gives (user_id a position in
    `users`, item_id a catalog position): the same set either way."""
    df = train.sort_values(["user_id", "ts", "item_id"], kind="stable").reset_index(drop=True)
    codes, user_keys = pd.factorize(df["user_id"], sort=True)
    items = _item_positions(catalog, df["item_id"], users)
    if (items < 0).any():
        missing = df["item_id"][items < 0].iloc[0]
        raise ValueError(f"train item {missing!r} is not in the catalog")
    hist = _histories(codes, items, history_len)
    from_end = df.groupby(codes).cumcount(ascending=False).to_numpy()
    hard = np.full((len(user_keys), max_hard), -1, dtype=np.int64)
    if max_hard and len(negatives):
        neg = negatives.assign(
            code=pd.Index(user_keys).get_indexer(negatives["user_id"]),
            item=_item_positions(catalog, negatives["item_id"], users),
        )
        neg = neg[(neg.code >= 0) & (neg.item >= 0)].sort_values(["code", "ts"], ascending=[True, False])
        neg = neg.assign(k=neg.groupby("code").cumcount()).query("k < @max_hard")
        hard[neg["code"].to_numpy(), neg["k"].to_numpy()] = neg["item"].to_numpy()
    counts = np.bincount(items, minlength=len(catalog))
    user_keys = np.asarray(user_keys if users is None else users[user_keys], dtype=object)
    return TrainSet(
        user_keys,
        torch.as_tensor(hash_buckets(user_keys, n_hashes, user_buckets)),
        torch.as_tensor(codes, dtype=torch.long),
        torch.as_tensor(items, dtype=torch.long),
        torch.as_tensor(hist, dtype=torch.long),
        torch.tensor(from_end, dtype=torch.long),
        torch.as_tensor(hard),
        torch.as_tensor(counts, dtype=torch.long),
    )


def build_eval_set(
    name: str,
    known: pd.DataFrame,
    targets: pd.DataFrame,
    catalog: Catalog,
    *,
    history_len: int,
    n_hashes: int,
    user_buckets: int,
    users: np.ndarray | None = None,
) -> EvalSet:
    """known: the pairs before the target split (history and exclusions); targets: one per user
    (of several, the last in the frame's order). Ids as in `build_train_set`."""
    known = known.sort_values(["user_id", "ts", "item_id"], kind="stable")
    tg = targets.sort_values("user_id", kind="stable").drop_duplicates("user_id", keep="last").reset_index(drop=True)
    keys = pd.Index(tg["user_id"])
    k_code = keys.get_indexer(known["user_id"])
    k_item = _item_positions(catalog, known["item_id"], users)
    keep = (k_code >= 0) & (k_item >= 0)
    k_code, k_item = k_code[keep], k_item[keep]
    # the last L known items per user, left-padded: position from the end of each user's run
    order = np.lexsort((np.arange(len(k_code)), k_code))
    k_code, k_item = k_code[order], k_item[order]
    from_end = pd.Series(k_code).groupby(k_code).cumcount(ascending=False).to_numpy()
    hist = np.full((len(keys), history_len), -1, dtype=np.int64)
    sel = from_end < history_len
    hist[k_code[sel], history_len - 1 - from_end[sel]] = k_item[sel]
    user_keys = np.asarray(keys if users is None else users[keys], dtype=object)
    return EvalSet(
        name,
        user_keys,
        torch.as_tensor(hash_buckets(user_keys, n_hashes, user_buckets)),
        torch.as_tensor(hist),
        torch.as_tensor(_item_positions(catalog, tg["item_id"], users), dtype=torch.long),
        k_code.astype(np.int64),
        k_item.astype(np.int64),
    )


def _vocab_or_empty(con, name: str) -> Vocabulary:
    try:
        return Vocabulary.from_duckdb(con, name)
    except ValueError:
        nb = con.execute("SELECT num_buckets FROM vocabulary_info").fetchall()[0][0]
        return Vocabulary(name, np.array([], dtype=object), np.array([], dtype=np.int64), int(nb))


@dataclass
class Datasets:
    catalog: Catalog
    train: TrainSet
    valid: EvalSet
    test: EvalSet
    category_vocab: Vocabulary
    token_vocab: Vocabulary
    users_total: dict[str, int] | None = None  # valid / test users before a sample (load_from_warehouse)


# every item the model can be asked about: catalog rows and items seen in the splits, each
# with whether its id was trained (the one rule, TRAINED_ITEM_IDS_SQL)
CATALOG_SQL = f"""SELECT item_id, i.title, i.categories, i.year, i.content_hash,
                         item_id IN ({TRAINED_ITEM_IDS_SQL}) AS trained
                  FROM (SELECT item_id FROM clean_items UNION SELECT DISTINCT item_id FROM interaction_splits)
                  LEFT JOIN clean_items i USING (item_id)"""


def load_catalog(con, *, n_hashes: int, item_buckets: int, only=None) -> tuple[Catalog, Vocabulary, Vocabulary]:
    """Every item (catalog rows and items seen in the splits) with its features, ordered by id;
    `only` (item ids) restricts it to those items."""
    cat_vocab, tok_vocab = _vocab_or_empty(con, "category"), _vocab_or_empty(con, "title_token")
    if only is None:
        items = pl.from_arrow(con.sql(f"{CATALOG_SQL} ORDER BY item_id").to_arrow_table())
    else:
        wanted = pd.DataFrame({"item_id": pd.Series(list(only), dtype=object)})  # noqa: F841 (read by DuckDB)
        items = pl.from_arrow(
            con.sql(
                f"SELECT * FROM ({CATALOG_SQL}) WHERE item_id IN (SELECT item_id FROM wanted) ORDER BY item_id"
            ).to_arrow_table()
        )
    catalog = Catalog.build(
        items["item_id"].to_numpy().astype(object),
        items["title"],
        items["categories"],
        items["year"].to_numpy(),
        cat_vocab,
        tok_vocab,
        n_hashes,
        item_buckets,
        trained=items["trained"].to_numpy(),
        content_hash=items["content_hash"].to_list(),
    )
    return catalog, cat_vocab, tok_vocab


def negatives_before_sql(*splits: str) -> str:
    """Each user's negative feedback strictly before their first pair of `splits`, all of it for
    a user with none: what a model trained before those splits may read (no peeking at the future)."""
    names = ", ".join(f"'{s}'" for s in splits)
    return f"""SELECT c.user_id, c.item_id, c.ts FROM clean_interactions c
               LEFT JOIN (SELECT user_id, min(ts) AS cut FROM interaction_splits
                          WHERE split IN ({names}) GROUP BY user_id) e USING (user_id)
               WHERE c.is_negative AND (e.cut IS NULL OR c.ts < e.cut)"""


def positions_sql(con, catalog: Catalog, users: np.ndarray, *sqls: str) -> list[pd.DataFrame]:
    """The rows of each of `sqls` (queries with user_id and item_id columns) with both ids as
    integers: user_id the user's position in `users`, item_id the item's catalog position (-1:
    not in the catalog); rows of users not in `users` are left out. The id tables are built once
    for all the queries.

    The ids meet in DuckDB, not in pandas: at 100M events (~28M pairs, 10M items) the pairs as
    Python strings, a new object for every cell, and their lookup in a 10M-id index took
    two_tower_model's loading past 16 GiB before its first log line. `users` sorted and the
    catalog in item_id order keep both orders the builders sort by (DuckDB compares strings by
    bytes, Python by code point: the same order for UTF-8), so the sets equal the string path's."""
    item_pos = pa.table({"item_id": pa.array(catalog.item_ids, pa.string()), "pos": np.arange(len(catalog))})  # noqa: F841
    user_pos = pa.table({"user_id": pa.array(users, pa.string()), "pos": np.arange(len(users))})  # noqa: F841
    out = []
    for sql in sqls:  # a loop, not a comprehension: DuckDB finds item_pos and user_pos in this frame
        out.append(
            con.execute(
                f"""SELECT q.* EXCLUDE (user_id, item_id), u.pos AS user_id, coalesce(i.pos, -1) AS item_id
                    FROM ({sql}) q JOIN user_pos u USING (user_id) LEFT JOIN item_pos i USING (item_id)"""
            ).df()
        )
    return out


def load_from_warehouse(
    con,
    *,
    history_len: int,
    n_hashes: int,
    item_buckets: int,
    user_buckets: int,
    max_hard: int = 8,
    sample: tuple[int, int] = (0, 0),
) -> Datasets:
    """Catalog, train rows and valid/test sets from the DuckDB tables the data assets built.

    Each valid/test user's target is their first pair of the split in the (ts, item_id) order, the
    pair their history is cut at (models/splits/history.py); leave-last-out has one a split.
    `sample` (n, seed): the valid and test sets of n seeded users each, the ones
    `EvalSet.sample(n, seed)` would draw from the whole sets (0: every user); only theirs are
    built, so at 100M events (~1M users, each set every pair before its users' targets) the
    loading holds 10,000 users' histories instead of all (its peak was 18.6 GiB)."""
    catalog, cat_vocab, tok_vocab = load_catalog(con, n_hashes=n_hashes, item_buckets=item_buckets)
    held = "split IN ('train', 'valid', 'test')"
    users = con.execute(f"SELECT DISTINCT user_id FROM interaction_splits WHERE {held} ORDER BY user_id").df()
    users = users["user_id"].to_numpy(dtype=object)
    pairs, negatives = positions_sql(
        con,
        catalog,
        users,
        f"""SELECT user_id, item_id, ts, split::ENUM('train', 'valid', 'test') AS split
            FROM interaction_splits WHERE {held}""",
        negatives_before_sql("valid", "test"),
    )
    train = pairs[pairs.split == "train"]
    kw = dict(history_len=history_len, n_hashes=n_hashes, user_buckets=user_buckets, users=users)
    train_set = build_train_set(train, negatives, catalog, max_hard=max_hard, **kw)

    totals = {}

    def held_out(split: str) -> EvalSet:
        # each user's history at their first pair of the split: the one rule (models/splits/history.py)
        cuts = first_targets(pairs, split)  # one row per user, in user order: the set's rows
        totals[split] = len(cuts)
        rows = sample_rows(len(cuts), *sample)
        if rows is not None:
            cuts = cuts.iloc[rows].reset_index(drop=True)
        targets = cuts[["user_id", "target_item"]].rename(columns={"target_item": "item_id"})
        name = split if rows is None else sample_name(split, sample[0])
        return build_eval_set(name, history_pairs(pairs, cuts), targets, catalog, **kw)

    valid, test = held_out("valid"), held_out("test")
    return Datasets(catalog, train_set, valid, test, cat_vocab, tok_vocab, totals)


def load_refit_set(
    con, catalog: Catalog, *, history_len: int, n_hashes: int, user_buckets: int, max_hard: int = 8
) -> TrainSet:
    """The rows a refit trains on (models.retrieval.training.refit): the pairs a test target may
    read (models/splits/history.py SEES["test"]: train + valid) and the negative feedback strictly
    before each user's first test pair, so no test pair and nothing after one enters it. The
    catalog's trained ids stay the train split's (TRAINED_ITEM_IDS_SQL, read by serving too): an
    item first seen in valid keeps its content-only embedding."""
    pairs = con.execute(
        "SELECT user_id, item_id, ts FROM interaction_splits WHERE list_contains(?, split)", [list(SEES["test"])]
    ).df()
    negatives = con.execute(negatives_before_sql("test")).df()
    kw = dict(history_len=history_len, n_hashes=n_hashes, user_buckets=user_buckets)
    return build_train_set(pairs, negatives, catalog, max_hard=max_hard, **kw)


def load_for_tower(con, tower, sample: tuple[int, int] = (0, 0)) -> Datasets:
    """load_from_warehouse with the history length and id tables a TowerConfig was sized for:
    what the two-tower asset, its evaluation, the DDP ranks and the quality benchmark train on."""
    return load_from_warehouse(
        con,
        history_len=tower.history_len,
        n_hashes=tower.n_hashes,
        item_buckets=tower.item_buckets,
        user_buckets=tower.user_buckets,
        sample=sample,
    )


@dataclass(frozen=True)
class WarehouseShape:
    """The sizes a tower config is built from, read from the warehouse the data assets built."""

    n_items: int  # catalog rows and items seen in the splits (CATALOG_SQL: what the model can be asked about)
    n_users: int  # distinct users in the splits
    n_categories: int  # category vocabulary rows (padding + buckets + known)
    n_tokens: int  # title-token vocabulary rows

    @classmethod
    def read(cls, con) -> "WarehouseShape":
        n_items = con.execute(f"SELECT count(*) FROM ({CATALOG_SQL})").fetchall()[0][0]
        n_users = con.execute("SELECT count(DISTINCT user_id) FROM interaction_splits").fetchall()[0][0]
        sizes = dict(con.execute("SELECT vocabulary, max(idx) + 1 FROM vocabularies GROUP BY 1").fetchall())
        nb = con.execute("SELECT num_buckets FROM vocabulary_info").fetchall()[0][0]
        return cls(
            int(n_items), int(n_users), int(sizes.get("category", nb + 1)), int(sizes.get("title_token", nb + 1))
        )


def tower_config_for(shape: WarehouseShape, *, item_buckets: int = 0, user_buckets: int = 0, **fields):
    """A TowerConfig sized for the warehouse: id tables of 2x the items / users (two hashes make
    a full collision rare; at least 1,024 rows) unless given, vocabulary sizes from the tables,
    and the towers' width (dim, hidden) by the catalog's size (`width_for`) where it is 0 or not given."""
    from models.retrieval.towers import TowerConfig, width_for

    for width in ("dim", "hidden"):
        fields[width] = fields.get(width) or width_for(shape.n_items)
    return TowerConfig(
        item_buckets=item_buckets or max(1024, 2 * shape.n_items + 1),
        user_buckets=user_buckets or max(1024, 2 * shape.n_users + 1),
        n_categories=shape.n_categories,
        n_tokens=shape.n_tokens,
        **fields,
    )
