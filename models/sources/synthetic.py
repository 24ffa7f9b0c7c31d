"""Seeded synthetic interaction logs in the raw data contract (DESIGN.md "Raw data contract").

The data has structure a two-tower model can learn, and dirt a cleaning stage must catch:

- K latent taste clusters. Every item belongs to one; popularity is Zipf-like.
- Every user has a main and a secondary cluster and drifts from main toward secondary
  over the event window; a small share of events are random popular items.
- Item titles and categories are drawn mostly from per-cluster vocabularies, so content
  features carry the cluster for cold items. ~20% of items appear during the window and
  no event references an item before its ``created_at``.
- Event types and values depend on whether the item is in the user's taste.
- ``dirty_share`` of the rows are made dirty in counted, named ways (``DIRTY_KINDS``).

Everything is vectorised NumPy / pyarrow, produced and written in chunks so memory stays
bounded for tens of millions of events. The same arguments give byte-identical files.
``latent_world`` exposes the hidden truth (clusters, drift) for tests and evaluations.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from models.artifacts import AtomicWriter

EVENT_COLUMNS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "value", "device")
ITEM_COLUMNS = ("item_id", "title", "categories", "created_at", "price")
EVENT_TYPES = ("impression", "click", "like", "share", "rating", "not_interested")
POSITIVE_TYPES = ("click", "like", "share", "rating")
DEVICES = ("web", "ios", "android")
FILE_FORMATS = ("csv", "jsonl.gz", "parquet")  # file f uses FILE_FORMATS[f % 3]
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Biography",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Family",
    "Fantasy",
    "History",
    "Horror",
    "Music",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Sports",
    "Thriller",
    "War",
    "Western",
)
# Rows added next to a clean one / rows whose fields are replaced / CSV-only raw lines.
ADDED_KINDS = ("duplicate", "conflicting_event_id")
REPLACED_KINDS = (
    "empty_user_id",
    "empty_item_id",
    "oversized_id",
    "unparseable_timestamp",
    "implausible_timestamp",
    "unknown_event_type",
    "non_numeric_rating",
    "out_of_range_rating",
)
DIRTY_KINDS = ADDED_KINDS + REPLACED_KINDS + ("malformed_line",)
OVERSIZED_ID_LEN = 300
UNPARSEABLE_TIMESTAMPS = ("not-a-date", "2024-13-45T99:99:99Z", "soon")
IMPLAUSIBLE_TIMESTAMPS = (
    "0",
    "1970-01-01T00:00:00Z",
    "2099-01-01T00:00:00Z",
    "4070908800",
    "4070908800000",
)  # 4070908800 s = 2099-01-01
UNKNOWN_EVENT_TYPES = ("purchasee", "clik", "add_to_cartt")
NON_NUMERIC_RATINGS = ("five", "four", "three stars")
OUT_OF_RANGE_RATINGS = ("11", "6", "-3")

# Event-type probabilities in EVENT_TYPES order; row 0 out of taste, row 1 in taste.
_TYPE_P = np.array(
    [
        [0.740, 0.080, 0.010, 0.005, 0.025, 0.140],
        [0.520, 0.270, 0.080, 0.030, 0.097, 0.003],
    ]
)
# Timestamp text formats: ISO 'Z', ISO '+hh:mm' offset, epoch seconds, epoch milliseconds.
_TS_FORMAT_P = np.array([0.40, 0.20, 0.25, 0.15])
_OFFSETS = ("+02:00", "-05:00", "+05:30", "+09:00", "-03:00", "+01:00")
_OFFSET_S = np.array([7200, -18000, 19800, 32400, -10800, 3600])
_WORDS_PER_CLUSTER = 8
_WORD_POOL = """
Dragon Sword Quest Kingdom Empire Throne Blade Legend Galaxy Star Orbit Robot Planet Alien
Nebula Cyborg Murder Detective Alibi Witness Clue Suspect Motive Verdict Love Heart Kiss
Wedding Bride Paris Sweetheart Promise Ghost Haunting Curse Demon Shadow Blood Crypt
Nightmare Laugh Party Buddy Prank Crazy Wacky Goofy Holiday Soldier Battle Front Siege
Platoon Trench Victory Medal Cowboy Outlaw Sheriff Frontier Prairie Saloon Ranch Gunslinger
Song Melody Rhythm Dance Jazz Symphony Ballad Encore Ocean Island Jungle Safari Expedition
Treasure Voyage Summit Puppy Kids School Friendship Farm Pony Magic Wish Emperor Revolution
Dynasty Queen Pharaoh Chronicle Legacy Crown Heist Gangster Cartel Mob Vault Getaway Racket
Hustle Champion Team Goal Match Coach Season Stadium Rookie Wildlife Earth Climate River
Forest Desert Glacier Coral Spy Agent Cipher Mission Traitor Signal Protocol Handler
""".split()
_GENERIC_WORDS = (
    "The",
    "A",
    "Of",
    "Last",
    "Return",
    "Story",
    "Day",
    "Night",
    "Life",
    "Little",
    "World",
    "Road",
    "House",
    "Time",
    "Home",
    "Beyond",
    "Rising",
    "Lost",
    "New",
    "Final",
)
_SYLLABLES = ("ka", "ro", "mi", "zu", "tel", "van", "sor", "ith", "qua", "bel", "dor", "ny")


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 3000  # enough users that leave-last-out splits give thousands of test cases
    n_items: int = 2000  # catalog size; must be >= n_clusters so every cluster has items
    n_events: int = 150_000  # clean events sampled before dirt is added
    n_clusters: int = 16  # latent tastes; chance level for "in taste" is 2 / n_clusters
    n_files: int = 3  # event files in time order; formats cycle csv, jsonl.gz, parquet
    dirty_share: float = 0.01  # share of rows made dirty (replaced or added), per chunk
    days: int = 180  # event window length; long enough for visible drift
    seed: int = 0  # every random stream derives from it; same seed -> same bytes
    chunk_rows: int = 1_000_000  # rows generated and written at once; bounds memory
    zipf_exponent: float = 1.1  # popularity ~ 1 / rank**a; 1.1 puts >50% of events on 10% items
    random_share: float = 0.08  # events on a random popular item, outside the user's taste
    cold_item_share: float = 0.2  # items created during the window (cold-start candidates)
    start: str = "2024-01-01T00:00:00Z"  # window start; fixed so output is reproducible

    def validate(self) -> None:
        checks = [
            (self.n_clusters >= 2, "n_clusters must be >= 2 (users need two distinct clusters)"),
            (self.n_items >= self.n_clusters, f"n_items ({self.n_items}) must be >= n_clusters ({self.n_clusters})"),
            (self.n_users >= 1, "n_users must be >= 1"),
            (self.n_events >= 0, "n_events must be >= 0"),
            (self.n_files >= 1, "n_files must be >= 1"),
            (0.0 <= self.dirty_share < 1.0, "dirty_share must be in [0, 1)"),
            (self.days >= 1, "days must be >= 1"),
            (self.chunk_rows >= 1, "chunk_rows must be >= 1"),
            (0.0 <= self.random_share <= 1.0, "random_share must be in [0, 1]"),
            (0.0 <= self.cold_item_share < 1.0, "cold_item_share must be in [0, 1)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SyntheticConfig: {message}")


class _Sampler:
    """Weighted item sampling within groups, restricted to items created by a given time.

    Items are sorted by (group, created_at); the items available at time t form a prefix
    of their group's segment, so one searchsorted finds the prefix end and a second one
    samples from its cumulative weights.
    """

    def __init__(self, group: np.ndarray, created_s: np.ndarray, weight: np.ndarray, n_groups: int):
        self.base = int(created_s.min())
        self.order = np.lexsort((created_s, group))
        g = group[self.order].astype(np.int64)
        self.key = (g << 40) | (created_s[self.order] - self.base)
        self.cum0 = np.concatenate([[0.0], np.cumsum(weight[self.order])])
        self.seg_start = np.searchsorted(g, np.arange(n_groups), side="left")

    def sample(self, rng: np.random.Generator, group: np.ndarray, t_s: np.ndarray) -> np.ndarray:
        g = group.astype(np.int64)
        end = np.searchsorted(self.key, (g << 40) | (t_s - self.base), side="right")
        start = self.seg_start[g]
        assert np.all(end > start), "a group has no item created before the event time"
        lo, hi = self.cum0[start], self.cum0[end]
        u = lo + rng.random(len(g)) * (hi - lo)
        pos = np.clip(np.searchsorted(self.cum0, u, side="right") - 1, start, end - 1)
        return self.order[pos]


@dataclass(frozen=True)
class World:
    """The hidden truth behind a synthetic dataset (index i <-> ids from ``item_ids``)."""

    config: SyntheticConfig
    start_s: int  # window start, epoch seconds
    end_s: int  # window end (exclusive), epoch seconds
    item_cluster: np.ndarray  # (n_items,) taste cluster of each item
    item_weight: np.ndarray  # (n_items,) Zipf popularity weight
    item_created_s: np.ndarray  # (n_items,) creation time, epoch seconds
    cluster_genres: np.ndarray  # (K, 3) GENRES indices tied to each cluster, -1 = unused
    cluster_words: tuple[tuple[str, ...], ...]  # (K, 8) title words tied to each cluster
    user_main: np.ndarray  # (n_users,) main cluster
    user_secondary: np.ndarray  # (n_users,) secondary cluster, != main
    user_sec_base: np.ndarray  # (n_users,) P(secondary) at window start
    user_sec_drift: np.ndarray  # (n_users,) added to P(secondary) by window end
    user_activity_cum: np.ndarray  # (n_users,) cumulative activity weights
    user_device: np.ndarray  # (n_users,) preferred DEVICES index
    by_cluster: _Sampler  # samples in-taste items
    popular: _Sampler  # samples random popular items


def _iso_to_epoch(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "s").astype(np.int64))


def _cluster_words(n_clusters: int) -> tuple[tuple[str, ...], ...]:
    words = list(_WORD_POOL)
    s = len(_SYLLABLES)
    i = 0
    while len(words) < n_clusters * _WORDS_PER_CLUSTER:  # pseudo-words once the pool runs out
        a, b, c = i // (s * s) % s, i // s % s, i % s
        words.append((_SYLLABLES[a] + _SYLLABLES[b] + _SYLLABLES[c]).capitalize())
        i += 1
    w = _WORDS_PER_CLUSTER
    return tuple(tuple(words[k * w : (k + 1) * w]) for k in range(n_clusters))


def latent_world(config: SyntheticConfig) -> World:
    """Build the clusters, popularity, creation times and user tastes for ``config``."""
    config.validate()
    c = config
    rng = np.random.default_rng([c.seed, 1])
    start_s = _iso_to_epoch(c.start)
    end_s = start_s + c.days * 86400
    k = c.n_clusters

    item_cluster = rng.permutation(np.arange(c.n_items) % k).astype(np.int64)
    rank = rng.permutation(c.n_items)
    item_weight = 1.0 / (rank + 1.0) ** c.zipf_exponent
    cold = rng.random(c.n_items) < c.cold_item_share
    created = np.where(
        cold,
        start_s + rng.integers(0, end_s - start_s, c.n_items),
        start_s - rng.integers(1, 3 * 365 * 86400, c.n_items),
    )
    # Each cluster's most popular item predates the window, so every cluster can be sampled.
    by_weight = np.lexsort((-item_weight, item_cluster))
    heads = by_weight[np.searchsorted(item_cluster[by_weight], np.arange(k))]
    created[heads] = np.minimum(created[heads], start_s - 86400)

    genres = np.stack([rng.choice(len(GENRES), 3, replace=False) for _ in range(k)])
    genres[rng.random(k) < 0.5, 2] = -1  # half the clusters tie to two genres, half to three

    urng = np.random.default_rng([c.seed, 2])
    main = urng.integers(0, k, c.n_users)
    secondary = (main + urng.integers(1, k, c.n_users)) % k
    activity = urng.lognormal(0.0, 1.0, c.n_users)
    return World(
        config=c,
        start_s=start_s,
        end_s=end_s,
        item_cluster=item_cluster,
        item_weight=item_weight,
        item_created_s=created,
        cluster_genres=genres,
        cluster_words=_cluster_words(k),
        user_main=main,
        user_secondary=secondary,
        user_sec_base=urng.uniform(0.05, 0.2, c.n_users),
        user_sec_drift=urng.uniform(0.3, 0.7, c.n_users),
        user_activity_cum=np.cumsum(activity),
        user_device=urng.choice(len(DEVICES), c.n_users, p=[0.45, 0.35, 0.20]),
        by_cluster=_Sampler(item_cluster, created, item_weight, k),
        popular=_Sampler(np.zeros(c.n_items, np.int64), created, item_weight, 1),
    )


# ---------------------------------------------------------------------------- strings


def _ids(prefix: str, n: int) -> pa.Array:
    width = len(str(max(n - 1, 0)))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


@lru_cache(maxsize=1)
def _time_of_day() -> pa.Array:
    return pa.array([f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)])


def _iso(secs: np.ndarray, suffix: str | pa.Array) -> pa.Array:
    """Epoch seconds -> 'YYYY-MM-DDTHH:MM:SS' + suffix, via lookup tables (no strftime)."""
    if len(secs) == 0:
        return pa.array([], pa.string())
    days = secs // 86400
    d0 = int(days.min())
    day_table = pa.array(np.datetime_as_string(np.arange(d0, int(days.max()) + 1).astype("datetime64[D]")).tolist())
    date = day_table.take(pa.array(days - d0))
    tod = _time_of_day().take(pa.array(secs - days * 86400))
    return pc.binary_join_element_wise(date, "T", tod, suffix, "")


def _timestamps(rng: np.random.Generator, t_ms: np.ndarray) -> pa.Array:
    """Epoch ms -> text in a per-row random format; each row is formatted once."""
    n = len(t_ms)
    fmt = np.searchsorted(np.cumsum(_TS_FORMAT_P)[:-1], rng.random(n), side="right")
    off = rng.integers(0, len(_OFFSETS), n)
    order = np.argsort(fmt, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(fmt, minlength=4))])
    parts = []
    for f in range(4):
        idx = order[bounds[f] : bounds[f + 1]]
        secs = t_ms[idx] // 1000
        if f == 0:
            parts.append(_iso(secs, "Z"))
        elif f == 1:
            o = off[idx]
            parts.append(_iso(secs + _OFFSET_S[o], pa.array(_OFFSETS).take(pa.array(o))))
        elif f == 2:
            parts.append(pc.cast(pa.array(secs), pa.string()))
        else:
            parts.append(pc.cast(pa.array(t_ms[idx]), pa.string()))
    inverse = np.empty(n, np.int64)
    inverse[order] = np.arange(n)
    return pa.concat_arrays(parts).take(pa.array(inverse))


def _put(arr: pa.Array, positions: np.ndarray, values) -> pa.Array:
    """Copy of ``arr`` with ``arr[positions] = values`` (a pa.Array or one str)."""
    if len(positions) == 0:
        return arr
    if isinstance(values, str):
        values = pa.array([values] * len(positions), pa.string())
    idx = np.arange(len(arr))
    idx[positions] = len(arr) + np.arange(len(positions))
    return pa.concat_arrays([arr, values]).take(pa.array(idx))


def _pick(rng: np.random.Generator, choices: tuple[str, ...], n: int) -> pa.Array:
    return pa.array(choices).take(pa.array(rng.integers(0, len(choices), n)))


# ---------------------------------------------------------------------------- items


def _items_table(w: World, item_ids: pa.Array) -> tuple[pa.Table, int]:
    c = w.config
    rng = np.random.default_rng([c.seed, 3])
    n, cl = c.n_items, w.item_cluster
    genre_names = pa.array(GENRES)

    # Categories: 1-3, each from the cluster's genres with p=0.85, else any genre.
    n_tied = (w.cluster_genres >= 0).sum(axis=1)  # (K,)
    tied = w.cluster_genres[cl[:, None], (rng.random((n, 3)) * n_tied[cl][:, None]).astype(int)]
    cand = np.where(rng.random((n, 3)) < 0.85, tied, rng.integers(0, len(GENRES), (n, 3)))
    n_cat = rng.choice([1, 2, 3], n, p=[0.35, 0.45, 0.20])
    keep = np.ones((n, 3), bool)
    keep[:, 1] = (n_cat >= 2) & (cand[:, 1] != cand[:, 0])
    keep[:, 2] = (n_cat >= 3) & (cand[:, 2] != cand[:, 0]) & (cand[:, 2] != cand[:, 1])
    cats = [genre_names.take(pa.array(cand[:, j], mask=~keep[:, j])) for j in range(3)]
    categories = pc.binary_join_element_wise(*cats, "|", null_handling="skip")

    # Title: 2-4 words, each from the cluster's words with p=0.75, else a generic word.
    words = np.array(w.cluster_words, dtype=object)  # (K, 8)
    flat_words = pa.array(list(words.ravel()) + list(_GENERIC_WORDS))
    n_words = rng.integers(2, 5, n)
    slot = np.arange(4)  # strides 3 (mod 8) and 7 (mod 20) keep a title's four words distinct
    own = (
        cl[:, None] * _WORDS_PER_CLUSTER + (rng.integers(0, _WORDS_PER_CLUSTER, (n, 1)) + 3 * slot) % _WORDS_PER_CLUSTER
    )
    generic = words.size + (rng.integers(0, len(_GENERIC_WORDS), (n, 1)) + 7 * slot) % len(_GENERIC_WORDS)
    word_idx = np.where(rng.random((n, 4)) < 0.75, own, generic)
    slots = [flat_words.take(pa.array(word_idx[:, j], mask=n_words <= j)) for j in range(4)]
    title = pc.binary_join_element_wise(*slots, " ", null_handling="skip")
    created_year = w.item_created_s.astype("datetime64[s]").astype("datetime64[Y]").astype(int) + 1970
    year = created_year - rng.integers(0, 30, n)
    with_year = rng.random(n) < 0.35
    title = pc.if_else(
        pa.array(with_year),
        pc.binary_join_element_wise(title, " (", pc.cast(pa.array(year), pa.string()), ")", ""),
        title,
    )

    price = np.round(rng.lognormal(np.log(5.0 + 3.0 * (cl % 5)), 0.5), 2)
    table = pa.table(
        {
            "item_id": item_ids,
            "title": title,
            "categories": categories,
            "created_at": _iso(w.item_created_s, "Z"),
            "price": pc.cast(pa.array(price), pa.string()),
        }
    )
    return table, int((w.item_created_s >= w.start_s).sum())


# ---------------------------------------------------------------------------- events


def taste(w: World, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """Whether each (user, item) pair (world indices) is in the user's taste: the item's cluster
    is the user's main or secondary one. The ground truth every event type is drawn from."""
    ic = w.item_cluster[item]
    return (ic == w.user_main[user]) | (ic == w.user_secondary[user])


