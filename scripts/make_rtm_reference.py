"""Reference outputs of mmpose's RTMPose and mmdet's RTMDet, for the parity test
(test/test_rtm_parity.py), written to test/fixtures/rtm_parity.npz.

The authors' own modules and pipelines run here: mmpose's ``TopdownPoseEstimator`` (CSPNeXt +
RTMCCHead, ``PoseDataPreprocessor``, its test pipeline ``LoadImage`` -> ``GetBBoxCenterScale``
-> ``TopdownAffine`` and the flip test) and mmdet's ``RTMDet`` (CSPNeXt + CSPNeXtPAFPN +
RTMDetSepBNHead, ``DetDataPreprocessor``, ``Resize`` -> ``Pad``, ``predict_by_feat``), at reduced
widths so that the fixture stays small (about 1 MB), with fixed random weights. The fixture holds
those weights in the authors' key names, the inputs each pipeline made from the shared COCO
images, and what each network and decoder returned. Rerun it after a change of the reduced
configurations below (then commit the new fixture). pose_ros is not imported here.

Run it in a throwaway virtual environment outside the repository (never in pose_ros'
requirements), from the repository root::

    python3 -m venv /tmp/rtm_ref && . /tmp/rtm_ref/bin/activate
    pip install torch==2.13.0 numpy mmengine==0.10.7 opencv-python-headless six scipy \
        "setuptools<70" wheel
    pip download --no-deps --no-binary :all: mmcv==2.1.0 && tar xzf mmcv-2.1.0.tar.gz
    MMCV_WITH_OPS=0 pip install --no-build-isolation ./mmcv-2.1.0   # mmcv without compiled ops
    pip install --no-deps mmdet==3.3.0 mmpose==1.3.2
    python scripts/make_rtm_reference.py

Two stand-ins, set up below before mmdet and mmpose are imported, replace what a build without
compiled ops lacks; neither touches a compared value: ``mmcv._ext.nms`` (greedy NMS in torch:
mmdet's ``batched_nms`` calls it at the end of ``predict_by_feat``) and ``xtcocotools`` (imported
by mmpose's datasets, not used here).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
COCO = REPO.parent / "shared" / "data" / "mmpose" / "tests" / "data" / "coco"
OUTPUT = REPO / "test" / "fixtures" / "rtm_parity.npz"

#: Reduced RTMPose: CSPNeXt at 1/16 of RTMPose-l's width, RTMPose-t's depth; a 128x96 input.
POSE = {
    "deepen_factor": 0.167,
    "widen_factor": 0.0625,
    "input_size": [128, 96],
    "hidden_dims": 32,
    "attention_dim": 16,
    "expansion_factor": 2,
    "final_layer_kernel_size": 7,
    "simcc_split_ratio": 2.0,
    "sigma": [4.9, 5.66],
}
#: Reduced RTMDet-nano: depthwise CSPNeXt at a quarter of the nano's width, one class (person).
DETECTOR = {
    "deepen_factor": 0.33,
    "widen_factor": 0.0625,
    "neck_channels": 16,
    "input_size": 320,
    "score_threshold": 0.05,
    "nms_pre": 1000,
    "nms_iou": 0.6,
    "max_detections": 100,
}
#: COCO's flip pairs as mmpose's dataset_meta gives them.
FLIP_INDICES = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
POSE_IMAGES = ("000000197388.jpg",)
# Colour photographs (000000040083.jpg is grey: a channel swap would not change it).
DETECTOR_IMAGES = ("000000000785.jpg", "000000196141.jpg")


def install_stand_ins() -> None:
    """See the module docstring: greedy NMS for ``mmcv._ext``, an empty ``xtcocotools``."""
    ext = types.ModuleType("mmcv._ext")

    def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0):
        assert offset == 0
        x1, y1, x2, y2 = boxes.unbind(1)
        area = (x2 - x1) * (y2 - y1)
        suppressed = torch.zeros(len(boxes), dtype=torch.bool)
        keep = []
        for i in scores.argsort(descending=True).tolist():
            if suppressed[i]:
                continue
            keep.append(i)
            w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
            h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
            suppressed |= w * h / (area[i] + area - w * h) > iou_threshold
        return torch.tensor(keep, dtype=torch.long)

    def missing(name: str):
        def fail(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext.{name} is not available in this build")

        return fail

    def attribute(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return missing(name)

    ext.nms = nms
    ext.__getattr__ = attribute
    sys.modules["mmcv._ext"] = ext
    coco_tools = types.ModuleType("xtcocotools")
    coco_tools.__path__ = []
    for sub in ("coco", "cocoeval", "mask"):
        module = types.ModuleType(f"xtcocotools.{sub}")
        module.COCO = module.COCOeval = object
        sys.modules[f"xtcocotools.{sub}"] = module
    sys.modules["xtcocotools"] = coco_tools


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Fixed random weights: fan-in scaled convolutions and linear layers, BatchNorm and
    ScaleNorm scales, GAU gamma and beta spread around their neutral values, small biases."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or name.endswith(("running_mean", "running_var")):
                continue
            if name.endswith("bias") and tensor.ndim == 1:
                value = torch.randn(tensor.shape, generator=generator) * 0.1
            elif tensor.ndim >= 2:
                value = torch.randn(tensor.shape, generator=generator) / tensor[0].numel() ** 0.5
            else:
                value = torch.rand(tensor.shape, generator=generator) + 0.5
            tensor.copy_(value)


def calibrate_norms(module: torch.nn.Module, forward) -> None:
    """BatchNorm statistics from the reference inputs themselves (one pass in training mode,
    each layer normalising what the layers before it now produce): at random weights the
    signal would otherwise fade or blow up with depth, and the output would hardly depend on
    the input."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = 1.0
    module.train()
    with torch.no_grad():
        forward()
    module.eval()
    for norm in norms:
        norm.momentum = 0.1


