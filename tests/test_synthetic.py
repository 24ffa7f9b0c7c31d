"""models.sources.synthetic: reproducible bytes, the raw contract, counted dirt, learnable structure."""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from models.sources import synthetic as S

# 8 clusters -> a user's main + secondary cluster is 2/8 = 25% of the catalog by chance.
SMALL = dict(n_users=300, n_items=400, n_events=12_000, n_clusters=8, n_files=3, days=90, chunk_rows=2500)
KNOWN_TYPES = set(S.EVENT_TYPES)


def quiet(_msg: str) -> None:
    pass


def parse_ts(text: str) -> float | None:
    """Epoch seconds for a contract timestamp (ISO-8601 with zone, epoch s or ms), else None."""
    if re.fullmatch(r"-?\d+", text):
        return int(text) / 1000 if len(text) >= 12 else float(text)  # ms have >= 12 digits
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt.timestamp() if dt.tzinfo is not None else None


def ts_format(text: str) -> str:
    if re.fullmatch(r"\d{12,}", text):
        return "epoch_ms"
    if re.fullmatch(r"\d+", text):
        return "epoch_s"
    return "iso_z" if text.endswith("Z") else "iso_offset"


def read_events(out: Path) -> tuple[list[dict], dict[str, int]]:
    """Every event row (None -> "") with its file, and the count of malformed CSV lines."""
    rows, malformed = [], {}
    for path in sorted((out / "events").iterdir()):
        rel = f"events/{path.name}"
        if path.name.endswith(".csv"):
            with open(path, newline="") as fh:
                reader = csv.reader(fh)
                header = next(reader)
                assert header == list(S.EVENT_COLUMNS)
                recs, bad = [], 0
                for fields in reader:
                    if len(fields) != len(header):
                        bad += 1
                        continue
                    recs.append(dict(zip(header, fields)))
            malformed[rel] = bad
        elif path.name.endswith(".jsonl.gz"):
            with gzip.open(path, "rt") as fh:
                recs = [json.loads(line) for line in fh]
            for rec in recs:
                assert all(isinstance(v, str) for v in rec.values()), rec  # all values as text
        else:
            table = pq.read_table(path)
            assert table.schema == pa.schema([(c, pa.string()) for c in S.EVENT_COLUMNS])
            recs = table.to_pylist()
        for rec in recs:
            rows.append({"file": rel, **{c: rec.get(c) or "" for c in S.EVENT_COLUMNS}})
    return rows, malformed