def event_type_probabilities(w: World, user: np.ndarray, item: np.ndarray) -> np.ndarray:
    """(n, len(EVENT_TYPES)) the probability of each event type when `user` meets `item`: the
    same table the logs are drawn from, by whether the item is in the user's taste."""
    return _TYPE_P[taste(w, user, item).astype(np.int64)]


def _sample_events(w: World, rng: np.random.Generator, n: int, t_lo: int, t_hi: int) -> dict:
    """n clean events with epoch-ms times in [t_lo, t_hi), sorted by time."""
    c = w.config
    t = np.sort(rng.integers(t_lo, t_hi, n))
    t_s = t // 1000
    user = np.minimum(
        np.searchsorted(w.user_activity_cum, rng.random(n) * w.user_activity_cum[-1], side="right"), c.n_users - 1
    )
    frac = (t_s - w.start_s) / (w.end_s - w.start_s)
    p_secondary = w.user_sec_base[user] + w.user_sec_drift[user] * frac
    cluster = np.where(rng.random(n) < p_secondary, w.user_secondary[user], w.user_main[user])
    item = w.by_cluster.sample(rng, cluster, t_s)
    rnd = rng.random(n) < c.random_share
    item[rnd] = w.popular.sample(rng, np.zeros(int(rnd.sum()), np.int64), t_s[rnd])

    in_taste = taste(w, user, item)
    cum = np.cumsum(_TYPE_P, axis=1)[:, :-1]  # upper bounds of the first five types
    r = rng.random(n)
    etype = np.where(in_taste, np.searchsorted(cum[1], r, side="right"), np.searchsorted(cum[0], r, side="right"))
    dwell = np.round(rng.lognormal(np.where(in_taste, np.log(40.0), np.log(8.0)), 1.0), 1)
    rating = np.clip(np.rint(rng.normal(np.where(in_taste, 4.1, 2.1), 0.85)), 1, 5)
    value = np.where(etype == 1, dwell, np.where(etype == 4, rating, np.nan))
    device = np.where(rng.random(n) < 0.85, w.user_device[user], rng.integers(0, 3, n))
    return {"t": t, "user": user, "item": item, "etype": etype, "value": value, "device": device}


