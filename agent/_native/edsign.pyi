from collections.abc import Sequence

class Signer:
    def __init__(self, key: bytes) -> None: ...
    def materials(
        self, pae_head: bytes, env_head: bytes, env_mid: bytes, tail: bytes, digests: Sequence[bytes], /
    ) -> list[bytes]: ...
