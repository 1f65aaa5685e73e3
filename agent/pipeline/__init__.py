"""probe -> reading -> stamp -> sign -> route -> per-sink queue -> sink. Never imports a concrete sink."""

from .queue import Overflow, Receipt, SinkQueue
from .router import Pipeline
from .runner import ProbeRunner
from .sequence import SequenceStore
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
    "SequenceStore",
    "SinkQueue",
    "SinkStats",
    "SinkWorker",
    "Stamper",
    "format_time",
]
