"""The QuickFIX test broker: build it on demand, run it on loopback, drive it by stdin.

The broker itself is ``tests/fix/acceptor/acceptor.cpp`` compiled against the system
QuickFIX (``scripts/build-fix-acceptor``); QuickFIX enforces the session rules and
validates every message against the FIX 4.4 data dictionary.

Run it by hand:  ``python -m tests.fix.quickfix_acceptor --port 9878``  (then type
commands such as ``price ES-202412-FUT-CME 4501.5`` or ``fill <ClOrdID> 5``).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Optional

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = ROOT / "build" / "fix-acceptor"
BINARY = BUILD_DIR / "fix-acceptor"
DICTIONARY = BUILD_DIR / "FIX44.xml"
SOURCE = ROOT / "tests" / "fix" / "acceptor" / "acceptor.cpp"
BUILD_SCRIPT = ROOT / "scripts" / "build-fix-acceptor"


def ensure_built() -> Path:
    """Compile the acceptor (and fetch FIX44.xml) unless an up-to-date build exists.

    Test processes running side by side (pytest-xdist workers) build it once: the first
    takes a lock on the build folder, the others wait for it and then find the build fresh.
    """
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with open(BUILD_DIR / ".build-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fresh = (BINARY.exists() and DICTIONARY.exists()
                 and BINARY.stat().st_mtime >= SOURCE.stat().st_mtime)
        if not fresh:
            env = dict(os.environ, PYTHON=sys.executable)
            result = subprocess.run([str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise RuntimeError(f"building the FIX acceptor failed: {result.stderr[-2000:]}")
    return BINARY


class QuickFixAcceptor:
    """One running acceptor process; ``lines`` collects what it prints."""

    def __init__(self, port: int, store_dir: Path, sender: str = "BROKER", target: str = "CLIENT",
                 password: Optional[str] = None, lot: int = 10):
        self.port = port
        self.store_dir = Path(store_dir)
        self.args = [str(ensure_built()), "--port", str(port), "--dict", str(DICTIONARY),
                     "--store", str(self.store_dir), "--sender", sender, "--target", target,
                     "--lot", str(lot)]
        if password:
            self.args += ["--password", password]
        self.proc: Optional[subprocess.Popen] = None
        self.lines: list[str] = []
        self._cond = threading.Condition()

    def start(self, timeout: float = 10.0) -> "QuickFixAcceptor":
        """Start the process and wait until it listens."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        mark = len(self.lines)
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        self.wait_line(lambda line: line == "READY", timeout, since=mark, what="READY")
        return self

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait_line(self, predicate: Callable[[str], bool], timeout: float = 10.0, since: int = 0,
                  what: str = "line") -> str:
        """Return the first printed line (from index ``since``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[since:]:
                    if predicate(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc and self.proc.poll() is not None and not remaining):
                    raise AssertionError(f"acceptor: timed out after {timeout}s waiting for {what}; "
                                         f"last lines: {self.lines[-10:]}")
                self._cond.wait(min(remaining, 0.2))

    def mark(self) -> int:
        """Index to pass as ``since`` to wait for lines printed from now on."""
        with self._cond:
            return len(self.lines)

    def count(self, line: str) -> int:
        """How many times exactly ``line`` was printed."""
        with self._cond:
            return sum(1 for seen in self.lines if seen == line)

    def command(self, line: str, timeout: float = 10.0) -> None:
        """Send one command and wait until the acceptor has carried it out."""
        mark = self.mark()
        verb = line.split()[0]
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        self.wait_line(lambda seen: seen == f"DONE {verb}", timeout, since=mark, what=f"DONE {verb}")

    def stop(self) -> None:
        """Stop the process (politely, then for good)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> "QuickFixAcceptor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: Optional[list[str]] = None) -> int:
    """Run the acceptor in the foreground, forwarding stdin commands."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--store", default=None, help="FileStore folder (default: a temporary one)")
    parser.add_argument("--sender", default="BROKER")
    parser.add_argument("--target", default="CLIENT")
    parser.add_argument("--password", default=None)
    parser.add_argument("--lot", type=int, default=10)
    args = parser.parse_args(argv)
    store = Path(args.store or tempfile.mkdtemp(prefix="fix-acceptor-"))
    acceptor = QuickFixAcceptor(args.port, store, args.sender, args.target, args.password, args.lot)
    acceptor.proc = subprocess.Popen(acceptor.args, stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr)
    print(f"acceptor on 127.0.0.1:{args.port}, store {store}", file=sys.stderr)
    try:
        return acceptor.proc.wait()
    except KeyboardInterrupt:
        acceptor.proc.terminate()
        return acceptor.proc.wait()


if __name__ == "__main__":
    sys.exit(main())