def read_items(out: Path) -> list[dict]:
    with open(out / "items" / "items.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    summary = S.generate(out, dirty_share=0.0, seed=7, log=quiet, **SMALL)
    rows, malformed = read_events(out)
    world = S.latent_world(S.SyntheticConfig(dirty_share=0.0, seed=7, **SMALL))
    return out, summary, rows, malformed, world


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    out = tmp_path_factory.mktemp("dirty")
    summary = S.generate(out, dirty_share=0.05, seed=3, log=quiet, **SMALL)
    rows, malformed = read_events(out)
    return out, summary, rows, malformed


def file_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes(tmp_path):
    args = dict(SMALL, n_events=3000, dirty_share=0.05, log=quiet)
    S.generate(tmp_path / "a", seed=11, **args)
    S.generate(tmp_path / "b", seed=11, **args)
    S.generate(tmp_path / "c", seed=12, **args)
    a, b, c = file_bytes(tmp_path / "a"), file_bytes(tmp_path / "b"), file_bytes(tmp_path / "c")
    assert sorted(a) == [
        "events/events-000.csv",
        "events/events-001.jsonl.gz",
        "events/events-002.parquet",
        "generated.json",
        "items/items.csv",
    ]
    assert a == b
    assert all(a[k] != c[k] for k in a)  # a new seed changes every file


def test_clean_dataset_has_no_dirty_rows_and_every_row_is_valid(clean):
    out, summary, rows, malformed, world = clean
    assert summary["dirty_rows_total"] == 0 and set(summary["dirty_rows"].values()) == {0}
    assert summary["total_rows"] == summary["valid_events"] == SMALL["n_events"] == len(rows)
    assert sum(malformed.values()) == 0
    assert json.loads((out / "generated.json").read_text()) == summary
    per_file = Counter(r["file"] for r in rows)
    assert dict(per_file) == summary["rows_per_file"]

    start = datetime.fromisoformat(S.SyntheticConfig.start).timestamp()
    end = start + SMALL["days"] * 86400
    assert len({r["event_id"] for r in rows}) == len(rows)
    for r in rows:
        assert re.fullmatch(r"e\d{5}", r["event_id"]), r  # 12,000 events -> 5 digits
        assert re.fullmatch(r"u\d{3}", r["user_id"]), r  # 300 users -> u000..u299
        assert re.fullmatch(r"i\d{3}", r["item_id"]), r
        assert r["event_type"] in KNOWN_TYPES, r
        assert r["device"] in S.DEVICES, r
        t = parse_ts(r["timestamp"])
        assert t is not None and start <= t < end, r
        if r["event_type"] == "rating":
            assert r["value"] in {"1", "2", "3", "4", "5"}, r
        elif r["event_type"] == "click":
            assert float(r["value"]) >= 0, r
        else:
            assert r["value"] == "", r


def test_timestamps_mix_all_four_formats_and_files_follow_time(clean):
    _, summary, rows, _, _ = clean
    formats = Counter(ts_format(r["timestamp"]) for r in rows)
    assert set(formats) == {"iso_z", "iso_offset", "epoch_s", "epoch_ms"}
    assert min(formats.values()) > 0.05 * len(rows)
    assert any(re.search(r"[+-]\d\d:\d\d$", r["timestamp"]) for r in rows)
    files = list(summary["rows_per_file"])
    spans = [[parse_ts(r["timestamp"]) for r in rows if r["file"] == f] for f in files]
    for earlier, later in zip(spans, spans[1:]):
        assert max(earlier) <= min(later)


def test_file_formats_cycle_and_single_file_is_csv(tmp_path):
    s4 = S.generate(tmp_path / "four", **dict(SMALL, n_files=4, n_events=800), log=quiet)
    assert list(s4["rows_per_file"]) == [
        "events/events-000.csv",
        "events/events-001.jsonl.gz",
        "events/events-002.parquet",
        "events/events-003.csv",
    ]
    rows, _ = read_events(tmp_path / "four")
    assert Counter(r["file"] for r in rows) == Counter(s4["rows_per_file"])
    s1 = S.generate(tmp_path / "one", **dict(SMALL, n_files=1, n_events=500), log=quiet)
    assert list(s1["rows_per_file"]) == ["events/events-000.csv"]
    assert [p.name for p in (tmp_path / "one" / "events").iterdir()] == ["events-000.csv"]
    # JSONL omits keys whose value is empty (value on impressions)
    with gzip.open(tmp_path / "four" / "events" / "events-001.jsonl.gz", "rt") as fh:
        recs = [json.loads(line) for line in fh]
    assert any("value" not in r for r in recs) and any("value" in r for r in recs)
    assert all(set(r) <= set(S.EVENT_COLUMNS) for r in recs)


def dirty_kind(r: dict) -> str | None:
    """The dirty kind a single row shows, judged only from its fields."""
    if len(r["user_id"]) == S.OVERSIZED_ID_LEN or len(r["item_id"]) == S.OVERSIZED_ID_LEN:
        return "oversized_id"
    if r["user_id"] == "":
        return "empty_user_id"
    if r["item_id"] == "":
        return "empty_item_id"
    t = parse_ts(r["timestamp"])
    if t is None:
        return "unparseable_timestamp"
    if not (datetime(2000, 1, 1).timestamp() < t < datetime(2090, 1, 1).timestamp()):
        return "implausible_timestamp"
    if r["event_type"] not in KNOWN_TYPES:
        return "unknown_event_type"
    if r["event_type"] == "rating":
        try:
            v = float(r["value"])
        except ValueError:
            return "non_numeric_rating"
        if v not in (1, 2, 3, 4, 5):
            return "out_of_range_rating"
    return None


def test_dirty_kinds_appear_exactly_as_counted(dirty):
    out, summary, rows, malformed = dirty
    found = Counter()
    seen: dict[tuple[str, str], tuple] = {}
    passing = 0
    for r in rows:
        key = (r["file"], r["event_id"])
        full = tuple(r[c] for c in S.EVENT_COLUMNS)
        if key in seen:  # event ids are unique per event, so a repeat is dirt
            found["duplicate" if seen[key] == full else "conflicting_event_id"] += 1
            continue
        seen[key] = full
        kind = dirty_kind(r)
        if kind:
            found[kind] += 1
        else:
            passing += 1
    found["malformed_line"] = sum(malformed.values())
    assert dict(found) == summary["dirty_rows"]
    assert all(v > 0 for v in summary["dirty_rows"].values()), summary["dirty_rows"]
    assert summary["dirty_rows_total"] == sum(found.values())
    # ~5% of rows, within rounding per chunk
    assert summary["dirty_rows_total"] == pytest.approx(0.05 * SMALL["n_events"], rel=0.02)
    assert passing == summary["valid_events"]
    rows_per_file = Counter(r["file"] for r in rows) + Counter(malformed)
    assert dict(rows_per_file) == summary["rows_per_file"]
    assert summary["total_rows"] == len(rows) + found["malformed_line"]
    # malformed lines only in CSV files; other formats hold no such kind
    assert "malformed_line" not in summary["files"]["events/events-001.jsonl.gz"]["dirty_rows"]


def test_conflicting_rows_reference_items_that_exist(dirty):
    out, _, rows, _ = dirty
    created = {it["item_id"]: parse_ts(it["created_at"]) for it in read_items(out)}
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["event_id"], []).append(r)
    conflicts = [g for g in by_id.values() if len({x["item_id"] for x in g}) > 1]
    assert conflicts
    for group in conflicts:
        for r in group:
            assert created[r["item_id"]] <= parse_ts(r["timestamp"])


