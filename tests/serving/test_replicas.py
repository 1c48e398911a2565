"""Two replicas of a server, each with its model agent: the gateway spreads, survives a dead or
restarted replica without a failed request, and loads nothing itself; agents unload what no spec
needs after the grace period, and a version no agent can load never gets traffic."""

from __future__ import annotations

from pathlib import Path

import httpx

from model_store.store import artifacts_from_directory
from serving.rollout.analysis import GatewayMetricsSource
from serving.rollout.controller import RolloutController
from serving.routing import operations
from serving.routing.spec_store import SpecStore
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import ADMIN_TOKEN, v2_body, windows
from tests.serving.replica_fixtures import Load, ReplicaStack
from tests.serving.test_gateway import metric_value
from tests.support import wait_until

REPLICAS = ("triton", "triton-1")


def serving_version(stack: ReplicaStack, version: int) -> None:
    spec = stack.admin("GET", f"/deployments/{MODEL}")
    if spec.status_code == 200 and [v["version"] for v in spec.json()["variants"]] == [version]:
        return
    response = stack.deploy(version)
    assert response.status_code == 200, response.text


def test_a_deploy_returns_when_every_replica_holds_the_version_and_requests_spread(
    replica_stack: ReplicaStack,
) -> None:
    stack = replica_stack
    serving_version(stack, 1)
    assert [stack.loaded(replica) for replica in REPLICAS] == [[1], [1]]
    # Nothing staged is left behind, and the gateway lists both replicas from their agents.
    assert list(stack.store.storage.list_keys("staging/")) == []
    # Each gateway replica lists both server replicas, learnt from their agents' reports.
    expected = [("triton", [f"{MODEL}:1"]), ("triton-1", [f"{MODEL}:1"])]
    for gateway in ("gateway", "gateway-1"):
        url = f"{stack.specs[gateway].urls['http']}/admin/servers"
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        wait_until(
            lambda url=url, headers=headers: (
                [
                    (server["replica"], server["ready"])
                    for server in stack.client.get(url, headers=headers).json()["triton"]
                ]
                == expected
            ),
            10,
            f"{gateway} to list both replicas ready",
        )
    for name in ("agent-triton", "agent-triton-1"):
        url = stack.specs[name].urls["status"]
        # "staged" until the agent's next pass reads the spec the deploy wrote: then "live".
        wait_until(
            lambda url=url: (
                [
                    (s["model"], s["version"], s["phase"], s["needed"])
                    for s in stack.client.get(url).json()["versions"]
                ]
                == [(MODEL, 1, "ready", "live")]
            ),
            10,
            f"{name} to report v1 live and ready",
        )
        metrics = stack.client.get(stack.specs[name].urls["metrics"]).text
        labels = f'agent="{name.removeprefix("agent-")}",kind="triton",model="{MODEL}",version="1"'
        assert f"flywheel_agent_version_ready{{{labels}}} 1.0" in metrics

    before = {replica: stack.successes(replica) for replica in REPLICAS}
    with Load(stack.url) as load:
        load.wait_for(200)
    assert set(load.statuses) == {200}, load.errors[:5]
    served = {replica: stack.successes(replica) - before[replica] for replica in REPLICAS}
    # Power of two choices over two idle replicas: each gets a fair share, never all or nothing.
    assert all(count > 0.2 * load.total() for count in served.values()), served


def test_a_replica_killed_and_restarted_under_load_costs_no_request(replica_stack: ReplicaStack) -> None:
    stack = replica_stack
    serving_version(stack, 1)
    with Load(stack.url) as load:
        load.wait_for(50)
        stack.kill("triton-1")
        load.wait_for(300)
        # It restarts empty (explicit model control): its agent reloads v1, meanwhile the gateway
        # sends nothing there that could come back 404.
        stack.start("triton-1")
        wait_until(lambda: stack.loaded("triton-1") == [1], 180, "the agent to reload v1 on triton-1")
        wait_until(
            lambda: any(
                s["replica"] == "triton-1" and s["ready"]
                for s in stack.admin("GET", "/servers").json()["triton"]
            ),
            30,
            "the gateway to see triton-1 ready again",
        )
        taken_back = stack.successes("triton-1")
        load.wait_for(200)
        assert stack.successes("triton-1") > taken_back, "the restarted replica gets traffic again"
    assert set(load.statuses) == {200}, (load.statuses, load.errors[:5])


