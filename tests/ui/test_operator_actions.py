"""Cancel-all and flatten as engine operations: over REST with the bearer token, from the CLI with
its confirmation, for one account and for all, and what they refuse."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
import requests
from cryptography.fernet import Fernet

from tests.engine_kit import ROOT, AdminService, EngineProcess, maotrade_cmd
from tests.kit import free_port, wait_until
from tests.ui.conftest import PAPER

TOKEN = "operator-actions-api-token-0123456789"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("actions")
    env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(), "MAOTRADE_ADMIN_TOKEN": "dashboard-admin-token-long-enough-0123456789",
                    "MAOTRADE_CONFIG_TOKEN": "dashboard-config-token-long-enough-0123456789",
           "MAOTRADE_API_TOKEN": TOKEN}
    admin = AdminService(tmp / "admin", env)
    admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager", "--config", PAPER)
    for account in ("301", "302"):
        admin.cli("account", "add", account, "--broker", "paper", "--config", json.dumps({"initial_balance": 50000}))
        admin.cli("mapping", "set", account, "EURUSD", "EURUSD")
        admin.cli("mapping", "set", account, "GBPUSD", "GBPUSD")
    port = free_port()
    engine = EngineProcess(tmp / "engine", ["301", "302"], "--api-port", str(port), env=env, config_url=admin.url)
    for account in ("301", "302"):
        engine.wait_ready(account)
    engine.api = f"http://127.0.0.1:{port}/api"
    engine.env = env
    yield engine
    engine.kill()
    admin.stop()


def rest(engine, method, path, **body):
    return requests.request(method, f"{engine.api}{path}", json=body, timeout=10,
                            headers={"Authorization": f"Bearer {TOKEN}"})


def place(engine, account, cid, epic, qty, statuses=("FILLED", "ACCEPTED"), **fields):
    mark = engine.mark()
    engine.send("order_open", account=account, client_order_id=cid, epic=epic, qty=qty, **fields)
    return engine.wait_order(cid, set(statuses), since=mark, timeout=15)


def order_status(engine, account, cid):
    return rest(engine, "GET", f"/orders/{account}/{cid}").json()["status"]


def positions(engine, account):
    return {p["epic"]: p["qty"] for p in rest(engine, "GET", f"/accounts/{account}").json()["portfolio"]["positions"]}


def cli(engine, *args, stdin=None):
    return subprocess.run(maotrade_cmd(*args, "--data-dir", str(engine.data_dir)), input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env={**os.environ, **engine.env})


@pytest.fixture(autouse=True)
def active_again(stack):
    yield
    rest(stack, "POST", "/kill-switch", mode="active")
    for account in ("301", "302"):
        rest(stack, "POST", "/kill-switch", mode="active", account=account)


def test_rest_cancel_all_of_one_account_leaves_the_other(stack):
    for cid, account in (("ca-1", "301"), ("ca-2", "301"), ("ca-3", "302")):
        place(stack, account, cid, "EURUSD", 10, order_type="LIMIT", price=0.5)
    answer = rest(stack, "POST", "/cancel-all", account="301")
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert sorted(c["client_order_id"] for c in result["cancelled"]) == ["ca-1", "ca-2"]
    assert result["refused"] == [] and result["account"] == "301" and result["by"] == "api"
    wait_until(lambda: order_status(stack, "301", "ca-1") == order_status(stack, "301", "ca-2") == "CANCELLED",
               15, interval=0.1, what="both cancelled")
    assert order_status(stack, "302", "ca-3") == "ACCEPTED"
    # The CLI asks first: answering no changes nothing.
    refused = cli(stack, "cancel-all", "--account", "302", stdin="n\n")
    assert refused.returncode == 1 and "Cancel all working orders of account 302?" in refused.stdout
    assert order_status(stack, "302", "ca-3") == "ACCEPTED"
    done = cli(stack, "cancel-all", "--account", "302", "--yes")
    assert done.returncode == 0, done.stderr
    assert "cancel sent: account 302 order ca-3" in done.stdout and "1 cancel(s) sent" in done.stdout
    wait_until(lambda: order_status(stack, "302", "ca-3") == "CANCELLED", 15, interval=0.1, what="ca-3 cancelled")


def test_flatten_everything_closes_every_position_and_goes_reduce_only(stack):
    place(stack, "301", "fl-1", "EURUSD", 300, statuses=("FILLED",))
    place(stack, "301", "fl-2", "GBPUSD", -200, statuses=("FILLED",))
    place(stack, "302", "fl-3", "EURUSD", 100, statuses=("FILLED",))
    place(stack, "302", "fl-4", "GBPUSD", 10, order_type="LIMIT", price=0.5)
    result = cli(stack, "flatten", "--yes")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cancel sent: account 302 order fl-4" in result.stdout
    assert "3 closing order(s)" in result.stdout and "kill switch now reduce_only" in result.stdout
    wait_until(lambda: positions(stack, "301") == {"EURUSD": 0, "GBPUSD": 0} and positions(stack, "302") == {
        "EURUSD": 0}, 15, interval=0.1, what="everything flat")
    assert order_status(stack, "302", "fl-4") == "CANCELLED"
    risk = rest(stack, "GET", "/risk").json()
    assert risk["kill_switch"]["global"] == "reduce_only"
    wait_until(lambda: "WARNING flatten of every account by client: 1 cancel(s), 3 closing order(s), 0 not done"
               in stack.output(), 10, what="the console line")
    assert "WARNING kill switch (global): reduce_only" in stack.output()
    # reduce_only holds: a new position is refused.
    assert place(stack, "301", "fl-5", "EURUSD", 10, statuses=("REJECTED",))["code"] == "kill_switch_reduce_only"


def test_flatten_one_account_under_a_global_halt_reports_what_it_could_not_close(stack):
    place(stack, "302", "gh-1", "EURUSD", 50, statuses=("FILLED",))
    assert rest(stack, "POST", "/kill-switch", mode="halted").status_code == 200
    answer = rest(stack, "POST", "/flatten", account="302").json()
    assert answer["closing"] == [] and answer["kill_switch"] == "reduce_only"
    assert len(answer["refused"]) == 1 and "kill switch is halted" in answer["refused"][0]["reason"]
    assert positions(stack, "302")["EURUSD"] == 50  # nothing was sent
    out = cli(stack, "flatten", "--account", "302", "--yes")
    assert out.returncode == 1 and "NOT done: account 302 EURUSD" in out.stdout
    rest(stack, "POST", "/kill-switch", mode="active")
    assert rest(stack, "POST", "/flatten", account="302").json()["closing"][0]["epic"] == "EURUSD"
    wait_until(lambda: positions(stack, "302")["EURUSD"] == 0, 15, interval=0.1, what="302 flat")


def test_flatten_cancels_a_resting_close_and_closes_at_market(stack):
    place(stack, "301", "rc-1", "EURUSD", 100, statuses=("FILLED",))
    # A take-profit-like leg: a reduce-only LIMIT sell far above the market, resting.
    place(stack, "301", "rc-2", "EURUSD", -100, order_type="LIMIT", price=10.0, action="close")
    answer = rest(stack, "POST", "/flatten", account="301").json()
    assert answer["cancelled"] == [{"account": "301", "client_order_id": "rc-2"}], answer
    assert [c["epic"] for c in answer["closing"]] == ["EURUSD"] and answer["refused"] == []
    wait_until(lambda: positions(stack, "301")["EURUSD"] == 0 and order_status(stack, "301", "rc-2") == "CANCELLED",
               15, interval=0.1, what="flat, leg cancelled")


def test_unknown_account_and_missing_token(stack):
    assert rest(stack, "POST", "/cancel-all", account="999").status_code == 404
    assert rest(stack, "POST", "/flatten", account="bad id!").status_code == 422
    assert requests.post(f"{stack.api}/flatten", json={}, timeout=5).status_code == 401
    history = rest(stack, "GET", "/accounts/301/balance-history").json()
    assert history["points"] and history["points"][-1]["balance"] is not None
    assert {f["client_order_id"] for f in history["fills"]} >= {"fl-1", "fl-2"}
