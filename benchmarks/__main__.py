"""Run every ``benchmarks/bench_*.py`` and write ``benchmarks/RESULTS.md``.

Usage: ``python -m benchmarks [NAME ...]`` (names without the ``bench_`` prefix;
default all); ``python -m benchmarks --render`` only rewrites the Markdown.
Each module exposes ``run() -> dict``; the dict is rendered as a table, followed
by the module's ``NOTES`` text if it has one (what the figures mean).
Results of modules not run this time are kept from the previous file.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
STORE = HERE / "results.json"


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            rows.extend(_flatten(v, key + "."))
        else:
            rows.append((key, v))
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if abs(v) < 1:
            return f"{v:.4g}"
        return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _doc(mod: Any) -> str:
    text = (mod.__doc__ or "").strip().split("\n\n")
    return text[0].replace("\n", " ") if text else ""


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m benchmarks`). Every figure that has a goal is a ratio against a floor",
        "measured in the same run on the same machine, so the numbers travel between machines better than",
        "absolute rates do. Absolute rates are shown for context.",
        "",
    ]
    for name in sorted(results):
        entry = results[name]
        lines += [f"## {name}", "", entry.get("about", ""), "",
                  f"_measured {entry.get('when', '?')} on {entry.get('machine', '?')}_", "",
                  "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in _flatten(entry.get("figures", {}))]
        lines.append("")
        if entry.get("notes"):
            lines += [entry["notes"], ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE.parent))
    if argv == ["--render"]:  # rewrite RESULTS.md from results.json without measuring
        RESULTS.write_text(render(json.loads(STORE.read_text())))
        return 0
    names = [f"bench_{n.removeprefix('bench_')}" for n in argv] or sorted(p.stem for p in HERE.glob("bench_*.py"))
    results: dict[str, dict[str, Any]] = {}
    if STORE.exists():
        results = json.loads(STORE.read_text())
    machine = f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}"
    failed = 0
    for name in names:
        print(f"== {name}", flush=True)
        mod = importlib.import_module(f"benchmarks.{name}")
        t0 = time.monotonic()
        cpus = os.sched_getaffinity(0)
        try:
            figures = mod.run()
        except Exception as exc:  # one broken benchmark must not hide the others
            figures = {"error": f"{type(exc).__name__}: {exc}"}
            failed += 1
        finally:
            os.sched_setaffinity(0, cpus)  # a benchmark that pinned itself must not pin the next
        for k, v in _flatten(figures):
            print(f"   {k}: {_fmt(v)}")
        results[name.removeprefix("bench_")] = {
            "about": _doc(mod),
            "notes": " ".join((getattr(mod, "NOTES", "") or "").split()),
            "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine,
            "seconds": round(time.monotonic() - t0, 1),
            "figures": figures,
        }
        STORE.write_text(json.dumps(results, indent=1, sort_keys=True))
        RESULTS.write_text(render(results))
    print(f"wrote {RESULTS.relative_to(HERE.parent)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
