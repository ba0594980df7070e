"""Outgoing notifications against a local server speaking Telegram's Bot API and a local webhook
receiver: routing per account and event kind, rate limits, retry_after, refusals, secrets kept
out of logs, and an engine that never waits for any of it."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.notify.config import NotifySettings, load_notify_settings
from engine.notify.events import Classifier
from engine.notify.notifier import QUEUE_SIZE, Notifier, TokenBucket
from maotrade.errors import ConfigError
from tests.kit import wait_until
from tests.telegram_fake import TelegramBotApi

BOT_TOKEN = "123456:ABC-secret-bot-token"
HOOK_SECRET = "hook-secret-0123456789"

FILL = {"type": "order", "account": "123", "client_order_id": "s-1", "epic": "EURUSD", "qty": 1000,
        "status": "FILLED", "fills": [{"exec_id": "e1", "qty": 1000, "price": 1.085}]}
RISK_DENIAL = {"type": "order", "account": "123", "client_order_id": "s-2", "epic": "EURUSD", "qty": 500,
               "status": "REJECTED", "code": "kill_switch_halted", "error": "kill switch is halted for account 123"}
BROKER_REJECT = {"type": "order", "account": "123", "client_order_id": "s-3", "epic": "EURUSD", "qty": 5,
                 "status": "REJECTED", "reason": "insufficient margin"}


@pytest.fixture
def telegram():
    server = TelegramBotApi(BOT_TOKEN).start()
    yield server
    server.stop()


class WebhookReceiver:
    """A loopback HTTP server recording each POST's headers and body."""

    def __init__(self):
        self.posts: list[tuple[dict, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.posts.append((dict(self.headers), raw))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()


def settings(telegram, routes, hook=None, per_minute=600, burst=50, **telegram_extra) -> NotifySettings:
    channels = {"desk": {"type": "telegram", "bot_token": BOT_TOKEN, "chat_id": "4242",
                         "base_url": telegram.url, **telegram_extra}}
    if hook is not None:
        channels["ops"] = {"type": "webhook", "url": hook.url, "secret": HOOK_SECRET}
    return NotifySettings.model_validate({"channels": channels, "routes": routes,
                                         "rate_limit": {"per_minute": per_minute, "burst": burst}})


@pytest.fixture
def notifier_of():
    made = []

    def make(config):
        notifier = Notifier(config).start()
        made.append(notifier)
        return notifier
    yield make
    for notifier in made:
        notifier.stop()


def test_fill_reaches_telegram_and_routes_filter_account_and_kind(telegram, notifier_of):
    notifier = notifier_of(settings(telegram, [{"channel": "desk", "accounts": ["123"],
                                                "events": ["fill", "risk_denial"]}]))
    for event in (dict(FILL, account="999"), BROKER_REJECT, FILL, RISK_DENIAL):
        notifier.offer(event)
    texts = telegram.wait_texts(lambda t: len(t) >= 2)
    assert texts[0] == "[123] FILL BUY 1000 @ 1.085 EURUSD (FILLED, order s-1)"
    assert texts[1].startswith("[123] RISK DENIED BUY 500 EURUSD: kill switch is halted")
    assert telegram.messages[0]["chat_id"] == "4242"
    notifier.offer({"type": "kill_switch", "account": "123", "mode": "halted"})  # not routed
    notifier.offer(dict(FILL, client_order_id="s-9"))
    telegram.wait_texts(lambda t: len(t) == 3)
    assert "s-9" in telegram.texts()[2] and len(telegram.texts()) == 3


def test_disconnect_reconnect_stale_and_kill_switch_kinds():
    classifier = Classifier()
    notes = [classifier.classify(e) for e in (
        {"type": "account_status", "account": "1", "state": "starting"},
        {"type": "account_status", "account": "1", "state": "ready"},
        {"type": "account_status", "account": "1", "state": "disconnected", "reason": "socket closed"},
        {"type": "account_status", "account": "1", "state": "reconnecting", "reason": "retry 1"},
        {"type": "account_status", "account": "1", "state": "syncing"},
        {"type": "account_status", "account": "1", "state": "ready"},
        {"type": "stale_data", "account": "1", "epic": "EURUSD", "time_frame": 60, "stale": True, "silent_s": 90},
        {"type": "kill_switch", "account": None, "mode": "reduce_only"},
        BROKER_REJECT, {"type": "market_data", "account": "1"})]
    assert [n.kind if n else None for n in notes] == [None, None, "disconnected", None, None, "reconnected",
                                                      "stale_data", "kill_switch",
                     "rejected", None]


def test_webhook_is_json_signed_with_hmac(telegram, hook, notifier_of):
    notifier = notifier_of(settings(telegram, [{"channel": "ops"}], hook=hook))
    notifier.offer(FILL)
    wait_until(lambda: hook.posts, 10, what="webhook post")
    headers, raw = hook.posts[0]
    expected = "sha256=" + hmac.new(HOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    assert headers["X-MAOTrade-Signature"] == expected
    body = json.loads(raw)
    assert body["kind"] == "fill" and body["account"] == "123" and body["data"]["fills"][0]["price"] == 1.085
    assert body["timestamp"] > 0
    assert telegram.messages == []  # the Telegram channel has no route


def test_rate_limit_suppresses_then_says_how_many(telegram, notifier_of):
    clock = [0.0]
    notifier = Notifier(settings(telegram, [{"channel": "desk"}], per_minute=60, burst=2))
    notifier.buckets["desk"] = TokenBucket(notifier.settings.rate_limit, clock=lambda: clock[0])
    notifier.start()
    try:
        for index in range(5):
            notifier.offer(dict(FILL, client_order_id=f"s-{index}"))
        wait_until(lambda: notifier.suppressed["desk"] == 3, 10, what="3 suppressed")
        assert len(telegram.texts()) == 2
        clock[0] += 1.0  # one more token
        notifier.offer(dict(FILL, client_order_id="s-late"))
        texts = telegram.wait_texts(lambda t: len(t) == 3)
        assert "s-late" in texts[2] and "3 earlier notification(s) suppressed" in texts[2]
    finally:
        notifier.stop()


def test_retry_after_is_honoured_and_refusals_logged_without_the_token(telegram, notifier_of, caplog):
    caplog.set_level(logging.WARNING, logger="engine.notify")
    notifier = notifier_of(settings(telegram, [{"channel": "desk"}]))
    telegram.fail_next.append((429, {"description": "Too Many Requests: retry after 1",
                                     "parameters": {"retry_after": 1}}))
    notifier.offer(FILL)
    telegram.wait_texts(lambda t: len(t) == 1)
    assert telegram.requests == 2  # refused once, then sent after retry_after
    telegram.fail_next.append((400, {"description": "Bad Request: chat not found"}))
    notifier.offer(dict(FILL, client_order_id="s-lost"))
    notifier.offer(dict(FILL, client_order_id="s-next"))
    telegram.wait_texts(lambda t: len(t) == 2)
    assert "s-next" in telegram.texts()[1]
    wait_until(lambda: notifier.failed["desk"] == 1, 5, what="one failure counted")
    assert "chat not found" in caplog.text
    assert BOT_TOKEN not in caplog.text and "ABC-secret" not in caplog.text


def test_unreachable_telegram_is_logged_without_the_token(caplog, notifier_of):
    caplog.set_level(logging.WARNING, logger="engine.notify")
    closed = TelegramBotApi(BOT_TOKEN).start()
    closed.stop()  # nothing listens there any more
    notifier = notifier_of(NotifySettings.model_validate({
        "channels": {"desk": {"type": "telegram", "bot_token": BOT_TOKEN, "chat_id": "4242",
                              "base_url": closed.url, "timeout_s": 1}},
        "routes": [{"channel": "desk"}]}))
    from engine.notify import channels
    with pytest.raises(channels.RetryLater) as caught:
        notifier.channels["desk"].send(Classifier().classify(FILL))
    assert BOT_TOKEN not in str(caught.value) and "unreachable" in str(caught.value)


def test_offer_never_waits_for_a_hung_endpoint(telegram, notifier_of):
    telegram.hold.clear()  # every request now hangs
    notifier = notifier_of(settings(telegram, [{"channel": "desk"}], burst=1000, per_minute=6000))
    for index in range(QUEUE_SIZE + 50):
        notifier.offer(dict(FILL, client_order_id=f"s-{index}"))
    # The thread is stuck on the first request; the queue filled and the rest were dropped, not waited for.
    assert notifier.dropped >= 49
    telegram.hold.set()
    notifier.stop(timeout=0.2)  # stopping does not wait for ten thousand deliveries either
    wait_until(lambda: not notifier._thread.is_alive(), 15, what="notifier thread ended")
    assert notifier.abandoned > 0 and notifier.delivered["desk"] < QUEUE_SIZE


def test_settings_errors_name_the_key(tmp_path, monkeypatch):
    path = tmp_path / "notify.json"
    path.write_text(json.dumps({"channels": {"desk": {"type": "telegram", "bot_token": "env:NO_SUCH_VAR_X",
                                                      "chat_id": 1}}, "routes": []}))
    with pytest.raises(ConfigError, match=r"channels\.desk\.telegram\.bot_token: .*NO_SUCH_VAR_X.*not set"):
        load_notify_settings(path)
    monkeypatch.setenv("NO_SUCH_VAR_X", BOT_TOKEN)
    loaded = load_notify_settings(path)
    assert BOT_TOKEN not in repr(loaded)
    path.write_text(json.dumps({"channels": {}, "routes": [{"channel": "desk", "events": ["fill"]}]}))
    with pytest.raises(ConfigError, match="not in channels"):
        load_notify_settings(path)
    path.write_text(json.dumps({"channels": {}, "routes": [], "colour": "red"}))
    with pytest.raises(ConfigError, match="colour"):
        load_notify_settings(path)
    path.write_text(json.dumps({"channels": {}, "routes": [{"channel": "x", "events": ["fills"]}]}))
    with pytest.raises(ConfigError, match="unknown event kind"):
        load_notify_settings(path)
