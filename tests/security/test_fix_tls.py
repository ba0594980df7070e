"""Review finding M8: the FIX Logon password never crosses the network in clear; plain
TCP to a non-loopback FIX host is refused."""
from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from account_managers.fix.config import FIXBrokerSettings
from account_managers.fix.manager import tls_context
from account_managers.fix.session import FixSession
from account_managers.fix.store import SessionStore
from maotrade.config import parse_settings
from maotrade.errors import BrokerUnavailable, ConfigError

PASSWORD = "FixPass-3344"


def _certificate(folder):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class TappedTlsAcceptor:
    """A TLS listener that records what it decrypts, behind a relay that records the raw
    bytes on the wire (what a network observer sees)."""

    def __init__(self, cert_file, key_file):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert_file, key_file)
        self.tls_server = socket.create_server(("127.0.0.1", 0))
        self.relay = socket.create_server(("127.0.0.1", 0))
        self.port = self.relay.getsockname()[1]
        self.wire = bytearray()
        self.decrypted = bytearray()
        self.got_logon = threading.Event()
        threading.Thread(target=self._serve_tls, daemon=True).start()
        threading.Thread(target=self._serve_relay, daemon=True).start()

    def _serve_tls(self):
        raw, _ = self.tls_server.accept()
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):  # the client refused our certificate
            raw.close()
            return
        with conn:
            while b"\x0110=" not in self.decrypted:
                data = conn.recv(4096)
                if not data:
                    break
                self.decrypted.extend(data)
            self.got_logon.set()

    def _serve_relay(self):
        client, _ = self.relay.accept()
        upstream = socket.create_connection(self.tls_server.getsockname())

        def pump(src, dst, record):
            try:
                while data := src.recv(4096):
                    if record:
                        self.wire.extend(data)
                    dst.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump, args=(upstream, client, False), daemon=True).start()
        pump(client, upstream, True)

    def close(self):
        self.tls_server.close()
        self.relay.close()


def test_m8_the_fix_logon_goes_over_tls(tmp_path):
    cert_file, key_file = _certificate(tmp_path)
    acceptor = TappedTlsAcceptor(cert_file, key_file)
    settings = parse_settings(FIXBrokerSettings, {"host": "127.0.0.1", "port": acceptor.port, "sender_comp_id": "C",
                                                  "target_comp_id": "B", "tls": True,
                                                  "tls_ca_file": str(cert_file)}, "brokerConfig")
    session = FixSession(host="127.0.0.1", port=acceptor.port, sender="C", target="B", heartbeat=30,
                         store=SessionStore(tmp_path / "s.sqlite"), handler=None, timeout=1.5, username="fixuser",
                         password=PASSWORD, tls_context=tls_context(settings), tls_server_name="localhost")
    try:
        with pytest.raises(BrokerUnavailable):  # nobody answers the Logon: fine here
            session.logon()
        assert acceptor.got_logon.wait(5)
    finally:
        acceptor.close()
    assert b"35=A" in acceptor.decrypted and f"554={PASSWORD}".encode() in acceptor.decrypted
    assert acceptor.wire and PASSWORD.encode() not in acceptor.wire and b"35=A" not in acceptor.wire


def test_m8_an_untrusted_certificate_is_refused(tmp_path):
    cert_file, key_file = _certificate(tmp_path)
    acceptor = TappedTlsAcceptor(cert_file, key_file)
    session = FixSession(host="127.0.0.1", port=acceptor.port, sender="C", target="B", heartbeat=30,
                         store=SessionStore(tmp_path / "s.sqlite"), handler=None, timeout=1.5, password=PASSWORD,
                         tls_context=ssl.create_default_context(), tls_server_name="localhost")
    try:
        with pytest.raises(BrokerUnavailable, match="TLS handshake"):
            session.logon()
    finally:
        acceptor.close()
    assert PASSWORD.encode() not in acceptor.wire


def test_m8_plain_fix_to_a_remote_host_is_refused():
    base = {"port": 9876, "sender_comp_id": "C", "target_comp_id": "B"}
    with pytest.raises(ConfigError, match="needs tls true"):
        parse_settings(FIXBrokerSettings, {**base, "host": "fix.example.com"}, "brokerConfig")
    parse_settings(FIXBrokerSettings, {**base, "host": "fix.example.com", "tls": True}, "brokerConfig")
    parse_settings(FIXBrokerSettings, {**base, "host": "127.0.0.1"}, "brokerConfig")