def round_to_half(module: torch.nn.Module) -> None:
    """Every weight to a value float16 holds exactly, so the fixture stores them in half the
    space and the test runs the same float32 numbers."""
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())


def half_weights(prefix: str, module: torch.nn.Module) -> dict[str, np.ndarray]:
    """The state dict (authors' key names) as float16 arrays (exact: see :func:`randomize`)."""
    state = module.state_dict()
    arrays = {}
    for key, value in state.items():
        if key.startswith("data_preprocessor"):
            continue
        array = value.numpy()
        if value.is_floating_point():
            assert torch.equal(value.half().float(), value), key
            array = array.astype(np.float16)
        arrays[f"{prefix}/{key}"] = array
    return arrays


def pose_reference(arrays: dict[str, np.ndarray]) -> None:
    from mmcv.transforms import Compose
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpose.codecs import SimCCLabel
    from mmpose.registry import MODELS

    init_default_scope("mmpose")
    height, width = POSE["input_size"]
    codec = dict(
        type="SimCCLabel",
        input_size=(width, height),
        sigma=tuple(POSE["sigma"]),
        simcc_split_ratio=POSE["simcc_split_ratio"],
        normalize=False,
        use_dark=False,
    )
    channels = int(1024 * POSE["widen_factor"])
    model = MODELS.build(
        dict(
            type="TopdownPoseEstimator",
            data_preprocessor=dict(
                type="PoseDataPreprocessor",
                mean=[123.675, 116.28, 103.53],
                std=[58.395, 57.12, 57.375],
                bgr_to_rgb=True,
            ),
            backbone=dict(
                type="CSPNeXt",
                arch="P5",
                expand_ratio=0.5,
                deepen_factor=POSE["deepen_factor"],
                widen_factor=POSE["widen_factor"],
                out_indices=(4,),
                channel_attention=True,
                norm_cfg=dict(type="BN"),  # the configs' SyncBN is this BN on one process
                act_cfg=dict(type="SiLU"),
            ),
            head=dict(
                type="RTMCCHead",
                in_channels=channels,
                out_channels=17,
                input_size=(width, height),
                in_featuremap_size=(width // 32, height // 32),
                simcc_split_ratio=POSE["simcc_split_ratio"],
                final_layer_kernel_size=POSE["final_layer_kernel_size"],
                gau_cfg=dict(
                    hidden_dims=POSE["hidden_dims"],
                    s=POSE["attention_dim"],
                    expansion_factor=POSE["expansion_factor"],
                    dropout_rate=0.0,
                    drop_path=0.0,
                    act_fn="SiLU",
                    use_rel_bias=False,
                    pos_enc=False,
                ),
                loss=dict(type="KLDiscretLoss", use_target_weight=True, beta=10.0),
                decoder=codec,
            ),
            test_cfg=dict(flip_test=True),
        )
    )
    randomize(model, seed=7)
    model.eval()
    model.dataset_meta = {"flip_indices": FLIP_INDICES}

    annotations = json.loads((COCO / "test_coco.json").read_text())
    ids = {image["file_name"]: image["id"] for image in annotations["images"]}
    persons = [
        (name, ann["bbox"])
        for name in POSE_IMAGES
        for ann in annotations["annotations"]
        if ann["image_id"] == ids[name] and ann["num_keypoints"] > 0
    ][:4]
    crop_steps = [
        dict(type="LoadImage"),
        dict(type="GetBBoxCenterScale"),
        dict(type="TopdownAffine", input_size=(width, height)),
    ]
    crop = Compose(crop_steps)
    pipeline = Compose([*crop_steps, dict(type="PackPoseInputs")])
    crops, boxes, files, samples = [], [], [], []
    for name, (x, y, w, h) in persons:
        info = dict(
            img_path=str(COCO / name),
            bbox=np.array([[x, y, x + w, y + h]], dtype=np.float32),
            bbox_score=np.ones(1, dtype=np.float32),
            flip_indices=FLIP_INDICES,
        )
        crops.append(crop(dict(info))["img"])
        samples.append(pipeline(dict(info)))
        boxes.append([x, y, w, h])
        files.append(name)
    batch = model.data_preprocessor(pseudo_collate(samples), training=False)
    inputs = batch["inputs"]
    calibrate_norms(model, lambda: model.head(model.extract_feat(inputs)))
    round_to_half(model)
    with torch.no_grad():
        simcc_x, simcc_y = model.head(model.extract_feat(inputs))
        results = model.predict(inputs, batch["data_samples"])  # flip test, image pixels
    decoder = SimCCLabel(**{k: v for k, v in codec.items() if k != "type"})
    keypoints, scores = decoder.decode(simcc_x.numpy(), simcc_y.numpy())
    arrays.update(
        pose_config=np.array(json.dumps(POSE)),
        pose_files=np.array(files),
        pose_boxes=np.array(boxes, dtype=np.float32),
        pose_crops_bgr=np.stack(crops).astype(np.uint8),
        pose_simcc_x=simcc_x.numpy(),
        pose_simcc_y=simcc_y.numpy(),
        pose_keypoints_input=keypoints.astype(np.float32),
        pose_scores_input=scores.astype(np.float32),
        pose_keypoints_image_flip=np.stack([r.pred_instances.keypoints[0] for r in results]).astype(
            np.float32
        ),
        pose_scores_image_flip=np.stack(
            [r.pred_instances.keypoint_scores[0] for r in results]
        ).astype(np.float32),
    )
    arrays.update(half_weights("pose_weight", model))


def calibrate_predictions(model: torch.nn.Module, inputs: torch.Tensor) -> None:
    """Rescale the head's 1x1 prediction convs on the reference images so that, per level,
    class logits spread around -3 (std 1: distinct scores, some above 0.05) and box distances
    around 3 strides (std 1: boxes of positive size)."""
    head = model.bbox_head
    with torch.no_grad():
        features = model.extract_feat(inputs)
        for level, x in enumerate(features):
            x_cls = x_reg = x
            for layer in head.cls_convs[level]:
                x_cls = layer(x_cls)
            for layer in head.reg_convs[level]:
                x_reg = layer(x_reg)
            for conv, feature, (mean, std) in (
                (head.rtm_cls[level], x_cls, (-3.0, 1.0)),
                (head.rtm_reg[level], x_reg, (3.0, 1.0)),
            ):
                raw = torch.nn.functional.conv2d(feature, conv.weight)
                factor = std / float(raw.std())
                conv.weight.mul_(factor)
                shift = mean - torch.nn.functional.conv2d(feature, conv.weight).mean((0, 2, 3))
                conv.bias.copy_(shift)


def detector_reference(arrays: dict[str, np.ndarray]) -> None:
    import mmdet.models  # noqa: F401  (registers the modules)
    from mmcv.transforms import Compose
    from mmdet.registry import MODELS
    from mmengine.config import ConfigDict
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    size = DETECTOR["input_size"]
    widen = DETECTOR["widen_factor"]
    stages = [int(c * widen) for c in (256, 512, 1024)]
    neck = DETECTOR["neck_channels"]
    act = dict(type="SiLU", inplace=True)
    norm = dict(type="BN")  # the configs' SyncBN is this BN on one process
    test_cfg = ConfigDict(
        nms_pre=DETECTOR["nms_pre"],
        min_bbox_size=0,
        score_thr=DETECTOR["score_threshold"],
        nms=dict(type="nms", iou_threshold=DETECTOR["nms_iou"]),
        max_per_img=DETECTOR["max_detections"],
    )
    model = MODELS.build(
        dict(
            type="RTMDet",
            data_preprocessor=dict(
                type="DetDataPreprocessor",
                mean=[103.53, 116.28, 123.675],
                std=[57.375, 57.12, 58.395],
                bgr_to_rgb=False,
                batch_augments=None,
            ),
            backbone=dict(
                type="CSPNeXt",
                arch="P5",
                expand_ratio=0.5,
                deepen_factor=DETECTOR["deepen_factor"],
                widen_factor=widen,
                use_depthwise=True,
                channel_attention=True,
                norm_cfg=norm,
                act_cfg=act,
            ),
            neck=dict(
                type="CSPNeXtPAFPN",
                in_channels=stages,
                out_channels=neck,
                num_csp_blocks=1,
                use_depthwise=True,
                expand_ratio=0.5,
                norm_cfg=norm,
                act_cfg=act,
            ),
            bbox_head=dict(
                type="RTMDetSepBNHead",
                num_classes=1,
                in_channels=neck,
                stacked_convs=2,
                feat_channels=neck,
                anchor_generator=dict(type="MlvlPointGenerator", offset=0, strides=[8, 16, 32]),
                bbox_coder=dict(type="DistancePointBBoxCoder"),
                loss_cls=dict(type="QualityFocalLoss", use_sigmoid=True, beta=2.0, loss_weight=1.0),
                loss_bbox=dict(type="GIoULoss", loss_weight=2.0),
                with_objectness=False,
                exp_on_reg=False,
                share_conv=False,
                use_depthwise=True,
                pred_kernel_size=1,
                norm_cfg=norm,
                act_cfg=act,
            ),
            train_cfg=None,
            test_cfg=test_cfg,
        )
    )
    randomize(model, seed=11)
    model.eval()
    pipeline = Compose(
        [
            dict(type="LoadImageFromFile"),
            dict(type="Resize", scale=(size, size), keep_ratio=True),
            dict(type="Pad", size=(size, size), pad_val=dict(img=(114, 114, 114))),
            dict(
                type="PackDetInputs",
                meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
            ),
        ]
    )
    samples = [
        pipeline(dict(img_path=str(COCO / name), img_id=index))
        for index, name in enumerate(DETECTOR_IMAGES)
    ]
    inputs = model.data_preprocessor(pseudo_collate(samples))["inputs"]
    calibrate_norms(model, lambda: model.bbox_head(model.extract_feat(inputs)))
    calibrate_predictions(model, inputs)
    round_to_half(model)
    for index, name in enumerate(DETECTOR_IMAGES):
        sample = pipeline(dict(img_path=str(COCO / name), img_id=index))
        canvas = sample["inputs"].permute(1, 2, 0).numpy()  # the padded BGR image, uint8
        batch = model.data_preprocessor(pseudo_collate([sample]), training=False)
        with torch.no_grad():
            class_logits, distances = model.bbox_head(model.extract_feat(batch["inputs"]))
            in_input = model.bbox_head.predict_by_feat(
                class_logits,
                distances,
                batch_img_metas=[dict(img_shape=(size, size), scale_factor=(1.0, 1.0))],
                cfg=test_cfg,
                rescale=False,
            )[0]
            in_image = model.predict(batch["inputs"], batch["data_samples"])[0].pred_instances
        arrays[f"det{index}_file"] = np.array(name)
        arrays[f"det{index}_canvas_bgr"] = canvas.astype(np.uint8)
        for level, (logits, dist) in enumerate(zip(class_logits, distances, strict=True)):
            arrays[f"det{index}_class_logits{level}"] = logits.numpy()
            arrays[f"det{index}_distances{level}"] = dist.numpy()
        arrays[f"det{index}_boxes_input"] = in_input.bboxes.numpy()
        arrays[f"det{index}_scores_input"] = in_input.scores.numpy()
        arrays[f"det{index}_boxes_image"] = in_image.bboxes.numpy()
        arrays[f"det{index}_scores_image"] = in_image.scores.numpy()
    arrays["det_config"] = np.array(json.dumps(DETECTOR))
    arrays.update(half_weights("det_weight", model))


def report_margins(arrays: dict[str, np.ndarray]) -> None:
    """The smallest gap between the best and second-best value of every argmax the test
    compares: a gap far above float noise makes the comparison of positions meaningful."""
    for name in ("pose_simcc_x", "pose_simcc_y"):
        top = np.sort(arrays[name], axis=-1)[..., -2:]
        print(f"{name}: smallest top-2 gap {float((top[..., 1] - top[..., 0]).min()):.2e}")
    for key in [k for k in arrays if k.startswith("det") and k.endswith("_scores_input")]:
        scores = np.sort(arrays[key])
        gap = float(np.diff(scores).min()) if len(scores) > 1 else float("inf")
        logits = [arrays[key.replace("scores_input", f"class_logits{i}")] for i in range(3)]
        spread = ", ".join(f"{v.min():.2f}..{v.max():.2f}" for v in logits)
        print(f"{key}: {len(scores)} boxes, smallest score gap {gap:.2e}; logits {spread}")


def main() -> int:
    install_stand_ins()
    import mmdet
    import mmpose

    arrays: dict[str, np.ndarray] = {
        "versions": np.array(
            json.dumps(
                {
                    "mmpose": mmpose.__version__,
                    "mmdet": mmdet.__version__,
                    "torch": torch.__version__,
                }
            )
        )
    }
    pose_reference(arrays)
    detector_reference(arrays)
    report_margins(arrays)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(OUTPUT, **arrays)
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size / 1e6:.2f} MB, {len(arrays)} arrays)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
