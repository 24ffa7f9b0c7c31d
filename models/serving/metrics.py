"""The service's Prometheus metrics, kept and exposed by `prometheus_client`.

Each app owns a `CollectorRegistry` (not the library's global one), so two apps in one process
(tests, a benchmark next to a server) count separately and never clash on a name.

    towerflow_requests_total{path, status}         counter: HTTP requests (unknown paths: "other")
    towerflow_request_seconds{path}                histogram: latency to the first response byte
    towerflow_batch_size                           histogram: requests answered by one forward + search
    towerflow_reloads_total{outcome}               counter: snapshot loads, "loaded" or "refused"
    towerflow_last_reload_timestamp_seconds        gauge: when the serving snapshot was swapped in
    towerflow_ready                                gauge: 1 while a consistent snapshot is serving
    towerflow_index_items                          gauge: live items in the served index
    towerflow_model_info{model_version, index_build, index_delta, search}   gauge, value 1
    towerflow_known_users                          gauge: users the served histories know
    towerflow_arm_info{arm, model_version, mode, share}   gauge, value 1, per arm being served
    towerflow_arm_requests_total{arm, model_version, mode}  counter: answers by arm ("served";
                                                   "shadow" for the challenger's logged answers)
    towerflow_arm_request_seconds{arm}             histogram: /recommend latency by the arm that answered
    towerflow_challenger_reloads_total{outcome}    counter: challenger loads, "loaded" or "refused"
    towerflow_events_logged_total{event_type}      counter: lines appended to the event logs
                                                   (impression, shadow, and each feedback action)
    towerflow_shadow_failures_total                counter: batches the shadow challenger failed on
    towerflow_event_log_failures_total{what}       counter: impressions answered, or feedback refused
                                                   (503), because the event log could not write them

The snapshot gauges are read from the snapshot being served at scrape time (`SnapshotCollector`), so
they cannot disagree with it; the last three are absent while nothing is served. Counters also
expose prometheus_client's `<name>_created` samples (when the series started) and every value is
written as a float (`1.0`), as every Python exporter does.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from models.serving.snapshot import Snapshot

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
PATHS = ("/recommend", "/similar", "/feedback", "/healthz", "/readyz", "/metrics")  # others count as "other"


class SnapshotCollector(Collector):
    """What the served snapshot is, read at scrape time from `current()` (None: not ready)."""

    def __init__(
        self,
        current: Callable[[], Snapshot | None],
        challenger: Callable[[], Snapshot | None] = lambda: None,
        config=None,
    ):
        self.current, self.challenger, self.config = current, challenger, config

    def collect(self):
        snap = self.current()
        yield GaugeMetricFamily(
            "towerflow_ready", "1 when a consistent snapshot is serving.", value=int(snap is not None)
        )
        if snap is None:
            return
        info = snap.index_info
        yield GaugeMetricFamily("towerflow_index_items", "Live items in the served index.", value=info["items"])
        model = GaugeMetricFamily(
            "towerflow_model_info",
            "The served model version and index build (value 1).",
            labels=["model_version", "index_build", "index_delta", "search"],
        )
        model.add_metric([str(snap.version), str(info["build"]), str(info["delta"]), str(info["search"])], 1)
        yield model
        yield GaugeMetricFamily("towerflow_known_users", "Users the served histories know.", value=len(snap.histories))
        arms = GaugeMetricFamily(
            "towerflow_arm_info",
            "The arms being served: model version, A/B mode, challenger share (value 1).",
            labels=["arm", "model_version", "mode", "share"],
        )
        mode, share = (self.config.ab_mode, self.config.challenger_share) if self.config else ("split", 0.0)
        for s in (snap, self.challenger()):
            if s is not None:
                arms.add_metric([s.arm, str(s.version), mode, f"{share:g}"], 1)
        yield arms


class ServiceMetrics:
    """The service's counters and histograms in a registry of their own (thread-safe: the
    middleware, the batcher and the reload thread all record into it)."""

    def __init__(
        self,
        current: Callable[[], Snapshot | None],
        challenger: Callable[[], Snapshot | None] = lambda: None,
        config=None,
    ):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "towerflow_requests", "HTTP requests by path and status.", ["path", "status"], registry=r
        )
        self.latency = Histogram(
            "towerflow_request_seconds",
            "Request latency (first byte of the response) by path.",
            ["path"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "towerflow_batch_size", "Requests answered by one forward and search.", buckets=BATCH_BUCKETS, registry=r
        )
        self.reloads = Counter(
            "towerflow_reloads", "Snapshot loads by outcome (loaded, refused).", ["outcome"], registry=r
        )
        self.last_reload = Gauge(
            "towerflow_last_reload_timestamp_seconds", "When the serving snapshot was swapped in.", registry=r
        )
        self.arm_requests = Counter(
            "towerflow_arm_requests",
            "Answers by arm and model version (mode served, or shadow: logged, not returned).",
            ["arm", "model_version", "mode"],
            registry=r,
        )
        self.arm_latency = Histogram(
            "towerflow_arm_request_seconds",
            "/recommend latency by the arm that answered.",
            ["arm"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.challenger_reloads = Counter(
            "towerflow_challenger_reloads", "Challenger loads by outcome (loaded, refused).", ["outcome"], registry=r
        )
        self.events_logged = Counter(
            "towerflow_events_logged", "Lines appended to the event logs by event type.", ["event_type"], registry=r
        )
        self.shadow_failures = Counter(
            "towerflow_shadow_failures", "Batches the shadow challenger failed on (logged).", registry=r
        )
        self.event_log_failures = Counter(
            "towerflow_event_log_failures",
            "Writes the event log failed: impressions (answered anyway) or feedback (503).",
            ["what"],
            registry=r,
        )
        r.register(SnapshotCollector(current, challenger, config))

    def request(self, path: str, status: int, seconds: float) -> None:
        path = path if path in PATHS else "other"  # bounded label values, whatever clients ask for
        self.requests.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def loaded(self) -> None:
        self.reloads.labels("loaded").inc()
        self.last_reload.set_to_current_time()

    def refused(self) -> None:
        self.reloads.labels("refused").inc()

    def arm_answers(self, arm: str, version: str, mode: str, n: int = 1) -> None:
        self.arm_requests.labels(arm, version, mode).inc(n)

    def arm_answered(self, arm: str, version: str, seconds: float) -> None:
        self.arm_answers(arm, version, "served")
        self.arm_latency.labels(arm).observe(seconds)

    def logged(self, event_type: str, n: int) -> None:
        self.events_logged.labels(event_type).inc(n)

    def log_failed(self, what: str) -> None:
        self.event_log_failures.labels(what).inc()

    def shadow_failed(self) -> None:
        self.shadow_failures.inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper's Accept header asks for: Prometheus
        text by default, OpenMetrics when asked."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
