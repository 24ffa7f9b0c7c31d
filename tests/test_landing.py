"""Bad input loses nothing: each case ends as a quarantined row with a reason, or a named
file-level error while the other files still load. Real DuckDB file, tiny hand-written input."""

from __future__ import annotations

import gzip
import os

import pytest

from models.ingest.changes import changed, fingerprint, scan
from tests.conftest import HEADER, accounted, clean_events, ingest_events, ingest_items, reasons, write

GOOD = "e1,u1,i1,click,2024-01-01T00:00:00Z,\n"


def _run(con, landing):
    results = ingest_events(con, landing)
    clean_events(con)
    raw, total = accounted(con)
    assert raw == total, "row accounting broke"
    return results


def test_too_many_and_too_few_fields_are_quarantined_with_their_line(con, landing):
    write(
        landing,
        "events/a.csv",
        HEADER + GOOD + "e2,u2,i2,click\n" + "e3,u3,i3,click,1700000000,,x\n" + GOOD.replace("e1", "e4"),
    )
    res = _run(con, landing)
    assert res["events/a.csv"].reader == "native_csv"
    # header is line 1, so the short line is 3 and the long one 4
    assert reasons(con) == [("events/a.csv", 3, "csv_missing_columns"), ("events/a.csv", 4, "csv_too_many_columns")]
    assert con.execute("SELECT line FROM clean_interactions ORDER BY line").fetchall() == [(2,), (5,)]


def test_unterminated_quote_does_not_swallow_the_rest_of_the_file(con, landing):
    lines = [GOOD, '"e2,u2,i2,click,1700000000,\n'] + [f"e{i},u{i},i{i},click,1700000000,\n" for i in range(3, 8)]
    write(landing, "events/q.csv", HEADER + "".join(lines))
    res = _run(con, landing)
    assert res["events/q.csv"].reader == "python_lines"  # the native reader lost lines, so it was not trusted
    assert reasons(con) == [("events/q.csv", 3, "csv_malformed_quotes")]
    assert con.execute("SELECT count(*) FROM clean_interactions").fetchall()[0][0] == 6


def test_invalid_utf8_bytes_quarantine_only_their_line(con, landing):
    write(
        landing,
        "events/enc.csv",
        HEADER.encode() + GOOD.encode() + b"e2,u\xff\xfe,i2,click,1700000000,\n" + GOOD.replace("e1", "e3").encode(),
    )
    _run(con, landing)
    assert reasons(con) == [("events/enc.csv", 3, "csv_invalid_encoding")]
    assert con.execute("SELECT count(*) FROM clean_interactions").fetchall()[0][0] == 2


def test_nul_byte_and_oversized_ids(con, landing):
    long_id = "u" * 300
    write(
        landing,
        "events/ids.csv",
        HEADER + "e1,u\x001,i1,click,1700000000,\n" + f"e2,{long_id},i1,click,1700000000,\n" + GOOD.replace("e1", "e3"),
    )
    _run(con, landing)
    assert [r[2] for r in reasons(con)] == ["control_character_in_id", "oversized_id"]


def test_line_longer_than_the_reader_limit_is_quarantined_not_fatal(con, landing):
    huge = "x" * 1_200_000
    write(landing, "events/big.csv", HEADER + GOOD + f"e2,u2,{huge},click,1700000000,\n" + GOOD.replace("e1", "e3"))
    _run(con, landing)
    assert reasons(con) == [("events/big.csv", 3, "csv_line_size_over_maximum")]
    raw = con.execute("SELECT length(raw_line) FROM raw_events WHERE parse_error IS NOT NULL").fetchall()[0][0]
    assert raw <= 2000  # the raw text kept for debugging is bounded


def test_empty_and_header_only_files_are_named_and_load_nothing(con, landing):
    write(landing, "events/empty.csv", "")
    write(landing, "events/header.csv", HEADER)
    write(landing, "events/ok.csv", HEADER + GOOD)
    res = _run(con, landing)
    assert res["events/empty.csv"].status == "empty" and "empty file" in res["events/empty.csv"].message
    assert res["events/header.csv"].status == "loaded" and res["events/header.csv"].rows == 0
    assert con.execute("SELECT count(*) FROM clean_interactions").fetchall()[0][0] == 1


