#!/usr/bin/env bash
# colcon build of this package (messages + Python modules + launch/config) against the .venv
# underlay, into build/ and install/ (both ignored by git). Incremental: a second run is quick.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# --symlink-install: installed Python files link to the sources, so editing code needs no rebuild.
exec scripts/ros-env colcon --log-base log build \
  --paths . \
  --build-base build --install-base install \
  --symlink-install \
  --event-handlers console_cohesion- summary+ \
  --cmake-args -DPython3_EXECUTABLE="$root/.venv/bin/python" -DBUILD_TESTING=OFF \
  "$@"
