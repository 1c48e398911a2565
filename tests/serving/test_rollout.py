"""Automatic canary rollouts under steady load: the real controller process, gateway and servers.

A good candidate walks its steps and is promoted by itself; a version ten times slower is rolled
back by itself, having served only a small share of the traffic, and no request fails.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from flywheel.stack.process import stop_process
from model_store import ModelStore
from serving.rollout.service import rollout_service
from tests.pipeline_fixtures import MODEL
from tests.serving.gateway_fixtures import GatewayStack, publish_patched_copy, v2_body, windows
from tests.support import start_and_wait, wait_until


class ControllerProcess:
    def __init__(self, stack: GatewayStack) -> None:
        self.stack = stack
        settings = stack.settings.model_copy(update={"rollout_tick_s": 0.3, "rollout_lease_ttl_s": 3.0})
        self.spec = rollout_service(settings)
        self.record = start_and_wait(self.spec, stack.workdir, "rollout-controller", timeout_s=60)

    def kill_and_restart(self) -> None:
        os.killpg(self.record.pid, signal.SIGKILL)
        self.record = start_and_wait(self.spec, self.stack.workdir, "rollout-controller", timeout_s=60)


@pytest.fixture(scope="module")
def controller_process(gateway_stack: GatewayStack) -> Iterator[ControllerProcess]:
    process = ControllerProcess(gateway_stack)
    yield process
    stop_process(process.record, 10)


@pytest.fixture
def controller(controller_process: ControllerProcess) -> GatewayStack:
    return controller_process.stack


class SteadyLoad:
    """Two clients sending routed requests back to back, recording status and variant."""

    def __init__(self, url: str) -> None:
        self.url = url
        #: (status, variant that answered, variant it failed over from or "") per request.
        self.seen: list[tuple[int, str, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(seed,)) for seed in range(2)]

    def _send(self, seed: int) -> None:
        body = v2_body(windows(seed=seed))
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(f"{self.url}/v2/models/{MODEL}/infer", json=body)
                except httpx.HTTPError:  # the gateway itself restarting: counted as a failure
                    self.seen.append((0, "", ""))
                    continue
                headers = response.headers
                self.seen.append(
                    (
                        response.status_code,
                        headers.get("x-flywheel-variant", ""),
                        headers.get("x-flywheel-failover-from", ""),
                    )
                )

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def failures(self) -> int:
        return sum(status != 200 for status, _, _ in self.seen)

    def failed(self) -> collections.Counter[tuple[int, str]]:
        """What the failures were: (status, variant) -> count (status 0: no HTTP answer)."""
        return collections.Counter((status, variant) for status, variant, _ in self.seen if status != 200)

    def share(self, variant: str) -> float:
        return collections.Counter(v for _, v, _ in self.seen)[variant] / max(len(self.seen), 1)


def rollout_of(stack: GatewayStack) -> dict[str, Any]:
    return dict(stack.admin("GET", f"/deployments/{MODEL}").json()["rollout"] or {})


ERROR_ON_EVERY_FIFTH = """            self.served = getattr(self, "served", 0) + 1
            if self.served % 5 == 0:
                code = getattr(pb_utils.TritonError, "INTERNAL", None)
                fault = pb_utils.TritonError("injected fault")
                if code is not None:
                    fault = pb_utils.TritonError("injected fault", code)
                responses.append(pb_utils.InferenceResponse(error=fault))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))
"""
BAD_CANDIDATES = {
    # A version ten times slower: a sleep in front of every batch.
    "slow": (
        "    def execute(self, requests):\n",
        "    def execute(self, requests):\n        __import__('time').sleep(0.05)\n",
    ),
    # A version that fails a fifth of its requests.
    "erroring": (
        "            responses.append(pb_utils.InferenceResponse(output_tensors=[tensor]))\n",
        ERROR_ON_EVERY_FIFTH,
    ),
    # A version whose predictions are off by three orders of magnitude.
    "disagreeing": (
        "                outputs = self.model(batch).cpu().numpy().astype(np.float32)",
        "                outputs = (self.model(batch).cpu().numpy() * 1000.0).astype(np.float32)",
    ),
}


#: Test windows are random, not market data: two versions' prediction histograms differ for that
#: reason alone, so rollouts of a *good* candidate in these tests do not gate on prediction drift.
NO_PSI_GATE = {"analysis": {"max_prediction_psi": 1000}}


def serve_only(stack: GatewayStack, name: str, version: int, backend: str) -> None:
    """Route everything to ``name`` and wait until the gateway answers from it: a rollout test's
    load must not start on the previous test's variant (a blue-green check once counted those)."""
    stack.replace(
        {
            "model": MODEL,
            "strategy": "single",
            "variants": [{"name": name, "version": version, "backend": backend, "weight": 100}],
        }
    )

    def answers_from_it() -> bool:
        response = stack.infer(windows(seed=9))
        return response.status_code == 200 and response.headers.get("x-flywheel-variant") == name

    wait_until(answers_from_it, 60, f"the gateway to serve {name} only", interval_s=0.2)


@dataclass
class RolloutRun:
    spec: dict[str, Any]
    load: SteadyLoad
    actions: list[str]  # the controller's decisions in this rollout, in order
    served_before_end: int


def roll_out(
    stack: GatewayStack,
    version: int,
    backend: str,
    strategy: str,
    during: Callable[[], None] | None = None,
    **deploy: Any,
) -> RolloutRun:
    """Deploy under steady load, let the controller run it to its end, return what happened."""
    with SteadyLoad(stack.url) as load:
        wait_until(lambda: len(load.seen) > 20, 30, "load")
        stack.deploy(version, backend, strategy, **deploy)
        if during is not None:
            during()
        wait_until(lambda: rollout_of(stack).get("status") != "running", 90, "the rollout to end")
        wait_until(
            lambda: stack.admin("GET", f"/deployments/{MODEL}").json().get("pending_champion") is None,
            30,
            "the promotion to finish (champion alias)",
        )
        served = len(load.seen)
    spec = stack.admin("GET", f"/deployments/{MODEL}").json()
    start = max(i for i, entry in enumerate(spec["history"]) if entry["reason"] == deploy["reason"])
    actions = [e["action"] for e in spec["history"][start + 1 :] if e["actor"] == "rollout-controller"]
    return RolloutRun(spec, load, actions, served)


def test_a_good_candidate_reaches_100_percent_by_itself(
    controller: GatewayStack, canary: GatewayStack
) -> None:
    serve_only(controller, "torchserve-v1", 1, "torchserve")

    def second_rollout_is_refused() -> None:
        again = controller.admin(
            "POST",
            f"/deployments/{MODEL}/deploy",
            json={"version": 2, "backend": "tfserving", "strategy": "canary"},
        )
        assert again.status_code == 409 and "rolling" in again.json()["error"]

    run = roll_out(
        controller, 2, "triton", "canary", during=second_rollout_is_refused,
        steps=[20, 50, 100], interval_s=2, params=NO_PSI_GATE, reason="rollout test: good",
    )  # fmt: skip
    assert run.spec["rollout"]["status"] == "promoted", run.spec["rollout"]
    assert [v["name"] for v in run.spec["variants"]] == ["triton-v2"]
    assert run.actions == [
        "step 1 of 3: 20% to triton-v2",
        "step 2 of 3: 50% to triton-v2",
        "step 3 of 3: 100% to triton-v2",
        "promote triton-v2 after step 3 of 3 (100%)",
        "champion -> v2",
    ]
    assert run.load.failures() == 0, run.load.failed()
    assert ModelStore.open(controller.settings.resolve_store_uri()).aliases(MODEL)["champion"] == 2


