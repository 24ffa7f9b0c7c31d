"""The online A/B test: statistics on hand-written counts, the simulated traffic in the event
contract, and end to end on the synthetic world with real Dagster materializations and the real
MLflow registry (a planted worse challenger loses and is retired, a planted better one wins and
becomes the champion)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from models.abtest.settings import ABTestSettings, TrafficSettings
from models.abtest.simulate import Arm, planted_arm, retriever_arm, simulate_traffic
from models.abtest.stats import INCONCLUSIVE, LOSES, WINS, analyse, arm_counts, decide, position_weights
from models.abtest.stats import standardised_ctr
from models.sources.synthetic import generate, world_of


def test_the_decision_rule_needs_the_whole_interval_on_one_side_and_enough_users():
    enough = {"champion": 500, "challenger": 500}
    assert decide(0.001, 0.02, enough, 200)[0] == WINS
    assert decide(-0.02, -0.001, enough, 200)[0] == LOSES
    assert decide(-0.001, 0.02, enough, 200)[0] == INCONCLUSIVE
    # a huge effect on too few users decides nothing
    decision, why = decide(0.5, 0.6, {"champion": 500, "challenger": 30}, 200)
    assert decision == INCONCLUSIVE and "challenger 30 < 200" in why


def test_standardising_by_position_does_not_reward_short_lists():
    # both arms have CTR 0.30 at position 1 and 0.10 at position 2 (same attractiveness per slot);
    # the challenger often returns one item only, so its pooled CTR looks higher (0.25 vs 0.20)
    rows = [
        ("a", "champion", 1, 100, 30, 0),
        ("a", "champion", 2, 100, 10, 0),
        ("b", "challenger", 1, 100, 30, 0),
        ("b", "challenger", 2, 33 + 1 / 3, 3 + 1 / 3, 0),
    ]
    counts = arm_counts(rows, 2)
    w = position_weights(counts)  # both arms' impressions: 200 at 1, 133.3 at 2 -> (0.6, 0.4)
    np.testing.assert_allclose(w, [0.6, 0.4])
    for arm in ("champion", "challenger"):
        c = counts[arm]
        assert standardised_ctr(c.clicks.sum(0), c.impressions.sum(0), w) == pytest.approx(0.6 * 0.3 + 0.4 * 0.1)
    pooled = {a: counts[a].clicks.sum() / counts[a].impressions.sum() for a in counts}
    assert pooled["challenger"] == pytest.approx(0.25) and pooled["champion"] == pytest.approx(0.20)


def test_the_interval_resamples_users_not_impressions():
    # the same 20,000 impressions and 2,000 clicks per arm: spread over 2,000 alike users, or
    # concentrated in 20 users of very different taste. Resampling users must give the second a far
    # wider interval (its effective sample is 20, not 20,000).
    def rows(n_users, spread):
        rng = np.random.default_rng(0)
        out = []
        for arm in ("champion", "challenger"):
            ctr = np.clip(rng.normal(0.1, spread, n_users), 0, 1)
            for u in range(n_users):
                imp = 20_000 // n_users
                out.append((f"{arm}{u}", arm, 1, imp, round(imp * ctr[u]), 0))
        return out

    s = ABTestSettings(min_users_per_arm=1)
    many = analyse(rows(2000, 0.01), 1, s)["difference"]["ctr"]
    few = analyse(rows(20, 0.08), 1, s)["difference"]["ctr"]
    assert few["hi"] - few["lo"] > 5 * (many["hi"] - many["lo"])


def test_simulated_traffic_follows_the_event_contract(tmp_path):
    landing = tmp_path / "landing"
    generate(landing, n_users=60, n_items=80, n_events=500, seed=1, log=lambda m: None)
    world, users, items = world_of(landing)
    good, bad = planted_arm("oracle", world, users, items), planted_arm("out-of-taste", world, users, items)
    s = TrafficSettings(requests=300, k=5)
    out = simulate_traffic(
        landing / "events", world, users, items, Arm("champion", "ck-a", bad), Arm("challenger", "ck-b", good), s, "r"
    )
    (name,) = out["files"]
    assert name.startswith("served-") and name.endswith(".jsonl")
    assert not [p for p in (landing / "events").iterdir() if p.name.startswith(".")]  # no temp file left
    lines = [json.loads(x) for x in (landing / "events" / name).read_text().splitlines()]
    shown = [x for x in lines if x["event_type"] == "impression"]
    assert len(shown) == out["arms"]["champion"]["impressions"] + out["arms"]["challenger"]["impressions"] == 1500
    assert all(x["event_id"] == f"{x['request_id']}:{x['position']}" for x in shown)
    assert {x["position"] for x in shown} == {1, 2, 3, 4, 5}
    by_request = {(x["request_id"], x["item_id"]): x for x in shown}
    feedback = [x for x in lines if x["event_type"] != "impression"]
    assert feedback and {x["event_type"] for x in feedback} <= {"click", "like", "not_interested"}
    for x in feedback:
        seen = by_request[(x["request_id"], x["item_id"])]  # every action is on something shown
        assert x["event_id"] == f"{x['request_id']}:{x['item_id']}:{x['event_type']}"
        assert (x["user_id"], x["arm"], x["model_version"], x["position"]) == (
            seen["user_id"],
            seen["arm"],
            seen["model_version"],
            seen["position"],
        )
        assert x["timestamp"] > seen["timestamp"]
    # a user sees one arm; the planted truth is what the draws show
    arms = {}
    for x in shown:
        arms.setdefault(x["user_id"], set()).add(x["arm"])
    assert all(len(a) == 1 for a in arms.values())
    a = out["arms"]
    assert a["challenger"]["expected_ctr"] > 3 * a["champion"]["expected_ctr"]
    assert a["challenger"]["ctr"] > a["champion"]["ctr"]


# ---------------------------------------------------------------------------- end to end

BASE = (
    "raw_events",
    "clean_interactions",
    "quarantined_events",
    "raw_items",
    "clean_items",
    "interaction_splits",
    "vocabularies",
    "two_tower_model",
    "model_evaluation",
    "ab_test_report",
    "promoted_model",
    "item_embeddings",
    "item_index",
    "user_histories",
)
RETRAIN = ("two_tower_model", "model_evaluation")
DECIDE = ("raw_events", "clean_interactions", "quarantined_events", "ab_test_report", "promoted_model")
# 400 users, half per arm: enough for the report's interval, small enough to train in seconds
REPORT = {"min_users_per_arm": 100}


def _materialize(home: Path, assets: tuple[str, ...], seed: int = 0):
    from orchestration.definitions import build_definitions

    return (
        build_definitions(home)
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            asset_selection=[dg.AssetKey(a) for a in assets],
            instance=dg.DagsterInstance.ephemeral(),
            raise_on_error=False,
            run_config={
                "ops": {
                    **(
                        {
                            "two_tower_model": {
                                "config": {"epochs": 2, "encoder": "mean", "batch_size": 128, "seed": seed}
                            }
                        }
                        if "two_tower_model" in assets
                        else {}
                    ),
                    **({"ab_test_report": {"config": REPORT}} if "ab_test_report" in assets else {}),
                }
            },
        )
    )


def _failures(run) -> list[str]:
    """What went wrong in a run, for the assertion message."""
    out = [str(e.event_specific_data.error) for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    return out + [f"{n}: {c.metadata}" for n, c in _checks(run).items() if not c.passed]


def _checks(run) -> dict:
    return {e.check_name: e for e in run.get_asset_check_evaluations()}


def _metadata(run, asset: str) -> dict:
    found = [m for m in run.get_asset_materialization_events() if m.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in found[-1].materialization.metadata.items()} if found else {}


def _challenger(home: Path, seed: int, cli: bool = False):
    """Train one more checkpoint (not promoted) and put it at @challenger: registered only, or
    (`cli`) through `towerflow promote --alias challenger`, which also builds its index and
    mirrors it in the models manifest for the service; returns (registered version, checkpoint)."""
    from models.retrieval.checkpoint import read_manifest
    from models.retrieval.pyfunc import read_logged
    from orchestration.resources import CHALLENGER, build_resources

    run = _materialize(home, RETRAIN, seed=seed)
    assert run.success, _failures(run)
    models = home / "artifacts" / "models"
    checkpoint = read_manifest(models)["latest"]
    tracker = build_resources(home)["mlflow"]
    if cli:
        from click.testing import CliRunner

        from orchestration.cli import main

        out = CliRunner().invoke(main, ["promote", "--alias", "challenger", checkpoint])
        assert out.exit_code == 0, out.output
        assert read_manifest(models)["challenger"] == checkpoint
        return int(tracker.champion(alias=CHALLENGER).version), checkpoint
    logged = read_logged(models / checkpoint)
    number, created = tracker.promote(checkpoint, {"seed": seed}, model_uri=logged["model_uri"], alias=CHALLENGER)
    assert created
    return number, checkpoint


def _traffic(home: Path, planted: str, seed: int) -> dict:
    """Simulated requests: the champion arm is the real champion retriever, the challenger arm a
    planted recommender; both logged under the registry's checkpoints, as the service logs them."""
    import duckdb

    from orchestration.resources import CHALLENGER, build_resources

    tracker = build_resources(home)["mlflow"]
    champion, challenger = tracker.champion(), tracker.champion(alias=CHALLENGER)
    world, users, items = world_of(home / "landing")
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return simulate_traffic(
            home / "landing" / "events",
            world,
            users,
            items,
            Arm("champion", champion.tags["checkpoint"], retriever_arm(con, home / "artifacts")),
            Arm("challenger", challenger.tags["checkpoint"], planted_arm(planted, world, users, items)),
            # a fixed salt: the default (the challenger's checkpoint, named by its training time)
            # would bucket users differently on every run
            TrafficSettings(requests=4000, seed=seed, salt=f"{planted}-{seed}"),
            run_id=f"{planted}-{seed}",
            log=lambda m: None,
        )
    finally:
        con.close()


