"""The registry store against a real SQLite file: changing an entry keeps what hangs on it."""
from cryptography.fernet import Fernet

from engine.admin.store import RegistryStore
from maotrade.secrets import SecretBox


def store_with_account(tmp_path) -> RegistryStore:
    store = RegistryStore(tmp_path / "registry.sqlite", SecretBox(Fernet.generate_key()))
    store.put_broker("paper", "paper.PaperAccountManager", {"seed": 1})
    store.put_account("7", "paper", {"initial_balance": 1000})
    store.set_mapping("7", "EURUSD", "CS.D.EURUSD.MINI.IP")
    return store


def test_adding_an_account_again_keeps_its_epic_mappings(tmp_path):
    store = store_with_account(tmp_path)
    store.put_account("7", "paper", {"initial_balance": 2000})
    assert store.get_account("7")["accountConfig"]["initial_balance"] == 2000
    assert store.mappings("7") == {"EURUSD": "CS.D.EURUSD.MINI.IP"}


def test_a_broker_in_use_can_be_changed(tmp_path):
    store = store_with_account(tmp_path)
    store.put_broker("paper", "paper.PaperAccountManager", {"seed": 2})
    assert store.get_broker("paper")["brokerConfig"] == {"seed": 2}
    assert store.get_account("7")["brokerName"] == "paper"
    assert store.mappings("7") == {"EURUSD": "CS.D.EURUSD.MINI.IP"}
