"""Historical data end to end: ``maotrade download`` through a real engine and the paper
worker into the Parquet store, incrementally; ``data list``; a backtest read from the store."""
from __future__ import annotations

import json

import pytest

from account_managers.paper.market import synthetic_bars
from maotrade.backtest.store import HistoryStore, load_stored_bars, missing_spans, parse_day, parse_timerange
from maotrade.backtest.data import DataError
from tests.engine_kit import EngineProcess, run_cli
from tests.kit import WorkerHarness

HOUR = 3600
JAN, FEB, MAR = parse_day("20240101"), parse_day("20240201"), parse_day("20240301")


@pytest.fixture
def engine(tmp_path):
    process = EngineProcess(tmp_path / "data", ["123"], "--no-demo")
    process.wait_ready("123")
    yield process
    process.kill()


def _cli(engine, *args):
    return run_cli(*args, "--data-dir", str(engine.data_dir), timeout=120)


def test_download_is_incremental_and_equals_the_brokers_history(engine):
    first = _cli(engine, "download", "--account", "123", "--epic", "EURUSD", "--time-frame", str(HOUR),
                 "--from", "20240101", "--to", "20240201", "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "744 bars of EURUSD" in first.stdout  # 31 days x 24 hours

    again = _cli(engine, "download", "--account", "123", "--epic", "EURUSD", "--time-frame", str(HOUR),
                 "--from", "20240101", "--to", "20240201", "--no-progress")
    assert again.returncode == 0 and "already stored" in again.stdout

    # Only February is missing: only February is fetched.
    more = _cli(engine, "download", "--account", "123", "--epic", "EURUSD", "--time-frame", str(HOUR),
                "--from", "20240101", "--to", "20240301", "--no-progress")
    assert more.returncode == 0, more.stderr
    assert "696 bars of EURUSD" in more.stdout  # 29 days x 24 hours

    store = HistoryStore(engine.data_dir / "history")
    assert store.coverage("123", "EURUSD", HOUR) == [(JAN, MAR)]
    rows = store.read("123", "EURUSD", HOUR)
    expected = synthetic_bars("EURUSD", 1.0850, 42, HOUR, JAN, MAR, 10**6)
    assert [r[0] for r in rows] == [b["date"] for b in expected]
    assert [r[4] for r in rows] == pytest.approx([b["close"] for b in expected], rel=1e-12)

    listed = _cli(engine, "data", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [series] = json.loads(listed.stdout)
    assert (series["account"], series["epic"], series["time_frame"], series["bars"]) == ("123", "EURUSD", HOUR, 1440)
    assert (series["first"], series["last"]) == (JAN, MAR - HOUR * 1000)
    table = _cli(engine, "data", "list")
    assert "EURUSD" in table.stdout and "1440" in table.stdout


def test_backtest_reads_the_store_with_a_time_range(engine, tmp_path):
    got = _cli(engine, "download", "--account", "123", "--epic", "EURUSD", "--time-frame", "900",
               "--from", "20240101", "--to", "20240115", "--no-progress")
    assert got.returncode == 0, got.stderr
    result = run_cli("backtest", "--strategy", "maotrade.examples.ma_cross:MovingAverageCross",
                     "--epic", "EURUSD", "--time-frame", "3600", "--timerange", "20240102-20240110",
                     "--param", "time_frame=3600", "--param", "fast=3", "--param", "slow=8",
                     "--data-dir", str(engine.data_dir), "--out", str(tmp_path / "out"), "--no-chart", "--json")
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    # 8 days of hourly bars aggregated from the 15-minute download.
    assert figures["metrics"]["bars"] == 8 * 24


def test_download_of_an_unknown_instrument_fails_in_one_line(engine):
    result = _cli(engine, "download", "--account", "123", "--epic", "NOPE", "--time-frame", "60",
                  "--from", "20240101", "--to", "20240102", "--no-progress")
    assert result.returncode == 1
    assert "unknown instrument 'NOPE' for account 123" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_broker_without_history_refuses_clearly(tmp_path):
    document = {"idAccount": "77", "brokerName": "flood", "brokerClass": "tests.brokers.flood.FloodAccountManager",
                "brokerConfig": {}, "accountConfig": {}}
    with WorkerHarness({**document}, tmp_path / "w") as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        mark = worker.request("history_request", request={"request_id": "r1", "epic": "X", "epicBroker": "X",
                                                          "time_frame": 60, "start": 0, "end": 60_000})
        answer = worker.wait_type("history_data", since=mark, request_id="r1")
    assert answer["done"] is True and answer["bars"] == []
    assert answer["error"].startswith("history not supported by broker")


def test_a_malformed_history_request_is_answered_with_its_fault(tmp_path):
    document = {"idAccount": "78", "brokerName": "paper", "brokerClass": "paper.PaperAccountManager",
                "brokerConfig": {}, "accountConfig": {}}
    with WorkerHarness(document, tmp_path / "w") as worker:
        worker.wait_type("connection", state="connected", timeout=20)
        mark = worker.request("history_request", request={"request_id": "r2", "epic": "EURUSD",
                                                          "epicBroker": "EURUSD", "time_frame": 60,
                                                          "start": 120_000, "end": 60_000})
        answer = worker.wait_type("history_data", since=mark, request_id="r2")
    assert answer["done"] and "ends (60000) before it starts (120000)" in answer["error"]


def test_missing_spans_and_time_ranges():
    assert missing_spans([(10, 20), (30, 40)], 0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert missing_spans([(0, 100)], 10, 20) == []
    assert missing_spans([(15, 25)], 10, 20) == [(10, 15)]
    assert parse_timerange("20240101-20240301") == (JAN, MAR)
    assert parse_timerange("20240101-") == (JAN, None)
    with pytest.raises(DataError, match="not YYYYMMDD-YYYYMMDD"):
        parse_timerange("2024-01-01")
    with pytest.raises(DataError, match="ends before it starts"):
        parse_timerange("20240301-20240101")


def test_store_refuses_bars_outside_their_span_and_keeps_the_old_file(tmp_path):
    store = HistoryStore(tmp_path)
    bars = synthetic_bars("EURUSD", 1.08, 1, 60, 0, 600_000, 100)
    store.add("a", "EUR/USD", 60, bars[:5], 0, 300_000)
    with pytest.raises(DataError, match="not a 60s bar inside"):
        store.add("a", "EUR/USD", 60, bars[5:], 300_000, 400_000)
    assert len(store.read("a", "EUR/USD", 60)) == 5
    assert store.path("a", "EUR/USD", 60).parent.name == "EUR%2FUSD"
    with pytest.raises(DataError, match="no stored history of GBPUSD"):
        load_stored_bars(tmp_path, "GBPUSD", 60)


def test_download_from_ig_through_the_engine_shows_the_allowance(tmp_path):
    """The whole path against the IG simulator: admin registry, engine, IG worker, CLI, store."""
    from cryptography.fernet import Fernet

    from tests.engine_kit import AdminService
    from tests.ig.conftest import ig_document
    from tests.ig.simulator import IGSimulator

    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(), "MAOTRADE_ADMIN_TOKEN": "test-token"}
    with IGSimulator() as sim:
        document = ig_document(sim)
        admin = AdminService(tmp_path / "admin", env)
        engine = None
        try:
            admin.cli("broker", "add", "ig", "--class", "ig.IGAccountManager",
                      "--config", json.dumps(document["brokerConfig"]))
            admin.cli("account", "add", "701", "--broker", "ig", "--config", json.dumps(document["accountConfig"]))
            admin.cli("mapping", "set", "701", "EURUSD", "CS.D.EURUSD.CFD.IP")
            engine = EngineProcess(tmp_path / "data", ["701"], env=env, config_url=admin.url)
            engine.wait_ready("701")
            result = run_cli("download", "--account", "701", "--epic", "EURUSD", "--time-frame", str(HOUR),
                             "--from", "20240101", "--to", "20240115", "--no-progress",
                             "--data-dir", str(engine.data_dir), env=env, timeout=120)
        finally:
            if engine is not None:
                engine.kill()
            admin.stop()
    assert result.returncode == 0, result.stderr
    assert "240 bars of EURUSD" in result.stdout  # two weeks of weekdays
    assert "broker history allowance: 9760 of 10000 left, resets in" in result.stdout
    store = HistoryStore(engine.data_dir / "history")
    assert store.coverage("701", "EURUSD", HOUR) == [(JAN, parse_day("20240115"))]
    assert {q["resolution"] for q in sim.price_requests} == {"HOUR"}


def test_a_worker_dying_mid_download_ends_the_request_with_an_error(engine):
    import psutil

    from maotrade.messages import message

    five_years = 5 * 365 * 86_400_000
    engine.client.send(message("history_request", account="123", request_id="long", epic="EURUSD", time_frame=60,
                               start=JAN - five_years, end=JAN))
    parts = []

    def answered(predicate):
        for msg in engine.collect():
            if msg.get("type") == "history_data" and msg.get("request_id") == "long":
                parts.append(msg)
        return any(predicate(p) for p in parts)

    from tests.kit import wait_until
    wait_until(lambda: answered(lambda p: p["bars"]), 30, what="the first part")
    psutil.Process(engine.account_status("123")["pid"]).kill()
    wait_until(lambda: answered(lambda p: p["done"]), 30, what="the request to end")
    last = parts[-1]
    assert last["error"] == "account 123: worker died" and last["bars"] == []
    assert not any(p["done"] for p in parts[:-1])


def test_a_time_range_applies_to_data_files_too(tmp_path):
    data = tmp_path / "bars.csv"
    rows = synthetic_bars("EURUSD", 1.085, 42, HOUR, JAN, MAR, 10**6)
    data.write_text("date,open,high,low,close\n" + "".join(
        f"{b['date']},{b['open']},{b['high']},{b['low']},{b['close']}\n" for b in rows))
    common = ["backtest", "--strategy", "maotrade.examples.ma_cross:MovingAverageCross", "--epic", "EURUSD",
              "--time-frame", str(HOUR), "--data", str(data), "--param", f"time_frame={HOUR}",
              "--out", str(tmp_path / "out"), "--no-chart", "--json"]
    result = run_cli(*common, "--timerange", "20240201-")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["bars"] == 29 * 24
    empty = run_cli(*common, "--timerange", "20250101-")
    assert empty.returncode == 2 and "no bars in the time range 20250101-" in empty.stderr
    bad = run_cli(*common, "--timerange", "2024")
    assert bad.returncode == 2 and "not YYYYMMDD-YYYYMMDD" in bad.stderr