def _event_columns(
    ev: dict, rng: np.random.Generator, row0: int, id_width: int, user_ids: pa.Array, item_ids: pa.Array
) -> dict[str, pa.Array]:
    n = len(ev["t"])
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(row0, row0 + n)), pa.string()), width=id_width, padding="0")
    return {
        "event_id": pc.binary_join_element_wise("e", digits, ""),
        "user_id": user_ids.take(pa.array(ev["user"])),
        "item_id": item_ids.take(pa.array(ev["item"])),
        "event_type": pa.array(EVENT_TYPES).take(pa.array(ev["etype"])),
        "timestamp": _timestamps(rng, ev["t"]),
        "value": pc.cast(pa.array(ev["value"], from_pandas=True), pa.string()),  # NaN -> null
        "device": pa.array(DEVICES).take(pa.array(ev["device"])),
    }


def _inject_dirty(
    rng: np.random.Generator,
    cols: dict[str, pa.Array],
    item: np.ndarray,
    n_dirty: int,
    kinds: tuple[str, ...],
    fallback_items: tuple[int, int],
    item_ids: pa.Array,
) -> tuple[pa.Table, list[tuple[int, bytes]], dict]:
    """Make ``n_dirty`` rows dirty, kinds cycled evenly. Returns the table (added rows
    inserted after their source), malformed raw lines as (after final row, bytes), counts."""
    n = len(item)
    d = min(n_dirty, n)
    counts = dict.fromkeys(kinds, 0)
    if d == 0:
        return pa.table(cols), [], counts
    pos = rng.choice(n, d, replace=False)  # distinct rows: each dirty row has one kind
    kind = np.array(kinds)[(rng.integers(len(kinds)) + np.arange(d)) % len(kinds)]
    rows = {k: pos[kind == k] for k in kinds}
    counts = {k: len(v) for k, v in rows.items()}

    p = rows.get("empty_user_id", pos[:0])
    cols["user_id"] = _put(cols["user_id"], p, "")
    p = rows.get("empty_item_id", pos[:0])
    cols["item_id"] = _put(cols["item_id"], p, "")
    p = rows.get("oversized_id", pos[:0])
    on_user = rng.random(len(p)) < 0.5
    for col, sel in (("user_id", p[on_user]), ("item_id", p[~on_user])):
        long_ids = pc.utf8_rpad(cols[col].take(pa.array(sel)), width=OVERSIZED_ID_LEN, padding="x")
        cols[col] = _put(cols[col], sel, long_ids)
    for k, choices in (
        ("unparseable_timestamp", UNPARSEABLE_TIMESTAMPS),
        ("implausible_timestamp", IMPLAUSIBLE_TIMESTAMPS),
    ):
        p = rows.get(k, pos[:0])
        cols["timestamp"] = _put(cols["timestamp"], p, _pick(rng, choices, len(p)))
    p = rows.get("unknown_event_type", pos[:0])
    cols["event_type"] = _put(cols["event_type"], p, _pick(rng, UNKNOWN_EVENT_TYPES, len(p)))
    for k, choices in (("non_numeric_rating", NON_NUMERIC_RATINGS), ("out_of_range_rating", OUT_OF_RANGE_RATINGS)):
        p = rows.get(k, pos[:0])
        cols["event_type"] = _put(cols["event_type"], p, "rating")
        cols["value"] = _put(cols["value"], p, _pick(rng, choices, len(p)))
    base = pa.table(cols)

    # Added rows are copies of untouched source rows, inserted after them in the file.
    dup_src = rows.get("duplicate", pos[:0])
    conf_src = rows.get("conflicting_event_id", pos[:0])
    conflict = base.take(pa.array(conf_src))
    earlier = (rng.random(len(conf_src)) * (conf_src + 1)).astype(np.int64)
    alt = item[earlier]  # an earlier row's item: created before this row's time
    same = alt == item[conf_src]
    alt[same] = np.where(item[conf_src][same] == fallback_items[0], fallback_items[1], fallback_items[0])
    conflict = conflict.set_column(conflict.column_names.index("item_id"), "item_id", item_ids.take(pa.array(alt)))
    src = np.concatenate([dup_src, conf_src])
    after = src + (rng.random(len(src)) * (n - src)).astype(np.int64)  # in [src, n-1]
    key = np.concatenate([2 * np.arange(n), 2 * after + 1])
    table = pa.concat_tables([base, base.take(pa.array(dup_src)), conflict]).take(
        pa.array(np.argsort(key, kind="stable"))
    )

    lines: list[tuple[int, bytes]] = []
    bad_src = rows.get("malformed_line", pos[:0])
    if len(bad_src):
        src_rows = base.take(pa.array(bad_src))
        fields = [src_rows[c].combine_chunks() for c in EVENT_COLUMNS]
        short = pc.binary_join_element_wise(*fields[:4], ",", null_handling="replace")
        long = pc.binary_join_element_wise(*fields, "extra", "fields", ",", null_handling="replace")
        text = pc.if_else(pa.array(np.arange(len(bad_src)) % 2 == 0), short, long).to_pylist()
        at = np.sort(rng.integers(0, table.num_rows, len(bad_src)))
        lines = [(int(a), (s + "\n").encode()) for a, s in zip(at, text)]
    return table, lines, counts


