"""The towerflow CLI: data in, clear one-line errors out."""

from __future__ import annotations

import json

from click.testing import CliRunner

from orchestration.cli import main


def test_generate_writes_the_landing_folder_under_towerflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    out = CliRunner().invoke(main, ["generate", "--users", "40", "--items", "30", "--events", "900", "--seed", "2"])
    assert out.exit_code == 0, out.output
    summary = json.loads((tmp_path / "landing" / "generated.json").read_text())
    assert summary["n_users"] == 40 and sorted(p.name for p in (tmp_path / "landing" / "events").iterdir()) == [
        "events-000.csv",
        "events-001.jsonl.gz",
        "events-002.parquet",
    ]


def test_bad_arguments_get_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    out = CliRunner().invoke(main, ["generate", "--dirty-share", "1.5"])
    assert out.exit_code == 2 and "--dirty-share" in out.output and "Traceback" not in out.output
    out = CliRunner().invoke(main, ["status"])
    # names the variable that chose the home, so a user in another shell knows what to set
    assert out.exit_code == 2 and "no warehouse" in out.output and f"TOWERFLOW_HOME={tmp_path}" in out.output
    monkeypatch.delenv("TOWERFLOW_HOME")
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["recommend", "--user", "u1"])
    assert out.exit_code == 2 and "TOWERFLOW_HOME is not set" in out.output and ".towerflow" in out.output
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    (tmp_path / "empty").mkdir()
    out = CliRunner().invoke(main, ["import-movielens", str(tmp_path / "empty")])
    assert out.exit_code == 2 and "ratings" in out.output and "Traceback" not in out.output


def test_import_movielens_latest(tmp_path, monkeypatch):
    monkeypatch.setenv("TOWERFLOW_HOME", str(tmp_path))
    src = tmp_path / "ml"
    src.mkdir()
    (src / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4.0,964982703\n2,10,2.5,964982224\n")
    (src / "movies.csv").write_text('movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n')
    out = CliRunner().invoke(main, ["import-movielens", str(src)])
    assert out.exit_code == 0, out.output
    lines = (tmp_path / "landing" / "events" / "movielens_ratings.csv").read_text().splitlines()
    assert len(lines) == 3 and "rating" in lines[1]
