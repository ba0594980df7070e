"""A local server speaking Telegram's Bot API (``getMe``, ``sendMessage``) on a free loopback port.

Answers as the Bot API does: ``{"ok": true, "result": ...}``, or ``{"ok": false,
"error_code": N, "description": ...}`` (401 for a wrong token, 400 for an unknown chat,
429 with ``parameters.retry_after`` when told to throttle). ``fail_next`` queues error
answers; ``hold`` makes requests wait (an endpoint that hangs).
"""
from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATH = re.compile(r"^/bot(?P<token>[^/]+)/(?P<method>\w+)$")


class TelegramBotApi:
    """The fake server; ``messages`` holds every accepted ``sendMessage`` body, in order."""

    def __init__(self, token: str, chats: tuple = ("4242",)):
        self.token = token
        self.chats = {str(c) for c in chats}
        self.messages: list[dict] = []
        self.requests = 0
        self.fail_next: list[tuple[int, dict]] = []  # (status, extra fields) answered before normal ones
        self.hold = threading.Event()
        self.hold.set()
        self._lock = threading.Lock()
        self._ids = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake.hold.wait(30)
                status, body = fake.answer(self.path, raw, self.headers.get("Content-Type", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "TelegramBotApi":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def _error(code: int, description: str, **extra) -> tuple[int, dict]:
        return code, {"ok": False, "error_code": code, "description": description, **extra}

    def answer(self, path: str, raw: bytes, content_type: str) -> tuple[int, dict]:
        with self._lock:
            self.requests += 1
            match = PATH.match(path)
            if not match:
                return self._error(404, "Not Found")
            if match["token"] != self.token:
                return self._error(401, "Unauthorized")
            if self.fail_next:
                status, extra = self.fail_next.pop(0)
                return self._error(status, extra.pop("description", "error"), **extra)
            if match["method"] == "getMe":
                return 200, {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "fake",
                                                    "username": "fake_bot"}}
            if match["method"] != "sendMessage":
                return self._error(404, "Not Found: method not found")
            try:
                body = json.loads(raw) if "json" in content_type else {}
            except ValueError:
                return self._error(400, "Bad Request: can't parse JSON")
            chat, text = str(body.get("chat_id", "")), body.get("text")
            if not text:
                return self._error(400, "Bad Request: message text is empty")
            if chat not in self.chats:
                return self._error(400, "Bad Request: chat not found")
            if len(text) > 4096:
                return self._error(400, "Bad Request: message is too long")
            self._ids += 1
            self.messages.append(body)
            return 200, {"ok": True, "result": {"message_id": self._ids, "date": int(time.time()),
                                                "chat": {"id": int(chat) if chat.lstrip("-").isdigit() else chat,
                                                         "type": "private"}, "text": text}}

    def texts(self) -> list[str]:
        with self._lock:
            return [m["text"] for m in self.messages]

    def wait_texts(self, predicate, timeout: float = 10.0) -> list[str]:
        from tests.kit import wait_until
        return wait_until(lambda: (lambda t: t if predicate(t) else None)(self.texts()), timeout, interval=0.02,
                          what="telegram messages")
