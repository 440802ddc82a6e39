"""Every parameter of ``pose_node``, declared once: name, default, description, range, whether it
may change at runtime, and the check that refuses bad values (at start-up and on `ros2 param set`).

config/pose.yaml repeats the defaults for users to edit; a test keeps the two in agreement.

Which parameters are read-only, and why: the model, detector, device and precision decide what is
loaded onto which device (changing them means building the pipeline again: restart the node); the
input type, QoS and camera_info switch decide the subscriptions. Thresholds, person count, marker
and debug-image settings only change how results are filtered and shown, so they apply from the
next frame.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from pose_ros.depth import DepthConfig
from pose_ros.ros.camera_stream import camera_names_problem
from pose_ros.smoothing import SmoothingConfig
from pose_ros.stream import StreamSettings, settings_from_values
from pose_ros.tracking import DEFAULT_REUSE_SCORE_THRESHOLD, TrackingConfig
from pose_ros.triton_endpoint import DEFAULT_MODEL_NAME as DEFAULT_TRITON_MODEL
from pose_ros.triton_endpoint import DEFAULT_TIMEOUT_MS as DEFAULT_TRITON_TIMEOUT_MS
from pose_ros.triton_endpoint import DEFAULT_URL as DEFAULT_TRITON_URL
from pose_ros.triton_endpoint import parse_triton_url

ParamValue = bool | int | float | str

#: The model a fresh install is configured for (published weights of pose_ros.models' registry).
DEFAULT_MODEL = "mmpose_res50_coco_256x192"
#: 8K UHD. Larger frames are refused before any allocation (a corrupt header can claim anything).
DEFAULT_MAX_IMAGE_PIXELS = 7680 * 4320

_DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: what ``declare_parameter`` needs plus the node's own checks."""

    name: str
    default: ParamValue
    description: str
    read_only: bool = False
    float_range: tuple[float, float] | None = None
    int_range: tuple[int, int] | None = None
    choices: tuple[str, ...] | None = None
    #: Accept values of more than one type (fp16: "auto" or a bool).
    dynamic_typing: bool = False
    #: Extra check: returns what is wrong with the value, or None.
    check_value: Callable[[Any], str | None] | None = None

    def descriptor(self, *, constraints: bool = True) -> ParameterDescriptor:
        """The ParameterDescriptor shown by ``ros2 param describe``; rclpy enforces its ranges and
        read_only flag, and fills in the type from the default (unless dynamic_typing).

        ``constraints=False`` leaves out ranges and read_only (the node declares with that, so that
        bad start-up values are refused by its own check, with its own message, and attaches the
        full descriptor right after).
        """
        choices = f"one of {', '.join(self.choices)}" if self.choices else ""
        descriptor = ParameterDescriptor(
            name=self.name,
            description=self.description,
            additional_constraints=choices,
            read_only=self.read_only and constraints,
            dynamic_typing=self.dynamic_typing,
        )
        if self.float_range is not None and constraints:
            low, high = self.float_range
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
            ]
        if self.int_range is not None and constraints:
            low, high = self.int_range
            descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
        return descriptor

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` for this parameter (a sentence for the log), or None."""
        if not self.dynamic_typing and not _same_type(value, self.default):
            return (
                f"{self.name} must be a {_type_name(self.default)}, got {value!r} "
                f"({_type_name(value)})"
            )
        if self.float_range is not None:
            low, high = self.float_range
            if not (math.isfinite(value) and low <= value <= high):
                return f"{self.name} must be in [{low:g}, {high:g}], got {value!r}"
        if self.int_range is not None:
            low, high = self.int_range
            if not low <= value <= high:
                return f"{self.name} must be in [{low}, {high}], got {value!r}"
        if self.choices is not None and value not in self.choices:
            return f"{self.name} must be one of {', '.join(self.choices)}; got {value!r}"
        if self.check_value is not None:
            return self.check_value(value)
        return None


def _same_type(value: Any, default: ParamValue) -> bool:
    # bool is an int in Python; ROS keeps them apart, and so does this check.
    return type(value) is type(default)


def _type_name(value: Any) -> str:
    return {bool: "bool", int: "integer", float: "double", str: "string"}.get(
        type(value), type(value).__name__
    )


def _non_empty(name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if str(value).strip() else f"{name} must not be empty"

    return check


def _check_device(value: Any) -> str | None:
    if _DEVICE_PATTERN.match(value):
        return None
    return f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {value!r}"


def _check_triton_url(value: Any) -> str | None:
    try:
        parse_triton_url(value)
    except ValueError as error:
        return str(error)
    return None


def _check_fp16(value: Any) -> str | None:
    if value == "auto" or isinstance(value, bool):
        return None
    return f"fp16 must be true, false or 'auto' (half precision on CUDA only), got {value!r}"


_UNIT = (0.0, 1.0)
#: The tracking defaults come from the library's config dataclasses: one source.
_TRACKING = TrackingConfig()
_SMOOTHING = SmoothingConfig()
#: The depth defaults live in the library's DepthConfig.
_DEPTH = DepthConfig()

PARAMETERS: tuple[ParamSpec, ...] = (
    # --- what runs (read-only: changing any of these means building the pipeline again) ---
    ParamSpec(
        "model",
        DEFAULT_MODEL,
        "Pose network: a checkpoint path (.pt/.pth/.safetensors) or a published-weights name of "
        "the pose_ros model registry. Missing weights stop the node with instructions.",
        read_only=True,
        check_value=_non_empty("model"),
    ),
    ParamSpec(
        "allow_random_weights",
        False,
        "Testing only: allow model 'random:<arch>' (untrained weights). Keypoints are then "
        "meaningless, and the node says so in every status line.",
        read_only=True,
    ),
    ParamSpec(
        "detector.backend",
        "fasterrcnn_mobilenet_v3_large_fpn",
        "Person detector: a torchvision detector name, 'rtmdet_nano' or 'rtmdet_tiny' (RTMDet "
        "person detectors), 'onnx_yolo', or 'full_image' (the whole frame is one person: "
        "pre-cropped single-person cameras).",
        read_only=True,
        check_value=_non_empty("detector.backend"),
    ),
    ParamSpec(
        "detector.weights",
        "DEFAULT",
        "Detector weights: 'DEFAULT' (the backend's published weights, from the local cache), a "
        "file path, or '' for none (backends that need no weights).",
        read_only=True,
    ),
    ParamSpec(
        "detector.engine",
        "auto",
        "What runs a torchvision detector's backbone, or an RTMDet network: 'auto' (ONNX Runtime "
        "on the CPU, PyTorch on CUDA), 'torch' or 'onnxruntime' (exported on first use into the "
        "pose_ros cache).",
        read_only=True,
        choices=("auto", "torch", "onnxruntime"),
    ),
    ParamSpec(
        "detector.yolo_layout",
        "auto",
        "onnx_yolo only: the export's layout. 'auto' (YOLOv5 or YOLOv8/YOLO11, told apart by the "
        "output shape), 'yolov5', 'yolov8', or for YOLOX (BGR 0..255 input, top-left letterbox): "
        "'yolox' (its export_onnx.py default and released .onnx files), 'yolox_decoded' "
        "(--decode_in_inference), 'yolox_nms' (NMS inside: num_dets, boxes, scores, labels).",
        read_only=True,
        choices=("auto", "yolov8", "yolov5", "yolox", "yolox_decoded", "yolox_nms"),
    ),
    ParamSpec(
        "device",
        "auto",
        "Where the networks run: 'auto' (CUDA when available, else CPU), 'cpu', 'cuda', 'cuda:N'.",
        read_only=True,
        check_value=_check_device,
    ),
    ParamSpec(
        "fp16",
        "auto",
        "Half precision: 'auto' (on CUDA yes, on CPU no), true or false.",
        read_only=True,
        dynamic_typing=True,
        check_value=_check_fp16,
    ),
    ParamSpec(
        "engine",
        "auto",
        "What runs the pose network: 'auto' (ONNX Runtime on the CPU, PyTorch fp16 on CUDA), "
        "'torch', 'onnxruntime' or 'tensorrt' (checkpoints are exported on first use into the "
        "pose_ros cache; 'model' may also name an .onnx or .engine file), or 'triton': model "
        "triton.model of the Triton Inference Server at triton.url ('model' is not loaded).",
        read_only=True,
        choices=("auto", "torch", "onnxruntime", "tensorrt", "triton"),
    ),
    # --- engine 'triton': the pose network on a shared Triton Inference Server (docs/triton.md) ---
    ParamSpec(
        "triton.url",
        DEFAULT_TRITON_URL,
        "engine 'triton': the server, grpc://host:port (gRPC, default port 8001), "
        "http://host:port (HTTP, 8000) or host:port (gRPC). The node starts only when the "
        "server is live and serves triton.model with the inputs and outputs it expects.",
        read_only=True,
        check_value=_check_triton_url,
    ),
    ParamSpec(
        "triton.model",
        DEFAULT_TRITON_MODEL,
        "engine 'triton': the pose network's name in the server's model repository "
        "(pose-ros-export --triton-repository names it 'pose' by default).",
        read_only=True,
        check_value=_non_empty("triton.model"),
    ),
    ParamSpec(
        "triton.timeout_ms",
        DEFAULT_TRITON_TIMEOUT_MS,
        "engine 'triton': longest wait for an answer (milliseconds); a frame without one counts "
        "as failed, and the next frame tries again.",
        read_only=True,
        int_range=(1, 600_000),
    ),
    ParamSpec(
        "cpu_threads",
        0,
        "CPU threads of PyTorch and ONNX Runtime; 0 = all cores for the pose network's engine "
        "(and one PyTorch thread for the crops and detector heads when that is ONNX Runtime).",
        read_only=True,
        int_range=(0, 1024),
    ),
    ParamSpec(
        "flip_test",
        False,
        "Average the heatmaps of each crop and its mirror image: slightly more accurate, twice "
        "the network time.",
        read_only=True,
    ),
    ParamSpec(
        "decode",
        "quarter",
        "Heatmap decoding: 'quarter' (argmax + quarter-pixel shift) or 'dark' (sub-pixel Taylor "
        "refinement).",
        read_only=True,
        choices=("quarter", "dark"),
    ),
    # --- input (read-only: they decide the subscriptions) ---
    ParamSpec(
        "cameras",
        "",
        "Several cameras in one node: their names, a list (cameras:=[front, left, right]) or a "
        "string ('front, left, right'). Each camera has its topics under its name (front/image, "
        "front/camera_info, front/depth in; front/poses, front/poses/markers, front/poses/image "
        "out), its own tracker and status, and the crops of all cameras go through the pose "
        "network as one batch. Empty: one camera on image, camera_info, depth, poses...",
        read_only=True,
        # A string or a string array: ROS has no empty-array default, and an unset array
        # parameter breaks `ros2 param dump`.
        dynamic_typing=True,
        check_value=camera_names_problem,
    ),
    ParamSpec(
        "batch_wait_sec",
        0.02,
        "Several cameras: after the first frame of a cycle, wait up to this long for the frames "
        "of the other live cameras (in the previous cycle, or heard from in the last second) so "
        "that they share one "
        "pose-network batch; 0: take what is there. Frames that waited already are not held.",
        float_range=(0.0, 1.0),
    ),
    ParamSpec(
        "input_type",
        "raw",
        "'raw': sensor_msgs/Image on 'image'; 'compressed': sensor_msgs/CompressedImage (JPEG or "
        "PNG) on 'image/compressed'.",
        read_only=True,
        choices=("raw", "compressed"),
    ),
    ParamSpec(
        "qos.reliability",
        "best_effort",
        "Reliability of the image subscription. 'best_effort' receives from every camera driver "
        "(reliable and best-effort publishers alike); 'reliable' only from reliable publishers.",
        read_only=True,
        choices=("best_effort", "reliable"),
    ),
    ParamSpec(
        "qos.depth",
        1,
        "Queue depth of the image subscription (keep last). Only the newest frame is processed "
        "anyway; more depth only adds latency.",
        read_only=True,
        int_range=(1, 100),
    ),
    ParamSpec(
        "use_camera_info",
        True,
        "Subscribe to 'camera_info' (beside the image) and place RViz markers and 3D keypoints "
        "through its calibration (K, D, R, P as image_geometry reads them); without it markers "
        "use markers.pixel_scale.",
        read_only=True,
    ),
    ParamSpec(
        "camera.rectified",
        False,
        "The images are rectified already (image_rect, or a driver that rectifies itself): pixels "
        "become rays through camera_info's P and its distortion D is not applied. false: raw "
        "images (image_raw), whose keypoints are undistorted with K and D first.",
        read_only=True,
    ),
    ParamSpec(
        "use_depth",
        False,
        "Subscribe to 'depth' (sensor_msgs/Image registered to the colour image: 16UC1/mono16 "
        "millimetres or 32FC1 metres), pair it with each colour frame by header stamp, and publish "
        "keypoint positions in metres (needs camera_info).",
        read_only=True,
    ),
    ParamSpec(
        "depth.slop_sec",
        _DEPTH.slop_sec,
        "A colour and a depth image are paired when their header stamps (their arrival times, "
        "where a stamp is 0) differ by at most this; colour frames without a partner are "
        "processed without positions.",
        read_only=True,
        float_range=(0.001, 10.0),
    ),
    ParamSpec(
        "depth.min_m",
        _DEPTH.min_m,
        "Depth readings nearer than this (metres) are no reading.",
        float_range=(0.0, 100.0),
    ),
    ParamSpec(
        "depth.max_m",
        _DEPTH.max_m,
        "Depth readings farther than this (metres) are no reading; must exceed depth.min_m.",
        float_range=(0.01, 1000.0),
    ),
    ParamSpec(
        "depth.patch_radius",
        _DEPTH.patch_radius,
        "Each keypoint's depth is the median of the valid readings in a (2r+1)x(2r+1) window of "
        "this radius r (pixels) around it.",
        int_range=(0, 50),
    ),
    ParamSpec(
        "depth.person_band_m",
        _DEPTH.person_band_m,
        "Only readings within this distance (metres) of the person's own median depth count for "
        "its keypoints (a wrist in front of a wall does not take the wall's depth).",
        float_range=(0.01, 100.0),
    ),
    ParamSpec(
        "depth.allow_rescale",
        False,
        "Accept a depth image of another size than the colour image (same aspect ratio), scaled "
        "to it. false: such depth is refused with a warning (no 3D; poses still published), "
        "because an unregistered depth stream has another size and another view.",
    ),
    ParamSpec(
        "max_image_pixels",
        DEFAULT_MAX_IMAGE_PIXELS,
        "Frames with more pixels are refused (before allocating), whatever their header claims.",
        int_range=(1, 2**31 - 1),
    ),
    ParamSpec(
        "no_input_warning_sec",
        5.0,
        "Warn (log, repeated every 30 s, and /diagnostics WARN) when no frame has arrived on the "
        "input topic for this long: before the first frame and after frames stopped.",
        read_only=True,
        float_range=(0.5, 3600.0),
    ),
    ParamSpec(
        "managed",
        False,
        "Lifecycle: false = configure and activate at start (a plain node); true = wait for "
        "lifecycle transitions (`ros2 lifecycle set`, a lifecycle manager): configure loads the "
        "model, activate subscribes.",
        read_only=True,
    ),
    ParamSpec(
        "log_period_sec",
        1.0,
        "Period of the status line (rate, latency, persons, dropped frames).",
        read_only=True,
        float_range=(1.0, 3600.0),
    ),
    # --- results (runtime-changeable: they apply from the next frame) ---
    ParamSpec(
        "detector.score_threshold",
        0.5,
        "Minimum detector score of a person box.",
        float_range=_UNIT,
    ),
    ParamSpec(
        "keypoint_score_threshold",
        0.2,
        "Keypoints above this score count towards the person score (all 17 are always published).",
        float_range=_UNIT,
    ),
    ParamSpec(
        "max_persons",
        20,
        "At most this many persons per frame (the highest scored).",
        int_range=(1, 100),
    ),
    # --- visualisation (runtime-changeable) ---
    ParamSpec(
        "debug_image.enabled",
        True,
        "Publish the annotated image on 'poses/image' (drawn only while someone subscribes).",
    ),
    ParamSpec(
        "debug_image.keypoint_threshold",
        0.3,
        "Keypoints and limbs below this score are not drawn on the annotated image.",
        float_range=_UNIT,
    ),
    ParamSpec(
        "markers.keypoint_threshold",
        0.3,
        "Keypoints and limbs below this score get no RViz marker.",
        float_range=_UNIT,
    ),
    ParamSpec(
        "markers.plane_distance",
        2.0,
        "Without depth, skeletons are drawn on a plane this far in front of the camera (metres, "
        "along the optical axis).",
        float_range=(0.01, 1000.0),
    ),
    ParamSpec(
        "markers.pixel_scale",
        0.002,
        "Metres per pixel on that plane when no camera_info has arrived (0.002: a 640-pixel-wide "
        "image spans 1.28 m).",
        float_range=(1e-6, 1.0),
    ),
    ParamSpec(
        "markers.line_width",
        0.01,
        "Width of skeleton lines (metres).",
        float_range=(1e-4, 1.0),
    ),
    ParamSpec(
        "markers.sphere_size",
        0.03,
        "Diameter of keypoint spheres (metres).",
        float_range=(1e-4, 1.0),
    ),
    # --- tracking (pose_ros.tracking; runtime-changeable, applied between frames) ---
    ParamSpec(
        "tracking.enabled",
        _TRACKING.enabled,
        "Track ids across frames (PersonPose.id); false: ids -1, raw keypoints, the detector on "
        "every frame.",
    ),
    ParamSpec(
        "tracking.min_hits",
        _TRACKING.min_hits,
        "Frames a person must be matched before it gets an id (-1 until then).",
        int_range=(1, 100),
    ),
    ParamSpec(
        "tracking.max_age_sec",
        _TRACKING.max_age_sec,
        "Seconds (image header time) a track survives unseen; a person back within it keeps "
        "the id.",
        float_range=(0.01, 60.0),
    ),
    ParamSpec(
        "tracking.iou_weight",
        _TRACKING.iou_weight,
        "Weight of box IoU against keypoint OKS when matching (1: boxes only).",
        float_range=_UNIT,
    ),
    ParamSpec(
        "tracking.match_threshold",
        _TRACKING.match_threshold,
        "Least similarity (weighted IoU/OKS, 0..1) of a detection and a track to match.",
        float_range=_UNIT,
    ),
    ParamSpec(
        "smoothing.enabled",
        _SMOOTHING.enabled,
        "One-Euro smoothing of keypoint x, y (and 3D positions) per track; scores stay the "
        "network's.",
    ),
    ParamSpec(
        "smoothing.min_cutoff",
        _SMOOTHING.min_cutoff,
        "One-Euro cutoff at rest (Hz): lower smooths more.",
        float_range=(1e-3, 100.0),
    ),
    ParamSpec(
        "smoothing.beta",
        _SMOOTHING.beta,
        "One-Euro speed coefficient (1/pixel): higher follows fast motion with less lag.",
        float_range=(0.0, 10.0),
    ),
    ParamSpec(
        "smoothing.d_cutoff",
        _SMOOTHING.d_cutoff,
        "One-Euro cutoff of the speed estimate (Hz).",
        float_range=(1e-3, 100.0),
    ),
    ParamSpec(
        "smoothing.position_min_cutoff",
        _SMOOTHING.position_min_cutoff,
        "One-Euro cutoff of 3D positions and the person centre at rest (Hz): lower is smoother.",
        float_range=(1e-3, 100.0),
    ),
    ParamSpec(
        "smoothing.position_beta",
        _SMOOTHING.position_beta,
        "How fast the cutoff of 3D positions rises with their speed (per m/s): higher follows "
        "walking with less lag (2.4 cm at 1.5 m/s and 30 Hz with the defaults).",
        float_range=(0.0, 1000.0),
    ),
    ParamSpec(
        "detector.interval",
        1,
        "Run the person detector every N-th frame (1: every frame); in between, each confirmed "
        "track's box comes from its last keypoints (faster; docs/tracking.md). Needs "
        "tracking.enabled.",
        int_range=(1, 100),
    ),
    ParamSpec(
        "detector.reuse_score_threshold",
        DEFAULT_REUSE_SCORE_THRESHOLD,
        "A person found in a reused box and scoring below this is dropped and the next frame "
        "runs the detector.",
        float_range=_UNIT,
    ),
)

#: name → spec, in declaration order.
SPECS: dict[str, ParamSpec] = {spec.name: spec for spec in PARAMETERS}
#: name → default value: the one place defaults live.
DEFAULTS: dict[str, ParamValue] = {spec.name: spec.default for spec in PARAMETERS}
#: Parameters that may change while the node runs.
RUNTIME_PARAMETERS: frozenset[str] = frozenset(s.name for s in PARAMETERS if not s.read_only)


def parameter_problem(name: str, value: Any) -> str | None:
    """What is wrong with setting ``name`` to ``value``, or None (unknown names are not ours)."""
    spec = SPECS.get(name)
    return None if spec is None else spec.problem(value)


@dataclass(frozen=True)
class MarkerStyle:
    """How results look in RViz (see the ``markers.*`` parameters)."""

    keypoint_threshold: float = float(DEFAULTS["markers.keypoint_threshold"])
    plane_distance: float = float(DEFAULTS["markers.plane_distance"])
    pixel_scale: float = float(DEFAULTS["markers.pixel_scale"])
    line_width: float = float(DEFAULTS["markers.line_width"])
    sphere_size: float = float(DEFAULTS["markers.sphere_size"])


@dataclass(frozen=True)
class RuntimeSettings:
    """The runtime-changeable parameters as one immutable snapshot.

    The inference worker reads ``node.settings`` once per cycle; a parameter change builds a new
    snapshot and swaps the reference, so a frame never sees half of an update. What the stream
    core does over time (tracking, smoothing, detector interval, depth) is its ``stream`` part,
    built by the library's :func:`pose_ros.stream.settings_from_values` from the same names.
    """

    stream: StreamSettings
    max_image_pixels: int
    debug_image_enabled: bool
    debug_image_keypoint_threshold: float
    markers: MarkerStyle
    batch_wait_sec: float = float(DEFAULTS["batch_wait_sec"])

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> RuntimeSettings:
        """Build from parameter values (name → value); names not given take their default."""
        values = {**DEFAULTS, **values}
        return cls(
            stream=settings_from_values(values),
            max_image_pixels=int(values["max_image_pixels"]),
            debug_image_enabled=bool(values["debug_image.enabled"]),
            debug_image_keypoint_threshold=float(values["debug_image.keypoint_threshold"]),
            markers=MarkerStyle(
                keypoint_threshold=float(values["markers.keypoint_threshold"]),
                plane_distance=float(values["markers.plane_distance"]),
                pixel_scale=float(values["markers.pixel_scale"]),
                line_width=float(values["markers.line_width"]),
                sphere_size=float(values["markers.sphere_size"]),
            ),
            batch_wait_sec=float(values["batch_wait_sec"]),
        )


def settings_problem(values: Mapping[str, Any]) -> str | None:
    """What is wrong with a combination of parameter values that each pass their own check (the
    depth range's ends), or None."""
    try:
        RuntimeSettings.from_values(values)
    except ValueError as error:
        return str(error)
    return None