# ---------------------------------------------------------------------------- writers


_EVENT_SCHEMA = pa.schema([(c, pa.string()) for c in EVENT_COLUMNS])


class _CsvSink:
    def __init__(self, path: Path):
        self.file = AtomicWriter(path)
        self.file.fh.write((",".join(EVENT_COLUMNS) + "\n").encode())
        # quoting 'none' raises if a value ever needs quotes: ours never should.
        self.writer = pacsv.CSVWriter(
            self.file.fh, _EVENT_SCHEMA, write_options=pacsv.WriteOptions(include_header=False, quoting_style="none")
        )

    def write(self, table: pa.Table, lines: list[tuple[int, bytes]]) -> None:
        prev = 0
        for after, raw in lines:  # raw malformed lines between slices of the table
            self.writer.write_table(table.slice(prev, after + 1 - prev))
            self.file.fh.write(raw)
            prev = after + 1
        self.writer.write_table(table.slice(prev))

    def close(self) -> None:
        self.writer.close()
        self.file.commit()


def _string_bytes(arr: pa.Array) -> pa.Buffer:
    """The concatenated values of a string array (its data buffer, offsets applied)."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    return arr.buffers()[2][int(offsets[0]) : int(offsets[-1])]


class _JsonlSink:
    def __init__(self, path: Path):
        self.file = AtomicWriter(path)
        # mtime=0 and no file name in the header keep the bytes reproducible.
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.file.fh, mtime=0, compresslevel=1)

    def write(self, table: pa.Table, lines: list[tuple[int, bytes]]) -> None:
        assert not lines, "malformed raw lines are a CSV-only kind"
        names = table.column_names
        assert table[names[0]].null_count == 0 and table[names[-1]].null_count == 0, (
            "the first and last keys carry the braces, so they must never be null"
        )
        parts = []
        for name in names:
            esc = table[name]
            if any(pc.any(pc.match_substring(esc, ch)).as_py() for ch in '"\\'):  # escape if needed
                esc = pc.replace_substring(pc.replace_substring(esc, "\\", "\\\\"), '"', '\\"')
            pre = ("{" if name == names[0] else "") + f'"{name}":"'
            post = '"}\n' if name == names[-1] else '"'
            parts.append(pc.binary_join_element_wise(pre, esc, post, ""))  # null stays null
        lines = pc.binary_join_element_wise(*parts, ",", null_handling="skip")  # null: key omitted
        for chunk in lines.chunks:
            if len(chunk):
                self.gz.write(memoryview(_string_bytes(chunk)))

    def close(self) -> None:
        self.gz.close()
        self.file.commit()


class _ParquetSink:
    def __init__(self, path: Path):
        self.file = AtomicWriter(path)
        self.writer = pq.ParquetWriter(self.file.fh, _EVENT_SCHEMA, compression="zstd")

    def write(self, table: pa.Table, lines: list[tuple[int, bytes]]) -> None:
        assert not lines, "malformed raw lines are a CSV-only kind"
        self.writer.write_table(table)  # one row group per chunk

    def close(self) -> None:
        self.writer.close()
        self.file.commit()


_SINKS = {"csv": _CsvSink, "jsonl.gz": _JsonlSink, "parquet": _ParquetSink}


def _write_json(path: Path, obj: dict) -> None:
    f = AtomicWriter(path)
    f.fh.write((json.dumps(obj, indent=2) + "\n").encode())
    f.commit()


# ---------------------------------------------------------------------------- entry point


def generate(
    out: Path,
    *,
    n_users: int = 3000,
    n_items: int = 2000,
    n_events: int = 150_000,
    n_clusters: int = 16,
    n_files: int = 3,
    dirty_share: float = 0.01,
    days: int = 180,
    seed: int = 0,
    chunk_rows: int = 1_000_000,
    log: Callable[[str], object] = print,
) -> dict:
    """Write a synthetic landing folder: ``out/events/events-NNN.{csv,jsonl.gz,parquet}``,
    ``out/items/items.csv`` and ``out/generated.json`` (the returned summary)."""
    cfg = SyntheticConfig(
        n_users=n_users,
        n_items=n_items,
        n_events=n_events,
        n_clusters=n_clusters,
        n_files=n_files,
        dirty_share=dirty_share,
        days=days,
        seed=seed,
        chunk_rows=chunk_rows,
    )
    started = time.perf_counter()
    w = latent_world(cfg)
    out = Path(out)
    (out / "events").mkdir(parents=True, exist_ok=True)
    (out / "items").mkdir(parents=True, exist_ok=True)
    user_ids, item_ids = _ids("u", n_users), _ids("i", n_items)

    items, n_cold = _items_table(w, item_ids)
    items_file = AtomicWriter(out / "items" / "items.csv")
    try:
        pacsv.write_csv(items, items_file.fh)
        items_file.commit()
    except BaseException:
        items_file.abort()
        raise
    log(f"synthetic: items/items.csv: {n_items:,} items ({n_cold:,} created in the window)")

    fallback = tuple(int(i) for i in np.argsort(w.item_created_s, kind="stable")[:2])
    id_width = len(str(max(n_events - 1, 0)))
    start_ms, span_ms = w.start_s * 1000, (w.end_s - w.start_s) * 1000
    files, dirty_total, chunk_no = {}, dict.fromkeys(DIRTY_KINDS, 0), 0
    for f in range(n_files):
        fmt = FILE_FORMATS[f % 3]
        rel = f"events/events-{f:03d}.{fmt}"
        kinds = DIRTY_KINDS if fmt == "csv" else DIRTY_KINDS[:-1]
        r0, r1 = n_events * f // n_files, n_events * (f + 1) // n_files
        n_chunks = max(1, -(-(r1 - r0) // chunk_rows))
        sink = _SINKS[fmt](out / rel)
        rows, dirty = 0, dict.fromkeys(kinds, 0)
        try:
            for j in range(n_chunks):
                a, b = r0 + (r1 - r0) * j // n_chunks, r0 + (r1 - r0) * (j + 1) // n_chunks
                rng = np.random.default_rng([seed, 100, chunk_no])
                chunk_no += 1
                # Rows a..b get the matching slice of the window, so files are in time order.
                t_lo = start_ms + span_ms * a // max(n_events, 1)
                t_hi = max(start_ms + span_ms * b // max(n_events, 1), t_lo + 1)
                ev = _sample_events(w, rng, b - a, t_lo, t_hi)
                cols = _event_columns(ev, rng, a, id_width, user_ids, item_ids)
                table, lines, counts = _inject_dirty(
                    rng, cols, ev["item"], round(dirty_share * (b - a)), kinds, fallback, item_ids
                )
                sink.write(table, lines)
                rows += table.num_rows + len(lines)
                for k, v in counts.items():
                    dirty[k] += v
                log(
                    f"synthetic: {rel}: chunk {j + 1}/{n_chunks}, {b - a:,} events, "
                    f"{sum(counts.values()):,} dirty ({time.perf_counter() - started:.1f} s)"
                )
            sink.close()
        except BaseException:
            sink.file.abort()
            raise
        files[rel] = {"format": fmt, "rows": rows, "dirty_rows": dirty}
        for k, v in dirty.items():
            dirty_total[k] += v

    summary = {
        "seed": seed,
        "n_users": n_users,
        "n_items": n_items,
        "n_clusters": n_clusters,
        "n_events": n_events,  # clean events sampled; replaced rows are among them
        "window": {"start": cfg.start, "days": days},
        "items_file": "items/items.csv",
        "items_created_in_window": n_cold,
        "rows_per_file": {rel: v["rows"] for rel, v in files.items()},
        "files": files,
        "dirty_rows": dirty_total,
        "dirty_rows_total": sum(dirty_total.values()),
        # rows that are valid and unique: the sampled events minus the replaced ones
        "valid_events": n_events - sum(dirty_total[k] for k in REPLACED_KINDS),
        "total_rows": sum(v["rows"] for v in files.values()),
        "config": asdict(cfg),
    }
    _write_json(out / "generated.json", summary)
    log(
        f"synthetic: {summary['total_rows']:,} rows in {n_files} files, "
        f"{summary['dirty_rows_total']:,} dirty, {time.perf_counter() - started:.1f} s"
    )
    return summary


def world_of(landing: Path) -> tuple[World, list[str], list[str]]:
    """The hidden world behind a landing folder that `generate` wrote (read from its
    generated.json), with the user and item ids in index order."""
    path = Path(landing) / "generated.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: the simulated traffic needs the synthetic world's ground truth "
            "(run `towerflow generate` first; real data has no such truth)"
        )
    cfg = SyntheticConfig(**json.loads(path.read_text())["config"])
    return latent_world(cfg), _ids("u", cfg.n_users).to_pylist(), _ids("i", cfg.n_items).to_pylist()
