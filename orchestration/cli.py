"""The `towerflow` command: bring data into the landing folder and look at what the graph made.

towerflow generate [--users N --items N --events N --dirty-share F --seed S]
towerflow import-movielens PATH
towerflow status
towerflow event-partitions
towerflow quarantine [--reason CODE] [-n 20]
towerflow recommend [--user ID ...] [--users-file PATH] [--recent ITEM ...] [-k 10]
                    [--format table|csv|json] [--rank [--candidates 200]]
                    [--retriever two-tower|generative]
towerflow similar --item ID [-k 10] [--format table|csv|json]
towerflow serve [--host 127.0.0.1 --port 8000 --max-batch 64 --max-wait-ms 0 --reload-seconds 1]
                [--challenger-share 0.1 --ab-mode split|shadow] [--no-event-log]
towerflow promote --alias challenger VERSION | --retire
towerflow simulate-traffic [--requests 5000 --share 0.5 --challenger oracle|popularity|out-of-taste|champion]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from models.artifacts import ARTIFACTS, Layout
from models.ranking import DEFAULT_CANDIDATES
from models.serving.config import AB_MODES, ServeConfig
from orchestration.resources import towerflow_home


def _fail(message: str) -> None:
    click.echo(f"towerflow: {message}", err=True)
    sys.exit(2)


@click.group(help="towerflow: raw interaction logs to a served two-tower retrieval model.")
def main() -> None:
    pass


@main.command(help="Write a seeded synthetic dataset in the raw contract into $TOWERFLOW_HOME/landing/.")
@click.option("--users", default=3000, show_default=True, help="Number of users.")
@click.option("--items", default=2000, show_default=True, help="Number of catalog items.")
@click.option("--events", default=150_000, show_default=True, help="Number of event rows.")
@click.option("--clusters", default=16, show_default=True, help="Latent taste clusters.")
@click.option("--files", "n_files", default=3, show_default=True, help="Event files (CSV, JSONL.gz, Parquet in turn).")
@click.option("--dirty-share", default=0.01, show_default=True, help="Share of deliberately bad rows.")
@click.option("--days", default=180, show_default=True, help="Length of the event window in days.")
@click.option("--seed", default=0, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Landing folder (default: $TOWERFLOW_HOME/landing)."
)
def generate(users, items, events, clusters, n_files, dirty_share, days, seed, out) -> None:
    from models.sources.synthetic import generate as run

    if min(users, items, events, clusters, n_files) < 1:
        _fail("--users, --items, --events, --clusters and --files must be at least 1")
    if not 0 <= dirty_share < 1:
        _fail(f"--dirty-share must be in [0, 1), got {dirty_share}")
    out = out or towerflow_home() / "landing"
    summary = run(
        out,
        n_users=users,
        n_items=items,
        n_events=events,
        n_clusters=clusters,
        n_files=n_files,
        dirty_share=dirty_share,
        days=days,
        seed=seed,
        log=click.echo,
    )
    click.echo(f"wrote {summary.get('total_rows', events):,} event rows and {items:,} items to {out}")


@main.command("import-movielens", help="Convert MovieLens (ml-1m .dat or ml-latest .csv) into the landing folder.")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Landing folder (default: $TOWERFLOW_HOME/landing)."
)
def import_movielens(path: Path, out: Path | None) -> None:
    from models.sources.movielens import import_movielens as run

    out = out or towerflow_home() / "landing"
    try:
        counts = run(path, out, log=click.echo)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"imported {counts} into {out}")


def _connect():
    import duckdb

    db = towerflow_home() / "warehouse.duckdb"
    if not db.exists():
        home = os.environ.get("TOWERFLOW_HOME")
        where = f"TOWERFLOW_HOME={home}" if home else "TOWERFLOW_HOME is not set, so the default ./.towerflow"
        _fail(
            f"no warehouse at {db} ({where}): set TOWERFLOW_HOME to the home a run built, or run `make demo` "
            "or `dagster asset materialize -m orchestration.definitions --select '*'` first"
        )
    try:
        return duckdb.connect(str(db), read_only=True)
    except duckdb.Error as e:
        _fail(f"cannot open {db} ({str(e).splitlines()[0]}); is a Dagster run writing to it?")


def _table(rows, header) -> str:
    rows = [tuple("" if v is None else str(v) for v in r) for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*r) for r in rows)])


def _exists(con, table: str) -> bool:
    return bool(
        con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = $t", {"t": table}).fetchall()[0][
            0
        ]
    )


@main.command(help="Row counts of every table the graph built, quarantine reasons and splits.")
def status() -> None:
    con = _connect()
    tables = [
        "raw_events",
        "raw_items",
        "clean_interactions",
        "quarantined_events",
        "clean_items",
        "quarantined_items",
        "interaction_splits",
        "vocabularies",
    ]
    rows = [
        (t, f"{con.execute(f'SELECT count(*) FROM {t}').fetchall()[0][0]:,}" if _exists(con, t) else "not built")
        for t in tables
    ]
    click.echo(_table(rows, ("table", "rows")))
    if _exists(con, "ingested_files"):
        files = con.execute("""SELECT path, status, rows_loaded, parse_errors, reader, coalesce(message, '')
                               FROM ingested_files WHERE status <> 'superseded' ORDER BY kind, path""").fetchall()
        click.echo("\n" + _table(files, ("file", "status", "rows", "unparseable", "reader", "message")))
    if _exists(con, "quarantined_events"):
        reasons = con.execute("SELECT reason, count(*) FROM quarantined_events GROUP BY 1 ORDER BY 2 DESC").fetchall()
        click.echo("\n" + _table(reasons, ("quarantine reason", "rows")))
    if _exists(con, "interaction_splits"):
        splits = con.execute("""SELECT split, count(*), count(DISTINCT user_id), count(DISTINCT item_id)
                                FROM interaction_splits GROUP BY 1 ORDER BY 1""").fetchall()
        click.echo("\n" + _table(splits, ("split", "pairs", "users", "items")))
    _champion_status()


@main.command(
    "event-partitions",
    help="With TOWERFLOW_EVENT_PARTITIONS=files: add a Dagster partition for every landed event file that has "
    "none (what new_events_sensor does on each tick) and print the command that ingests and cleans them.",
)
def event_partitions() -> None:
    import dagster as dg

    from models.ingest.changes import discover
    from orchestration.partitions import EVENT_FILES, SETTING, event_partitions, launch_command, unpartitioned_files

    if event_partitions() is None:
        _fail(f"{SETTING} is unset, so the event assets have no partitions: set {SETTING}=files first")
    folder = towerflow_home() / "landing" / "events"
    files = [p.relative_to(folder).as_posix() for p in discover(folder)]
    # the Makefile's default instance when DAGSTER_HOME is unset
    dagster_home = Path(os.environ.get("DAGSTER_HOME") or towerflow_home() / "dagster")
    dagster_home.mkdir(parents=True, exist_ok=True)
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        added = unpartitioned_files(instance, files)
        instance.add_dynamic_partitions(EVENT_FILES.name, added)
        total = len(instance.get_dynamic_partitions(EVENT_FILES.name))
    click.echo(f"{len(added)} event file partition(s) added, {total} in all ({folder}, {len(files)} landed files)")
    if added:
        click.echo(launch_command(added[0], added[-1]))


def _champion_status() -> None:
    """Each family's registry champion next to the local mirror everything that serves reads."""
    from models.generative.training import promoted_generative_version
    from models.ranking.ranker import ranker_manifest
    from models.retrieval.checkpoint import champion_version
    from orchestration.resources import CHAMPION, GENERATIVE_MODEL, RANKER_MODEL, build_resources

    tracker = build_resources()["mlflow"]
    art = towerflow_home() / ARTIFACTS
    families = (  # registered model, its promote asset, its valid / test NDCG@10 tags, its local mirror
        (tracker.registered_model, "promoted_model", "model", lambda: champion_version(art)),
        (RANKER_MODEL, "promoted_ranker", "ranked", lambda: ranker_manifest(art).get("current")),
        (
            GENERATIVE_MODEL,
            "promoted_generative",
            "generative",
            lambda: promoted_generative_version(Layout(art).generative),
        ),
    )
    rows, missing = [], []
    for name, asset, who, mirror_of in families:
        version = tracker.champion(registered_model=name)
        if version is None:
            missing.append(f"no {name}@{CHAMPION} yet ({asset} registers one)")
            continue
        tags, mirror = version.tags, mirror_of()
        ndcg = [
            tags.get(f"{who}.{split}.ndcg_at_10", tags.get(f"{split}.{who}.ndcg_at_10")) for split in ("valid", "test")
        ]
        rows.append(
            (
                f"models:/{name}@{CHAMPION}",
                version.version,
                tags.get("checkpoint"),
                *ndcg,
                "yes" if tags.get("checkpoint") == mirror else f"NO (local mirror: {mirror})",
            )
        )
    if rows:
        click.echo(
            "\n" + _table(rows, ("champion", "version", "checkpoint", "valid NDCG@10", "test NDCG@10", "served here"))
        )
    for line in missing:
        click.echo(("" if rows else "\n") + line)
    url = tracker.runs_url()
    if url:
        store = f" --backend-store-uri {tracker.tracking_uri}" if tracker.tracking_uri.startswith("sqlite") else ""
        click.echo(f"\nMLflow runs: {url}  (after `mlflow ui{store}`)")