@pytest.mark.parametrize(
    ("kind", "reason"), [("slow", "p99"), ("erroring", "error rate"), ("disagreeing", "PSI")]
)
def test_a_bad_candidate_is_rolled_back_by_itself(
    controller: GatewayStack, canary: GatewayStack, tmp_path: Path, kind: str, reason: str
) -> None:
    bad = publish_patched_copy(
        ModelStore.open(controller.settings.resolve_store_uri()), tmp_path, *BAD_CANDIDATES[kind]
    )
    serve_only(controller, "triton-v2", 2, "triton")
    # Only the check under test may fail: this load is not the training distribution, so the
    # prediction PSI of any version sits near its limit and could trip first.
    params = {} if kind == "disagreeing" else {"params": {"analysis": {"max_prediction_psi": 100.0}}}
    run = roll_out(
        controller,
        bad,
        "triton",
        "canary",
        steps=[20, 50, 100],
        interval_s=5,
        reason=f"rollout test: {kind}",
        **params,
    )
    assert run.spec["rollout"]["status"] == "rolled_back", run.spec["rollout"]
    assert [v["name"] for v in run.spec["variants"]] == ["triton-v2"]
    assert run.actions == ["step 1 of 3: 20% to triton-v" + str(bad), "rollback at step 1 of 3 (20%)"]
    assert reason in run.spec["history"][-1]["reason"], run.spec["history"][-1]
    assert run.load.failures() <= 0.01 * run.served_before_end, (
        f"{run.load.failures()} of {run.served_before_end}"
    )
    assert run.load.share(f"triton-v{bad}") < 0.2, "rolled back during the first step"


def test_a_controller_killed_mid_canary_resumes_without_skipping_or_repeating(
    controller_process: ControllerProcess, canary: GatewayStack
) -> None:
    stack = controller_process.stack
    serve_only(stack, "torchserve-v1", 1, "torchserve")

    def kill_at_step_two() -> None:
        wait_until(lambda: rollout_of(stack).get("step") == 1, 60, "step 2")
        controller_process.kill_and_restart()  # SIGKILL: no goodbye, the lease is left to expire

    run = roll_out(
        stack, 2, "triton", "canary", during=kill_at_step_two,
        steps=[20, 50, 100], interval_s=3, params=NO_PSI_GATE, reason="rollout test: restart",
    )  # fmt: skip
    assert run.spec["rollout"]["status"] == "promoted"
    assert run.actions == [
        "step 1 of 3: 20% to triton-v2",
        "step 2 of 3: 50% to triton-v2",
        "step 3 of 3: 100% to triton-v2",
        "promote triton-v2 after step 3 of 3 (100%)",
        "champion -> v2",
    ], "each step exactly once across the restart"
    assert run.load.failures() == 0, run.load.failed()


def test_a_blue_green_rollout_switches_under_load_without_failures_and_retires_blue(
    controller: GatewayStack, canary: GatewayStack
) -> None:
    serve_only(controller, "torchserve-v1", 1, "torchserve")
    # Latency is the bad-green test's subject; here a scheduler stall on the busy 2-core machine
    # must not decide the switch (a clean run once rolled back here).
    params = {"analysis": {"max_prediction_psi": 1000, "max_p99_ratio": 20, "min_p99_slack_s": 0.5}}
    run = roll_out(
        controller, 2, "triton", "blue_green", bake_s=2, params=params, reason="rollout test: blue-green"
    )
    # On failure, the controller's own words: why it switched back (a flake under load showed only
    # "rolled_back" once, with the reason cut off).
    why = [(e["action"], e["reason"], e.get("metrics")) for e in run.spec["history"][-3:]]
    assert run.spec["rollout"]["status"] == "promoted", why
    assert [v["name"] for v in run.spec["variants"]] == ["triton-v2"]
    assert run.actions == [
        "blue-green: warming triton-v2 beside torchserve-v1",
        "blue-green: switch all traffic to triton-v2",
        "blue-green: retire torchserve-v1",
        "champion -> v2",
    ]
    assert run.load.failures() == 0, "a blue-green switch under load fails no request"
    # A blue request that stalls while green warms up fails over to green (the gateway says so in
    # x-flywheel-failover-from): that answer is no switch, the first one *routed* to green is.
    colours = [variant for _, variant, failed_over_from in run.load.seen if not failed_over_from]
    switch = colours.index("triton-v2")
    # Two clients: the other one's request already routed to blue may finish after green's
    # first answer; beyond that single in-flight request, no request goes back to blue.
    assert colours[switch:].count("torchserve-v1") <= 1, "the switch is atomic: never back and forth"


