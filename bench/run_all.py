"""`make bench`: the pipeline benchmark, then the node benchmark, one after the other in one run
(so their figures come from the same machine state). Pass --quick for a short smoke run."""

from __future__ import annotations

import sys

from bench import node_bench, pipeline_bench


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    status = pipeline_bench.main(args)
    print()
    return status or node_bench.main(args)


if __name__ == "__main__":
    raise SystemExit(main())
