"""The Grafana dashboard and the Prometheus alert rules ask only for series the service really exports.

A real server (uvicorn on loopback, tiny ONNX models) answers a few requests, including an unknown model
(404) and a full queue (503 queue_full), so that every labelled series exists; its /metrics is parsed with
prometheus_client's parser. Each PromQL expression of the dashboard (and of alerts.yml) is parsed with a
real PromQL parser, and every metric name, every label in a selector or a `by (...)` clause, and the kind
of series each function gets (rate of counters and histogram parts, histogram_quantile of buckets by `le`)
is checked against that scrape. Grafana is not available here, so this is what keeps a panel from being
silently empty after a metric or label is renamed.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import promql_parser as pql
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app
from service.served_models import ServedModels
from service.settings import Settings
from tests.deploy.binaries import REPO
from tests.service.media_testkit import add_super_resolver, encode, noise
from tests.service.service_testkit import Gate, LiveServer, add_generator, wait_for

DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "gan-service.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
#: Labels Prometheus attaches to every scraped series (the target's), not the service.
TARGET_LABELS = {"job", "instance"}
#: Series Prometheus itself records for each target (the only non-gan_ series the dashboard may use).
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
#: Grafana's variables, replaced by values PromQL accepts so the expression can be parsed.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
METRIC_NAME = re.compile(r"\bgan_[a-z_]+\b")
LABEL_VALUES = re.compile(r"^label_values\(\s*(?:(?P<selector>[^,]+?)\s*,\s*)?(?P<label>[a-zA-Z_]\w*)\s*\)$")
#: Series kinds that rate()/increase() may be applied to (monotonic counters, histogram parts).
RATE_FUNCTIONS = {"rate", "irate", "increase"}
COUNTER_KINDS = {"counter", "bucket", "sum", "count"}


@dataclass
class Scrape:
    """What /metrics exposed: sample name -> label names and the kind of series it is."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    #: values seen per (sample name, label), e.g. the rejection reasons
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)


def expected_samples(family: str, kind: str) -> dict[str, str]:
    """The sample names the text exposition format derives from a family, and each one's kind."""
    if kind == "counter":
        return {f"{family}_total": "counter"}
    if kind == "histogram":
        return {f"{family}_bucket": "bucket", f"{family}_sum": "sum", f"{family}_count": "count"}
    if kind == "info":
        return {f"{family}_info": "gauge"}
    if kind == "gauge":
        return {family: "gauge"}
    raise AssertionError(f"unexpected metric type {kind} of {family}")


@pytest.fixture(scope="module")
def scrape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scrape]:
    repo = tmp_path_factory.mktemp("models")
    add_generator(repo, "tiny")
    add_super_resolver(repo, "sr")
    # small queue, one stream: a held batch plus one queued request fill it, the next is refused
    settings = Settings(model_dir=repo, max_batch_size=2, max_queue_size=2, max_images_per_request=2,
                        inference_streams=1, max_batch_delay_ms=0)
    registry = ServedModels.load(settings)
    runtime = registry.entries["tiny"].runtime
    gate = Gate(runtime.run)
    runtime.run = gate  # type: ignore[method-assign]
    try:
        with LiveServer(create_app(settings, models=registry)) as server:
            server.wait_ready()
            url = server.url
            assert httpx.post(f"{url}/generate", json={"model": "tiny", "seed": 1}).status_code == 200
            assert httpx.post(f"{url}/generate", json={"model": "no-such-model"}).status_code == 404
            image = encode(noise(8, 8))
            response = httpx.post(f"{url}/super-resolve", files={"image": ("x.png", image, "image/png")})
            assert response.status_code == 200, response.text

            batcher = server.service.models.entries["tiny"].batcher
            gate.close()
            results: list[int] = []

            def post(rows: int) -> None:
                results.append(httpx.post(f"{url}/generate", json={"model": "tiny", "num_images": rows},
                                          timeout=30).status_code)

            running = threading.Thread(target=post, args=(2,))
            running.start()
            assert gate.entered.wait(10)
            queued = threading.Thread(target=post, args=(2,))
            queued.start()
            wait_for(lambda: batcher.queued_rows == 2, what="a full queue")
            assert httpx.post(f"{url}/generate", json={"model": "tiny"}).status_code == 503
            gate.open()
            running.join(30)
            queued.join(30)
            assert results == [200, 200]
            text = httpx.get(f"{url}/metrics").text
    finally:
        gate.open()
        Gate.created.clear()

    scraped = Scrape()
    for family in text_string_to_metric_families(text):
        expected = expected_samples(family.name, family.type)
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            assert sample.name in expected, f"{sample.name} is not a {family.type} sample of {family.name}"
            scraped.kinds[sample.name] = expected[sample.name]
            scraped.labels.setdefault(sample.name, set()).update(sample.labels)
            for label, value in sample.labels.items():
                scraped.values.setdefault((sample.name, label), set()).add(value)
    assert ("gan_rejections_total", "reason") in scraped.values, "no rejection was counted"
    yield scraped


