import json

import dagster as dg

from assets.reporting import PROMOTION_GATE, check_result, md_table
from models.abtest.stats import INCONCLUSIVE, NO_CHALLENGER, WINS
from models.artifacts import Layout
from orchestration.resources import CHALLENGER, MlflowTracker, TowerflowPaths

REPORT = "report.json"  # written by ab_test_report


def latest_report(paths: TowerflowPaths) -> dict | None:
    """The latest ab_test_report (artifacts/abtest/report.json), or None before the first."""
    path = Layout(paths.artifacts).abtest / REPORT
    return json.loads(path.read_text()) if path.exists() else None


def ab_outcome(paths: TowerflowPaths, mlflow: MlflowTracker) -> tuple[str, str, dict | None]:
    """(decision, why, report): the A/B rule in one place, applied by the check
    `challenger_wins_ab_test` and by `promoted_model`. The latest report's decision counts only
    when it measured the versions that hold @champion and @challenger now and its arms kept
    their users apart; anything else is inconclusive (the champion stays)."""
    champion, challenger = mlflow.champion(), mlflow.champion(alias=CHALLENGER)
    if challenger is None:
        return NO_CHALLENGER, f"no version at @{CHALLENGER}: nothing under test", None
    report = latest_report(paths)
    pair = (int(champion.version) if champion else None, int(challenger.version))
    if report is None or (report.get("champion_version"), report.get("challenger_version")) != pair:
        return (
            INCONCLUSIVE,
            f"no ab_test_report of champion version {pair[0]} against challenger version {pair[1]} yet: "
            "materialize ab_test_report",
            report,
        )
    if report["users_in_both_arms"]["count"]:
        return INCONCLUSIVE, f"{report['users_in_both_arms']['count']} users were logged in both arms", report
    return report["decision"], report["why"], report


@dg.asset_check(
    asset="ab_test_report",
    blocking=True,
    description="Per-user bucketing held: no user's impressions name both arms (the comparison and its "
    "bootstrap over users assume disjoint arms). Blocks promoted_model: no alias moves on a broken experiment.",
)
def ab_test_users_in_one_arm(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    report = latest_report(paths) or {}
    both = report.get("users_in_both_arms", {"count": 0, "first": []})
    return check_result(
        context,
        mlflow,
        "ab_test_users_in_one_arm",
        both["count"] == 0,
        {"offending_users": both["count"], "threshold": 0},
        tables={"offending_users_table": md_table([(u,) for u in both["first"]], ("user_id",))}
        if both["count"]
        else None,
    )


@dg.asset_check(
    asset="ab_test_report",
    blocking=True,
    description="The challenger beats the champion online: the lower bound of the interval of challenger - "
    "champion on the position-standardised CTR is above 0, with enough users in both arms. A warning when it "
    "lost (promoted_model then retires it) or when the test is inconclusive (the champion keeps serving and the "
    "challenger keeps collecting traffic); passes, saying so, when no challenger is under test.",
)
def challenger_wins_ab_test(context, paths: TowerflowPaths, mlflow: MlflowTracker):
    decision, why, report = ab_outcome(paths, mlflow)
    figures = {"decision": decision, "why": why}
    if report and "difference" in report:
        d = report["difference"][report["metric"]]
        figures |= {
            "difference": d["value"],
            "difference_lo": d["lo"],
            "difference_hi": d["hi"],
            "threshold_difference_lo": 0.0,
            **{f"{a}_users": report["arms"][a]["users"] for a in report["arms"]},
        }
    return check_result(
        context, mlflow, "challenger_wins_ab_test", decision in (WINS, NO_CHALLENGER), figures, severity=PROMOTION_GATE
    )
