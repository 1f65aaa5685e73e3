"""The tamper-evident archive: segments of signed events, an RFC 6962 Merkle tree, signed checkpoints."""
