"""Superseded by :mod:`bench.engines_bench` (every engine side by side, detectors, the CPU preset
and the alternatives); kept as an alias so ``python -m bench.pipeline_bench`` still works."""

from __future__ import annotations

from bench.engines_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
