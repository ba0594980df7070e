"""Aster's v3 request signature, checked as the exchange checks it (EIP-712 over secp256k1).

A signed v3 request carries ``nonce`` (microseconds), ``user`` (the account's wallet
address), ``signer`` (the address whose key signed) and, last, ``signature``: a 65-byte
secp256k1 signature, hex, over the EIP-712 typed-data hash of one ``Message(string msg)``
whose ``msg`` is the request's parameter string before ``&signature=``, in the domain
``AsterSignTransaction`` version 1, chain id 1666, verifying contract the zero address.

The curve arithmetic is libsecp256k1's (coincurve) and keccak-256 pycryptodome's; only
the typed-data layout of that one message type is written here.
"""
from __future__ import annotations

from Crypto.Hash import keccak
from coincurve import PrivateKey, PublicKey

DOMAIN_NAME, DOMAIN_VERSION = "AsterSignTransaction", "1"
CHAIN_ID = 1666
ZERO_ADDRESS = "0x" + "00" * 20
_DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
_MESSAGE_TYPE = b"Message(string msg)"


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not NIST SHA3-256) of ``data``."""
    return keccak.new(digest_bits=256, data=data).digest()


def typed_message_hash(msg: str, chain_id: int = CHAIN_ID, contract: str = ZERO_ADDRESS) -> bytes:
    """The EIP-712 hash Aster's signer signs for ``msg``."""
    domain = keccak256(keccak256(_DOMAIN_TYPE) + keccak256(DOMAIN_NAME.encode()) + keccak256(DOMAIN_VERSION.encode())
                       + chain_id.to_bytes(32, "big") + bytes.fromhex(contract[2:]).rjust(32, b"\0"))
    message = keccak256(keccak256(_MESSAGE_TYPE) + keccak256(msg.encode()))
    return keccak256(b"\x19\x01" + domain + message)


def address_of_public_key(public_key: PublicKey) -> str:
    """The Ethereum address (lower case hex) of a public key."""
    return "0x" + keccak256(public_key.format(compressed=False)[1:])[-20:].hex()


def address_of(private_key_hex: str) -> str:
    """The Ethereum address (lower case hex) of a hex private key."""
    return address_of_public_key(PrivateKey(bytes.fromhex(private_key_hex.removeprefix("0x"))).public_key)


def recover_signer(msg: str, signature_hex: str) -> str:
    """The address whose key made ``signature_hex`` over ``msg``; ValueError if malformed."""
    try:
        raw = bytes.fromhex(signature_hex.removeprefix("0x"))
    except ValueError:
        raise ValueError("signature is not hex") from None
    if len(raw) != 65:
        raise ValueError(f"signature has {len(raw)} bytes, not 65")
    recovery = raw[64] - 27 if raw[64] >= 27 else raw[64]
    if recovery not in (0, 1):
        raise ValueError(f"signature recovery byte {raw[64]} is not 27/28")
    public_key = PublicKey.from_signature_and_message(raw[:64] + bytes([recovery]), typed_message_hash(msg),
                                                     hasher=None)
    return address_of_public_key(public_key)