def test_a_bad_green_is_switched_back_during_the_bake(
    controller: GatewayStack, canary: GatewayStack, tmp_path: Path
) -> None:
    # Blue's latency baseline is its window from warming to the switch, a few dozen requests on this
    # busy machine: its p99 is nearly its maximum, and one stall there (CI saw it) once let even a
    # 250 ms green pass the 3x check. So: a 500 ms green, and a baseline of 100 blue requests (the
    # switch waits for them), whose p99 a single stall cannot set.
    very_slow = (BAD_CANDIDATES["slow"][0], BAD_CANDIDATES["slow"][1].replace("sleep(0.05)", "sleep(0.5)"))
    store = ModelStore.open(controller.settings.resolve_store_uri())
    slow = publish_patched_copy(store, tmp_path, *very_slow)
    serve_only(controller, "triton-v2", 2, "triton")
    # Latency is this test's subject: the load is not the training distribution, so the green's
    # prediction PSI sits near its limit and could decide first (it did once v2 was tuned).
    run = roll_out(
        controller, slow, "triton", "blue_green", bake_s=10, reason="rollout test: slow green",
        params={"analysis": {"max_prediction_psi": 100.0, "min_latency_requests": 40, "min_requests": 100}},
    )  # fmt: skip
    why = "\n".join(f"{e['action']}: {e['reason']} {e.get('metrics')}" for e in run.spec["history"][-4:])
    assert run.spec["rollout"]["status"] == "rolled_back", why
    assert run.spec["params"]["active"] == "triton-v2"
    assert run.actions[-1] == "blue-green: switch back to triton-v2"
    assert "p99" in run.spec["history"][-1]["reason"]
    assert run.load.failures() == 0, run.load.failed()


def test_prometheus_and_the_gateway_give_the_analysis_the_same_counters(
    gateway_stack: GatewayStack, canary: GatewayStack, tmp_path: Path
) -> None:
    """The multi-replica source (a real Prometheus scraping the gateway) agrees with the embedded one."""
    from monitoring.services import prometheus_service
    from serving.rollout.analysis import GatewayMetricsSource, PrometheusMetricsSource
    from tests.support import free_port

    port = free_port()
    gateway_host = canary.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: gateway\n    static_configs:\n"
        f"      - targets: ['{gateway_host}']\n"
    )
    prometheus = start_and_wait(
        prometheus_service("prom-rollout", tmp_path / "prometheus.yml", tmp_path / "prom-data", port),
        tmp_path,
        "prometheus",
        timeout_s=60,
    )
    try:
        for seed in range(30):
            assert canary.infer(windows(seed=seed)).status_code == 200
        variants = {"torchserve-v1": 1, "tfserving-v2": 2}
        embedded = GatewayMetricsSource(f"{canary.url}/metrics")
        scraped = PrometheusMetricsSource(f"http://127.0.0.1:{port}")

        def agree() -> bool:
            ours, theirs = embedded.snapshot(MODEL, variants), scraped.snapshot(MODEL, variants)
            return all(
                ours[name].requests == theirs[name].requests
                and ours[name].latency_buckets == theirs[name].latency_buckets
                and ours[name].prediction_bins == theirs[name].prediction_bins
                for name in variants
            )

        wait_until(agree, 30, "Prometheus to scrape the same counters")
        assert embedded.snapshot(MODEL, variants)["torchserve-v1"].requests > 0
    finally:
        stop_process(prometheus, 10)


def test_a_gateway_restarted_mid_step_restarts_the_window_instead_of_judging_it(
    controller: GatewayStack, canary: GatewayStack
) -> None:
    """Its counters start from zero again: the step holds, then decides on fresh counters."""
    serve_only(controller, "torchserve-v1", 1, "torchserve")

    def restart_gateway_at_step_two() -> None:
        wait_until(lambda: rollout_of(controller).get("step") == 1, 60, "step 2")
        controller.restart("gateway")

    run = roll_out(
        controller, 2, "triton", "canary", during=restart_gateway_at_step_two,
        steps=[20, 50, 100], interval_s=3, params=NO_PSI_GATE, reason="rollout test: gateway restart",
    )  # fmt: skip
    assert run.spec["rollout"]["status"] == "promoted", run.spec["rollout"]
    assert "step 2 of 3 (50%): window restarted" in run.actions, run.actions
    entry = next(e for e in run.spec["history"] if e["action"] == "step 2 of 3 (50%): window restarted")
    assert "counters restarted" in entry["reason"]
    verdicts = [
        e["metrics"] for e in run.spec["history"] if e["actor"] == "rollout-controller" and e["metrics"]
    ]
    assert all(v.get("stable_requests", 0) >= 0 and v.get("candidate_requests", 0) >= 0 for v in verdicts)


