"""The online service as a user runs it: `towerflow serve` in its own process on a free
127.0.0.1 port over a temp TOWERFLOW_HOME (real DuckDB warehouse, real checkpoint, real FAISS
index, real HTTP), plus an in-process uvicorn server for the token."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from models.clean.rules import CleaningRules
from models.splits.warehouse import default_warehouse_params
from models.artifacts import read_manifest, write_manifest
from models.index.embeddings import refresh_embeddings, refresh_index
from models.index.item_index import IndexSpec
from models.retrieval.champion import NoChampion, load_champion
from models.retrieval.checkpoint import save_checkpoint, update_manifest
from models.retrieval.data import WarehouseShape, load_for_tower, tower_config_for
from models.retrieval.training import TrainConfig, config_dict, train
from models.retrieval.histories import write_user_histories
from models.sources.synthetic import generate
from models.splits.warehouse import build_warehouse

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    """A keep-alive HTTP client (one connection), JSON in and out."""

    def __init__(self, port: int, token: str | None = None):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.token, self.reconnects = token, 0

    def call(self, method: str, path: str, body=None, raw: bytes | None = None, headers=None) -> tuple[int, dict | str]:
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        try:
            self.conn.request(method, path, body=data, headers=h)
            resp = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # the server closes keep-alive connections idle for 5 s: reconnect once, and count it
            self.conn.close()
            self.reconnects += 1
            self.conn.request(method, path, body=data, headers=h)
            resp = self.conn.getresponse()
        text = resp.read().decode()
        if resp.getheader("connection", "").lower() == "close":
            self.conn.close()
        try:
            return resp.status, json.loads(text)
        except json.JSONDecodeError:
            return resp.status, text


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    """A trained home built with the library calls the assets make (quick): warehouse, a
    promoted checkpoint, item_embeddings, item_index, user_histories."""
    home = tmp_path_factory.mktemp("serve")
    generate(home / "landing", n_users=200, n_items=150, n_events=8000, dirty_share=0.0, seed=3, log=lambda m: None)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    fingerprint = build_warehouse(con, home / "landing", **default_warehouse_params())
    tower = tower_config_for(WarehouseShape.read(con))  # the graph's default towers
    data = load_for_tower(con, tower)
    tcfg = TrainConfig(epochs=2, batch_size=128, seed=0)
    result = train(data.catalog, data.train, tower, tcfg, valid=None, log=lambda m: None)
    models = home / "artifacts" / "models"
    path = save_checkpoint(models, result.model, config_dict(tower, tcfg), fingerprint)
    update_manifest(models, latest=path.name, current=path.name)
    art = home / "artifacts"
    refresh_embeddings(con, art / "embeddings", result.model, path.name, fingerprint)
    refresh_index(art / "index", art / "embeddings", IndexSpec())
    write_user_histories(con, art / "user_histories")
    con.close()
    return home


def start_serve(home: Path, *args: str, token: str | None = None, ready=lambda body: True, log_name: str = "serve"):
    """`towerflow serve` on a free port of 127.0.0.1 in a subprocess over `home` (with `token` as
    TOWERFLOW_API_TOKEN, or none), once /readyz answers 200 and `ready(its body)` holds:
    (process, port, log file). Every test that serves starts it here."""
    port, log = free_port(), home / f"{log_name}-{time.time_ns()}.log"
    env = {**os.environ, "TOWERFLOW_HOME": str(home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("TOWERFLOW_API_TOKEN", None)
    if token is not None:
        env["TOWERFLOW_API_TOKEN"] = token
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestration.cli", "serve", "--port", str(port), "--reload-seconds", "0.2", *args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.time() + 90
    while True:
        try:
            status, body = Client(port, token).call("GET", "/readyz")
            if status == 200 and ready(body):
                return proc, port, log
        except OSError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, log.read_text()
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def server(home):
    """`towerflow serve` in a subprocess; yields its port and its log file."""
    proc, port, log = start_serve(home)
    yield port, log
    stop(proc)


def scrape(text: str) -> dict:
    """/metrics text -> {(sample name, sorted label pairs): value}, read by prometheus_client's
    own parser as a Prometheus server would."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def known_user(home: Path) -> str:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(
            "SELECT user_id FROM interaction_splits GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1"
        ).fetchall()[0][0]
    finally:
        con.close()


