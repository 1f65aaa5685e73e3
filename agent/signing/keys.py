"""Host keys: generate, load, sign, and the public keys that verify.

The host key is Ed25519 in PKCS#8 PEM (``host.key``, mode 0600) beside its
SubjectPublicKeyInfo PEM (``host.pub``). A key id is the lowercase hex SHA-256
of the raw 32-byte public key. Verification also accepts ECDSA P-256 public
keys (signatures either DER or raw ``r||s``), as the CloudEvents verifiability
extension's test vectors use one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from ..errors import AgentError, SigningError

__all__ = [
    "SigningKey",
    "VerifyKey",
    "generate_keypair",
    "keyid_of",
    "load_signing_key",
    "load_verify_key",
    "load_verify_keys",
    "verify_key_from_pem",
]

KEY_NAME = "host.key"
PUB_NAME = "host.pub"


def keyid_of(public: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey) -> str:
    """Lowercase hex SHA-256 of the raw public key (32 bytes for Ed25519, X9.62 uncompressed for ECDSA)."""
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    else:
        raw = public.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return hashlib.sha256(raw).hexdigest()


class SigningKey:
    """An Ed25519 private key with its key id."""

    __slots__ = ("_key", "keyid", "path", "public_raw", "sign")

    def __init__(self, key: ed25519.Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = key
        self.path = path
        pub = key.public_key()
        self.public_raw: bytes = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.keyid: str = hashlib.sha256(self.public_raw).hexdigest()
        #: ``sign(msg) -> 64-byte signature``; bound once, it is on the hot path
        self.sign = key.sign

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(ed25519.Ed25519PrivateKey.generate())

    def private_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def seed(self) -> bytes:
        """The 32-byte private key (RFC 8032 seed), for a signer outside the cryptography package."""
        return self._key.private_bytes_raw()

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify_key(self) -> VerifyKey:
        return VerifyKey(self._key.public_key())


@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A public key that checks signatures: Ed25519 or ECDSA P-256 (SHA-256)."""

    public: ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

    @property
    def keyid(self) -> str:
        return keyid_of(self.public)

    @property
    def algorithm(self) -> str:
        return "ed25519" if isinstance(self.public, ed25519.Ed25519PublicKey) else "ecdsa-p256-sha256"

    def verify(self, sig: bytes, msg: bytes) -> bool:
        try:
            if isinstance(self.public, ed25519.Ed25519PublicKey):
                self.public.verify(sig, msg)
            else:
                if len(sig) == 64:  # raw r||s, as the extension's vectors carry it
                    sig = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
                self.public.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


#: the most read of a key file: a PEM key is a few hundred bytes (a device such as /dev/zero never ends)
MAX_KEY_FILE = 1 << 16