def test_versions_no_spec_needs_are_unloaded_after_the_grace_period(replica_stack: ReplicaStack) -> None:
    stack = replica_stack
    serving_version(stack, 1)
    serving_version(stack, 2)
    for replica in REPLICAS:
        wait_until(lambda replica=replica: stack.loaded(replica) == [2], 60, f"{replica} to unload v1")
    metrics = stack.client.get(stack.specs["agent-triton"].urls["metrics"]).text
    assert 'flywheel_agent_unloads_total{agent="triton",kind="triton"}' in metrics


def publish_corrupt_copy(stack: ReplicaStack, workdir: Path) -> int:
    """v2 published again, then its TorchScript file damaged in the store (a bad disk, say)."""
    folder = workdir / "corrupt"
    manifest = stack.store.fetch(MODEL, 2, folder)
    artifacts = {
        key.replace("/2/", "/{version}/"): path for key, path in artifacts_from_directory(folder).items()
    }
    published = stack.store.publish(
        MODEL, artifacts, framework=manifest.framework, backends=["triton"], signature=manifest.signature
    )
    stored = Path(stack.store.uri.removeprefix("file://")) / "models" / MODEL / str(published.version)
    target = stored / "triton" / MODEL / str(published.version) / "model.pt"
    target.write_bytes(b"not a TorchScript file" + target.read_bytes()[64:])
    return published.version


def test_a_version_no_agent_can_load_never_gets_traffic(replica_stack: ReplicaStack, tmp_path: Path) -> None:
    stack = replica_stack
    serving_version(stack, 2)
    corrupt = publish_corrupt_copy(stack, tmp_path)
    revision = stack.admin("GET", f"/deployments/{MODEL}").json()["revision"]

    # Through the admin API: the deploy fails with each agent's reason; the spec never moved.
    response = stack.deploy(corrupt, "canary", steps=[50, 100], interval_s=1)
    assert response.status_code == 502, response.text
    assert "could not load" in response.json()["error"] and "sha256" in response.json()["error"]
    assert stack.admin("GET", f"/deployments/{MODEL}").json()["revision"] == revision
    assert list(stack.store.storage.list_keys("staging/")) == []

    # Written straight into the store (a GitOps writer, say): the rollout holds while the agents
    # try, then rolls back with their reason in its history; callers never see the candidate.
    specs = SpecStore(stack.store.storage)
    specs.update(
        MODEL,
        lambda current: operations.start_canary(
            current, MODEL, corrupt, "triton", [50, 100], 1.0, baseline={}
        ),
        actor="test",
        action="canary straight into the store",
    )
    controller = RolloutController(
        # One replica's counters (through the balancer they would alternate and restart the
        # window each tick); the rollback comes from the agents' reports either way.
        stack.store,
        GatewayMetricsSource(stack.specs["gateway"].urls["metrics"]),
        stack.url,
        holder="test",
        agent_stale_after_s=15,
    )
    with Load(stack.url) as load:
        decisions: list[dict[str, object]] = []
        wait_until(
            lambda: any(
                "rollback" in str(d["action"]) for d in decisions.extend(controller.tick()) or decisions
            ),
            60,
            "the controller to roll the unloadable candidate back",
        )
    spec = specs.get(MODEL)
    assert [v.version for v in spec.variants] == [2] and spec.rollout is not None
    assert spec.rollout.status == "rolled_back"
    assert "could not load" in spec.history[-1].reason and "sha256" in spec.history[-1].reason
    assert set(load.statuses) == {200}, load.errors[:5]


GATEWAYS = ("gateway", "gateway-1")


def test_a_gateway_replica_killed_under_load_costs_no_request_through_the_balancer(
    replica_stack: ReplicaStack,
) -> None:
    stack = replica_stack
    serving_version(stack, 1)
    with Load(stack.url) as load:
        load.wait_for(200)
        served = {
            gw: metric_value(stack.gateway_metrics(gw), "flywheel_gateway_requests_total") for gw in GATEWAYS
        }
        assert all(count > 0 for count in served.values()), f"the balancer spreads: {served}"
        stack.kill("gateway-1")
        load.wait_for(300)
        stack.start("gateway-1")
        wait_until(
            lambda: metric_value(stack.gateway_metrics("gateway-1"), "flywheel_gateway_requests_total") > 0,
            60,
            "the balancer to send to the restarted replica again",
        )
        load.wait_for(100)
    # HAProxy replays an inference a dying replica never answered on the other one; what can
    # still fail is a request whose answer was half written when the replica died: at most one
    # per client thread (4), and nothing but a dropped connection or a 502 for it.
    failed = load.total() - load.statuses[200]
    print(f"gateway replica killed under load: {failed} of {load.total()} requests failed: {load.errors}")
    assert failed <= 4 and set(load.statuses) <= {200, 0, 502}, (load.statuses, load.errors[:5])


