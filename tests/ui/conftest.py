"""An engine of two paper accounts (123, 124), one IG account (125, on the local IG simulator)
and one Interactive Brokers account (126, on the local fake TWS) with its API and dashboard;
a strategy the tests command; headless Chromium from the system's packages driven by Playwright."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.engine_kit import ROOT, AdminService, EngineProcess
from tests.ib.conftest import ib_document
from tests.ib.fake_tws import FakeTWS
from tests.ig.conftest import EPICS as IG_EPICS
from tests.ig.conftest import ig_document
from tests.ig.simulator import IGSimulator
from tests.kit import free_port, wait_until
from tests.telegram_fake import TelegramBotApi

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Prices that barely move, so a LIMIT buy at 0.5 stays working for the whole module.
PAPER = json.dumps({"seed": 7, "price_interval": 0.2, "volatility": 0.0001, "spread": 0.0001})
API_TOKEN = "dashboard-test-api-token-0123456789"
SHOTS = ROOT / "build" / "ui-screenshots"
BOT_TOKEN = "987654:dashboard-test-bot-token"


class UiStack:
    """Admin service, engine with API, the commanded strategy's files."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.env = {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(), "MAOTRADE_ADMIN_TOKEN": "dashboard-admin-token-long-enough-0123456789",
                    "MAOTRADE_CONFIG_TOKEN": "dashboard-config-token-long-enough-0123456789",
                    "MAOTRADE_API_TOKEN": API_TOKEN}
        self.admin = AdminService(tmp / "admin", self.env)
        self.admin.cli("broker", "add", "paper", "--class", "paper.PaperAccountManager", "--config", PAPER)
        for account in ("123", "124"):
            config = {"initial_balance": 100000, "currency": "USD", "risk": {"max_order_qty": 5000}}
            self.admin.cli("account", "add", account, "--broker", "paper", "--config", json.dumps(config))
            self.admin.cli("mapping", "set", account, "EURUSD", "EURUSD")
        # A third account on IG (the local IG REST + Lightstreamer simulator): another broker on the page.
        self.ig = IGSimulator(tick_interval=0.5).start()
        document = ig_document(self.ig, account="125")
        self.admin.cli("broker", "add", "ig", "--class", "ig.IGAccountManager", "--config",
                       json.dumps(document["brokerConfig"]))
        self.admin.cli("account", "add", "125", "--broker", "ig", "--config", json.dumps(document["accountConfig"]))
        for epic, ig_epic in IG_EPICS.items():
            self.admin.cli("mapping", "set", "125", epic, ig_epic)
        # A fourth on Interactive Brokers (ib_insync against the local fake TWS).
        self.tws = FakeTWS(bar_interval=0.5, tick_interval=0.5).start()
        document = ib_document(self.tws.port, account="126")
        self.admin.cli("broker", "add", "ib", "--class", "ib.IBAccountManager", "--config",
                       json.dumps(document["brokerConfig"]))
        self.admin.cli("account", "add", "126", "--broker", "ib", "--config", json.dumps(document["accountConfig"]))
        for epic, ib_contract in document["epicMapping"].items():
            self.admin.cli("mapping", "set", "126", epic, ib_contract)
        # Notifications of account 123 go to a local server speaking the Telegram Bot API.
        self.telegram = TelegramBotApi(BOT_TOKEN).start()
        notify = tmp / "notify.json"
        notify.write_text(json.dumps({
            "channels": {"desk": {"type": "telegram", "bot_token": "env:TEST_TELEGRAM_TOKEN", "chat_id": "4242",
                                  "base_url": self.telegram.url}},
            "routes": [{"channel": "desk", "accounts": ["123"],
                        "events": ["fill", "risk_denial", "kill_switch", "operator_action"]},
                       {"channel": "desk", "accounts": ["125"], "events": ["disconnected", "reconnected"]}],
            "rate_limit": {"per_minute": 60, "burst": 20}}))
        self.env["TEST_TELEGRAM_TOKEN"] = BOT_TOKEN
        self.commands = tmp / "commands.jsonl"
        self.record = tmp / "record.jsonl"
        self.port = free_port()
        params = ["--param", f"commands={self.commands}", "--param", f"record={self.record}",
                  "--param", 'bar_accounts=["123", "124"]']
        self.engine = EngineProcess(tmp / "engine", ["123", "124", "125", "126"], "--api-port", str(self.port),
                                    "--strategy", "tests.ui.strategies:CommandedStrategy", *params,
                                    "--notify-config", str(notify),
                                    env=self.env, config_url=self.admin.url)
        for account in ("123", "124", "125", "126"):
            self.engine.wait_ready(account)
        self.url = f"http://127.0.0.1:{self.port}"

    def login_url(self) -> str:
        """The one-time login URL the engine printed."""
        found = re.search(r"dashboard: (\S+)", self.engine.output())
        assert found, self.engine.output()
        return found.group(1)

    def strategy_trades(self, tag: str, account: str, qty: float, **fields) -> None:
        """Make the strategy place an order on its next bar."""
        with open(self.commands, "a") as fh:
            fh.write(json.dumps({"tag": tag, "account": account, "epic": "EURUSD", "qty": qty, **fields}) + "\n")

    def strategy_order(self, tag: str, statuses, timeout: float = 20) -> dict:
        """The strategy's latest update of the order it placed for ``tag``, once in one of ``statuses``."""
        def seen():
            if not self.record.exists():
                return None
            lines = [json.loads(x) for x in self.record.read_text().splitlines() if x]
            sent = [x["client_order_id"] for x in lines if x["event"] == "sent" and x.get("tag") == tag]
            if not sent:
                return None
            updates = [x for x in lines if x["event"] == "order" and x["client_order_id"] == sent[0]]
            return updates[-1] if updates and updates[-1]["status"] in statuses else None
        return wait_until(seen, timeout, interval=0.05, what=f"strategy order {tag} in {statuses}")

    def close(self) -> None:
        self.engine.kill()
        self.admin.stop()
        self.telegram.stop()
        self.ig.stop()
        self.tws.stop()


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory):
    stack = UiStack(tmp_path_factory.mktemp("ui"))
    yield stack
    stack.close()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "chromium is not installed (scripts/test installs the Debian package)"
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1600, "height": 1000})
        yield context
        context.close()


@pytest.fixture(scope="module")
def shots():
    """Save a full-page screenshot as build/ui-screenshots/NN-name.png."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    count = [0]

    def take(page, name: str) -> Path:
        count[0] += 1
        path = SHOTS / f"{count[0]:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path
    return take
