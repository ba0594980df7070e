"""The Account Manager process: load the broker class, wire its queues, run its loop."""
from __future__ import annotations

import logging
import signal
import sys

import zmq

from engine.lifeline import die_with_parent, watch_engine
from engine.loader import load_broker_class
from maotrade.errors import MAOTradeError, OperationalError
from maotrade.config import secret_fields
from maotrade.log import redact_reports, redact_text, register_secret, setup_logging
from maotrade.protocol import TO_WORKER, from_worker
from maotrade.queues import MessageQueue
from maotrade.secrets import secret_values

log = logging.getLogger(__name__)

def run_worker(spec: dict) -> None:
    """Process entry point. ``spec``: ``config`` (account document with decrypted
    secrets and ``runtime``), ``in_addr``, ``out_addr``, ``log_level``."""
    die_with_parent()
    if spec.get("engine_pid"):
        watch_engine(spec["engine_pid"])
    # Ctrl-C reaches the whole process group; the engine decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    setup_logging(spec.get("log_level", "INFO"), log_file=spec.get("log_file"))
    config = spec["config"]
    account_config = config.get("accountConfig") or {}
    for value in secret_values(account_config):
        register_secret(value)
    ctx = zmq.Context()
    in_queue = MessageQueue.receiver(ctx, spec["in_addr"], TO_WORKER, bind=False, name="in")
    # The redaction choke point: every string of every message this worker sends (bars aside).
    out_queue = MessageQueue.sender(ctx, spec["out_addr"], bind=False, name="out", scrub=redact_reports)
    code = 1
    try:
        cls = load_broker_class(config["brokerClass"])
        for name in secret_fields(cls.account_settings_model) if cls.account_settings_model else ():
            register_secret(account_config.get(name))
        manager = cls(config, in_queue, out_queue)
        code = manager.run()
    except (OperationalError, MAOTradeError) as exc:
        log.error("event=worker_fatal account=%s reason=%s", config.get("idAccount"), exc)
        out_queue.send(from_worker.AccountDisconnected(account=str(config.get("idAccount")),
                                                       reason=redact_text(str(exc)), fatal=True))
        code = 3
    except Exception as exc:
        log.exception("event=worker_crashed account=%s", config.get("idAccount"))
        out_queue.send(from_worker.Error(account=str(config.get("idAccount")),
                                         reason=redact_text(f"worker crashed: {type(exc).__name__}: {exc}")))
        code = 1
    finally:
        in_queue.close(linger_ms=0)
        out_queue.close(linger_ms=2000)
        ctx.term()
    sys.exit(code)
