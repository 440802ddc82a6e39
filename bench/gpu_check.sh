#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA GPU: the GPU tests (fp16 / channels-last
# / device decode / pinned uploads on the chosen GPU, ONNX Runtime's CUDA provider index; RTMPose
# and RTMDet on CUDA and TensorRT, and their parity with mmpose / mmdet; where the tensorrt package
# is installed, the TensorRT engine against ONNX Runtime and its cache), then the engines benchmark
# (ms per crop at batch 1..64 per engine for SimpleBaseline and RTMPose, ms per frame for 1/5/20
# persons at three resolutions, detectors including RTMDet-nano, KeypointRCNN), on CPU and CUDA.
#
#   bench/gpu_check.sh [OUT_DIR]        # default OUT_DIR: $OUT or ./gpu_check_output
#
# Uses .venv when present, else the machine's python3 (needs torch with CUDA, torchvision,
# onnxruntime, onnx, opencv, scipy, pytest, pyyaml; no ROS: the ROS tests are left out). Nothing is
# downloaded. Each step has a time limit so that one slow step cannot eat the device time.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_output}}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export POSE_ROS_CACHE="${POSE_ROS_CACHE:-$OUT_DIR/cache}"

{
  echo "## $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  "$PY" -c "import torch, onnxruntime as o; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NO CUDA'); print('onnxruntime', o.__version__, o.get_available_providers())" 2>&1
  "$PY" -c "import tensorrt; print('tensorrt', tensorrt.__version__)" 2>&1 || echo "tensorrt: not installed"
} | tee "$OUT_DIR/env.txt"

# -rs: a skipped GPU or TensorRT test says why. The trained tiny network the fp16 and TensorRT
# tests use is trained once per pytest run (about a minute on a CPU, seconds on a GPU).
timeout 420 "$PY" -m pytest -q -rs -p no:cacheprovider -m "not ros" \
  test/test_engines.py test/test_pipeline.py test/test_rtmpose.py test/test_rtm_parity.py \
  test/test_export.py::test_tensorrt_engine_matches_onnxruntime_and_is_reused_from_the_cache \
  test/test_export.py::test_tensorrt_engine_cache_is_keyed_by_the_onnx_content \
  2>&1 | tee "$OUT_DIR/tests.txt" | tail -15
timeout 300 "$PY" -m bench.engines_bench ${BENCH_ARGS:---only crops,frames,detectors,alt} 2>&1 \
  | grep -v -i "random weights" | tee "$OUT_DIR/bench.txt"
echo "gpu_check: results in $OUT_DIR"
