"""The task contract: everything that is specific to one prediction task, behind one small class.

Training (``training/``) drives a task through this interface: it lands and checks raw data,
runs the task's Spark feature job, reads model-ready splits, trains the PyTorch and Keras models
with the task's defaults, and scores them with the task's metrics for the gate. What serving and
monitoring need from a task travels in the manifest and ``profile.json`` instead (signature,
output kind and class names, what drift bins), so ``serving/``, ``monitoring/`` and ``loadtests/``
never import ``tasks/``.

Adding a task is one folder under ``tasks/`` with a :class:`Task` subclass, and one line in
``tasks/registry.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from model_store.manifest import OutputSpec, Signature

FRAMEWORKS = ("pytorch", "tensorflow")


class RawDataError(ValueError):
    """A raw object the task cannot ingest; the message names it and says why."""


class PreprocessError(ValueError):
    """Input the feature job cannot turn into a dataset; the message names the file(s) and the reason."""


@dataclass(frozen=True)
class Split:
    """Model-ready inputs and targets of one split (train, validation or test)."""

    features: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


@dataclass(frozen=True)
class MetricSpec:
    """The gate's metric, its direction, and guard metrics (name -> higher is better)."""

    primary: str
    higher_is_better: bool
    guards: dict[str, bool] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchDimension:
    """One hyperparameter's range for search (read by the hyperparameter-search step)."""

    kind: Literal["int", "float", "log_float", "choice"]
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class SearchBudget:
    """A retraining run's default hyperparameter-search budget (``FLYWHEEL_HPO_*`` override it)."""

    trials: int
    seconds: float


class Task(ABC):
    """One prediction task. Subclasses set the class variables and implement the methods."""

    #: Registry key, recorded in every manifest the task publishes.
    name: ClassVar[str]
    summary: ClassVar[str]
    output: ClassVar[OutputSpec]
    metric: ClassVar[MetricSpec]
    #: Suffixes of the raw objects ingest takes (lower case, with the dot).
    raw_suffixes: ClassVar[tuple[str, ...]]
    #: Default hyperparameters per framework.
    default_params: ClassVar[dict[str, dict[str, Any]]]
    #: Names only this task may use (features, columns, classes): the boundary test refuses them
    #: anywhere outside ``tasks/``.
    vocabulary: ClassVar[frozenset[str]] = frozenset()
    #: Served inputs are raw data of this task: labelled captures can be trained on
    #: (``raw_from_captures``). False for a task that serves features derived from its raw data.
    learns_from_captures: ClassVar[bool] = False
    #: How much searching ``search_space`` is worth per run: trials of one training each.
    search_budget: ClassVar[SearchBudget] = SearchBudget(trials=4, seconds=60.0)

    @abstractmethod
    def signature(self) -> Signature:
        """What every packaged form of the model takes and returns."""

    @abstractmethod
    def check_raw(self, path: Path, source: str) -> None:
        """Refuse a raw object early (at ingest) with :class:`RawDataError` naming ``source``."""

    @abstractmethod
    def preprocess(self, spark: Any, raw_dir: Path, output_dir: Path) -> dict[str, Any]:
        """The Spark feature job: raw files -> features, ``normalization.json`` and ``profile.json``.

        ``profile.json`` says what drift bins: ``input_view`` (how a request's input becomes one
        row of features: ``last_step`` of a window, ``flat``, ``row_stats`` for each input's mean
        and standard deviation, or ``none``), per-feature bin edges and reference frequencies, in
        that row's feature order. Returns a JSON-able report.
        """

    @abstractmethod
    def scoring_inputs(self, spark: Any, raw_dir: Path) -> tuple[pd.DataFrame, np.ndarray]:
        """New raw files -> (a key per row naming what was scored, the model inputs), for batch scoring.

        A ``source`` key column holding a file's path relative to ``raw_dir`` becomes the raw
        object's S3 URI in the outputs (the reference a labeler follows to the image).
        """

    @abstractmethod
    def load_splits(self, preprocess_dir: Path) -> dict[str, Split]:
        """Train, validation and test splits from the feature job's output."""

    @abstractmethod
    def train_torch(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        """A trained ``torch.nn.Module`` that takes the signature's raw input."""

    @abstractmethod
    def train_keras(self, splits: dict[str, Split], preprocess_dir: Path, params: dict[str, Any]) -> Any:
        """A trained Keras model with the same architecture and the same raw input."""

    @abstractmethod
    def evaluate(self, target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
        """Holdout metrics, plus the reference baseline's under ``<metric>_naive`` keys.

        The gate compares a first model (no champion yet) against that baseline.
        """

    @abstractmethod
    def prediction_profile(self, prediction: np.ndarray, target: np.ndarray | None = None) -> dict[str, Any]:
        """Reference distributions of the model's output, as drift bins them: entries of profile.json.

        ``prediction`` always (a regression's value in quantile bins; a classifier's predicted-class
        histogram with ``"kind": "classes"``), and ``confidence`` for a classifier (max softmax),
        with each confidence bin's ``accuracy`` on ``target`` (the validation labels) when given.
        """

    def search_space(self) -> dict[str, SearchDimension]:
        """Hyperparameters worth searching, shared by both frameworks' builders."""
        return {}

    def raw_from_captures(
        self, request_ids: list[str], inputs: list[dict[str, np.ndarray]], labels: np.ndarray
    ) -> tuple[str, bytes] | None:
        """Captured requests whose labels came back, as one raw object of this task's kind:
        ``(suffix, bytes)`` that ingest takes like any landed batch (each request's first row
        with its label). None for a task whose raw data is not what it serves (the forecaster
        serves feature windows, its raw data is prices)."""
        return None

    def labels_from_raw(self, raw_files: dict[str, Path]) -> pd.DataFrame | None:
        """Ground truth that later raw data reveals, as ``entity`` and ``label`` columns (the entity
        keys callers send as ``x-flywheel-entity``); None for a task whose labels come from people.

        ``raw_files`` maps each raw object's key to a local copy.
        """
        return None

    def params(self, framework: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        if framework not in FRAMEWORKS:
            raise ValueError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
        return {**self.default_params[framework], **(overrides or {})}
