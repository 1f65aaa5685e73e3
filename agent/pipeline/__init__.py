"""probe -> reading -> stamp -> sign -> route -> per-sink queue -> sink. Never imports a concrete sink."""

from .queue import Overflow, Receipt, SinkQueue
from .router import Pipeline
from .runner import ProbeRunner
from .sequence import SequenceStore
from .spool import SalvageReport, Spool
from .spoolqueue import SpoolQueue
from .stamp import Stamper, format_time
from .stats import PipelineStats, ProbeStats, SinkStats
from .worker import SinkWorker

__all__ = [
    "Overflow",
    "Pipeline",
    "PipelineStats",
    "ProbeRunner",
    "ProbeStats",
    "Receipt",
    "SalvageReport",
    "SequenceStore",
    "SinkQueue",
    "SinkStats",
    "SinkWorker",
    "Spool",
    "SpoolQueue",
    "Stamper",
    "format_time",
]
