"""ab_test_report: the online A/B test of the two-tower version at alias `challenger` against
the one at `champion`, from the logged impressions and feedback (landing/events/, through
raw_events and clean_interactions). Per arm the CTR and like rate with bootstrap intervals over
users, the position-standardised CTR the decision is taken on, CTR by position, and the
decision (models/abtest/stats.py). It only measures and decides: the blocking checks (checks.py)
gate, and `promoted_model` applies the decision (moves `champion`, or retires the challenger).

With no version at `challenger` it reports "no challenger" and measures nothing: the retrain
path is unchanged."""

import dagster as dg
from dagster_duckdb import DuckDBResource

from assets.abtest.checks import REPORT
from assets.abtest.config import ABTestConfig
from assets.reporting import figures_metadata, md_table
from assets._config import to_library
from models.abtest.plot import ab_test_plot
from models.abtest.settings import ABTestSettings
from models.abtest.stats import ARMS, NO_CHALLENGER, analyse
from models.artifacts import Layout, write_json_atomic
from models.sql import query, sql_text
from orchestration.resources import CHALLENGER, CHAMPION, MLFLOW_UI, MlflowTracker, TowerflowPaths
from orchestration.versions import WAREHOUSE_POOL, code_version

PLOT = "ab_test.png"
RATES = ("ctr_standardised", "ctr", "like_rate")


def logged_as(version) -> list[str]:
    """How impressions may name a registered version: its number or its checkpoint."""
    return [str(version.version), *([version.tags["checkpoint"]] if version.tags.get("checkpoint") else [])]


@dg.asset(
    deps=["clean_interactions"],
    kinds={"duckdb", "mlflow"},
    owners=["team:recsys"],
    tags={"layer": "model"},
    pool=WAREHOUSE_POOL,
    code_version=code_version(__name__),
)
def ab_test_report(
    context: dg.AssetExecutionContext,
    config: ABTestConfig,
    paths: TowerflowPaths,
    duckdb: DuckDBResource,
    mlflow: MlflowTracker,
) -> dg.MaterializeResult:
    """Champion vs challenger on live (or simulated) traffic: rates with intervals, the
    difference challenger - champion with its interval, and the decision."""
    settings = to_library(config, ABTestSettings)
    folder = Layout(paths.artifacts).abtest
    champion, challenger = mlflow.champion(), mlflow.champion(alias=CHALLENGER)
    if champion is None or challenger is None:
        missing = CHALLENGER if champion is not None else CHAMPION
        report = {"decision": NO_CHALLENGER, "why": f"no version at @{missing}: nothing under test"}
        write_json_atomic(folder / REPORT, report)
        context.log.info(f"ab_test_report: {report['why']}")
        mlflow.log(context, "ab_test_report", {"under_test": 0.0})
        return dg.MaterializeResult(
            metadata=figures_metadata({"decision": NO_CHALLENGER, "why": report["why"], "under_test": False})
        )
    params = {
        "positions": settings.positions,
        "champion_versions": logged_as(champion),
        "challenger_versions": logged_as(challenger),
    }
    with duckdb.get_connection() as con:
        rows = query(con, "ab_test_exposures", params)
    report = analyse(rows, settings.positions, settings)
    report.update(
        champion_version=int(champion.version),
        challenger_version=int(challenger.version),
        champion_checkpoint=champion.tags.get("checkpoint"),
        challenger_checkpoint=challenger.tags.get("checkpoint"),
    )
    write_json_atomic(folder / REPORT, report)
    png = ab_test_plot(report, folder / PLOT)
    arms, diff = report["arms"], report["difference"]
    figures = {
        "decision": report["decision"],
        "why": report["why"],
        "under_test": True,
        "champion_version": report["champion_version"],
        "challenger_version": report["challenger_version"],
        **{f"{a}.{k}": arms[a][k] for a in ARMS for k in ("users", "impressions", "clicks", "likes")},
        **{f"{a}.{r}": arms[a][r]["value"] for a in ARMS for r in RATES},
        **{
            f"difference.{r}{end}": diff[r][key]
            for r in RATES
            for end, key in (("", "value"), (".lo", "lo"), (".hi", "hi"))
        },
        "users_in_both_arms": report["users_in_both_arms"]["count"],
    }
    run_id = mlflow.log(
        context,
        "ab_test_report",
        {k: v for k, v in figures.items() if isinstance(v, (int, float))},
        params={
            "decision": report["decision"],
            "champion_version": champion.version,
            "challenger_version": challenger.version,
        },
        artifacts=[folder / REPORT, png],
    )
    context.log.info(f"ab_test_report: {report['decision']}: {report['why']}")
    rates = [(f"{r} ({a})", *(round(arms[a][r][k], 5) for k in ("value", "lo", "hi"))) for r in RATES for a in ARMS] + [
        (f"{r} (challenger - champion)", *(round(diff[r][k], 5) for k in ("value", "lo", "hi"))) for r in RATES
    ]
    by_position = [
        (
            p["position"],
            round(p["weight"], 3),
            *(x for a in ARMS for x in (p[f"{a}_impressions"], round(p[f"{a}_ctr"], 4))),
        )
        for p in report["positions"]
    ]
    level = f"{report['confidence']:.0%}"
    picture = (
        f"![A/B test]({MLFLOW_UI}/get-artifact?path=ab_test_report/{PLOT}&run_uuid={run_id})\n\n"
        f"(the picture comes from `mlflow ui`; the file is `plot_file`)\n\n"
    )
    return dg.MaterializeResult(
        metadata={
            **figures_metadata(
                figures,
                sql={"ab_test_exposures": sql_text("ab_test_exposures")},
                tables={
                    "rates": md_table(rates, ("rate", "value", f"{level} lo", f"{level} hi")),
                    "by_position": md_table(
                        by_position,
                        ("position", "weight", *(f"{a} {x}" for a in ARMS for x in ("impressions", "CTR"))),
                    ),
                },
            ),
            "plot": dg.MetadataValue.md(picture + f"**{report['decision']}**: {report['why']}"),
            "plot_file": dg.MetadataValue.path(str(png)),
        }
    )