@main.command(help="Show quarantined event rows with file, line, reason and raw text.")
@click.option("--reason", default=None, help="Only this reason code (an unknown one lists those in the warehouse).")
@click.option("-n", "limit", default=20, show_default=True)
def quarantine(reason: str | None, limit: int) -> None:
    con = _connect()
    if not _exists(con, "quarantined_events"):
        _fail("quarantined_events is not built yet")
    rows = con.execute(
        """SELECT source_file, line, reason,
                  left(coalesce(raw_line, concat_ws(',', event_id, user_id, item_id, event_type, timestamp_raw, value_raw)), 80)
           FROM quarantined_events WHERE $r IS NULL OR reason = $r ORDER BY source_file, line LIMIT $n""",
        {"r": reason, "n": limit},
    ).fetchall()
    if reason is not None and not rows:
        found = con.execute("SELECT reason, count(*) FROM quarantined_events GROUP BY 1 ORDER BY 2 DESC, 1").fetchall()
        listed = ", ".join(f"{r} ({n:,})" for r, n in found) or "none: nothing is quarantined"
        _fail(f"no quarantined row has --reason {reason!r}; the reasons in this warehouse: {listed}")
    click.echo(_table(rows, ("file", "line", "reason", "raw")))


def _recommender(users: list[str], threads: int | None = 1, recent_items=()):
    """A Recommender loaded for `users` (and `recent_items`' features) only: starts in about a
    second whatever the catalog size."""
    from models.serving.recommender import Recommender, ServingError

    con = _connect()
    try:
        return Recommender(con, towerflow_home() / ARTIFACTS, threads=threads, users=users, recent_items=recent_items)
    except (ServingError, ValueError) as e:  # VocabularyMismatch is a ValueError
        _fail(str(e))
    finally:
        con.close()


def _generative(users: list[str], threads: int | None = 1):
    """The promoted generative retriever over its codes, loaded for `users` only."""
    from models.generative.serving import GenerativeRecommender
    from models.retrieval.inference import ServingError

    con = _connect()
    try:
        return GenerativeRecommender(con, towerflow_home() / ARTIFACTS, users=users, threads=threads)
    except ServingError as e:
        _fail(str(e))
    finally:
        con.close()


def _emit(rows: list[tuple], header: tuple[str, ...], fmt: str) -> None:
    import csv
    import json
    import sys as _sys

    if fmt == "csv":
        w = csv.writer(_sys.stdout, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
    elif fmt == "json":
        click.echo(json.dumps([dict(zip(header, r)) for r in rows], indent=1))
    else:
        click.echo(_table([tuple(f"{v:.4f}" if isinstance(v, float) else v for v in r) for r in rows], header))


FORMATS = click.Choice(["table", "csv", "json"])


@main.command(
    help="Top-k items for users from the promoted model and its index; seen items excluded. Every "
    "format has the columns user_id, rank, item_id, score, score_kind, fallback: score_kind says what "
    "score is (cosine: two-tower; log_probability: generative; ranker_weighted: --rank; "
    "positive_users: the popularity fallback of an unknown user, a count of users, not a similarity)."
)
@click.option("--user", "users", multiple=True, help="A user id (repeatable).")
@click.option(
    "--users-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file with one user id per line.",
)
@click.option("--sample", default=0, type=click.IntRange(0, 1000), help="Also the first N known users (a demo).")
@click.option(
    "--recent",
    "recent",
    multiple=True,
    help="An item of the current session (repeatable, latest last): appended to each user's history "
    "and excluded, as the HTTP service's recent_items; an unknown user gets recommendations from them.",
)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option(
    "--rank",
    "rank",
    is_flag=True,
    help="Retrieve --candidates items, order them with the promoted "
    "ranker (weighted action probabilities), return k; retrieval order when no ranker is promoted.",
)
@click.option(
    "--candidates",
    default=DEFAULT_CANDIDATES,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="--rank: how many retrieved items the ranker orders.",
)
@click.option(
    "--retriever",
    type=click.Choice(["two-tower", "generative"]),
    default="two-tower",
    show_default=True,
    help="two-tower (the champion and its index) or generative (semantic-ID beam search).",
)
def recommend(users, users_file, sample, recent, k, fmt, rank, candidates, retriever) -> None:
    ids = list(users)
    if users_file:
        ids += [line.strip() for line in users_file.read_text().splitlines() if line.strip()]
    if not ids and not sample:
        _fail("give at least one --user ID, a --users-file or --sample N")
    if sample:
        con = _connect()
        ids += [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT user_id FROM interaction_splits ORDER BY 1 LIMIT $n", {"n": sample}
            ).fetchall()
        ]
        con.close()
    threads = 1 if len(ids) <= 64 else None  # one thread for a few users
    if rank and retriever == "generative":
        _fail("--rank orders the two-tower's candidates; it does not combine with --retriever generative")
    if recent and (rank or retriever == "generative"):
        _fail("--recent goes with the two-tower's retrieval order: not with --rank or --retriever generative")
    if retriever == "generative":
        rec = _generative(ids, threads)
    else:
        rec = _recommender(ids, threads=threads, recent_items=list(recent))
    if rank and _recommend_ranked(rec, ids, k, candidates, fmt):
        return
    rows = rec.recommend(ids, k, recent_items=list(recent)) if recent else rec.recommend(ids, k)
    _warn_fallback(rows)
    kind = "log_probability" if retriever == "generative" else "cosine"
    _emit([(*r[:4], score_kind(r[4], kind), r[4]) for r in rows], RECOMMEND_HEADER, fmt)