def test_the_champion_is_the_manifest_current_and_its_absence_names_the_promoting_asset(home, tmp_path):
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        champion = load_champion(con, home / "artifacts")
        assert champion.version == read_manifest(home / "artifacts" / "models")["current"]
        assert champion.fingerprint == champion.meta["vocabulary_fingerprint"]
        with pytest.raises(NoChampion, match="the promoted_model asset sets it"):
            load_champion(con, tmp_path / "artifacts")
    finally:
        con.close()


def test_health_ready_and_metrics(server, home):
    port, _ = server
    c = Client(port)
    assert c.call("GET", "/healthz") == (200, {"status": "ok"})
    status, ready = c.call("GET", "/readyz")
    champion = read_manifest(home / "artifacts" / "models")["current"]
    assert status == 200 and ready["model_version"] == champion and ready["index"]["items"] == 150
    assert c.call("POST", "/recommend", {"k": 3})[0] == 200
    status, text = c.call("GET", "/metrics")
    assert status == 200
    m = scrape(text)
    assert m[("towerflow_requests_total", (("path", "/recommend"), ("status", "200")))] >= 1
    assert m[("towerflow_request_seconds_bucket", (("le", "+Inf"), ("path", "/recommend")))] >= 1
    assert m[("towerflow_index_items", ())] == 150 and m[("towerflow_ready", ())] == 1
    assert [dict(labels)["model_version"] for name, labels in m if name == "towerflow_model_info"] == [champion]
    assert m[("towerflow_last_reload_timestamp_seconds", ())] > 0
    assert m[("towerflow_reloads_total", (("outcome", "loaded"),))] == 1


def test_each_app_counts_in_a_registry_of_its_own():
    """Two services in one process (this test module runs an in-process server too) must not
    share or clash over metric names: each has its own prometheus_client registry."""
    from models.serving.metrics import ServiceMetrics

    a, b = ServiceMetrics(lambda: None), ServiceMetrics(lambda: None)
    a.request("/recommend", 200, 0.003)
    a.request("/../etc/passwd", 404, 0.001)  # any path a client sends counts as "other"
    ma, mb = scrape(a.exposition(None)[0].decode()), scrape(b.exposition(None)[0].decode())
    assert ma[("towerflow_requests_total", (("path", "/recommend"), ("status", "200")))] == 1
    assert ma[("towerflow_requests_total", (("path", "other"), ("status", "404")))] == 1
    assert not [k for k in mb if k[0] == "towerflow_requests_total"]
    assert ma[("towerflow_ready", ())] == 0 and ("towerflow_index_items", ()) not in ma  # nothing served yet


def test_a_known_user_gets_what_the_cli_recommender_gives(server, home):
    """The service builds user vectors from artifacts only; the CLI's Recommender reads the
    warehouse: the same user must get the same items, seen ones excluded."""
    from models.serving.recommender import Recommender

    port, _ = server
    user = known_user(home)
    status, got = Client(port).call("POST", "/recommend", {"user_id": user, "k": 10})
    assert status == 200 and got["source"] == "user" and not got["fallback"]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rec = Recommender(con, home / "artifacts", threads=1, users=[user])
        seen = set(con.execute("SELECT item_id FROM interaction_splits WHERE user_id = $u", {"u": user}).df().item_id)
    finally:
        con.close()
    expected = rec.recommend([user], 10)
    assert [i["item_id"] for i in got["items"]] == [r[2] for r in expected]
    assert [i["score"] for i in got["items"]] == pytest.approx([r[3] for r in expected], abs=1e-5)
    assert not seen & {i["item_id"] for i in got["items"]}
    assert got["model_version"] == rec.version and got["index"]["build"] == rec.index.manifest["build"]


def test_session_recommendations_for_an_unknown_user_and_the_popularity_fallback(server, home):
    port, _ = server
    c = Client(port)
    status, pop = c.call("POST", "/recommend", {"user_id": "never-seen", "k": 10})
    assert status == 200 and pop["source"] == "popularity" and pop["fallback"] is True
    recent_a, recent_b = ["i001", "i002", "i003"], ["i120", "i121", "i122"]
    status, a = c.call("POST", "/recommend", {"user_id": "never-seen", "k": 10, "recent_items": recent_a + ["nope"]})
    assert status == 200 and a["source"] == "session" and a["fallback"] is False
    assert a["unknown_recent_items"] == ["nope"]
    items_a = [i["item_id"] for i in a["items"]]
    assert len(items_a) == 10 and not set(items_a) & set(recent_a)  # a session's own items are not recommended
    _, b = c.call("POST", "/recommend", {"k": 10, "recent_items": recent_b})  # no user id at all
    items_b = [i["item_id"] for i in b["items"]]
    # a real user-tower vector from the session: other recent items, other recommendations
    assert items_a != items_b and items_a != [i["item_id"] for i in pop["items"]]
    # exclude works for every source
    _, ex = c.call("POST", "/recommend", {"k": 5, "recent_items": recent_a, "exclude": items_a[:2]})
    assert [i["item_id"] for i in ex["items"]] == items_a[2:7]


def test_a_session_of_similar_items_gets_items_like_them_on_the_planted_world(home):
    """The planted world (models/sources/synthetic.py, seed 3): 16 taste clusters. A session of
    three items of one cluster must be answered with items of that cluster, not with the globally
    popular items (the user tower over three items and a padded id gave the popular ones first)."""
    import numpy as np

    from models.serving.recommender import Recommender
    from models.sources.synthetic import SyntheticConfig, latent_world

    world = latent_world(SyntheticConfig(n_users=200, n_items=150, n_events=8000, seed=3))
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rec = Recommender(con, home / "artifacts", threads=1)
    finally:
        con.close()
    core = rec.core
    indexed = set(core.index.items_of(core.row_of_pos[core.row_of_pos >= 0]).tolist())
    popular = set(core.index.items_of(core.popular_rows[:5]).tolist())
    in_cluster, from_popular = [], []
    for c in range(world.config.n_clusters):
        members = [f"i{n:03d}" for n in np.flatnonzero(world.item_cluster == c) if f"i{n:03d}" in indexed]
        if len(members) < 3 + 5:  # three in the session, five left to find
            continue
        (a,) = core.answer([{"user_id": "someone-new", "k": 5, "recent_items": members[:3]}])
        items = [i["item_id"] for i in a["items"]]
        assert a["source"] == "session" and len(items) == 5 and not set(items) & set(members[:3])
        in_cluster.append(np.mean([world.item_cluster[int(i[1:])] == c for i in items]))
        from_popular.append(len(set(items) & popular) / 5)
    assert len(in_cluster) >= 8
    # chance is 1/16 in the cluster. This home's model (2 epochs) gives 0.56 in the cluster and
    # 0.025 from the popular five; the user tower over the session (the rule before) gave 0.41
    # and 0.09 here, and on the demo's world 0.44 and 0.44 against 1.0 and 0.0 now.
    assert np.mean(in_cluster) >= 0.5, in_cluster
    assert np.mean(from_popular) <= 0.05, from_popular


def test_similar_items_and_an_unknown_item(server):
    port, _ = server
    c = Client(port)
    status, sim = c.call("POST", "/similar", {"item_id": "i001", "k": 5})
    assert status == 200 and len(sim["items"]) == 5 and "i001" not in {i["item_id"] for i in sim["items"]}
    scores = [i["score"] for i in sim["items"]]
    assert scores == sorted(scores, reverse=True)
    assert c.call("POST", "/similar", {"item_id": "no-such-item"}) == (
        404,
        {"error": "unknown item 'no-such-item': not in the index", "field": "item_id"},
    )


