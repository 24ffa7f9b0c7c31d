"""Champion and challenger side by side, and what the service served coming back as landing
events: `towerflow serve` in its own process over a temp TOWERFLOW_HOME with two real
checkpoints (two seeds), each with its own item_embeddings and FAISS index, real HTTP."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from models.artifacts import Layout, read_manifest
from models.index.embeddings import refresh_embeddings, refresh_index
from models.index.item_index import IndexSpec
from models.ingest.changes import discover
from models.retrieval.checkpoint import save_checkpoint, update_manifest
from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
from models.retrieval.histories import write_user_histories
from models.retrieval.training import TrainConfig, config_dict, train
from models.serving.arms import arm_of, publish_challenger
from models.serving.eventlog import EventLog
from models.sources.synthetic import generate
from models.splits.warehouse import build_warehouse, default_warehouse_params
from tests.test_serving import Client, scrape, start_serve, stop


@pytest.fixture(scope="module")
def ab_home(tmp_path_factory) -> Path:
    """A home with a champion (seed 0) and a challenger (seed 1) trained on the same warehouse,
    the challenger's embeddings and index built by `publish_challenger`."""
    home = tmp_path_factory.mktemp("ab")
    generate(home / "landing", n_users=120, n_items=100, n_events=4000, dirty_share=0.0, seed=5, log=lambda m: None)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    fingerprint = build_warehouse(con, home / "landing", **default_warehouse_params())
    tower = tower_config_for(WarehouseShape.read(con))
    data = load_for_tower(con, tower)
    art = home / "artifacts"
    versions = []
    for seed in (0, 1):
        tcfg = TrainConfig(epochs=1, batch_size=128, seed=seed)
        model = train(data.catalog, data.train, tower, tcfg, valid=None, log=lambda m: None).model
        path = save_checkpoint(art / "models", model, config_dict(tower, tcfg), fingerprint)
        update_manifest(art / "models", latest=path.name)
        versions.append((path.name, model))
        time.sleep(1.1)  # checkpoint folders are named by the second
    (champion, model), (challenger, _) = versions
    update_manifest(art / "models", current=champion)
    refresh_embeddings(con, art / "embeddings", model, champion, fingerprint)
    refresh_index(art / "index", art / "embeddings", IndexSpec())
    write_user_histories(con, art / "user_histories")
    publish_challenger(con, art, challenger)
    con.close()
    return home


def start_server(home: Path, *args: str) -> tuple[subprocess.Popen, int, Path]:
    """`towerflow serve` with its challenger loaded."""
    return start_serve(home, *args, ready=lambda body: body["challenger"] is not None)


@pytest.fixture(scope="module")
def split_server(ab_home):
    proc, port, log = start_server(ab_home, "--challenger-share", "0.5")
    yield port
    stop(proc)


def users(home: Path) -> list[str]:
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        return [u for (u,) in con.execute("SELECT DISTINCT user_id FROM interaction_splits ORDER BY 1").fetchall()]


def read_lines(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(line) for p in sorted(folder.glob(pattern)) for line in p.read_text().splitlines()]


def test_a_user_stays_in_one_arm_and_every_answer_names_its_arm_and_version(split_server, ab_home):
    c = Client(split_server)
    manifest = read_manifest(ab_home / "artifacts" / "models")
    version = {"champion": manifest["current"], "challenger": manifest["challenger"]}
    seen = {}
    for user in users(ab_home)[:40]:
        for _ in range(2):
            status, body = c.call("POST", "/recommend", {"user_id": user, "k": 5})
            assert status == 200, body
            assert body["model_version"] == version[body["arm"]] and len(body["request_id"]) == 32
            assert seen.setdefault(user, body["arm"]) == body["arm"]  # the same arm on every request
        # the arm is the stable hash's, salted with the challenger's version
        assert seen[user] == arm_of(user, 0.5, version["challenger"])
    counts = {a: list(seen.values()).count(a) for a in ("champion", "challenger")}
    assert min(counts.values()) >= 8, counts  # 40 users at 0.5: both arms answer (p of < 8 is ~1e-4)
    # a session without a user has nothing stable to hash: the champion answers it
    status, body = c.call("POST", "/recommend", {"recent_items": [], "k": 3})
    assert status == 200 and body["arm"] == "champion"
    m = scrape(c.call("GET", "/metrics")[1])
    for arm, n in counts.items():
        key = ("towerflow_arm_requests_total", (("arm", arm), ("mode", "served"), ("model_version", version[arm])))
        assert m[key] == 2 * n + (arm == "champion")
        assert m[("towerflow_arm_request_seconds_count", (("arm", arm),))] == 2 * n + (arm == "champion")
    info = {dict(k)["arm"]: dict(k)["model_version"] for name, k in m if name == "towerflow_arm_info"}
    assert info == version