def test_truncated_gzip_keeps_the_lines_before_the_damage_and_says_so(con, landing):
    body = HEADER + "".join(f"e{i},u{i},i{i},click,{1700000000 + i},\n" for i in range(5000))
    blob = gzip.compress(body.encode())
    write(landing, "events/t.csv.gz", blob[: len(blob) // 2])
    write(landing, "events/ok.csv", HEADER + GOOD.replace("e1", "ok1"))
    res = _run(con, landing)
    t = res["events/t.csv.gz"]
    assert t.status == "partial" and "events/t.csv.gz" in t.message and "damaged" in t.message
    assert 0 < t.rows < 5000
    assert res["events/ok.csv"].status == "loaded"


def test_broken_json_lines(con, landing):
    write(
        landing,
        "events/e.jsonl",
        "\n".join(
            [
                '{"event_id":"e1","user_id":"u1","item_id":"i1","event_type":"click","timestamp":1700000000,"device":"ios"}',
                '{"event_id":"e2","user_id":"u2"',  # cut short
                "[1, 2]",
                "",
                '{"event_id":"e3","user_id":"u3","item_id":"i3","event_type":"like","timestamp":"2024-01-01T00:00:00+02:00"}',
            ]
        )
        + "\n",
    )
    _run(con, landing)
    assert reasons(con) == [
        ("events/e.jsonl", 2, "invalid_json"),
        ("events/e.jsonl", 3, "json_not_object"),
        ("events/e.jsonl", 4, "blank_line"),
    ]
    rows = con.execute("""SELECT c.event_id, c.ts::VARCHAR, r.extra FROM clean_interactions c
                          JOIN raw_events r USING (source_file, line) ORDER BY c.event_id""").fetchall()
    # +02:00 is converted to UTC; non-contract keys survive as extra JSON
    assert rows == [("e1", "2023-11-14 22:13:20", '{"device":"ios"}'), ("e3", "2023-12-31 22:00:00", None)]


def test_header_missing_a_required_column_quarantines_every_row_and_names_the_column(con, landing):
    write(landing, "events/m.csv", "event_id,user,item_id,event_type,timestamp\ne1,u1,i1,click,1700000000\n")
    res = _run(con, landing)
    assert "user_id" in res["events/m.csv"].message and "events/m.csv" in res["events/m.csv"].message
    assert reasons(con) == [("events/m.csv", 2, "missing_required_columns")]
    assert con.execute("SELECT extra FROM quarantined_events").fetchall() == [('{"user":"u1"}',)]


def test_reordered_columns_extra_columns_bom_and_crlf(con, landing):
    write(
        landing, "events/r.csv", "\ufeffTimestamp,Item_ID,device,User_ID,event_type\r\n1700000000,i1,web,u1,click\r\n"
    )
    _run(con, landing)
    assert con.execute("""SELECT c.user_id, c.item_id, r.extra FROM clean_interactions c
                          JOIN raw_events r USING (source_file, line)""").fetchall() == [
        ("u1", "i1", '{"device":"web"}')
    ]


def test_blank_lines_inside_a_csv_are_accounted(con, landing):
    write(landing, "events/b.csv", HEADER + GOOD + "\n" + GOOD.replace("e1", "e2"))
    _run(con, landing)
    assert reasons(con) == [("events/b.csv", 3, "blank_line")]


def test_unsupported_and_corrupt_files_are_rejected_by_name_while_others_load(con, landing):
    write(landing, "events/notes.txt", "hello\n")
    write(landing, "events/bad.parquet", b"PAR1 this is not parquet")
    write(landing, "events/ok.csv", HEADER + GOOD)
    res = _run(con, landing)
    assert res["events/notes.txt"].status == "rejected" and "unsupported file type" in res["events/notes.txt"].message
    assert res["events/bad.parquet"].status == "rejected" and "events/bad.parquet" in res["events/bad.parquet"].message
    assert con.execute("SELECT count(*) FROM clean_interactions").fetchall()[0][0] == 1


def test_wrong_types_get_their_own_reason_codes(con, landing):
    write(
        landing,
        "events/w.csv",
        HEADER
        + "\n".join(
            [
                "e1,u1,i1,click,not-a-date,",
                "e2,u1,i1,click,0,",  # epoch 0: implausible
                "e3,u1,i1,click,4102444800,",  # 2100-01-01: implausible (future)
                "e4,u1,i1,purchasee,1700000000,",
                "e5,u1,i1,rating,1700000000,five",
                "e6,u1,i1,rating,1700000000,11",
                "e7,u1,i1,rating,1700000000,",
                "e8,u1,i1,click,1700000000,-3",
                "e9,,i1,click,1700000000,",
                "e10,u1,,click,1700000000,",
                "e11,u1,i1,,1700000000,",
                "e12,u1,i1,click,,",
                "e13,u1,i1,CLICK ,1700000000000,4.5",  # valid: type normalised, epoch milliseconds
            ]
        )
        + "\n",
    )
    _run(con, landing)
    assert [r[2] for r in reasons(con)] == [
        "unparseable_timestamp",
        "implausible_timestamp",
        "implausible_timestamp",
        "unknown_event_type",
        "non_numeric_value",
        "rating_out_of_range",
        "missing_rating",
        "negative_value",
        "missing_user_id",
        "missing_item_id",
        "missing_event_type",
        "missing_timestamp",
    ]
    assert con.execute("SELECT event_type, ts::VARCHAR, value FROM clean_interactions").fetchall() == [
        ("click", "2023-11-14 22:13:20", 4.5)
    ]


def test_parquet_with_extra_columns(con, landing):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = landing / "events" / "p.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": ["u1", "u2"],
                "item_id": ["i1", "i2"],
                "event_type": ["click", "like"],
                "timestamp": [1700000000, 1700000001],
                "device": ["web", "ios"],
            }
        ),
        path,
    )
    res = _run(con, landing)
    assert res["events/p.parquet"].reader == "parquet"
    assert con.execute("SELECT user_id, line, extra FROM raw_events ORDER BY line").fetchall() == [
        ("u1", 1, '{"device":"web"}'),
        ("u2", 2, '{"device":"ios"}'),
    ]


