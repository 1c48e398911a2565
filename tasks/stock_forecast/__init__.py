"""The stock forecaster: next-day return from a window of daily OHLCV features (regression).

Raw data is Yahoo-style CSV (synthetic regimes from ``synthetic.py``, real MSFT days from
``real_data.py``); Spark engineers per-day features (``preprocess.py``); windows of ``WINDOW``
days feed an MLP in PyTorch and the same MLP in Keras; RMSE against the random-walk forecast gates.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from model_store.manifest import OutputKind, OutputSpec, Signature
from tasks.base import MetricSpec, SearchBudget, SearchDimension, Split, Task
from tasks.stock_forecast.contract import FEATURE_COLUMNS, TARGET_COLUMN
from tasks.stock_forecast.params import TensorFlowParams, TorchParams


class StockForecastTask(Task):
    name = "stock_forecast"
    summary = "next-day return from a 10-day window of OHLCV features (regression)"
    output = OutputSpec(kind=OutputKind.REGRESSION)
    metric = MetricSpec("rmse", higher_is_better=False, guards={"mae": False, "directional_accuracy": True})
    raw_suffixes = (".csv",)
    vocabulary = frozenset({*FEATURE_COLUMNS, TARGET_COLUMN, "FEATURE_COLUMNS", "TARGET_COLUMN"})
    search_budget = SearchBudget(trials=16, seconds=60.0)
    default_params = {
        "pytorch": asdict(TorchParams()),
        "tensorflow": asdict(TensorFlowParams()),
    }

    def signature(self) -> Signature:
        from tasks.stock_forecast.contract import model_signature

        return model_signature()

    def check_raw(self, path: Path, source: str) -> None:
        from tasks.stock_forecast.preprocess import check_csv_header

        check_csv_header(path, source)

    def preprocess(self, spark: Any, raw_dir: Path, output_dir: Path) -> dict[str, Any]:
        from tasks.stock_forecast.preprocess import run_preprocess

        return run_preprocess(spark, raw_dir, output_dir).as_dict()

    def scoring_inputs(self, spark: Any, raw_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
        from tasks.stock_forecast.dataset import windows_by_symbol
        from tasks.stock_forecast.preprocess import engineer_features, parse_and_clean

        clean, _ = parse_and_clean(spark, raw_dir)
        features = (
            engineer_features(clean, require_target=False)
            .select("symbol", "date", *FEATURE_COLUMNS)
            .toPandas()
        )
        return windows_by_symbol(features)

    def load_splits(self, preprocess_dir: Path) -> dict[str, Split]:
        from tasks.stock_forecast.dataset import load_features, make_windows

        return make_windows(load_features(preprocess_dir / "features"))

    @staticmethod
    def _normalisation(preprocess_dir: Path) -> tuple[np.ndarray, np.ndarray]:
        from tasks.stock_forecast.dataset import normalisation_arrays

        return normalisation_arrays(json.loads((preprocess_dir / "normalization.json").read_text()))

    def train_torch(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        from tasks.stock_forecast.torch_model import train_torch

        return train_torch(splits, *self._normalisation(preprocess_dir), TorchParams(**params))

    def train_keras(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        from tasks.stock_forecast.keras_model import train_tensorflow

        return train_tensorflow(splits, *self._normalisation(preprocess_dir), TensorFlowParams(**params))

    def evaluate(self, target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
        from tasks.stock_forecast.metrics import holdout_report

        return holdout_report(target, np.asarray(prediction).reshape(-1))

    def prediction_profile(self, prediction: np.ndarray, target: np.ndarray | None = None) -> dict[str, Any]:
        from training.profiles import distribution_profile

        return {"prediction": distribution_profile(prediction)}

    def labels_from_raw(self, raw_files: dict[str, Path]) -> pd.DataFrame | None:
        from tasks.stock_forecast.labels import next_day_returns

        return next_day_returns(raw_files)

    def search_space(self) -> dict[str, SearchDimension]:
        return {
            "learning_rate": SearchDimension("log_float", 1e-4, 1e-2),
            "batch_size": SearchDimension("choice", choices=(64, 128, 256)),
            "hidden": SearchDimension("choice", choices=((32, 16), (64, 32), (128, 64))),
        }


TASK = StockForecastTask()
