"""Simulated traffic for an A/B test over the synthetic world: users bucketed into two arms,
each arm's recommendations shown at positions 1..k, clicks drawn from the world's ground truth
with a position bias, everything written to `landing/events/` exactly as the HTTP service logs
it (the impression / feedback contract, README "Champion and challenger (A/B)"):

- a request is one user drawn by activity (the world's own activity weights);
- the user's arm comes from the service's own rule (`models.serving.arms.arm_of`: a salted hash
  of the user id, salt = the challenger's version): a user always sees one arm;
- position p is examined with probability p ** -position_bias (Joachims et al. 2017's power
  law); an examined item gets feedback drawn from the world's event-type table for that user and
  item (`synthetic.event_type_probabilities`): `like` (which implies a click, so it logs both),
  `click`, `not_interested`, or nothing;
- one impression line per shown item, one feedback line per action, in whole JSON Lines files
  `served-<UTC yyyymmddTHHMMSS>-<pid>.jsonl` written through a hidden temp file and renamed
  (the landing reader only sees whole files), split at the service's 8 MiB rotation size.

The arms are plain functions (users, k) -> their item lists: the real champion retriever, or a
planted challenger whose quality is known from the world (`planted_arm`), so a test knows which
arm must win.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from models.abtest.settings import TrafficSettings
from models.artifacts import AtomicWriter
from models.serving.arms import arm_of
from models.serving.feedback import Served, feedback_line, impression_lines
from models.serving.snapshot import CHALLENGER as CHALLENGER_ARM
from models.serving.snapshot import CHAMPION as CHAMPION_ARM
from models.sources.synthetic import EVENT_TYPES, World, event_type_probabilities

ROTATE_BYTES = 8 << 20  # the service's rotation size: a file never grows past it
PLANTED = ("oracle", "popularity", "out-of-taste")
_CLICK, _LIKE, _NOT_INTERESTED = (EVENT_TYPES.index(t) for t in ("click", "like", "not_interested"))

Recommend = Callable[[list[str], int], dict[str, list[str]]]  # users, k -> {user: items, best first}


@dataclass(frozen=True)
class Arm:
    name: str  # champion | challenger
    model_version: str  # the registry version its impressions are logged with
    recommend: Recommend


def examination(k: int, position_bias: float) -> np.ndarray:
    """(k,) probability that a user looks at positions 1..k."""
    return np.arange(1, k + 1, dtype=np.float64) ** -position_bias


def planted_arm(kind: str, world: World, user_ids: list[str], item_ids: list[str]) -> Recommend:
    """A challenger whose quality the world fixes: `oracle` shows the most popular items of the
    user's two taste clusters (every one in taste: the best a recommender can do here),
    `popularity` the globally most popular items, `out-of-taste` the most popular items outside
    the user's taste (worse than any recommender that learned anything)."""
    if kind not in PLANTED:
        raise ValueError(f"unknown planted arm {kind!r}: choose one of {', '.join(PLANTED)}")
    by_weight = np.argsort(-world.item_weight, kind="stable")  # (n_items,) most popular first
    user_index = {u: i for i, u in enumerate(user_ids)}

    def recommend(users: list[str], k: int) -> dict[str, list[str]]:
        out = {}
        for u in users:
            if kind == "popularity":
                chosen = by_weight[:k]
            else:
                c = world.item_cluster[by_weight]
                mine = (c == world.user_main[user_index[u]]) | (c == world.user_secondary[user_index[u]])
                chosen = by_weight[mine if kind == "oracle" else ~mine][:k]
            out[u] = [item_ids[i] for i in chosen]
        return out

    return recommend


