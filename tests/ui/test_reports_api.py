"""The dashboard's reports: ``maotrade backtest``/``optimize`` write under ``<data dir>/reports``
when given no --out, the dashboard lists them with their figures and serves only their listed
files, by id, to a logged-in browser.

The dashboard's routes run in a real uvicorn server on a free loopback port; the reports are
written by the real CLI.
"""
from __future__ import annotations

import http.client
import json
import threading

import pytest
import requests
import uvicorn
from fastapi import FastAPI

from engine.api.dashboard import COOKIE, mount_dashboard
from engine.api.reports import ReportIndex, report_id
from engine.api.sessions import LoginManager
from tests.engine_kit import run_cli
from tests.kit import free_port, wait_until

MA = "maotrade.examples.ma_cross:MovingAverageCross"
API_TOKEN = "reports-test-api-token-0123456789"


class DashboardOnly:
    """The dashboard's routes alone (no engine: the reports need none), served on a thread."""

    def __init__(self, reports_root):
        app = FastAPI()
        self.logins = LoginManager(API_TOKEN)
        mount_dashboard(app, bridge=None, logins=self.logins, feed=None, reports=ReportIndex(reports_root))
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 10, what="dashboard server")
        self.url = f"http://127.0.0.1:{self.port}"

    def logged_in(self) -> requests.Session:
        session = requests.Session()
        answer = session.post(f"{self.url}/ui/api/login", json={"token": self.logins.new_login_token()})
        assert answer.status_code == 200 and COOKIE in session.cookies
        return session

    def stop(self):
        self.server.should_exit = True
        self.thread.join(5)


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A data dir with one backtest and one optimisation written by the CLI without --out."""
    data_dir = tmp_path_factory.mktemp("reports-data")
    backtest = run_cli("backtest", "--strategy", MA, "--sample", "--epic", "EURUSD", "--param", "fast=5",
                       "--data-dir", str(data_dir), "--no-chart", "--no-progress", timeout=180)
    assert backtest.returncode == 0, backtest.stderr
    optimize = run_cli("optimize", "--strategy", MA, "--epic", "GBPUSD", "--time-frame", "60", "--data",
                       "maotrade/examples/data/GBPUSD-1m.csv.gz", "--trials", "2", "--workers", "1", "--windows",
                       "1", "--min-trades", "0", "--no-chart", "--no-progress", "--data-dir", str(data_dir),
                       timeout=180)
    assert optimize.returncode == 0, optimize.stderr
    return data_dir


@pytest.fixture(scope="module")
def server(written):
    served = DashboardOnly(written / "reports")
    yield served
    served.stop()


def test_the_cli_writes_each_run_into_a_folder_of_its_own_under_the_reports_dir(written):
    folders = sorted(p.name for p in (written / "reports").iterdir())
    assert len(folders) == 2
    assert folders[0].startswith("backtest-") and folders[0].endswith("-MovingAverageCross")
    assert folders[1].startswith("optimize-") and folders[1].endswith("-MovingAverageCross")
    backtest = written / "reports" / folders[0]
    assert (backtest / "report.html").is_file() and (backtest / "results.json").is_file()
    assert json.loads((backtest / "results.json").read_text())["ran_at"].endswith("Z")
    assert (written / "reports" / folders[1] / "best" / "report.html").is_file()


def test_reports_are_listed_with_strategy_time_and_headline_figures(server, written):
    answer = server.logged_in().get(f"{server.url}/ui/api/reports")
    assert answer.status_code == 200
    listed = {r["kind"]: r for r in answer.json()["reports"]}
    assert set(listed) == {"backtest", "optimisation"}
    backtest = listed["backtest"]
    results = json.loads((written / "reports" / backtest["name"] / "results.json").read_text())
    assert backtest["strategy"] == MA and backtest["ran_at"] == results["ran_at"]
    assert backtest["instruments"] == ["EURUSD"] and backtest["main"] == "report.html"
    for name in ("total_return", "sharpe", "max_drawdown", "win_rate", "trades"):
        assert backtest["figures"][name] == results["metrics"][name]
    assert set(backtest["files"]) == {"report.html", "trades.csv", "results.json"}  # --no-chart: no equity.png
    optimisation = listed["optimisation"]
    record = json.loads((written / "reports" / optimisation["name"] / "optimize.json").read_text())
    assert optimisation["main"] == "best/report.html" and optimisation["instruments"] == ["GBPUSD"]
    assert optimisation["figures"]["best_params"] == record["best"]["params"]
    assert optimisation["figures"]["metric"] == "sharpe" and optimisation["figures"]["trials"] == 2
    assert optimisation["id"] == report_id(optimisation["name"])


def test_a_listed_report_is_served_sandboxed_and_framable_by_the_page_only(server, written):
    session = server.logged_in()
    backtest = next(r for r in session.get(f"{server.url}/ui/api/reports").json()["reports"]
                    if r["kind"] == "backtest")
    page = session.get(f"{server.url}/ui/reports/{backtest['id']}/report.html")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (written / "reports" / backtest["name"] / "report.html").read_bytes()
    policy = page.headers["content-security-policy"]
    assert policy.startswith("sandbox allow-scripts;") and "frame-ancestors 'self'" in policy
    assert page.headers["x-frame-options"] == "SAMEORIGIN"
    trades = session.get(f"{server.url}/ui/reports/{backtest['id']}/trades.csv")
    assert trades.status_code == 200 and trades.text.startswith("epic,side,qty")
    assert "allow-scripts" not in trades.headers["content-security-policy"]


def test_reports_need_a_logged_in_session(server):
    session = server.logged_in()
    report = session.get(f"{server.url}/ui/api/reports").json()["reports"][0]
    for path in ("/ui/api/reports", f"/ui/reports/{report['id']}/{report['main']}"):
        stranger = requests.get(server.url + path)
        assert stranger.status_code == 401, path
        assert "not logged in" in stranger.json()["detail"]
        forged = requests.get(server.url + path, cookies={COOKIE: "made-up-session"})
        assert forged.status_code == 401, path
        bearer = requests.get(server.url + path, headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert bearer.status_code == 401, "the dashboard's files want the session cookie"


def test_only_listed_files_of_listed_reports_are_served(server, written, tmp_path):
    session = server.logged_in()
    reports = written / "reports"
    backtest = next(r for r in session.get(f"{server.url}/ui/api/reports").json()["reports"]
                    if r["kind"] == "backtest")
    folder = reports / backtest["name"]
    secret = written / "api.token"
    secret.write_text("do-not-serve")
    (folder / "notes.txt").write_text("not a report file")
    outside = tmp_path / "outside.html"
    outside.write_text("outside the reports dir")
    # A report whose page is a link out of the reports directory.
    linked = reports / "backtest-linked"
    linked.mkdir()
    (linked / "results.json").write_text("{}")
    (linked / "report.html").symlink_to(outside)
    linked_id = report_id("backtest-linked")
    assert linked_id in {r["id"] for r in session.get(f"{server.url}/ui/api/reports").json()["reports"]}
    refused = [f"/ui/reports/{backtest['id']}/notes.txt",
               f"/ui/reports/{backtest['id']}/../../api.token",
               f"/ui/reports/{backtest['id']}/%2e%2e/%2e%2e/api.token",
               f"/ui/reports/{backtest['id']}/..%2f..%2fapi.token",
               f"/ui/reports/{backtest['id']}/{folder}/report.html",
               f"/ui/reports/{backtest['id']}/best/../notes.txt",
               f"/ui/reports/{backtest['name']}/report.html",
               f"/ui/reports/{'0' * 16}/report.html",
               f"/ui/reports/{linked_id}/report.html",
               "/ui/reports/../api.token"]
    cookie = f"{COOKIE}={session.cookies[COOKIE]}"
    for path in refused:
        # http.client sends the path as written (requests would resolve the dot segments first).
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", path, headers={"Cookie": cookie})
        answer = connection.getresponse()
        body = answer.read().decode(errors="replace")
        connection.close()
        assert answer.status == 404, (path, answer.status)
        assert "do-not-serve" not in body and "outside the reports dir" not in body
    assert session.get(f"{server.url}/ui/reports/{linked_id}/results.json").status_code == 200


def test_an_unreadable_record_is_listed_with_its_error(tmp_path):
    broken = tmp_path / "reports" / "runs" / "backtest-broken"
    broken.mkdir(parents=True)
    (broken / "results.json").write_text("{not json")
    (tmp_path / "reports" / "empty").mkdir()
    index = ReportIndex(tmp_path / "reports")
    listed = index.listing()
    assert [r["name"] for r in listed] == ["runs/backtest-broken"]
    assert listed[0]["error"].startswith("results.json unreadable") and listed[0]["figures"] == {}
    # Rewritten (a rerun into the same folder): read again, not served from what was read before.
    (broken / "results.json").write_text(json.dumps({"strategy": {"target": "a:B"}, "metrics": {"sharpe": 1.5}}))
    (broken / "report.html").write_text("<h1>report</h1>")
    again = index.listing()[0]
    assert again["error"] is None and again["strategy"] == "a:B" and again["figures"] == {"sharpe": 1.5}
    assert again["main"] == "report.html"
    assert ReportIndex(tmp_path / "missing").listing() == []
