"""The `towerflow` command: bring data into the landing folder and look at what the graph made.

    towerflow generate [--users N --items N --events N --dirty-share F --seed S]
    towerflow import-movielens PATH
    towerflow status
    towerflow quarantine [--reason CODE] [-n 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

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
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Landing folder (default: $TOWERFLOW_HOME/landing).")
def generate(users, items, events, clusters, n_files, dirty_share, days, seed, out) -> None:
    from models.synthetic import generate as run

    if min(users, items, events, clusters, n_files) < 1:
        _fail("--users, --items, --events, --clusters and --files must be at least 1")
    if not 0 <= dirty_share < 1:
        _fail(f"--dirty-share must be in [0, 1), got {dirty_share}")
    out = out or towerflow_home() / "landing"
    summary = run(out, n_users=users, n_items=items, n_events=events, n_clusters=clusters, n_files=n_files,
                  dirty_share=dirty_share, days=days, seed=seed, log=click.echo)
    click.echo(f"wrote {summary.get('total_rows', events):,} event rows and {items:,} items to {out}")


@main.command("import-movielens", help="Convert MovieLens (ml-1m .dat or ml-latest .csv) into the landing folder.")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Landing folder (default: $TOWERFLOW_HOME/landing).")
def import_movielens(path: Path, out: Path | None) -> None:
    from models.movielens import import_movielens as run

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
        _fail(f"no warehouse at {db}: run `make demo` or "
              "`dagster asset materialize -m orchestration.definitions --select '*'` first")
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
    return bool(con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = $t",
                            {"t": table}).fetchall()[0][0])


@main.command(help="Row counts of every table the graph built, quarantine reasons and splits.")
def status() -> None:
    con = _connect()
    tables = ["raw_events", "raw_items", "clean_interactions", "quarantined_events", "clean_items",
              "quarantined_items", "interaction_splits", "vocabularies"]
    rows = [(t, f"{con.execute(f'SELECT count(*) FROM {t}').fetchall()[0][0]:,}" if _exists(con, t) else "not built")
            for t in tables]
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


@main.command(help="Show quarantined event rows with file, line, reason and raw text.")
@click.option("--reason", default=None, help="Only this reason code.")
@click.option("-n", "limit", default=20, show_default=True)
def quarantine(reason: str | None, limit: int) -> None:
    con = _connect()
    if not _exists(con, "quarantined_events"):
        _fail("quarantined_events is not built yet")
    rows = con.execute(
        """SELECT source_file, line, reason,
                  left(coalesce(raw_line, concat_ws(',', event_id, user_id, item_id, event_type, timestamp_raw, value_raw)), 80)
           FROM quarantined_events WHERE $r IS NULL OR reason = $r ORDER BY source_file, line LIMIT $n""",
        {"r": reason, "n": limit}).fetchall()
    click.echo(_table(rows, ("file", "line", "reason", "raw")))


if __name__ == "__main__":
    main()