def test_bad_requests_get_a_json_4xx_naming_the_field(server):
    port, _ = server
    c = Client(port)
    too_long = "x" * (CleaningRules().max_id_length + 1)
    cases = [
        ("/recommend", b'{"user_id": "u1", ', 400, "body"),  # malformed JSON
        ("/recommend", b"[1, 2]", 422, "body"),  # JSON, but not an object
        ("/recommend", json.dumps({"user_id": "u1", "count": 3}).encode(), 422, "count"),  # unknown field
        ("/recommend", json.dumps({"user_id": 42}).encode(), 422, "user_id"),  # wrong type
        ("/recommend", json.dumps({"k": "10"}).encode(), 422, "k"),  # no coercion
        ("/recommend", json.dumps({"k": 0}).encode(), 422, "k"),
        ("/recommend", json.dumps({"k": 1001}).encode(), 422, "k"),
        ("/recommend", json.dumps({"user_id": too_long}).encode(), 422, "user_id"),
        ("/recommend", json.dumps({"recent_items": ["i001"] * 1001}).encode(), 422, "recent_items"),
        ("/recommend", json.dumps({"recent_items": ["i001", 7]}).encode(), 422, "recent_items.1"),
        ("/recommend", json.dumps({"exclude": [too_long]}).encode(), 422, "exclude.0"),
        ("/recommend", json.dumps({"rank": True}).encode(), 409, "rank"),
        ("/recommend", b" " * (1 << 20) + b"{}", 413, "body"),
        ("/similar", json.dumps({"k": 3}).encode(), 422, "item_id"),
        ("/similar", json.dumps({"item_id": "i001", "k": -1}).encode(), 422, "k"),
    ]
    for path, raw, code, field in cases:
        status, body = c.call("POST", path, raw=raw)
        assert (status, body["field"]) == (code, field), (path, raw[:60], status, body)
        assert body["error"] and "Traceback" not in body["error"]
    # a chunked body over the limit is cut off too
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/recommend", body=iter([b" " * 600_000, b" " * 600_000]), encode_chunked=True)
    assert conn.getresponse().status == 413
    assert c.call("GET", "/recommend")[0] == 405 and c.call("GET", "/nope")[0] == 404


