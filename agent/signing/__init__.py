"""Keys, DSSE envelopes and the CloudEvents verifiability extension. Pure and synchronous."""

from .event import PAYLOAD_TYPE, material, sign_event, verify_event
from .keys import SigningKey, VerifyKey, generate_keypair, load_signing_key, load_verify_key, load_verify_keys

__all__ = [
    "PAYLOAD_TYPE",
    "SigningKey",
    "VerifyKey",
    "generate_keypair",
    "load_signing_key",
    "load_verify_key",
    "load_verify_keys",
    "material",
    "sign_event",
    "verify_event",
]