def test_feedback_lands_beside_its_impressions_before_the_response_returns(split_server, ab_home):
    c = Client(split_server)
    user = users(ab_home)[0]
    status, rec = c.call("POST", "/recommend", {"user_id": user, "k": 4})
    assert status == 200
    rid, items = rec["request_id"], [i["item_id"] for i in rec["items"]]
    events = ab_home / "landing" / "events"
    # the impressions are on disk (flushed and fsynced) once the response is here, in the open .part
    shown = [e for e in read_lines(events, "served-*.jsonl*") if e["request_id"] == rid]
    assert [(e["item_id"], e["position"], e["event_type"]) for e in shown] == [
        (item, p, "impression") for p, item in enumerate(items, start=1)
    ]
    assert {e["event_id"] for e in shown} == {f"{rid}:{p}" for p in range(1, 5)}
    assert {(e["user_id"], e["arm"], e["model_version"]) for e in shown} == {(user, rec["arm"], rec["model_version"])}
    assert not [p for p in discover(events) if p.name.endswith(".part")]  # the ingest never sees the open file

    status, fb = c.call("POST", "/feedback", {"request_id": rid, "item_id": items[1], "action": "click"})
    assert status == 200 and fb["event_id"] == f"{rid}:{items[1]}:click" and fb["arm"] == rec["arm"]
    (click,) = [e for e in read_lines(events, "served-*.jsonl*") if e["event_id"] == fb["event_id"]]
    assert (click["user_id"], click["event_type"], click["position"]) == (user, "click", 2)
    # both arms' lines name the experiment, the challenger under test, so a report never selects by time
    under_test = c.call("GET", "/readyz")[1]["challenger"]["model_version"]
    assert {e["experiment"] for e in shown} == {click["experiment"]} == {under_test}

    # refusals name the field: an id never issued, an item not shown, an action the cleaning does not know
    assert (
        c.call("POST", "/feedback", {"request_id": "0" * 32, "item_id": items[0], "action": "click"})[1]["field"]
        == "request_id"
    )
    status, body = c.call("POST", "/feedback", {"request_id": rid, "item_id": "nope", "action": "click"})
    assert (status, body["field"]) == (422, "item_id")
    status, body = c.call("POST", "/feedback", {"request_id": rid, "item_id": items[0], "action": "impression"})
    assert (status, body["field"]) == (422, "action")
    status, body = c.call("POST", "/feedback", raw=b'{"request_id": "' + b"x" * (2 << 20) + b'"}')
    assert (status, body["field"]) == (413, "body")


def test_shadow_returns_the_champions_answer_and_logs_the_challengers(ab_home):
    proc, port, _ = start_server(ab_home, "--ab-mode", "shadow", "--challenger-share", "0.5")
    try:
        c = Client(port)
        manifest = read_manifest(ab_home / "artifacts" / "models")
        answers = {}
        for user in users(ab_home)[:10]:
            status, body = c.call("POST", "/recommend", {"user_id": user, "k": 5})
            assert status == 200 and (body["arm"], body["model_version"]) == ("champion", manifest["current"])
            answers[body["request_id"]] = [i["item_id"] for i in body["items"]]
        # the challenger scores after the answer has gone: its lines may trail the last response
        deadline = time.time() + 30
        while True:
            by_request = {}
            for e in read_lines(ab_home / "shadow", "shadow-*.jsonl*"):
                assert (e["event_type"], e["arm"], e["model_version"]) == (
                    "shadow",
                    "challenger",
                    manifest["challenger"],
                )
                by_request.setdefault(e["request_id"], []).append(e["item_id"])
            if set(answers) <= set(by_request) or time.time() > deadline:
                break
            time.sleep(0.05)
        assert set(answers) <= set(by_request)  # the challenger scored every request
        assert any(by_request[r] != answers[r] for r in answers)  # ...with its own model (another seed)
        impressions = [
            e for e in read_lines(ab_home / "landing" / "events", "served-*.jsonl*") if e["request_id"] in answers
        ]
        assert {e["arm"] for e in impressions} == {"champion"}  # only what users saw is an exposure
        m = scrape(c.call("GET", "/metrics")[1])
        key = (
            "towerflow_arm_requests_total",
            (("arm", "challenger"), ("mode", "shadow"), ("model_version", manifest["challenger"])),
        )
        assert m[key] == 10
    finally:
        stop(proc)
    # a clean shutdown hands the open file over whole
    assert not list((ab_home / "shadow").glob("*.part")) and list((ab_home / "shadow").glob("shadow-*.jsonl"))