def test_a_canary_split_holds_on_each_gateway_replica(replica_stack: ReplicaStack) -> None:
    stack = replica_stack
    serving_version(stack, 1)
    response = stack.deploy(2, "canary", weight=30)
    assert response.status_code == 200, response.text
    try:
        for gw in GATEWAYS:
            wait_until(
                lambda gw=gw: (
                    stack.client.get(
                        f"{stack.specs[gw].urls['http']}/v2/models/{MODEL}/versions/2/ready"
                    ).status_code
                    == 200
                ),
                30,
                f"{gw} to route the canary",
            )
        before = {gw: stack.gateway_metrics(gw) for gw in GATEWAYS}
        with Load(stack.url) as load:
            load.wait_for(800)
        assert set(load.statuses) == {200}, load.errors[:5]
        for gw in GATEWAYS:
            after = stack.gateway_metrics(gw)
            counts = {
                variant: metric_value(after, "flywheel_gateway_requests_total", variant=variant)
                - metric_value(before[gw], "flywheel_gateway_requests_total", variant=variant)
                for variant in ("triton-v1", "triton-v2")
            }
            total = sum(counts.values())
            assert total > 150, f"{gw} served too little to judge: {counts}"
            # 30 % +- 10 points: far outside a binomial's spread at this size, yet a broken split
            # (all to one variant, or the weights ignored on one replica) fails.
            assert abs(counts["triton-v2"] / total - 0.30) < 0.10, f"{gw}: {counts}"
    finally:
        serving_version(stack, 1)


def test_drift_sampled_on_two_gateway_replicas_adds_up_to_one_verdict(replica_stack: ReplicaStack) -> None:
    import numpy as np
    import orjson
    from prometheus_client import CollectorRegistry

    from monitoring.drift import Thresholds
    from monitoring.exporter import DriftExporter, gateway_bins, merged_gateway_bins
    from tests.serving.test_drift_exporter import in_distribution

    stack = replica_stack
    serving_version(stack, 1)
    profile = orjson.loads(stack.store.read_artifact(MODEL, 1, "profile.json"))
    urls = [stack.specs[gw].urls["metrics"] for gw in GATEWAYS]
    merged = merged_gateway_bins(urls)
    exporter = DriftExporter(
        stack.store, merged, CollectorRegistry(), window_s=600, thresholds=Thresholds(min_samples=300)
    )
    exporter.collect_once(now=0.0)
    first = {url: gateway_bins(url)() for url in urls}

    feature = next(iter(profile["features"]))
    edges = profile["features"][feature]["edges"]
    shifted = in_distribution(
        profile, 480, np.random.default_rng(11), shift={feature: 2 * (edges[-1] - edges[0])}
    )
    with httpx.Client(timeout=30) as client:
        for start in range(0, len(shifted), 16):
            body = v2_body(shifted[start : start + 16])
            assert (
                client.post(f"{stack.url}/v2/models/{MODEL}/versions/1/infer", json=body).status_code == 200
            )

    def rows(counts: dict, url: str) -> float:
        new = sum(counts.get((MODEL, "1"), {}).get(feature, {}).values())
        old = sum(first[url].get((MODEL, "1"), {}).get(feature, {}).values())
        return new - old

    per_replica = [rows(gateway_bins(url)(), url) for url in urls]
    assert all(count > 0 for count in per_replica) and sum(per_replica) == 480, per_replica
    report = exporter.collect_once(now=1.0)[(MODEL, "1")]
    # One verdict over both replicas' samples: all 480 rows, and the shifted feature flagged.
    assert {f.samples for f in report.features if f.feature == feature} == {480.0}
    assert feature in [f.feature for f in report.features if f.level == "alert"], report.to_json()