def simulate_traffic(
    events_dir: Path,
    world: World,
    user_ids: list[str],
    item_ids: list[str],
    champion: Arm,
    challenger: Arm,
    settings: TrafficSettings | None = None,
    run_id: str | None = None,
    start_ms: int | None = None,
    log: Callable[[str], object] = print,
) -> dict:
    """Simulate `settings.requests` requests and write their impressions and feedback into
    `events_dir`. Returns a summary: per arm the users, requests, impressions, clicks, likes, the
    observed CTR and the CTR the world expects for what the arm showed (the planted truth), and
    the files written. Request ids are `<run_id>-<n>`: a fresh `run_id` per run (default a random
    one) keeps event ids unique across runs, while the draws depend on `settings.seed` only.
    Requests are 1 ms apart from `start_ms` (default: now, as the service stamps them), feedback
    1 to 30 s after its impression. Every line names its experiment (the challenger's version),
    as the service's do: the report selects an experiment's traffic by that name, so runs that
    overlap in time never mix."""
    s = settings or TrafficSettings()
    run_id = run_id or uuid.uuid4().hex[:12]
    rng = np.random.default_rng([s.seed, 7])
    n = s.requests
    cum = world.user_activity_cum
    users = np.minimum(np.searchsorted(cum, rng.random(n) * cum[-1], side="right"), len(user_ids) - 1)  # (n,)
    arms = {CHAMPION_ARM: champion, CHALLENGER_ARM: challenger}
    salt = s.salt or challenger.model_version
    assigned = {u: arm_of(user_ids[u], s.share, salt) for u in np.unique(users).tolist()}
    shown: dict[int, list[str]] = {}
    for name, arm in arms.items():
        mine = sorted(u for u, a in assigned.items() if a == name)
        got = arm.recommend([user_ids[u] for u in mine], s.k)
        shown.update({u: got.get(user_ids[u], [])[: s.k] for u in mine})
    item_index = {item: i for i, item in enumerate(item_ids)}
    exam = examination(s.k, s.position_bias)  # (k,)
    start = int(time.time() * 1000) if start_ms is None else start_ms
    salt_version = challenger.model_version  # every line names the experiment: the challenger under test
    lines: list[tuple[int, str]] = []
    stats = {
        a: {"users": set(), "requests": 0, "impressions": 0, "clicks": 0, "likes": 0, "expected_clicks": 0.0}
        for a in arms
    }
    for r in range(n):
        u = int(users[r])
        name = assigned[u]
        arm, st = arms[name], stats[name]
        items = shown[u]
        st["users"].add(u)
        st["requests"] += 1
        if not items:
            continue
        idx = np.array([item_index[i] for i in items])  # (m,) world indices, m <= k
        m = len(idx)
        p = event_type_probabilities(world, np.full(m, u), idx)  # (m, n_types)
        seen = rng.random(m) < exam[:m]
        draw = rng.random(m)
        p_like, p_click = p[:, _LIKE], p[:, _LIKE] + p[:, _CLICK]
        liked = seen & (draw < p_like)
        clicked = seen & (draw < p_click)
        dismissed = seen & (draw >= p_click) & (draw < p_click + p[:, _NOT_INTERESTED])
        rid = f"{run_id}-{r}"
        t = start + r
        # the service's own lines (models.serving.feedback): one contract for served and simulated traffic
        served = Served(
            user_ids[u],
            name,
            arm.model_version,
            {item: pos for pos, item in enumerate(items, start=1)},
            t,
            salt_version,
        )
        lines += [(t, json.dumps(line)) for line in impression_lines(rid, served)]
        feedback = rng.integers(1_000, 30_000, m)  # (m,) ms after the impression
        for j in range(m):
            for action, happened in (("click", clicked[j]), ("like", liked[j]), ("not_interested", dismissed[j])):
                if happened:
                    ft = t + int(feedback[j]) + (action == "like")
                    lines.append((ft, json.dumps(feedback_line(rid, served, items[j], action, ft))))
        st["impressions"] += m
        st["clicks"] += int(clicked.sum())
        st["likes"] += int(liked.sum())
        st["expected_clicks"] += float((exam[:m] * p_click).sum())
    lines.sort(key=lambda x: x[0])
    files = _write(Path(events_dir), [text for _, text in lines])
    summary = {
        "run_id": run_id,
        "salt": salt,
        "requests": n,
        "files": [f.name for f in files],
        "settings": s.__dict__,
        "arms": {},
    }
    for name, st in stats.items():
        imp = st["impressions"]
        summary["arms"][name] = {
            "model_version": arms[name].model_version,
            "users": len(st["users"]),
            "requests": st["requests"],
            "impressions": imp,
            "clicks": st["clicks"],
            "likes": st["likes"],
            "ctr": st["clicks"] / imp if imp else float("nan"),
            "expected_ctr": st["expected_clicks"] / imp if imp else float("nan"),
        }
        log(
            f"simulate-traffic: {name} (version {arms[name].model_version}): {len(st['users']):,} users, "
            f"{imp:,} impressions, {st['clicks']:,} clicks (CTR {summary['arms'][name]['ctr']:.4f}, "
            f"the world expects {summary['arms'][name]['expected_ctr']:.4f})"
        )
    log(f"simulate-traffic: wrote {len(lines):,} events to {', '.join(summary['files'])}")
    return summary


def _write(folder: Path, lines: list[str]) -> list[Path]:
    """Whole files of at most ROTATE_BYTES, each written to a hidden temp file and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    files, chunk, size = [], [], 0
    for text in lines:
        b = len(text.encode()) + 1
        if chunk and size + b > ROTATE_BYTES:
            files.append(_commit(folder, chunk))
            chunk, size = [], 0
        chunk.append(text)
        size += b
    if chunk:
        files.append(_commit(folder, chunk))
    return files


def _commit(folder: Path, chunk: list[str]) -> Path:
    now = time.time()
    while True:  # the service's naming; a name already taken moves to the next second
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = folder / f"served-{stamp}-{os.getpid()}.jsonl"
        if not path.exists():
            break
        now += 1
    f = AtomicWriter(path)
    try:
        f.fh.write(("\n".join(chunk) + "\n").encode())
        f.commit()
    except BaseException:
        f.abort()
        raise
    return path


def retriever_arm(con, artifacts: Path, threads: int | None = 1) -> Recommend:
    """The champion as the CLI serves it (models/serving/recommender.py over the warehouse
    connection `con`, kept open while the simulation runs), loaded for the arm's users only."""

    def recommend(users: list[str], k: int) -> dict[str, list[str]]:
        from models.serving.recommender import Recommender

        out: dict[str, list[str]] = {u: [] for u in users}
        if users:
            for user, _, item, _, _ in Recommender(con, artifacts, threads=threads, users=users).recommend(users, k):
                out[user].append(item)
        return out

    return recommend
