"""Training, evaluation and export of the pose_ros networks on COCO person keypoints.

Installed as ``pose_ros.training`` (see setup.py); in a checkout it runs as
``python -m training.train`` (``.evaluate``, ``.export``). Modules:

* :mod:`.config`: the YAML configs of ``configs/`` as plain dataclasses, with ``--set`` overrides.
* :mod:`.dataset`: COCO person instances through pycocotools, with file checks.
* :mod:`.augment`: the reference augmentation (scale, rotation, flip, half-body) and targets.
* :mod:`.train`: one command for CPU, one GPU or ``torchrun`` (DDP), resumable checkpoints.
* :mod:`.evaluate`: the inference pipeline on GT or detector boxes, OKS-NMS, COCOeval.
* :mod:`.export`: ONNX export checked with ONNX Runtime; TensorRT engines where installed.
"""
