"""The Spark job on the shared session: quarantine, features, split, train-only normalisation, profile."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tasks.stock_forecast.contract import FEATURE_COLUMNS, TARGET_COLUMN
from tasks.stock_forecast.preprocess import PreprocessError, run_preprocess
from tasks.stock_forecast.synthetic import generate

BAD_ROWS = (
    "2022-13-45,1,2,1,1.5,1.5,100\n"  # impossible date
    "2022-03-01,abc,2,1,1.5,1.5,100\n"  # non-numeric price
    "2022-03-02,10,5,9,8,8,100\n"  # high below low
    "2022-03-03,10,11,9,10,10,-5\n"  # negative volume
    "2022-03-04,10,11,9,10,10,100,extra,fields\n"  # too many fields
)


@pytest.fixture(scope="module")
def processed(spark: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("preprocess")
    raw = folder / "raw" / "batch"
    raw.mkdir(parents=True)
    for symbol, frame in generate(3, date(2021, 1, 4), 300, drift=False, seed=3).items():
        frame.to_csv(raw / f"{symbol}.csv", index=False)
    # An export with its columns in another order, no "Adj Close", and CRLF line ends.
    yahoo = generate(["YHOO"], date(2021, 1, 4), 300, drift=False, seed=4)["YHOO"]
    yahoo[["Date", "Close", "Volume", "Open", "High", "Low"]].to_csv(
        raw / "YHOO.csv", index=False, lineterminator="\r\n"
    )
    with (raw / "ACME.csv").open("a") as handle:
        handle.write(BAD_ROWS)
    report = run_preprocess(spark, folder / "raw", folder / "out")
    return folder / "out", report


def test_bad_rows_are_quarantined_with_reasons_not_fatal(processed: tuple[Path, Any]) -> None:
    output, report = processed
    assert report.rows_quarantined == 5
    assert report.quarantine_reasons == {
        "unparsable date": 1,
        "non-numeric price": 1,
        "high below low": 1,
        "negative volume": 1,
        "malformed row": 1,
    }
    quarantine = pd.read_parquet(output / "quarantine")
    assert len(quarantine) == 5 and quarantine["source_file"].str.endswith("ACME.csv").all()
    assert report.symbols == ["ACME", "BOLT", "CRUX", "YHOO"]


def test_features_split_by_time_and_normalisation_from_train_only(processed: tuple[Path, Any]) -> None:
    output, report = processed
    frame = pd.read_parquet(output / "features")
    assert set(frame.columns) >= {*FEATURE_COLUMNS, TARGET_COLUMN, "split", "symbol", "date"}
    assert not frame[list(FEATURE_COLUMNS)].isna().any().any()
    train, validation, test = (frame[frame["split"] == name] for name in ("train", "validation", "test"))
    assert train["date"].max() < validation["date"].min() <= validation["date"].max() < test["date"].min()
    assert report.split_rows == {"train": len(train), "validation": len(validation), "test": len(test)}
    normalisation = json.loads((output / "normalization.json").read_text())
    for column in FEATURE_COLUMNS:
        assert normalisation[column]["mean"] == pytest.approx(train[column].mean(), rel=1e-6, abs=1e-9)
        assert normalisation[column]["std"] == pytest.approx(train[column].std(ddof=0), rel=1e-6)
    # The return feature and the target agree with a plain pandas computation for one symbol.
    acme = frame[frame["symbol"] == "BOLT"].sort_values("date")
    closes = generate(3, date(2021, 1, 4), 300, drift=False, seed=3)["BOLT"].set_index("Date")["Close"]
    expected = closes.pct_change().shift(-1)
    for _, row in acme.head(5).iterrows():
        assert row[TARGET_COLUMN] == pytest.approx(expected[row["date"].isoformat()], rel=1e-9)


def test_profile_holds_reference_bins(processed: tuple[Path, Any]) -> None:
    output, _ = processed
    profile = json.loads((output / "profile.json").read_text())
    assert set(profile["features"]) == set(FEATURE_COLUMNS)
    for entry in profile["features"].values():
        assert len(entry["frequencies"]) == len(entry["edges"]) + 1
        assert sum(entry["frequencies"]) == pytest.approx(1.0)
        assert entry["edges"] == sorted(entry["edges"])
        assert max(entry["frequencies"]) < 0.2, "decile bins hold about a tenth each"


def test_all_rows_quarantined_is_a_clear_error(spark: Any, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "JUNK.csv").write_text(
        "Date,Open,High,Low,Close,Volume\nnot-a-date,1,1,1,1,1\n2024-01-02,x,y,z,w,v\n"
    )
    with pytest.raises(PreprocessError, match=r"every row was quarantined \(2 rows\).*JUNK\.csv"):
        run_preprocess(spark, raw, tmp_path / "out")


def test_schema_mismatch_and_empty_snapshot_name_the_problem(spark: Any, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreprocessError, match="holds no CSV files"):
        run_preprocess(spark, tmp_path / "empty", tmp_path / "out")
    (tmp_path / "wrong").mkdir()
    (tmp_path / "wrong" / "PRICES.csv").write_text("when,price\n2024-01-02,3\n")
    with pytest.raises(ValueError, match=r"PRICES\.csv: schema mismatch"):
        run_preprocess(spark, tmp_path / "wrong", tmp_path / "out")