def read_key_file(path: str | os.PathLike[str], what: str = "key") -> bytes:
    """The bytes of a key file, read only when it is a regular file of at most :data:`MAX_KEY_FILE` bytes: a
    FIFO would hold the reader (and a reload) for ever, and a device could fill the memory. A SigningError
    ``PATH: cannot read WHAT: why`` otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except ValueError:  # a NUL in the path
        raise SigningError(f"{path!s:.200}: cannot read {what}: the path holds a NUL character") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SigningError(f"{path}: cannot read {what}: not a file")
        if st.st_size > MAX_KEY_FILE:
            raise SigningError(f"{path}: cannot read {what}: {st.st_size} bytes, more than a key file holds")
        data = os.read(fd, MAX_KEY_FILE + 1)
    except OSError as exc:
        raise SigningError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE:
        raise SigningError(f"{path}: cannot read {what}: more than a key file holds")
    return data


def _public_pem(path: Path) -> bool:
    """Whether the file starts as a PEM public key (only its first line is read)."""
    try:
        with open(path, "rb") as f:
            return f.readline(64).startswith(b"-----BEGIN PUBLIC KEY-----")
    except OSError:
        return False


def _check_private_mode(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except ValueError:  # a NUL in the path
        raise SigningError(f"{path!s:.200}: cannot read private key: the path holds a NUL character") from None
    except FileNotFoundError:
        made = "" if path.name == "host.key" else f", which writes {path.parent / 'host.key'}: name that one"
        raise SigningError(f"{path}: cannot read private key: no such file (make one with: hoststamp keys generate "
                           f"--dir {path.parent}{made})") from None
    except OSError as exc:
        raise SigningError(f"{path}: cannot read private key: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        raise SigningError(f"{path}: cannot read private key: not a file")
    if _public_pem(path):  # its mode is no matter: the advice to chmod it would be wrong
        raise SigningError(f"{path}: a public key; the host key is the private one (host.key beside it)")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        what = "readable" if mode & (stat.S_IRGRP | stat.S_IROTH) else "open"
        raise SigningError(
            f"{path}: private key is {what} to group or others (mode {stat.S_IMODE(mode):04o}); "
            f"fix it with: chmod 600 {path}"
        )


def load_signing_key(path: str | os.PathLike[str]) -> SigningKey:
    """Load an Ed25519 PKCS#8 PEM private key, refusing group/other-readable files."""
    p = Path(path)
    _check_private_mode(p)  # first: nothing is read from a key others could read too
    data = read_key_file(p, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"{p}: not an unencrypted PKCS#8 PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SigningError(f"{p}: host keys must be Ed25519, found {type(key).__name__}")
    return SigningKey(key, p)


def verify_key_from_pem(data: bytes, *, where: str = "public key") -> VerifyKey:
    try:
        pub = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        said = str(exc).split(". See https://", 1)[0]  # cryptography's message, without its FAQ link
        raise SigningError(f"{where}: not a SubjectPublicKeyInfo PEM public key ({said})") from None
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return VerifyKey(pub)
    if isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1):
        return VerifyKey(pub)
    raise SigningError(f"{where}: unsupported key type {type(pub).__name__} (Ed25519 or ECDSA P-256 only)")


def load_verify_key(path: str | os.PathLike[str], *, public_only: str | None = None) -> VerifyKey:
    """A public key from a PEM file; a private key file yields its public half, unless ``public_only`` names
    what takes public keys only (a trust store, ``verify --pub``): a private key there is one it should never be
    given, refused."""
    p = Path(path)
    data = read_key_file(p)
    if b"PRIVATE KEY" in data:
        if public_only is not None:
            raise SigningError(f"{p}: a private key; {public_only} takes public keys only (the .pub file made "
                               "beside it)")
        return load_signing_key(p).verify_key()
    return verify_key_from_pem(data, where=str(p))


def load_verify_keys(paths: list[str] | tuple[str, ...], *, public_only: str | None = None) -> dict[str, VerifyKey]:
    """Key id -> key, for a trust store."""
    out: dict[str, VerifyKey] = {}
    for path in paths:
        k = load_verify_key(path, public_only=public_only)
        out[k.keyid] = k
    return out


def generate_keypair(directory: str | os.PathLike[str], *, overwrite: bool = False) -> SigningKey:
    """Write ``DIR/host.key`` (0600) and ``DIR/host.pub`` (0644), whatever the umask; a directory made here is
    0700. Return the key."""
    d = Path(directory)
    key_path, pub_path = d / KEY_NAME, d / PUB_NAME
    if key_path.exists() and not overwrite:
        raise SigningError(f"{key_path}: a key already exists; remove it first to make a new one")
    try:
        if not d.is_dir():
            if os.path.lexists(d):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory (something else is in the way)")
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)  # not left to the umask: it holds the private key
        key = SigningKey.generate()
        # both written beside their places first, then renamed in, the public key first: a failure leaves no
        # half pair, and a link, a FIFO or a file at either name is replaced, never followed or opened
        key_tmp = _write_new(key_path, key.private_pem(), 0o600)
        try:
            pub_tmp = _write_new(pub_path, key.public_pem(), 0o644)
            try:
                os.replace(pub_tmp, pub_path)
            except OSError:
                os.unlink(pub_tmp)
                raise
            os.replace(key_tmp, key_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(key_tmp)
            raise
    except OSError as exc:  # a runtime failure (exit 1), not a usage error
        raise AgentError(f"{d}: cannot write keys: {exc.strerror or exc}") from None
    key.path = key_path
    return key


def _write_new(path: Path, data: bytes, mode: int) -> Path:
    """``data`` in a new file beside ``path`` (made with ``mode``, whatever the umask, and synced); its name."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # whatever is there (a link, a FIFO) is not opened
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp
