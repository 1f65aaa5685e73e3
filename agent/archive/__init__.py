"""The tamper-evident archive: segments of signed events, an RFC 6962 Merkle tree, signed checkpoints.

``ArchiveWriter`` appends and seals (the ``archive:`` sink runs it); ``verify_archive``
checks a directory offline; ``make_proof`` / ``check_proof`` make and check inclusion
proof bundles. The format is described in ``docs/archive.md``.
"""

from .layout import ArchiveError
from .policy import ArchiveOptions
from .proof import FORMAT as PROOF_FORMAT
from .proof import ProofCheck, check_proof, dump_proof, load_proof, make_proof, verify_proof_file, write_proof
from .report import Finding, Report, Summary
from .verify import verify_archive
from .writer import ArchiveWriter

__all__ = [
    "PROOF_FORMAT",
    "ArchiveError",
    "ArchiveOptions",
    "ArchiveWriter",
    "Finding",
    "ProofCheck",
    "Report",
    "Summary",
    "check_proof",
    "dump_proof",
    "load_proof",
    "make_proof",
    "verify_archive",
    "verify_proof_file",
    "write_proof",
]