def test_a_rollout_holds_while_the_stable_server_is_down_then_goes_on(
    controller: GatewayStack, canary: GatewayStack
) -> None:
    """The candidate silently taking all traffic is no evidence: the step holds and says why."""
    serve_only(controller, "torchserve-v1", 1, "torchserve")
    held: list[dict[str, Any]] = []

    def stable_server_down_in_step_one() -> None:
        wait_until(lambda: rollout_of(controller).get("baseline") not in (None, {}), 60, "step 1 baking")
        os.killpg(controller.records["torchserve"].pid, signal.SIGKILL)
        wait_until(
            lambda: (
                "holding" in " ".join((rollout_of(controller).get("last_verdict") or {}).get("reasons", []))
            ),
            60,
            "the step to hold",
        )
        held.append(rollout_of(controller))
        controller.restart("torchserve")

    run = roll_out(
        controller, 2, "triton", "canary", during=stable_server_down_in_step_one,
        steps=[20, 50, 100], interval_s=3, params=NO_PSI_GATE, reason="rollout test: stable down",
    )  # fmt: skip
    assert held and held[0]["step"] == 0, "the step neither passed nor advanced while the stable was down"
    assert run.spec["rollout"]["status"] == "promoted", run.spec["rollout"]
    assert run.actions[:3] == [
        "step 1 of 3: 20% to triton-v2",
        "step 1 of 3 (20%): holding",
        "step 1 of 3 (20%): window restarted",
    ], run.actions
    assert run.load.failures() == 0, "failover while down, failover while TorchServe reloads"


class Labeller:
    """A client whose requests are captured, and a labelling team: each answer's truth arrives a
    moment later as a label file, and the join runs (as the drift exporter's would) into the store.
    The truth agrees in sign with what ``right_version`` answered and opposes any other version."""

    def __init__(self, stack: GatewayStack, right_version: int) -> None:
        from model_store.labels import LabelStore
        from monitoring.join import LabelJoiner

        storage = ModelStore.open(stack.settings.resolve_store_uri()).storage
        self.stack, self.right_version = stack, right_version
        self.labels, self.joiner = LabelStore(storage), LabelJoiner(storage)
        self.labelled = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        import uuid

        import pyarrow as pa

        from model_store.labels import normalise_labels

        body = v2_body(windows(seed=5))
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                ids, truths = [], []
                for _ in range(10):
                    request_id = f"labelled-{uuid.uuid4().hex[:12]}"
                    headers = {"x-request-id": request_id, "x-flywheel-capture": "on"}
                    response = client.post(
                        f"{self.stack.url}/v2/models/{MODEL}/infer", json=body, headers=headers
                    )
                    if response.status_code != 200:
                        continue
                    answer = float(response.json()["outputs"][0]["data"][0])
                    right = int(response.headers["x-flywheel-version"]) == self.right_version
                    ids.append(request_id)
                    truths.append(answer if right else -answer - 1e-3)
                if ids:
                    table = normalise_labels(pa.table({"request_id": ids, "label": truths}), "test-labeller")
                    self.labels.write(MODEL, table, "test-labeller")
                    self.labelled += len(ids)
                self.joiner.run(MODEL)

    def __enter__(self) -> Labeller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def test_joined_labels_roll_back_a_candidate_whose_answers_the_truth_contradicts(
    controller: GatewayStack, canary: GatewayStack
) -> None:
    """No error, no latency, no prediction shift: only the labels that came back, joined in the
    store to the requests each version served, tell the controller the candidate is worse."""
    serve_only(controller, "torchserve-v1", 1, "torchserve")
    with Labeller(controller, right_version=1) as labeller:
        run = roll_out(
            controller, 2, "triton", "canary", steps=[50, 100], interval_s=60, params=NO_PSI_GATE,
            reason="rollout test: labels",
        )  # fmt: skip
    assert run.spec["rollout"]["status"] == "rolled_back", run.spec["rollout"]
    last = run.spec["history"][-1]
    assert "joined labels say the candidate is worse" in last["reason"], last
    assert last["metrics"]["metrics"]["candidate_labels"] >= 20 and labeller.labelled >= 20
    assert run.load.failures() == 0, run.load.failed()
