"""Run Python code in a child that has given up CAP_NET_ADMIN (the real kernel then answers EPERM)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# capget/capset through libc: clear CAP_NET_ADMIN (bit 12) from the effective and permitted sets
_DROP = """
import ctypes
_libc = ctypes.CDLL(None, use_errno=True)
class _Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]
_hdr = _Hdr(0x20080522, 0)
_data = (_Data * 2)()
if _libc.capget(ctypes.byref(_hdr), _data) != 0:
    raise OSError(ctypes.get_errno(), "capget")
_data[0].effective &= ~(1 << 12)
_data[0].permitted &= ~(1 << 12)
if _libc.capset(ctypes.byref(_hdr), _data) != 0:
    raise OSError(ctypes.get_errno(), "capset")
"""


def run_without_net_admin(code: str, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """``python -c`` of ``code`` with CAP_NET_ADMIN dropped first; raises if the child fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _DROP + code], capture_output=True, timeout=timeout, env=env,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc
