"""A decentralized NATS auth set-up made from scratch: an operator, an account with JetStream, a user.

What ``nsc`` would write, built with ``cryptography`` alone: nkeys (base32 of a prefix, the key and a CRC-16),
JWTs signed ``ed25519-nkey``, a ``nats-server`` configuration (operator mode, memory resolver) and the user's
``.creds`` file. The server checks every key's checksum and every signature, so what it accepts is right.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

__all__ = ["NKey", "Operator", "make_operator"]

_PREFIX = {"operator": 14 << 3, "account": 0, "user": 20 << 3}
_SEED = 18 << 3


def _b32(raw: bytes) -> str:
    raw += binascii.crc_hqx(raw, 0).to_bytes(2, "little")
    return base64.b32encode(raw).decode().rstrip("=")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class NKey:
    kind: str
    key: ed25519.Ed25519PrivateKey

    @classmethod
    def generate(cls, kind: str) -> NKey:
        return cls(kind, ed25519.Ed25519PrivateKey.generate())

    @property
    def public(self) -> str:
        raw = self.key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return _b32(bytes([_PREFIX[self.kind]]) + raw)

    @property
    def seed(self) -> str:
        raw = self.key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                     serialization.NoEncryption())
        prefix = _PREFIX[self.kind]
        return _b32(bytes([_SEED | (prefix >> 5), (prefix & 31) << 3]) + raw)

    def jwt(self, subject: str, name: str, nats: dict[str, Any]) -> str:
        """A JWT about ``subject`` issued (signed) by this key."""
        claims: dict[str, Any] = {"iat": int(time.time()), "iss": self.public, "name": name, "sub": subject,
                                  "nats": {**nats, "version": 2}}
        claims["jti"] = base64.b32encode(hashlib.sha256(orjson.dumps(claims)).digest()).decode().rstrip("=")
        head = _b64url(orjson.dumps({"typ": "JWT", "alg": "ed25519-nkey"})) + "." + _b64url(orjson.dumps(claims))
        return head + "." + _b64url(self.key.sign(head.encode()))


@dataclass(frozen=True)
class Operator:
    operator: NKey
    account: NKey
    user: NKey
    system: NKey
    operator_jwt: str
    account_jwt: str
    user_jwt: str
    system_jwt: str

    def server_config(self) -> str:
        """``nats-server -c`` text: operator mode, the accounts preloaded (JetStream on in the user's; it needs a
        system account)."""
        return (f"operator: {self.operator_jwt}\nsystem_account: {self.system.public}\nresolver: MEMORY\n"
                f"resolver_preload: {{\n  {self.account.public}: {self.account_jwt}\n"
                f"  {self.system.public}: {self.system_jwt}\n}}\n")

    def creds(self, user_jwt: str | None = None) -> str:
        """A ``.creds`` file as ``nsc`` writes it."""
        return ("-----BEGIN NATS USER JWT-----\n" + (user_jwt or self.user_jwt) + "\n------END NATS USER JWT------\n"
                "\n************************* IMPORTANT *************************\nNKEY Seed printed below can be "
                "used to sign and prove identity.\nNKEYs are sensitive and should be treated as secrets.\n\n"
                "-----BEGIN USER NKEY SEED-----\n" + self.user.seed + "\n------END USER NKEY SEED------\n\n"
                "*************************************************************\n")

    def client_auth(self) -> dict[str, Any]:
        """nats-py ``connect`` keywords that sign in as the user, signing here (no file, no nkeys package)."""
        return {"user_jwt_cb": lambda: self.user_jwt.encode(),
                "signature_cb": lambda nonce: _b64url(self.user.key.sign(nonce.encode())).encode()}

    def write_creds(self, path: Path) -> Path:
        path.write_text(self.creds())
        path.chmod(0o600)
        return path


def make_operator() -> Operator:
    operator, account, user = NKey.generate("operator"), NKey.generate("account"), NKey.generate("user")
    system = NKey.generate("account")
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1, "wildcards": True,
                 "conn": -1, "leaf": -1, "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1}
    return Operator(
        operator, account, user, system,
        operator.jwt(operator.public, "test-operator", {"type": "operator"}),
        operator.jwt(account.public, "test-account", {"type": "account", "limits": unlimited,
                                                      "default_permissions": {"pub": {}, "sub": {}}}),
        account.jwt(user.public, "test-user", {"type": "user", "pub": {}, "sub": {}, "subs": -1, "data": -1,
                                               "payload": -1}),
        operator.jwt(system.public, "SYS", {"type": "account", "limits": {**unlimited, "mem_storage": 0,
                                                                           "disk_storage": 0}}),
    )
