"""A small client of Airflow 3's REST API (``/api/v2``) with the simple auth manager's JWT.

Used by the retrain bridge (trigger a DAG run, idempotently) and by ``flywheel retrain`` (trigger,
then follow the run task by task). The token comes from ``POST /auth/token`` and is fetched again
once when a call answers 401 (tokens expire).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx


class AirflowError(RuntimeError):
    """Airflow answered, but not with what was asked for (for example the DAG is not parsed yet)."""


class AirflowUnavailableError(AirflowError):
    """Airflow could not be reached: retry later."""


@dataclass(frozen=True)
class TaskState:
    task_id: str
    state: str | None


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._client = httpx.Client(timeout=timeout_s)
        self._token: str | None = None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> AirflowClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._client.request(method, f"{self.base_url}{path}", **kwargs)
        except httpx.TransportError as error:
            raise AirflowUnavailableError(f"Airflow at {self.base_url} is unreachable: {error!r}") from error

    def _login(self) -> str:
        response = self._send("POST", "/auth/token", json=self._credentials)
        if response.status_code not in (200, 201):
            raise AirflowError(
                f"Airflow refused the login for {self._credentials['username']!r}: "
                f"HTTP {response.status_code}"
            )
        try:
            token: str = response.json()["access_token"]
        except (ValueError, KeyError, TypeError) as error:
            raise AirflowError(
                f"{self.base_url}/auth/token answered without a token: is this Airflow?"
            ) from error
        return token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(2):
            if self._token is None:
                self._token = self._login()
            response = self._send(method, path, headers={"Authorization": f"Bearer {self._token}"}, **kwargs)
            if response.status_code != 401 or attempt:
                return response
            self._token = None  # expired: log in once more
        raise AssertionError("unreachable")

    def _json(self, response: httpx.Response, what: str) -> Any:
        if response.status_code >= 500:
            raise AirflowUnavailableError(f"{what}: Airflow answered HTTP {response.status_code}")
        if not response.is_success:
            raise AirflowError(f"{what}: HTTP {response.status_code} {response.text[:300]}")
        try:
            return response.json()
        except ValueError as error:
            raise AirflowError(f"{what}: the answer is not JSON: {response.text[:200]!r}") from error

    def trigger(self, dag_id: str, run_id: str, conf: dict[str, Any]) -> Literal["created", "exists"]:
        """Create run ``run_id``; "exists" when Airflow already has it (409), so retries never double."""
        response = self.request(
            "POST",
            f"/api/v2/dags/{dag_id}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": None, "conf": conf},
        )
        if response.status_code == 409:
            return "exists"
        self._json(response, f"trigger {dag_id}/{run_id}")
        return "created"

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"), f"run {dag_id}/{run_id}"
        )
        return result

    def dag_runs(self, dag_id: str, limit: int = 100) -> list[dict[str, Any]]:
        result = self._json(
            self.request(
                "GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": limit, "order_by": "-run_after"}
            ),
            f"runs of {dag_id}",
        )
        runs: list[dict[str, Any]] = result["dag_runs"]
        return runs

    def task_states(self, dag_id: str, run_id: str) -> list[TaskState]:
        result = self._json(
            self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"),
            f"tasks of {dag_id}/{run_id}",
        )
        return [TaskState(item["task_id"], item.get("state")) for item in result["task_instances"]]

    def dag(self, dag_id: str) -> dict[str, Any] | None:
        """The DAG's details, or None while the dag-processor has not parsed it yet."""
        response = self.request("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 404:
            return None
        result: dict[str, Any] = self._json(response, f"DAG {dag_id}")
        return result