def test_same_file_is_not_read_twice_and_a_changed_file_replaces_its_rows(con, landing):
    write(landing, "events/a.csv", HEADER + GOOD)
    first = ingest_events(con, landing)
    assert first["events/a.csv"].status == "loaded"
    assert ingest_events(con, landing)["events/a.csv"].status == "skipped"
    write(landing, "events/b.csv", HEADER + GOOD.replace("e1", "b1"))
    again = ingest_events(con, landing)
    assert again["events/a.csv"].status == "skipped" and again["events/b.csv"].status == "loaded"
    write(landing, "events/a.csv", HEADER + GOOD + GOOD.replace("e1", "e2"))
    assert ingest_events(con, landing)["events/a.csv"].status == "loaded"
    assert con.execute("SELECT source_file, count(*) FROM raw_events GROUP BY 1 ORDER BY 1").fetchall() == [
        ("events/a.csv", 2),
        ("events/b.csv", 1),
    ]


def test_the_ledger_and_the_sensors_share_one_rule_for_a_changed_file(con, landing):
    # the rule (models/ingest/changes.py): other bytes make a file new, another mtime does not
    path = write(landing, "events/a.csv", HEADER + GOOD)
    assert ingest_events(con, landing)["events/a.csv"].status == "loaded"
    known = scan(landing / "events")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: same bytes
    touched = scan(landing / "events", known)
    assert touched["a.csv"].mtime_ns != known["a.csv"].mtime_ns
    assert changed(touched, known) == {} and fingerprint(touched) == fingerprint(known)
    assert ingest_events(con, landing)["events/a.csv"].status == "skipped"
    # same size, other bytes: new to both
    path.write_text(HEADER + GOOD.replace("u1", "u9"))
    rewritten = scan(landing / "events", touched)
    assert rewritten["a.csv"].size == known["a.csv"].size
    assert set(changed(rewritten, known)) == {"a.csv"} and fingerprint(rewritten) != fingerprint(known)
    assert ingest_events(con, landing)["events/a.csv"].status == "loaded"


@pytest.mark.parametrize("n_bad", [1, 3])
def test_line_numbers_stay_exact_around_rejected_lines(con, landing, n_bad):
    # adjacent rejected lines must not shift the line numbers of the good rows after them
    lines = [GOOD] + ["bad\n"] * n_bad + [GOOD.replace("e1", "e9")]
    write(landing, "events/n.csv", HEADER + "".join(lines))
    _run(con, landing)
    assert con.execute("SELECT event_id, line FROM clean_interactions ORDER BY line").fetchall() == [
        ("e1", 2),
        ("e9", 3 + n_bad),
    ]


def test_file_line_audit_checks_each_raw_table_on_its_own_files(con, landing):
    from models.sql import query

    write(
        landing, "events/a.csv", HEADER + "e1,u1,i1,click,2024-01-01T00:00:00Z,\ne2,u2,i2,click,2024-01-02T00:00:00Z,\n"
    )
    write(landing, "items/cat.csv", "item_id,title\ni1,One\ni2,Two\ni3,Three\n")
    ingest_events(con, landing)
    ingest_items(con, landing)
    assert query(con, "audit_file_lines", {"kind": "events"}) == []
    assert query(con, "audit_file_lines", {"kind": "items"}) == []
    # an item file that lost a raw row (3 data lines, 2 rows) is named by the items audit only: the
    # incremental item job, which never materializes raw_events, still audits what it ingested
    con.execute("DELETE FROM raw_items WHERE item_id = 'i3'")
    (bad,) = query(con, "audit_file_lines", {"kind": "items"})
    assert bad[0].endswith("items/cat.csv") and bad[2:] == (4, 3, 2)
    assert query(con, "audit_file_lines", {"kind": "events"}) == []
