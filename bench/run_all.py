"""`make bench`: the engines benchmark (pose network per engine, pipeline per frame, detectors, CPU
preset, alternatives), the depth, tracking, stream core, recordings and node benchmarks, then
engine triton against a real Triton server (skipped, with a line saying why, where the CPU Triton
server is not installed), one after the other in one run (so their figures come from the same
machine state). Pass --quick for a short smoke run."""

from __future__ import annotations

import sys

from bench import (
    bag_bench,
    depth_bench,
    engines_bench,
    node_bench,
    stream_bench,
    tracking_bench,
    triton_bench,
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = engines_bench.main(args)
    print()
    status = status or depth_bench.main(args)
    print()
    status = status or tracking_bench.main(args)
    print()
    status = status or stream_bench.main(args)
    print()
    status = status or bag_bench.main(args)
    print()
    status = status or node_bench.main(args)
    print()
    return status or triton_bench.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