@pytest.mark.slow
def test_a_worse_challenger_is_retired_and_a_better_one_becomes_the_champion(tmp_path):
    from mlflow.tracking import MlflowClient

    from models.retrieval.checkpoint import champion_version, read_manifest

    home = tmp_path / "home"
    os.environ["TOWERFLOW_HOME"] = str(home)
    generate(home / "landing", n_users=400, n_items=200, n_events=12000, seed=5, log=lambda m: None)
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    name = "towerflow-two-tower"

    # no challenger: the report says so, its checks pass, the retrain path promotes as always
    run = _materialize(home, BASE)
    assert run.success, _failures(run)
    assert _metadata(run, "ab_test_report")["decision"] == "no_challenger"
    assert all(
        c.passed for n, c in _checks(run).items() if n in ("ab_test_users_in_one_arm", "challenger_wins_ab_test")
    )
    assert _metadata(run, "promoted_model")["promoted"] is True
    first = client.get_model_version_by_alias(name, "champion")

    # a planted worse challenger (popular items outside the user's taste) loses and is retired
    worse, worse_checkpoint = _challenger(home, seed=1)
    # at @challenger with no traffic yet: inconclusive, the champion stays, and the retrain rule
    # waits for the test (the newer checkpoint is not promoted behind its back)
    run = _materialize(home, ("ab_test_report", "promoted_model"))
    assert run.success, _failures(run)
    assert _metadata(run, "ab_test_report")["decision"] == INCONCLUSIVE
    assert not _checks(run)["challenger_wins_ab_test"].passed
    assert not _metadata(run, "promoted_model")
    assert client.get_model_version_by_alias(name, "champion").version == first.version
    traffic = _traffic(home, "out-of-taste", seed=1)
    run = _materialize(home, DECIDE)
    assert run.success, _failures(run)  # losing is a normal outcome: a warning, not a failed run
    report = json.loads((home / "artifacts" / "abtest" / "report.json").read_text())
    d = report["difference"]["ctr_standardised"]
    # margin: the upper bound sits far below 0 (printed for the record when the test runs with -s)
    print("worse challenger:", traffic["arms"], d)
    assert report["decision"] == LOSES and d["hi"] < -0.01, d
    checks = _checks(run)
    assert checks["ab_test_users_in_one_arm"].passed
    assert not checks["challenger_wins_ab_test"].passed
    assert checks["challenger_wins_ab_test"].severity == dg.AssetCheckSeverity.WARN
    retired = client.get_model_version(name, str(worse))
    assert retired.tags["ab_test"] == "lost" and "challenger" not in retired.aliases
    assert client.get_model_version_by_alias(name, "champion").version == first.version
    # the retrain rule does not promote the retired checkpoint behind the test's back
    assert champion_version(home / "artifacts") == first.tags["checkpoint"] != worse_checkpoint
    assert not _metadata(run, "promoted_model")  # nothing materialized: only observations

    # a planted better challenger (the world's best: in-taste items) wins and becomes the champion
    # (the traffic through the CLI this time, as a demo user runs it)
    from click.testing import CliRunner

    from orchestration.cli import main

    better, better_checkpoint = _challenger(home, seed=2, cli=True)
    cli = CliRunner().invoke(
        main, ["simulate-traffic", "--requests", "4000", "--seed", "2", "--salt", "oracle-2", "--challenger", "oracle"]
    )
    assert cli.exit_code == 0, cli.output
    run = _materialize(home, DECIDE)
    assert run.success, _failures(run)
    report = json.loads((home / "artifacts" / "abtest" / "report.json").read_text())
    d = report["difference"]["ctr_standardised"]
    print("better challenger:", report["arms"], d)
    assert report["decision"] == WINS and d["lo"] > 0.01, d
    assert (report["champion_version"], report["challenger_version"]) == (int(first.version), better)
    assert _checks(run)["challenger_wins_ab_test"].passed
    # the report as the UI and MLflow show it: figures, the picture, the decision
    shown = _metadata(run, "ab_test_report")
    assert shown["decision"] == WINS and shown["difference.ctr_standardised.lo"] > 0
    assert Path(shown["plot_file"]).stat().st_size > 0 and "path=ab_test_report/ab_test.png" in shown["plot"]
    (logged,) = client.search_runs(
        [client.get_experiment_by_name("towerflow").experiment_id], f"tags.dagster_run_id = '{run.run_id}'"
    )
    assert logged.data.params["ab_test_report/decision"] == WINS
    assert logged.data.metrics["ab_test_report/difference.ctr_standardised.lo"] == pytest.approx(d["lo"])
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "ab_test_report")} >= {
        "ab_test_report/ab_test.png",
        "ab_test_report/report.json",
    }
    promoted = _metadata(run, "promoted_model")
    assert promoted["registered_version"] == better and promoted["promoted_by"] == "online A/B test"
    champion = client.get_model_version_by_alias(name, "champion")
    assert int(champion.version) == better and champion.tags["ab_test"] == "won"
    assert "challenger" not in champion.aliases
    assert client.get_model_version(name, first.version).tags["ab_test"] == "lost"
    manifest = read_manifest(home / "artifacts" / "models")
    assert manifest["current"] == better_checkpoint and manifest["challenger"] is None  # served as champion now

    # a rerun of promoted_model applies nothing twice and does not bring the old champion back
    run = _materialize(home, ("ab_test_report", "promoted_model"))
    assert run.success, _failures(run)
    assert _metadata(run, "ab_test_report")["decision"] == "no_challenger"
    assert int(client.get_model_version_by_alias(name, "champion").version) == better