# ------------------------------------------------------------------------------------ the expressions


def walk(node: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path of enclosing JSON keys, value) for every value of a JSON document."""

    def go(path: tuple[str, ...], value: Any) -> Iterator[tuple[tuple[str, ...], Any]]:
        yield path, value
        if isinstance(value, dict):
            for key, item in value.items():
                yield from go((*path, key), item)
        elif isinstance(value, list):
            for item in value:
                yield from go(path, item)

    yield from go((), node)


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target."""
    found = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']!r} target {target['refId']}", target["expr"]))
    return found


def alert_expressions() -> list[tuple[str, str]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [(f"alert {rule['alert']}", rule["expr"]) for group in groups for rule in group["rules"]]


def variable_queries() -> list[tuple[str, str]]:
    """(variable name, query) of the dashboard's query variables (Grafana's label_values(...) syntax)."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append((variable["name"], query["query"] if isinstance(query, dict) else query))
    return found


def substitute(expr: str) -> str:
    """Grafana's template variables -> values PromQL accepts (`$model` in a regex matcher -> `.*`)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def parse(where: str, expr: str) -> Any:
    try:
        return pql.parse(substitute(expr))
    except Exception as exc:  # the parser raises plain ValueError/RuntimeError with its message
        raise AssertionError(f"{where}: not valid PromQL: {expr}\n{exc}") from exc


def children(node: Any) -> list[Any]:
    if isinstance(node, pql.AggregateExpr):
        return [node.expr] + ([node.param] if isinstance(node.param, pql.Expr) else [])
    if isinstance(node, pql.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, (pql.ParenExpr, pql.UnaryExpr, pql.SubqueryExpr)):
        return [node.expr]
    if isinstance(node, pql.Call):
        return list(node.args)
    if isinstance(node, pql.MatrixSelector):
        return [node.vector_selector]
    return []


def nodes(node: Any) -> Iterator[Any]:
    yield node
    for child in children(node):
        yield from nodes(child)


def selectors(node: Any) -> list[Any]:
    return [n for n in nodes(node) if isinstance(n, pql.VectorSelector)]


EXPRESSIONS = dashboard_expressions() + alert_expressions()
IDS = [where for where, _ in EXPRESSIONS]


def labels_of(scrape: Scrape, name: str) -> set[str]:
    if name.startswith("gan_"):
        return scrape.labels[name] | TARGET_LABELS
    return TARGET_LABELS  # Prometheus' own series (up, ...) carry the target labels


# ---------------------------------------------------------------------------------------------- tests


def test_every_exported_series_kind_is_understood(scrape: Scrape) -> None:
    """The suffix mapping below is what the other tests rely on; check it saw each kind of metric."""
    assert set(scrape.kinds.values()) == {"counter", "bucket", "sum", "count", "gauge"}
    assert scrape.kinds["gan_requests_total"] == "counter"
    assert scrape.kinds["gan_request_duration_seconds_bucket"] == "bucket"
    assert "le" in scrape.labels["gan_request_duration_seconds_bucket"]
    assert {"model", "providers", "device"} <= scrape.labels["gan_model_info"]
    assert scrape.values[("gan_rejections_total", "reason")] >= {"queue_full"}
    assert scrape.values[("gan_requests_total", "status")] >= {"200", "404", "503"}


def test_dashboard_has_the_panels_an_operator_needs() -> None:
    titles = [panel["title"] for panel in dashboard()["panels"]]
    for wanted in ("Requests/s by endpoint", "Errors/s by endpoint and status", "Request latency p50 / p95 / p99",
                   "Queue wait vs inference time", "Batch size (rows per ONNX Runtime call)",
                   "Queue depth (rows waiting)", "Rejections/s by reason", "Images/s by model",
                   "Execution provider per model"):
        assert wanted in titles
    used = {name for _, expr in EXPRESSIONS for name in METRIC_NAME.findall(expr)}
    for family in ("gan_requests_total", "gan_request_duration_seconds_bucket", "gan_queue_wait_seconds_bucket",
                   "gan_inference_duration_seconds_bucket", "gan_batch_size_bucket", "gan_queue_depth",
                   "gan_rejections_total", "gan_images_produced_total", "gan_model_info"):
        assert family in used, family
    ids = [panel["id"] for panel in dashboard()["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=IDS)
def test_metric_names_are_exported(scrape: Scrape, where: str, expr: str) -> None:
    names = set(METRIC_NAME.findall(expr))
    missing = names - set(scrape.kinds)
    assert not missing, f"{where} asks for {sorted(missing)}, which /metrics does not export"
    # the parser finds the same names (the regex missed none), and any other series is Prometheus' own
    parsed = {s.name for s in selectors(parse(where, expr))}
    assert {name for name in parsed if name.startswith("gan_")} == names, where
    assert parsed - names <= PROMETHEUS_SERIES, f"{where}: unknown series {sorted(parsed - names)}"


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=IDS)
def test_labels_exist_on_their_metrics(scrape: Scrape, where: str, expr: str) -> None:
    tree = parse(where, expr)
    for selector in selectors(tree):
        assert selector.name, f"{where}: a selector without a metric name"
        for matcher in selector.matchers.matchers:
            assert matcher.name in labels_of(scrape, selector.name), (
                f"{where}: {selector.name} has no label {matcher.name!r}"
            )
    for node in nodes(tree):
        grouping: list[str] = []
        if isinstance(node, pql.AggregateExpr) and node.modifier is not None:
            grouping = node.modifier.labels
        elif isinstance(node, pql.BinaryExpr) and node.modifier is not None and node.modifier.matching is not None:
            grouping = node.modifier.matching.labels + (node.modifier.group_labels or [])
        for label in grouping:
            for selector in selectors(node):
                assert label in labels_of(scrape, selector.name), (
                    f"{where}: grouping by {label!r}, which {selector.name} does not have"
                )


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=IDS)
def test_functions_get_the_right_kind_of_series(scrape: Scrape, where: str, expr: str) -> None:
    for node in nodes(parse(where, expr)):
        if not isinstance(node, pql.Call):
            continue
        name = node.func.name
        inner = [s.name for s in selectors(node) if s.name.startswith("gan_")]
        if name in RATE_FUNCTIONS:
            for metric in inner:
                assert scrape.kinds[metric] in COUNTER_KINDS, f"{where}: {name}() of {metric}, not a counter"
        if name == "histogram_quantile":
            aggregates = [n for n in nodes(node.args[1]) if isinstance(n, pql.AggregateExpr)]
            assert inner and all(scrape.kinds[m] == "bucket" for m in inner), f"{where}: quantile of non-buckets"
            assert aggregates and "le" in aggregates[0].modifier.labels, f"{where}: aggregate keeps no `le`"
    for selector in selectors(parse(where, expr)):
        kind = scrape.kinds.get(selector.name)
        if kind in COUNTER_KINDS:  # a raw counter is meaningless on a graph: it must sit inside rate()
            assert re.search(rf"(rate|increase)\(\s*{selector.name}\b", expr), f"{where}: {selector.name} unrated"


@pytest.mark.parametrize(("name", "query"), variable_queries())
def test_variable_queries_name_exported_labels(scrape: Scrape, name: str, query: str) -> None:
    match = LABEL_VALUES.match(query)
    assert match, f"variable {name}: expected label_values(metric, label), got {query}"
    selector = parse(f"variable {name}", match["selector"])
    assert isinstance(selector, pql.VectorSelector) and selector.name in scrape.kinds, query
    assert match["label"] in labels_of(scrape, selector.name), query
    for matcher in selector.matchers.matchers:
        assert matcher.name in labels_of(scrape, selector.name), query


def test_label_values_in_expressions_are_real(scrape: Scrape) -> None:
    """Exact-match label values (job, rejection reasons, ...) exist: a typo would match nothing, silently.
    Model names and instances depend on the deployment and are not checked."""
    jobs = {job["job_name"] for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]}
    for where, expr in EXPRESSIONS:
        for selector in selectors(parse(where, expr)):
            for matcher in selector.matchers.matchers:
                if matcher.op != pql.MatchOp.Equal or matcher.name in {"model", "instance"}:
                    continue
                if matcher.name == "job":
                    assert matcher.value in jobs, f"{where}: no scrape job {matcher.value!r}"
                else:
                    seen = scrape.values.get((selector.name, matcher.name), set())
                    assert matcher.value in seen, f"{where}: {selector.name}{{{matcher.name}={matcher.value!r}}} " \
                        f"never exported (seen: {sorted(seen)})"


def test_panels_use_the_datasource_variable() -> None:
    """Every panel and target queries `${datasource}`, so importing the dashboard elsewhere works."""
    for path, value in walk(dashboard()["panels"]):
        if path and path[-1] == "datasource" and isinstance(value, dict) and value.get("type") == "prometheus":
            assert value["uid"] == "${datasource}", path