def event_frame(rows: list[dict], world: S.World) -> dict[str, np.ndarray]:
    user = np.array([int(r["user_id"][1:]) for r in rows])
    item = np.array([int(r["item_id"][1:]) for r in rows])
    etype = np.array([r["event_type"] for r in rows])
    t = np.array([parse_ts(r["timestamp"]) for r in rows])
    cl = world.item_cluster[item]
    return {
        "user": user,
        "item": item,
        "etype": etype,
        "t": t,
        "value": np.array([float(r["value"]) if r["value"] else np.nan for r in rows]),
        "positive": np.isin(etype, S.POSITIVE_TYPES),
        "main": cl == world.user_main[user],
        "secondary": cl == world.user_secondary[user],
    }


def test_positive_events_follow_user_taste_and_drift(clean):
    *_, rows, _, world = clean
    ev = event_frame(rows, world)
    in_taste = ev["main"] | ev["secondary"]
    pos = ev["positive"]
    chance = 2 / SMALL["n_clusters"]
    share = in_taste[pos].mean()
    assert share > 0.8 > 3 * chance, share  # planted: ~0.98
    # Drift: P(secondary | in-taste positive) rises from the first to the last third.
    frac = (ev["t"] - ev["t"].min()) / np.ptp(ev["t"])
    sel = pos & in_taste
    early = ev["secondary"][sel & (frac < 1 / 3)].mean()
    late = ev["secondary"][sel & (frac > 2 / 3)].mean()
    assert late > early + 0.15, (early, late)  # planted: ~0.2 -> ~0.5
    # Negative feedback lands mostly out of taste; ratings are higher in taste.
    ni = ev["etype"] == "not_interested"
    assert (~in_taste[ni]).mean() > 0.5
    rating = ev["etype"] == "rating"
    assert ev["value"][rating & in_taste].mean() > ev["value"][rating & ~in_taste].mean() + 1.0


def test_popularity_is_heavy_headed(clean):
    *_, rows, _, world = clean
    counts = np.sort(np.bincount(event_frame(rows, world)["item"], minlength=SMALL["n_items"]))[::-1]
    head = counts[: SMALL["n_items"] // 10].sum() / counts.sum()
    assert head > 0.5, head


def test_item_content_carries_the_cluster(clean):
    out, *_, world = clean
    items = read_items(out)
    assert list(items[0]) == list(S.ITEM_COLUMNS)
    assert len(items) == SMALL["n_items"]
    in_cluster_cats = in_cluster_words = n_cats = n_words = 0
    for it in items:
        k = world.item_cluster[int(it["item_id"][1:])]
        cats = it["categories"].split("|")
        assert 1 <= len(cats) <= 3 and len(set(cats)) == len(cats) and set(cats) <= set(S.GENRES)
        tied = {S.GENRES[g] for g in world.cluster_genres[k] if g >= 0}
        in_cluster_cats += sum(c in tied for c in cats)
        n_cats += len(cats)
        words = re.sub(r" \(\d{4}\)$", "", it["title"]).split()
        assert 2 <= len(words) <= 4, it
        in_cluster_words += sum(w in world.cluster_words[k] for w in words)
        n_words += len(words)
        float(it["price"])
    assert in_cluster_cats / n_cats > 0.7  # chance ~ 2.5 / 20
    assert in_cluster_words / n_words > 0.6  # chance ~ 8 / (8 * 8 + 20)
    assert any(re.search(r" \(\d{4}\)$", it["title"]) for it in items)


def test_no_event_before_its_item_exists_and_cold_items_get_events(clean):
    out, summary, rows, _, world = clean
    items = read_items(out)
    created = {it["item_id"]: parse_ts(it["created_at"]) for it in items}
    start = datetime.fromisoformat(S.SyntheticConfig.start).timestamp()
    cold = {i for i, t in created.items() if t >= start}
    assert 0.1 < len(cold) / len(items) < 0.3
    assert len(cold) == summary["items_created_in_window"]
    for r in rows:
        assert created[r["item_id"]] <= parse_ts(r["timestamp"]), r
    assert len(cold & {r["item_id"] for r in rows}) > 0.5 * len(cold)


def test_invalid_arguments_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="n_items"):
        S.generate(tmp_path, n_items=3, n_clusters=8, log=quiet)
    with pytest.raises(ValueError, match="dirty_share"):
        S.generate(tmp_path, dirty_share=1.5, log=quiet)
