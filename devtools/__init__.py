"""Development tools of the repository, not installed with the package: the process and DDS
harness that the tests, the demo and the benchmarks use to run the installed node
(:mod:`devtools.ros_harness`), and the demo (:mod:`devtools.demo`, ``make demo``)."""