def test_grpc_is_balanced_over_http2_to_both_gateway_replicas(replica_stack: ReplicaStack) -> None:
    import numpy as np
    import tritonclient.grpc as triton_grpc

    stack = replica_stack
    serving_version(stack, 1)
    before = {
        gw: metric_value(stack.gateway_metrics(gw), "flywheel_gateway_requests_total") for gw in GATEWAYS
    }
    features = windows()
    for attempt in range(40):
        # A new channel each time: HAProxy balances connections, and one h2 connection carries
        # all of a channel's calls to one replica.
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{stack.settings.gateway_grpc_port}")
        inputs = [triton_grpc.InferInput("features", list(features.shape), "FP32")]
        inputs[0].set_data_from_numpy(features)
        result = client.infer(MODEL, inputs, request_id=f"grpc-{attempt}")
        assert np.isfinite(result.as_numpy(result.get_response().outputs[0].name)).all()
        client.close()
    after = {
        gw: metric_value(stack.gateway_metrics(gw), "flywheel_gateway_requests_total") for gw in GATEWAYS
    }
    assert all(after[gw] > before[gw] for gw in GATEWAYS), (before, after)


def test_feedback_and_bandit_arms_count_whichever_gateway_replica_gets_them(
    replica_stack: ReplicaStack,
) -> None:
    from serving.gateway.shared_feedback import SharedArms

    stack = replica_stack
    serving_version(stack, 1)
    variants = [
        {"name": f"triton-v{version}", "version": version, "backend": "triton", "weight": 50}
        for version in (1, 2)
    ]
    current = stack.admin("GET", f"/deployments/{MODEL}").json()
    replaced = stack.admin(
        "PUT",
        f"/deployments/{MODEL}",
        json={
            "expected_revision": current["revision"],
            "spec": {"model": MODEL, "strategy": "bandit", "variants": variants},
            "reason": "test: a bandit over two gateway replicas",
        },
    )
    assert replaced.status_code == 200, replaced.text
    served_by, told = (stack.specs[gw].urls["http"] for gw in GATEWAYS)
    body = v2_body(windows())
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for gw in (served_by, told):
        wait_until(
            lambda gw=gw: (
                stack.client.get(f"{gw}/admin/routing", headers=headers).json()[MODEL]["strategy"] == "bandit"
            ),
            10,
            "both replicas to route by the bandit",
        )
    arms_before, _ = SharedArms(stack.store.storage).read(MODEL)
    for _ in range(40):
        response = stack.client.post(f"{served_by}/v2/models/{MODEL}/infer", json=body)
        assert response.status_code == 200
        reward = 1.0 if response.headers["x-flywheel-variant"] == "triton-v2" else 0.0
        # Told to the other replica, which never saw the request: the signed token attributes it.
        posted = stack.client.post(
            f"{told}/v2/models/{MODEL}/feedback",
            json={"id": response.headers["x-request-id"], "reward": reward},
            headers={"x-flywheel-attribution": response.headers["x-flywheel-attribution"]},
        )
        assert (
            posted.status_code == 200 and posted.json()["variant"] == response.headers["x-flywheel-variant"]
        )
    last = {"id": response.headers["x-request-id"], "reward": 1.0}
    token = {"x-flywheel-attribution": response.headers["x-flywheel-attribution"]}
    for gw in (served_by, told):  # one reward per request, whichever replica hears it again
        again = stack.client.post(f"{gw}/v2/models/{MODEL}/feedback", json=last, headers=token)
        assert again.status_code == 409, again.text
    forged = stack.client.post(
        f"{told}/v2/models/{MODEL}/feedback",
        json={"id": "made-up", "reward": 1.0},
        headers={"x-flywheel-attribution": token["x-flywheel-attribution"][:-4] + "AAAA"},
    )
    assert forged.status_code == 400

    arms, _ = SharedArms(stack.store.storage).read(MODEL)
    counted = sum(sum(totals) for totals in arms.values()) - sum(sum(t) for t in arms_before.values())
    assert counted == 40, arms
    # The replica that served but heard no feedback routes by the shared totals too, and so does
    # a replica restarted afterwards (it reads them back from the store).
    stack.kill("gateway")
    stack.start("gateway")
    later = [stack.client.post(f"{served_by}/v2/models/{MODEL}/infer", json=body) for _ in range(60)]
    chosen = [response.headers["x-flywheel-variant"] for response in later]
    assert chosen.count("triton-v2") >= 45, chosen
    serving_version(stack, 1)
