"""Every adapter against its real server: two live versions, pinned inference, unload, bad input, faults."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import numpy as np
import pytest
import torch

from serving.backends.base import BackendUnavailableError, InvalidInputError, VersionNotLoadedError
from tasks.stock_forecast.contract import FEATURE_COLUMNS, WINDOW
from tests.pipeline_fixtures import MODEL
from tests.serving.conftest import LiveServer


def windows(count: int = 6) -> np.ndarray:
    return (
        np.random.default_rng(3)
        .normal(0, 0.01, size=(count, WINDOW, len(FEATURE_COLUMNS)))
        .astype(np.float32)
    )


def reference(store: Any, version: int, features: np.ndarray, tmp: Any) -> np.ndarray:
    """The in-process TorchScript model of a version (TF's SavedModel was checked against Keras elsewhere)."""
    folder = tmp / f"ref-{version}"
    store.fetch(MODEL, version, folder, prefix="torchscript/")
    model = torch.jit.load(str(folder / "torchscript" / "model.pt")).eval()
    with torch.no_grad():
        return model(torch.as_tensor(features)).numpy().reshape(-1)


def test_two_versions_live_then_unload_one(live_server: LiveServer, drifted_run: Any, tmp_path: Any) -> None:
    features = windows()

    async def scenario() -> dict[str, Any]:
        backend = live_server.make_backend()
        try:
            await backend.load(MODEL, 1)
            await backend.load(MODEL, 2)
            loaded = await backend.loaded_versions(MODEL)
            ready = [await backend.ready(MODEL, 1), await backend.ready(MODEL, 2)]
            first = await backend.infer(MODEL, 1, {"features": features})
            second = await backend.infer(MODEL, 2, {"features": features})
            await backend.unload(MODEL, 1)
            with pytest.raises(VersionNotLoadedError) as missing:
                await backend.infer(MODEL, 1, {"features": features})
            still = await backend.infer(MODEL, 2, {"features": features})
            with pytest.raises(InvalidInputError) as bad_shape:
                await backend.infer(MODEL, 2, {"features": features[:, :3, :]})
            # Triton checks declared datatypes; the JSON servers cast numbers, so send text.
            wrong = (
                features.astype(np.int64) if live_server.kind == "triton" else np.full(features.shape, "x")
            )
            with pytest.raises(InvalidInputError) as bad_dtype:
                await backend.infer(MODEL, 2, {"features": wrong})
            return {
                "loaded": loaded,
                "ready": ready,
                "first": first,
                "second": second,
                "missing": missing.value,
                "still": still,
                "bad_shape": bad_shape.value,
                "bad_dtype": bad_dtype.value,
                "after": await backend.loaded_versions(MODEL),
            }
        finally:
            await backend.aclose()

    result = asyncio.run(scenario())
    assert result["loaded"] == [1, 2] and result["ready"] == [True, True]
    first, second = result["first"]["prediction"].reshape(-1), result["second"]["prediction"].reshape(-1)
    if live_server.kind != "tfserving":
        np.testing.assert_allclose(first, reference(drifted_run.store, 1, features, tmp_path), atol=1e-5)
        np.testing.assert_allclose(second, reference(drifted_run.store, 2, features, tmp_path), atol=1e-5)
    assert not np.allclose(first, second), "v1 and v2 are different models"
    np.testing.assert_allclose(result["still"]["prediction"].reshape(-1), second, atol=1e-6)
    assert result["missing"].loaded == [2]
    assert "loaded versions: 2" in str(result["missing"])
    assert result["after"] == [2]
    assert str(result["bad_shape"]).startswith(live_server.kind)
    assert str(result["bad_dtype"]).startswith(live_server.kind), result["bad_dtype"]
    assert "Traceback" not in str(result["bad_dtype"])


def test_a_killed_server_is_reported_unavailable_then_recovers(live_server: LiveServer) -> None:
    features = windows(64)

    async def hammer_while_killing() -> list[object]:
        backend = live_server.make_backend()
        try:
            if 2 not in await backend.loaded_versions(MODEL):
                await backend.load(MODEL, 2)

            async def one() -> object:
                try:
                    return await backend.infer(MODEL, 2, {"features": features})
                except BackendUnavailableError as error:
                    return error

            tasks = [asyncio.create_task(one()) for _ in range(40)]
            await asyncio.sleep(0.05)
            os.killpg(live_server.record.pid, signal.SIGKILL)
            outcomes = list(await asyncio.gather(*tasks))
            outcomes.append(await one())  # certainly after the kill
            return outcomes
        finally:
            await backend.aclose()

    began = time.monotonic()
    outcomes = asyncio.run(hammer_while_killing())
    assert time.monotonic() - began < 30, "nothing may hang past the adapter's timeout"
    assert all(isinstance(o, (dict, BackendUnavailableError)) for o in outcomes)
    assert isinstance(outcomes[-1], BackendUnavailableError)

    live_server.restart()

    async def after_restart() -> Any:
        backend = live_server.make_backend()
        try:
            if 2 not in await backend.loaded_versions(MODEL):
                await backend.load(MODEL, 2)
            return await backend.infer(MODEL, 2, {"features": features})
        finally:
            await backend.aclose()

    assert asyncio.run(after_restart())["prediction"].shape[0] == 64
