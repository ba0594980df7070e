"""Shared setup of the review-finding tests: tokens long enough, the test brokers allowed."""
from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

ADMIN_TOKEN = "admin-token-for-the-security-tests-0123456789"
READ_TOKEN = "read-token-for-the-security-tests-0123456789"
API_TOKEN = "api-token-for-the-security-tests-0123456789ab"


@pytest.fixture
def env():
    return {"MAOTRADE_MASTER_KEY": Fernet.generate_key().decode(), "MAOTRADE_ADMIN_TOKEN": ADMIN_TOKEN,
            "MAOTRADE_CONFIG_TOKEN": READ_TOKEN, "MAOTRADE_API_TOKEN": API_TOKEN,
            "MAOTRADE_ALLOW_BROKER_CLASS": "tests.brokers.*"}