def test_a_challenger_from_another_vocabulary_or_index_is_refused(ab_home, tmp_path):
    """Refused as the champion's inconsistent sets are: logged, counted, not served."""
    from models.serving.config import ServeConfig
    from models.serving.reload import Reloader
    from models.serving.service import Service

    art = tmp_path / "artifacts"
    shutil.copytree(ab_home / "artifacts", art)
    models = Layout(art).models
    champion, challenger = read_manifest(models)["current"], read_manifest(models)["challenger"]
    service = Service(ServeConfig(max_id_length=128, challenger_share=0.5))
    reloader = Reloader(service, art, service.config)
    assert reloader.reload() and service.challenger.version == challenger

    # another index: the challenger is now a checkpoint (a copy of the challenger's weights)
    # that the index under challenger/ was not built from
    third = "20990101T000000"
    shutil.copytree(models / challenger, models / third)
    update_manifest(models, latest=third, challenger=third)
    reloader.reload()
    assert service.challenger.version == challenger  # the previous challenger keeps serving
    m = scrape(service.metrics.exposition(None)[0].decode())
    assert m[("towerflow_challenger_reloads_total", (("outcome", "refused"),))] == 1

    # another vocabulary: a checkpoint trained under another fingerprint, with its own index
    from models.retrieval.checkpoint import load_checkpoint

    model, meta, _ = load_checkpoint(models / challenger)
    foreign = save_checkpoint(models, model, meta["config"], "f" * 64).name
    with duckdb.connect(str(ab_home / "warehouse.duckdb"), read_only=True) as con:
        refresh_embeddings(con, Layout(art).challenger.embeddings, model, foreign, "f" * 64)
    refresh_index(Layout(art).challenger.index, Layout(art).challenger.embeddings, IndexSpec())
    update_manifest(models, latest=foreign, challenger=foreign)
    from models.serving.snapshot import SnapshotError, load_snapshot

    with pytest.raises(SnapshotError, match="arms must share one vocabulary"):
        load_snapshot(art, arm="challenger", champion=service.snapshot)
    reloader.reload()
    assert service.challenger.version == challenger and service.snapshot.version == champion
    m = scrape(service.metrics.exposition(None)[0].decode())
    assert m[("towerflow_challenger_reloads_total", (("outcome", "refused"),))] == 2

    # retired (the manifest names none): the champion answers everyone at the next reload
    update_manifest(models, challenger=None)
    reloader.reload()
    assert service.challenger is None


def test_the_event_log_rotates_whole_files_and_hands_over_what_a_killed_process_left(tmp_path):
    log = EventLog(tmp_path, "served", rotate_bytes=300, rotate_seconds=3600)
    log.start()
    line = {"user_id": "u", "item_id": "i", "event_type": "impression", "timestamp": 1}
    log.append([line])
    (part,) = tmp_path.glob("*.part")
    assert discover(tmp_path) == []  # nothing whole yet
    log.append([line] * 5)  # past 300 bytes: renamed
    assert [p.suffix for p in discover(tmp_path)] == [".jsonl"] and not list(tmp_path.glob("*.part"))
    assert len(read_lines(tmp_path, "*.jsonl")) == 6
    log.close()
    # a dead process's file with a torn last line (killed mid-write): whole lines handed over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"served-20260101T000000-{int(dead.stdout)}.jsonl.part"
    orphan.write_bytes(b'{"a": 1}\n{"a": 2}\n{"a"')
    assert EventLog(tmp_path, "served", 1 << 20, 60).recover() == [orphan.with_suffix("")]
    assert orphan.with_suffix("").read_bytes() == b'{"a": 1}\n{"a": 2}\n'

    # an idle log still hands its lines over once its first line is `rotate_seconds` old
    aging = EventLog(tmp_path / "aging", "served", rotate_bytes=1 << 20, rotate_seconds=0.2)
    aging.start()
    aging.append([line])
    deadline = time.time() + 10
    while not discover(tmp_path / "aging") and time.time() < deadline:
        time.sleep(0.05)
    assert [p.suffix for p in discover(tmp_path / "aging")] == [".jsonl"]
    aging.close()