# What `score` is on each row, said in every format next to `fallback`: the two-tower's inner
# product of unit user and item vectors (cosine), the generative retriever's log-probability of
# the item's codes, the ranker's weighted action score, or, for the popularity fallback, how many
# users have a positive pair with the item (sql/item_popularity.sql): a count, not a similarity.
RECOMMEND_HEADER = ("user_id", "rank", "item_id", "score", "score_kind", "fallback")
POPULARITY_SCORE = "positive_users"


def score_kind(fallback: bool, kind: str) -> str:
    return POPULARITY_SCORE if fallback else kind


def _warn_fallback(rows) -> None:
    for u in dict.fromkeys(r[0] for r in rows if r[4]):
        click.echo(
            f"towerflow: unknown user {u!r}: popular items instead (fallback; score = {POPULARITY_SCORE}, "
            "users with a positive pair)",
            err=True,
        )


def _recommend_ranked(rec, ids: list[str], k: int, candidates: int, fmt: str) -> bool:
    """Print ranked recommendations; False (after a one-line notice) when no ranker is promoted.
    A user the histories do not know has nothing to rank: popular items, flagged, as plain
    `recommend` gives them (the same rule), in the same table."""
    from models.ranking.ranker import load_ranker, rank_users

    ranker = load_ranker(towerflow_home() / ARTIFACTS)
    if ranker is None:
        click.echo("towerflow: no promoted ranker (materialize the ranking group): retrieval order instead", err=True)
        return False
    con = _connect()
    try:
        df = rank_users(con, rec, ranker, ids, candidates, k)
    finally:
        con.close()
    df = df.astype({c: "float64" for c in df.columns if df[c].dtype.kind == "f"})
    extra = [c for c in df.columns if c not in RECOMMEND_HEADER]  # retrieval_score, p_<action>...
    by_user: dict = {}
    for r in df.itertuples(index=False):
        row = r._asdict()
        by_user.setdefault(row["user_id"], []).append(
            (
                row["user_id"],
                row["rank"],
                row["item_id"],
                row["score"],
                "ranker_weighted",
                False,
                *(row[c] for c in extra),
            )
        )
    unknown = [u for u in dict.fromkeys(ids) if u not in by_user]
    if unknown:
        fallback = rec.recommend(unknown, k)
        _warn_fallback(fallback)
        for r in fallback:
            by_user.setdefault(r[0], []).append((*r[:4], score_kind(r[4], "cosine"), r[4], *(None for _ in extra)))
    rows = [row for u in dict.fromkeys(ids) for row in by_user.get(u, [])]
    _emit(rows, (*RECOMMEND_HEADER, *extra), fmt)
    return True


