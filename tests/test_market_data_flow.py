"""Flow control: a strategy slower than its feed loses no completed bar when the source can wait."""
from __future__ import annotations

from tests.engine_kit import engine_on_account
from tests.kit import wait_until
from maotrade.client import EngineClient
from maotrade.messages import message

FLOOD = "tests.brokers.flood.FloodAccountManager"
BARS = 1_000_000  # far more than a client's socket, its session queue and a hold's slack together


def test_a_client_that_stops_reading_pauses_a_pausable_source_and_then_gets_every_bar(tmp_path):
    document = {"idAccount": "731", "brokerName": "flood", "brokerClass": FLOOD,
                "brokerConfig": {"bars": BARS}, "accountConfig": {}, "epicMapping": {}}
    admin, engine = engine_on_account(document, tmp_path, "--allow-broker-class", FLOOD)
    slow = None
    try:
        engine.wait_ready("731")
        slow = EngineClient(engine.info["client_address"], name="slow-reader")
        slow.hello()
        slow.send(message("subscribe", account="731", epic="FLOOD", time_frame=1))
        # The client reads nothing until the engine has paused the flood on its behalf.
        wait_until(lambda: engine.account_status("731")["market_data_held"], 60, what="the flood to be held")
        held = {c["name"]: c for c in engine.status()["clients"]}["slow-reader"]
        assert held["held"] and held["queued_bars"] > 0
        expected, gaps = 0, 0
        while expected < BARS:
            for bar in slow.receive(5000):
                if bar.get("type") == "market_data":
                    gaps += bar["date"] != expected
                    expected = bar["date"] + 1
        assert gaps == 0, f"{gaps} jumps in the bars' dates: bars were lost or reordered"
        wait_until(lambda: not engine.account_status("731")["market_data_held"], 30, what="the flood to resume")
        assert {c["name"]: c for c in engine.status()["clients"]}["slow-reader"]["conflated"] == 0
    finally:
        if slow is not None:
            slow.close()
        engine.kill()
        admin.stop()
