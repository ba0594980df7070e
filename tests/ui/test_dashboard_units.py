"""Pure parts of the dashboard: login tokens and sessions, the balance history's thinning."""
from __future__ import annotations

from engine.api.sessions import LOGIN_TOKEN_TTL_S, MAX_SESSIONS, SESSION_TTL_S, LoginManager
from engine.journal import Journal


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_login_token_works_once_and_expires():
    clock = Clock()
    logins = LoginManager("api-token-xyz-0123456789", clock=clock)
    token = logins.new_login_token()
    granted = logins.login(token)
    assert granted is not None
    session_id, csrf = granted
    assert logins.session(session_id).csrf == csrf
    assert logins.login(token) is None, "a login token is spent by its first use"
    late = logins.new_login_token()
    clock.now += LOGIN_TOKEN_TTL_S + 1
    assert logins.login(late) is None
    assert logins.login("") is None and logins.login("api-token-xyz") is None
    assert logins.login("api-token-xyz-0123456789") is not None  # the API token always logs in


def test_session_idles_out_and_csrf_must_match():
    clock = Clock()
    logins = LoginManager("api-token-xyz-0123456789", clock=clock)
    session_id, csrf = logins.login(logins.new_login_token())
    assert logins.check_csrf(session_id, csrf)
    assert not logins.check_csrf(session_id, csrf[:-1] + "x")
    assert not logins.check_csrf(session_id, None) and not logins.check_csrf(None, csrf)
    clock.now += SESSION_TTL_S - 1
    assert logins.session(session_id) is not None  # use restarts the idle timer
    clock.now += SESSION_TTL_S - 1
    assert logins.session(session_id) is not None
    clock.now += SESSION_TTL_S + 1
    assert logins.session(session_id) is None
    other, other_csrf = logins.login(logins.new_login_token())
    logins.logout(other)
    assert not logins.check_csrf(other, other_csrf)


def test_oldest_session_gives_way_beyond_the_cap():
    logins = LoginManager("api-token-xyz-0123456789")
    first, _ = logins.login(logins.new_login_token())
    for _ in range(MAX_SESSIONS):
        logins.login(logins.new_login_token())
    assert logins.session(first) is None


def test_balance_history_is_thinned_evenly_and_keeps_the_newest(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite")
    try:
        for index in range(50):
            journal.record_balance("1", {"balance": 1000.0 + index, "equity": 2000.0 + index})
        journal.record_balance("2", {"balance": 5.0, "equity": 5.0})
        points = journal.balance_history("1", max_points=10)
        assert len(points) == 10
        assert points[0]["balance"] == 1000.0 and points[-1]["equity"] == 2049.0
        assert [p["balance"] for p in points] == sorted(p["balance"] for p in points)
        assert len(journal.balance_history("1")) == 50
        assert journal.balance_history("1", since=points[-1]["time"] + 1) == []
    finally:
        journal.close()