@main.command(help="Items closest to an item in the index.")
@click.option("--item", required=True, help="An item id.")
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(1, 1000))
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def similar(item, k, fmt) -> None:
    from models.retrieval.inference import ServingError

    try:
        rows = _recommender([]).similar(item, k)
    except ServingError as e:
        _fail(str(e))
    _emit(rows, ("item_id", "rank", "similar_item_id", "score"), fmt)


@main.command(
    help="Serve /recommend, /similar, /healthz, /readyz and /metrics over HTTP from the champion and "
    "its index, reloading live when their manifests change. TOWERFLOW_API_TOKEN, when set, is "
    "the bearer token every endpoint but /healthz requires."
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--max-batch",
    default=ServeConfig.max_batch,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Most requests answered by one user-tower forward and one index search.",
)
@click.option(
    "--max-wait-ms",
    default=ServeConfig.max_wait_ms,
    show_default=True,
    type=click.FloatRange(0, 1000),
    help="Longest the first request of a batch waits for others (0: batch what is already queued; "
    "batches still grow with load, while each batch runs).",
)
@click.option(
    "--worker-thread/--no-worker-thread",
    default=ServeConfig.worker_thread,
    show_default=True,
    help="Answer batches on a worker thread (the event loop keeps parsing meanwhile) instead of inline.",
)
@click.option(
    "--reload-seconds",
    default=ServeConfig.reload_seconds,
    show_default=True,
    type=click.FloatRange(0.05, 3600),
    help="How often the artifact manifests are checked for a new model or index.",
)
@click.option(
    "--challenger-share",
    default=ServeConfig.challenger_share,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of users (stable hash of the user id) the challenger answers in split mode.",
)
@click.option(
    "--ab-mode",
    type=click.Choice(AB_MODES),
    default=ServeConfig.ab_mode,
    show_default=True,
    help="split: the share gets the challenger's answer; shadow: everyone gets the champion's, the "
    "challenger's answer to every request is logged under $TOWERFLOW_HOME/shadow/.",
)
@click.option(
    "--event-log/--no-event-log",
    default=True,
    show_default=True,
    help="Append impressions and POST /feedback to $TOWERFLOW_HOME/landing/events/ (the ingest reads them).",
)
@click.option(
    "--rank-candidates",
    default=ServeConfig.rank_candidates,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Retrieved candidates the promoted ranker orders when a request asks rank: true.",
)
@click.option("--access-log/--no-access-log", default=False, show_default=True)
def serve(
    host,
    port,
    max_batch,
    max_wait_ms,
    worker_thread,
    reload_seconds,
    challenger_share,
    ab_mode,
    event_log,
    rank_candidates,
    access_log,
) -> None:
    import logging

    import uvicorn

    from models.clean.rules import CleaningRules
    from models.serving.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    artifacts = towerflow_home() / ARTIFACTS
    config = ServeConfig(
        max_id_length=CleaningRules().max_id_length,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        worker_thread=worker_thread,
        reload_seconds=reload_seconds,
        rank_candidates=rank_candidates,
        token=os.environ.get("TOWERFLOW_API_TOKEN") or None,
        challenger_share=challenger_share,
        ab_mode=ab_mode,
        events_folder=towerflow_home() / "landing" / "events" if event_log else None,
        shadow_folder=towerflow_home() / "shadow" if event_log else None,
    )
    click.echo(
        f"towerflow serve: artifacts {artifacts}, http://{host}:{port} (auth {'on' if config.token else 'off'}, "
        f"challenger {ab_mode} {challenger_share:g}, event log {config.events_folder or 'off'})",
        err=True,
    )
    uvicorn.run(
        create_app(artifacts, config),
        host=host,
        port=port,
        access_log=access_log,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


@main.command(
    help="Serve a checkpoint as the challenger beside the champion: move the registry alias "
    "`challenger` to it (registering it first if needed), build its item embeddings and index "
    "under artifacts/challenger/ from the warehouse, then mirror it in the models manifest, which "
    "a running `towerflow serve` picks up. --retire stops serving the challenger."
)
@click.argument("version", required=False)
@click.option(
    "--alias",
    type=click.Choice(["challenger"]),
    default="challenger",
    show_default=True,
    help="The alias to move (the champion moves by the promotion assets only).",
)
@click.option("--retire", is_flag=True, help="Stop serving the challenger and remove its registry alias.")
def promote(version, alias, retire) -> None:
    from models.retrieval.checkpoint import champion_version, load_checkpoint, read_manifest
    from models.retrieval.pyfunc import read_logged
    from models.serving.arms import publish_challenger, retire_challenger
    from orchestration.resources import build_resources

    art = towerflow_home() / ARTIFACTS
    tracker = build_resources()["mlflow"]
    if retire:
        if version:
            _fail("--retire takes no VERSION")
        was = retire_challenger(art)
        tracker.drop_alias(alias)  # False when only the local mirror named one
        click.echo(f"towerflow: retired challenger {was or '(none was served)'}")
        return
    if not version:
        _fail("name a checkpoint VERSION (a folder of artifacts/models/) or pass --retire")
    models = Layout(art).models
    if version not in read_manifest(models)["versions"] or not (models / version).is_dir():
        known = ", ".join(read_manifest(models)["versions"][-5:]) or "none"
        _fail(f"no checkpoint {version!r} in {models}; the latest: {known}")
    if version == champion_version(art):
        _fail(f"{version} is the champion already: a challenger is another checkpoint")
    logged = read_logged(models / version)
    if logged is None:
        _fail(f"checkpoint {version} has no logged MLflow model (mlflow.json): it cannot be registered")
    _, meta, _ = load_checkpoint(models / version)
    number, _ = tracker.promote(
        version,
        {"vocabulary_fingerprint": meta["vocabulary_fingerprint"], "training_run_id": logged["run_id"]},
        model_uri=logged["model_uri"],
        alias=alias,
    )
    con = _connect()
    try:
        built = publish_challenger(con, art, version, log=lambda m: click.echo(m, err=True))
    except ValueError as e:  # VocabularyMismatch: trained under another vocabulary than the warehouse's
        _fail(str(e))
    finally:
        con.close()
    click.echo(
        f"towerflow: models:/{tracker.registered_model}@{alias} is version {number} (checkpoint {version}); "
        f"its index holds {built['items']:,} items: a running service serves it now"
    )


def _traffic_option(name: str, **kwargs):
    """A --flag whose default and help are TrafficSettings' (models/abtest/settings.py)."""
    import dataclasses

    from models.abtest.settings import TrafficSettings
    from models.settings import default_of

    f = {f.name: f for f in dataclasses.fields(TrafficSettings)}[name]
    return click.option(
        f"--{name.replace('_', '-')}", name, default=default_of(f), show_default=True, help=f.metadata["doc"], **kwargs
    )


@main.command(
    "simulate-traffic",
    help="Simulate A/B traffic on the synthetic world: users bucketed between the champion (the real "
    "retriever) and the version at @challenger, whose answers come from a planted recommender of known "
    "quality (--challenger); clicks drawn from the world's ground truth with a position bias. Writes "
    "impressions and feedback into $TOWERFLOW_HOME/landing/events/ as the HTTP service logs them; then "
    "materialize ab_test_report and promoted_model.",
)
@_traffic_option("requests")
@_traffic_option("share")
@_traffic_option("k")
@_traffic_option("position_bias")
@_traffic_option("seed")
@_traffic_option("salt")
@click.option(
    "--challenger",
    type=click.Choice(["oracle", "popularity", "out-of-taste", "champion"]),
    default="oracle",
    show_default=True,
    help="What the challenger arm shows: the world's best (oracle), popular items, popular items outside the "
    "user's taste, or the champion itself (an A/A test: the report should find no difference).",
)
def simulate_traffic(requests, share, k, position_bias, seed, salt, challenger) -> None:
    from models.abtest.settings import TrafficSettings
    from models.abtest.simulate import CHALLENGER_ARM, CHAMPION_ARM, Arm, planted_arm, retriever_arm
    from models.abtest.simulate import simulate_traffic as simulate
    from models.sources.synthetic import world_of
    from orchestration.resources import CHALLENGER, build_resources

    landing = towerflow_home() / "landing"
    try:
        world, user_ids, item_ids = world_of(landing)
    except FileNotFoundError as e:
        _fail(str(e))
    tracker = build_resources()["mlflow"]
    versions = {CHAMPION_ARM: tracker.champion(), CHALLENGER_ARM: tracker.champion(alias=CHALLENGER)}
    for arm, v in versions.items():
        if v is None:
            _fail(
                f"no version of {tracker.registered_model} at @{arm}: "
                + (
                    "materialize the graph first (`make demo`)"
                    if arm == CHAMPION_ARM
                    else "put a checkpoint there first (`towerflow promote --alias challenger CHECKPOINT`)"
                )
            )
    con = _connect()
    try:
        champion = retriever_arm(con, towerflow_home() / ARTIFACTS)
        shown = champion if challenger == "champion" else planted_arm(challenger, world, user_ids, item_ids)
        label = {arm: v.tags.get("checkpoint") or str(v.version) for arm, v in versions.items()}
        settings = TrafficSettings(
            requests=requests, share=share, k=k, position_bias=position_bias, seed=seed, salt=salt
        )
        simulate(
            landing / "events",
            world,
            user_ids,
            item_ids,
            Arm(CHAMPION_ARM, label[CHAMPION_ARM], champion),
            Arm(CHALLENGER_ARM, label[CHALLENGER_ARM], shown),
            settings,
            log=lambda m: click.echo(m, err=True),
        )
    finally:
        con.close()


if __name__ == "__main__":
    main()