def test_a_token_guards_every_endpoint_but_healthz(home):
    import uvicorn

    from models.serving.app import create_app
    from models.serving.config import ServeConfig

    port, token = free_port(), "s3cret-token"
    config = ServeConfig(max_id_length=CleaningRules().max_id_length, token=token, reload_seconds=0.5)
    srv = uvicorn.Server(
        uvicorn.Config(create_app(home / "artifacts", config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not srv.started:
            assert time.time() < deadline and thread.is_alive()
            time.sleep(0.05)
        anon, wrong, good = Client(port), Client(port, "wrong"), Client(port, token)
        assert anon.call("GET", "/healthz")[0] == 200
        for path in ("/readyz", "/metrics"):
            assert anon.call("GET", path)[0] == 401 and wrong.call("GET", path)[0] == 401
            assert good.call("GET", path)[0] == 200
        status, body = anon.call("POST", "/recommend", {"k": 2})
        assert status == 401 and body["field"] == "Authorization"
        assert good.call("POST", "/recommend", {"k": 2})[0] == 200
        assert good.call("POST", "/similar", {"item_id": "i001", "k": 2})[0] == 200
    finally:
        srv.should_exit = True
        thread.join(timeout=20)


class Looper(threading.Thread):
    """A client calling /recommend and /similar back to back, recording every answer."""

    def __init__(self, port: int, user: str):
        super().__init__(daemon=True)
        self.client, self.user, self.stop, self.answers = Client(port), user, threading.Event(), []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            if n % 2:
                req = ("/similar", {"item_id": "i001", "k": 5})
            else:
                req = ("/recommend", {"user_id": self.user, "k": 10, "recent_items": ["i002"]})
            try:
                status, body = self.client.call("POST", *req)
            except OSError as e:
                status, body = -1, repr(e)
            self.answers.append((status, body))
            n += 1


@pytest.mark.slow
def test_live_reload_serves_new_items_without_a_failed_request_and_refuses_bad_artifacts(server, home):
    """New items dropped in landing/items/ and the sensor's incremental job: the running
    service serves them from /similar without a restart, while a looping client sees only
    200s; then a champion without its index and a damaged delta are refused, old kept."""
    import dagster as dg

    from orchestration.definitions import build_definitions

    port, log = server
    c = Client(port)
    _, before = c.call("GET", "/readyz")
    loopers = [Looper(port, known_user(home)) for _ in range(2)]
    for looper in loopers:
        looper.start()
    # new items whose content copies an existing item's: the same title and categories
    (home / "landing" / "items" / "new.csv").write_text(
        "item_id,title,categories,created_at\n"
        "fresh-1,The Mob Home,Family|Fantasy|Thriller,2026-11-01T00:00:00Z\n"
        "fresh-2,Party Rising Holiday,War,2026-11-01T00:00:00Z\n"
    )
    assert c.call("POST", "/similar", {"item_id": "fresh-1"})[0] == 404
    os.environ["TOWERFLOW_HOME"] = str(home)
    job = build_definitions(home).resolve_job_def("incremental_item_embedding_job")
    assert job.execute_in_process(instance=dg.DagsterInstance.ephemeral()).success  # the warehouse is free
    deadline = time.time() + 30
    while (status := c.call("POST", "/similar", {"item_id": "fresh-1", "k": 5})[0]) != 200:
        assert status == 404 and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    _, after = c.call("GET", "/readyz")
    assert after["index"]["items"] == 152 and after["index"]["build"] == before["index"]["build"]
    assert after["index"]["delta"] != before["index"]["delta"]  # an upsert: the main segment was reused
    status, rec = c.call("POST", "/recommend", {"k": 20, "recent_items": ["fresh-1", "fresh-2"]})
    assert status == 200 and rec["unknown_recent_items"] == []  # new items' features reached the service

    # a champion whose index is not built yet: refused, the old one keeps serving
    models = home / "artifacts" / "models"
    old = read_manifest(models)
    shutil.copytree(models / old["current"], models / "v-next")
    update_manifest(models, current="v-next")
    # a delta whose file does not match the manifest's sha256 (damaged / half-written)
    time.sleep(1.0)
    update_manifest(models, current=old["current"])
    index_dir = home / "artifacts" / "index"
    good = read_manifest(index_dir)
    shutil.copytree(index_dir / "deltas" / good["delta"], index_dir / "deltas" / "damaged")
    with open(index_dir / "deltas" / "damaged" / "delta.faiss", "r+b") as fh:
        fh.truncate(40)
    write_manifest(index_dir, {**good, "delta": "damaged"})
    time.sleep(1.0)
    _, during = c.call("GET", "/readyz")
    write_manifest(index_dir, good)
    time.sleep(0.5)
    for looper in loopers:
        looper.stop.set()
        looper.join(timeout=30)
    assert during["model_version"] == old["current"] and during["index"]["delta"] == after["index"]["delta"]
    text = log.read_text()
    assert "built from model" in text and "v-next" in text  # the refused champion, named
    assert "damaged" in text and "sha256" in text  # the refused delta, named
    _, metrics = c.call("GET", "/metrics")
    assert scrape(metrics)[("towerflow_reloads_total", (("outcome", "refused"),))] >= 1
    answers = [a for looper in loopers for a in looper.answers]
    failed = [a for a in answers if a[0] != 200]
    assert len(answers) > 50 and not failed, failed[:3]
    assert not any(looper.client.reconnects for looper in loopers)  # no connection dropped either
    deltas = {a[1]["index"]["delta"] for a in answers}
    assert {before["index"]["delta"], after["index"]["delta"]} <= deltas  # served across the swap


def test_rank_true_runs_the_promoted_ranker_once_one_is_promoted(home, server):
    """Promoting a ranker (its manifest) is picked up by the running service's reload: rank:true
    then answers 200 with the candidates re-ordered by the ranker's weighted score."""
    import torch

    from models.artifacts import write_manifest
    from models.ranking.features import ItemTimeline
    from models.ranking.model import Ranker, RankerConfig
    from models.ranking.training import save_ranker

    port, _ = server
    c = Client(port)
    user = c.call("POST", "/recommend", {"k": 1, "user_id": "u001"})[1]["items"] and "u001"
    cfg = RankerConfig(
        n_actions=2, history_len=8, candidates_per_pass=8, item_buckets=97, user_buckets=97, action_signs=(1.0, -1.0)
    )
    torch.manual_seed(0)
    model = Ranker(cfg).eval()
    torch.nn.init.normal_(model.heads.weight, std=0.5)  # a fresh ranker would keep retrieval order
    vocab = [
        {"name": "click", "weight": 1.0, "definition": "click"},
        {"name": "not_interested", "weight": -5.0, "definition": "not_interested"},
    ]
    root = home / "artifacts" / "ranking"
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    snapshot = ItemTimeline.from_warehouse(con).snapshot()  # the features the service reads
    con.close()
    path = save_ranker(root, model, {"actions": vocab}, snapshot=snapshot)
    try:
        write_manifest(root, {"current": path.name, "latest": path.name, "versions": [path.name]})
        deadline = time.time() + 60
        while True:
            status, body = c.call("POST", "/recommend", {"user_id": user, "k": 5, "rank": True})
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        assert status == 200, body
        assert body["ranked"] is True and len(body["items"]) == 5
        scores = [i["score"] for i in body["items"]]
        assert scores == sorted(scores, reverse=True)
        plain = c.call("POST", "/recommend", {"user_id": user, "k": 5})[1]
        assert "ranked" not in plain or plain["ranked"] is False
    finally:
        import shutil

        shutil.rmtree(root)  # the other tests of this module expect no ranker


@pytest.mark.filterwarnings("ignore:.*An input example was not provided")
def test_the_mlflow_model_the_service_and_the_cli_answer_alike(server, home, tmp_path, monkeypatch):
    """One retrieval rule (models/retrieval/inference.py) behind every way of answering: the
    MLflow pyfunc (saved and loaded through MLflow, over a bundle written from the warehouse),
    the running `towerflow serve` (published artifacts) and `towerflow recommend` (the warehouse)
    give a known user, a known user with recent items, a session (unknown id + recent items) and
    an unknown user with nothing the same items in the same order with the same scores."""
    import mlflow
    import pandas as pd
    from click.testing import CliRunner

    import models
    from models.retrieval.checkpoint import load_checkpoint
    from models.retrieval.pyfunc import TwoTowerPyfunc, signature_and_example, write_bundle
    from orchestration.cli import main

    port, _ = server
    user = known_user(home)
    recent = ["i001", "i002", "i003"]
    cases = [  # (user_id, recent items, the source every path must report)
        (user, None, "user"),
        (user, ["i120", "i121"], "user"),
        ("nobody-here", recent, "session"),
        ("nobody-at-all", None, "popularity"),
    ]
    k = 10

    # the MLflow model: a bundle from the warehouse, saved and loaded by MLflow itself
    champion = read_manifest(home / "artifacts" / "models")["current"]
    checkpoint = home / "artifacts" / "models" / champion
    model, _, _ = load_checkpoint(checkpoint)
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        bundle = write_bundle(con, model, checkpoint, tmp_path / "bundle")
    finally:
        con.close()
    sig, _ = signature_and_example(user, recent)
    mlflow.pyfunc.save_model(
        str(tmp_path / "mlflow-model"),
        python_model=TwoTowerPyfunc(),
        artifacts={"bundle": str(bundle)},
        signature=sig,
        code_paths=[str(Path(models.__file__).parent)],
        pip_requirements=[],
    )
    pyfunc = mlflow.pyfunc.load_model(str(tmp_path / "mlflow-model"))
    df = pyfunc.predict(
        pd.DataFrame({"user_id": [u for u, _, _ in cases], "recent_items": [r for _, r, _ in cases]}),
        params={"k": k},
    )
    # one batch mixing rows with and without recent items (null, as MLflow's schema wants); the
    # same user twice, so the answers are told apart by rank 1 starting each
    by_pyfunc = [g for _, g in df.groupby((df["rank"] == 1).cumsum(), sort=True)]
    assert [g["user_id"].iloc[0] for g in by_pyfunc] == [u for u, _, _ in cases]

    client = Client(port)
    runner = CliRunner()
    monkeypatch.setenv("TOWERFLOW_HOME", str(home))
    for (u, items, source), py in zip(cases, by_pyfunc):
        status, http = client.call("POST", "/recommend", {"user_id": u, "k": k, "recent_items": items or []})
        assert status == 200 and http["source"] == source, (u, items, http)
        args = ["recommend", "--user", u, "-k", str(k), "--format", "json"]
        for i in items or []:
            args += ["--recent", i]
        out = runner.invoke(main, args)
        assert out.exit_code == 0, out.output
        cli = json.loads(out.stdout)
        want = [i["item_id"] for i in http["items"]]
        assert len(want) == k and not set(want) & set(items or [])
        assert [r["item_id"] for r in cli] == want, (u, items)
        assert py["item_id"].tolist() == want, (u, items)
        scores = [i["score"] for i in http["items"]]
        assert [r["score"] for r in cli] == pytest.approx(scores, abs=1e-5)
        assert py["score"].tolist() == pytest.approx(scores, abs=1e-5)
        fallback = source == "popularity"
        assert http["fallback"] is fallback
        assert all(r["fallback"] is fallback for r in cli) and py["fallback"].eq(fallback).all()