@pytest.mark.slow
def test_impressions_survive_a_kill_and_reach_clean_interactions(ab_home, tmp_path):
    """kill -9 right after the answers: the lines were fsynced before the responses; the next
    start hands the file over, and the real raw_events / clean_interactions materialization
    loads impressions (neutral) and the click (positive) with their request ids."""
    import dagster as dg

    from assets.clean.clean_interactions import clean_events
    from assets.ingest.raw_events import raw_events
    from orchestration.resources import build_resources

    from orchestration.definitions import build_definitions
    from orchestration.sensors import new_events_sensor

    home = tmp_path / "home"
    shutil.copytree(ab_home, home, ignore=shutil.ignore_patterns("serve-*.log", "shadow"))
    for p in (home / "landing" / "events").glob("served-*"):
        p.unlink()  # only this test's lines
    defs, instance = build_definitions(home), dg.DagsterInstance.ephemeral()

    def tick(cursor):
        with dg.build_sensor_context(
            cursor=cursor, resources={"paths": defs.resources["paths"]}, instance=instance
        ) as ctx:
            return new_events_sensor(ctx)

    cursor = tick(None).cursor  # the generated files
    proc, port, _ = start_server(home, "--challenger-share", "0.5")
    c = Client(port)
    served = {}
    for user in users(home)[:6]:
        status, body = c.call("POST", "/recommend", {"user_id": user, "k": 3})
        served[body["request_id"]] = (user, body["arm"], [i["item_id"] for i in body["items"]])
    rid = next(iter(served))
    assert c.call("POST", "/feedback", {"request_id": rid, "item_id": served[rid][2][0], "action": "click"})[0] == 200
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=20)
    assert isinstance(tick(cursor), dg.SkipReason)  # a .part is not a landed file
    proc, _, log = start_server(home, "--challenger-share", "0.5")  # hands the dead process's file over
    stop(proc)  # and its own (empty: never opened) on shutdown
    assert "handed over" in log.read_text()
    seen = tick(cursor)
    assert [a.asset_key.path for a in seen.asset_events] == [["landing_events"]]
    assert [f for f in json.loads(seen.cursor) if f not in json.loads(cursor)] == [
        p.name for p in (home / "landing" / "events").glob("served-*.jsonl")
    ]

    assert dg.materialize([raw_events, clean_events], resources=build_resources(home), instance=instance).success
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        rows = con.execute(
            """SELECT event_id, user_id, item_id, event_type, is_positive FROM clean_interactions
               WHERE source_file LIKE 'events/served-%' ORDER BY event_id"""
        ).fetchall()
        extra = con.execute(
            """SELECT json_extract_string(extra, '$.arm') FROM raw_events
               WHERE source_file LIKE 'events/served-%' AND json_extract_string(extra, '$.request_id') = $r""",
            {"r": rid},
        ).fetchall()
    expected = {
        (f"{r}:{p}", u, item, "impression", False)
        for r, (u, _, items) in served.items()
        for p, item in enumerate(items, start=1)
    }
    expected.add((f"{rid}:{served[rid][2][0]}:click", served[rid][0], served[rid][2][0], "click", True))
    assert set(rows) == expected
    assert {a for (a,) in extra} == {served[rid][1]}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*An input example was not provided")
def test_promote_alias_challenger_registers_builds_and_mirrors_then_retire_undoes_it(ab_home, tmp_path, monkeypatch):
    """`towerflow promote --alias challenger VERSION`: the registry alias moves to the
    checkpoint's version (registered from its logged model), its embeddings and index are
    built under challenger/, the manifest mirrors it; `--retire` undoes the alias and mirror."""
    from click.testing import CliRunner

    from models.artifacts import write_json_atomic
    from models.retrieval.checkpoint import load_checkpoint
    from models.retrieval.pyfunc import log_pyfunc, write_bundle
    from orchestration.cli import main
    from orchestration.resources import build_resources

    home = tmp_path / "home"
    shutil.copytree(ab_home, home, ignore=shutil.ignore_patterns("serve-*.log", "shadow", "challenger"))
    models = Layout(home / "artifacts").models
    version = read_manifest(models)["challenger"]
    update_manifest(models, challenger=None)
    tracker = build_resources(home)["mlflow"]
    client = tracker._client()
    run = client.create_run(tracker._experiment_id(client))
    model, _, _ = load_checkpoint(models / version)
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as con:
        bundle = write_bundle(con, model, models / version, tmp_path / "bundle")
    write_json_atomic(
        models / version / "mlflow.json", log_pyfunc(tracker.tracking_uri, run.info.run_id, bundle, "u", [])
    )
    monkeypatch.setenv("TOWERFLOW_HOME", str(home))

    out = CliRunner().invoke(main, ["promote", "--alias", "challenger", version])
    assert out.exit_code == 0, out.output
    assert tracker.champion(alias="challenger").tags["checkpoint"] == version
    assert read_manifest(models)["challenger"] == version
    assert read_manifest(Layout(home / "artifacts").challenger.index)["model_version"] == version
    champion = read_manifest(models)["current"]
    refused = CliRunner().invoke(main, ["promote", "--alias", "challenger", champion])
    assert refused.exit_code == 2 and "is the champion already" in refused.output

    out = CliRunner().invoke(main, ["promote", "--retire"])
    assert out.exit_code == 0 and version in out.output, out.output
    assert tracker.champion(alias="challenger") is None and read_manifest(models)["challenger"] is None
