"""``pose-ros-infer --bag``: every frame of a recording through the pose pipeline and the stream
core, the results written as a new recording (poses, markers, optionally annotated images and the
input topics) and as COCO keypoint results with track ids.

    pose-ros-infer --bag run1/ --topic /cam/color/image_raw --output run1_poses.mcap

Without ``--topic`` the recording's image topics are listed with their message counts. Everything
that can be refused (a recording that does not exist or cannot be read, a topic that is not an
image, an output that exists) is refused before the model loads. Ctrl-C (or SIGTERM) finishes the
frame in progress and closes the outputs: both are complete, readable files holding every frame
processed so far.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from tqdm import tqdm

from pose_ros.depth_pairing import DepthPairing, Paired
from pose_ros.fileio import atomic_write
from pose_ros.recording import (
    CameraTopics,
    CorruptMessageError,
    Recording,
    RecordingError,
    parse_topic_mapping,
    stamp_ns,
)
from pose_ros.stream import CameraFrame, StreamCore, StreamSettings
from pose_ros.types import MIN_IMAGE_SIDE

#: Frames of one camera waiting for the other cameras' frames before a cycle runs without them
#: (one camera far ahead of another in the recording, or a camera that went quiet).
MAX_WAITING_FRAMES: Final[int] = 4
PREFIX: Final[str] = "pose-ros-infer"


def add_bag_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--bag`` (docs/recordings.md)."""
    bag = parser.add_argument_group(
        "recordings", "process a rosbag2 folder, an .mcap/.db3 file or a ROS 1 .bag (--bag)"
    )
    bag.add_argument("--bag", metavar="PATH", help="the recording to process (instead of INPUT)")
    bag.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="IMAGE_TOPIC",
        help="image topic to process (repeat for several cameras: one batch per cycle, as the "
        "node's cameras); without it the recording's image topics are listed",
    )
    bag.add_argument(
        "--camera-info-topic",
        action="append",
        default=[],
        metavar="[IMAGE_TOPIC=]TOPIC",
        help="camera_info of an image topic (default: <namespace>/camera_info)",
    )
    bag.add_argument(
        "--depth-topic",
        action="append",
        default=[],
        metavar="[IMAGE_TOPIC=]TOPIC",
        help="registered depth of an image topic (default: found by the conventions of "
        "docs/recordings.md, e.g. aligned_depth_to_color/image_raw)",
    )
    bag.add_argument(
        "--depth",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="3D positions from registered depth topics found by convention",
    )
    bag.add_argument(
        "--rectified",
        action="store_true",
        help="the images are rectified already (image_rect): the node's camera.rectified",
    )
    bag.add_argument(
        "--annotated",
        action="store_true",
        help="also write the annotated image (JPEG) of every frame: <namespace>/poses/image/"
        "compressed",
    )
    bag.add_argument(
        "--copy-input",
        action="store_true",
        help="write the input topics (images, camera_info, depth) into the output too, so one "
        "file replays everything",
    )
    bag.add_argument(
        "--output-storage",
        choices=("mcap", "sqlite3"),
        default="mcap",
        help="storage of a rosbag2 folder output (an output ending in .mcap is one MCAP file)",
    )
    bag.add_argument(
        "--results",
        metavar="PATH",
        help="COCO keypoint results with track ids (default: <output>_results.json beside the "
        "output)",
    )
    bag.add_argument(
        "--results-only",
        action="store_true",
        help="write only the results JSON (no output recording; needs no ROS install)",
    )
    bag.add_argument(
        "--overwrite", action="store_true", help="replace an existing output recording and results"
    )


def default_output(bag: Path) -> Path:
    """``run1/`` or ``run1.mcap`` → ``run1_poses.mcap`` in the current folder."""
    name = bag.resolve().name
    return Path(f"{name.rsplit('.', 1)[0] if bag.is_file() else name}_poses.mcap")


def default_results(output: Path) -> Path:
    """``out.mcap`` → ``out_results.json``; ``out/`` (a folder) → ``out_results.json`` beside it."""
    stem = output.name[: -len(".mcap")] if output.suffix == ".mcap" else output.name
    return output.with_name(f"{stem}_results.json")


@dataclass
class TopicCounts:
    """What happened to the frames of one image topic."""

    read: int = 0
    processed: int = 0
    corrupt: int = 0
    failed: int = 0
    persons: int = 0
    with_positions: int = 0
    without_depth: int = 0

    def line(self, topic: str, depth: bool) -> str:
        parts = [f"{self.read} frame(s) read", f"{self.processed} processed"]
        if self.corrupt:
            parts.append(f"{self.corrupt} corrupt (skipped)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{self.persons} person(s)")
        if depth:
            parts.append(f"3D positions on {self.with_positions}")
            if self.without_depth:
                parts.append(f"{self.without_depth} without a depth image")
        return f"{topic}: " + ", ".join(parts)


@dataclass
class _Colour:
    """A colour message between the recording and a cycle."""

    msg: Any
    log_time_ns: int


@dataclass
class _Camera:
    """The state of one camera while the recording is read."""

    topics: CameraTopics
    pairing: DepthPairing | None
    counts: TopicCounts = field(default_factory=TopicCounts)
    model: Any = None  # the camera model of the latest usable camera_info, or None
    info_raw: bytes | None = None
    #: colour frames out of the pairing, waiting for a cycle: (colour, depth message or None)
    waiting: deque[tuple[_Colour, Any]] = field(default_factory=deque)

    @property
    def exhausted(self) -> bool:
        """All of its frames have been read and left the pairing."""
        pending = self.pairing.waiting if self.pairing is not None else 0
        return self.counts.read >= self.topics.frames and not pending


class _Reporter:
    """Problems reported once per topic and kind (then only counted for the summary), printed
    above the progress bar."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()

    def once(self, topic: str, kind: str, message: str, *, counted: bool = True) -> None:
        if (topic, kind) in self._said:
            return
        self._said.add((topic, kind))
        more = f" (further ones on {topic} are counted)" if counted else ""
        tqdm.write(f"{PREFIX}: {message}{more}", file=sys.stderr)

    @staticmethod
    def say(message: str) -> None:
        tqdm.write(f"{PREFIX}: {message}", file=sys.stderr)


class _ResultsJson:
    """COCO keypoint results streamed into a JSON array (memory stays flat however long the
    recording); the file itself is an atomic_write, renamed when closed."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._first = True
        stream.write("[")

    def add(self, entries: list[dict]) -> None:
        for entry in entries:
            self._stream.write(("\n" if self._first else ",\n") + json.dumps(entry))
            self._first = False

    def close(self) -> None:
        self._stream.write("\n]\n")


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM ask the loop to stop after the frame in progress (the outputs are then
    closed normally); the previous handlers come back afterwards."""

    def request_stop(signum: int, frame: Any) -> None:
        if not stop.is_set():
            _Reporter.say("stopping after the frame in progress (the outputs stay readable)")
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class BagRun:
    """How a run went.

    Attributes:
        exit_code: 0 done, 1 nothing processed, 2 only listed, 130 interrupted.
        frames: image messages of the chosen topics in the recording.
        processed: frames processed and written.
        seconds: time of the processing loop (reading, decoding, pipeline, writing; not the
            model's loading).
        cpu_seconds: the processor time of the process over the same loop.
    """

    exit_code: int
    frames: int = 0
    processed: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def run_bag(
    args: argparse.Namespace,
    build_estimator: Callable[[], Any],
    settings: StreamSettings,
    *,
    on_progress: Callable[[int], None] | None = None,
) -> BagRun:
    """``pose-ros-infer --bag``.

    Args:
        args: the parsed options.
        build_estimator: makes the pose estimator (called after every check has passed).
        settings: the stream core's settings (the node's parameters, from the options).
        on_progress: called with the number of frames done after each cycle (the benchmark's
            memory probe).

    Raises:
        RecordingError, pose_ros.ros.recording_output.OutputError: refusals, before any work.
    """
    if args.input is not None:
        raise RecordingError(f"give either INPUT ({args.input}) or --bag, not both")
    with Recording(args.bag) as recording:
        if not args.topic:
            print(recording.describe_image_topics())
            print(
                f"{PREFIX}: choose the image topic(s) to process with --topic (repeat it for "
                "several cameras)",
                file=sys.stderr,
            )
            return BagRun(2)
        cameras = recording.select_cameras(
            args.topic,
            camera_info=parse_topic_mapping(
                args.camera_info_topic, "--camera-info-topic", args.topic
            ),
            depth=parse_topic_mapping(args.depth_topic, "--depth-topic", args.topic),
            use_depth=args.depth,
        )
        if args.copy_input and not recording.is_ros2:
            raise RecordingError(
                "--copy-input copies ROS 2 messages; a ROS 1 bag's messages are not (convert it "
                "first with `rosbags-convert`)"
            )
        output = None if args.results_only else Path(args.output or default_output(recording.path))
        results_path = Path(
            args.results or default_results(output or default_output(recording.path))
        )
        output_module = None
        if output is not None:
            output_module = _output_module()
            if output.resolve() == recording.path.resolve():
                raise RecordingError(f"{output}: the output would replace the recording read")
            output_module.check_output(output, overwrite=args.overwrite)
        if results_path.exists() and not args.overwrite:
            raise RecordingError(f"{results_path} exists already (give --overwrite to replace it)")

        for camera in cameras:
            print(
                f"{PREFIX}: {camera.image} ({camera.frames} frame(s)): camera_info "
                f"{camera.camera_info or 'none (markers on a plane, no 3D)'}, depth "
                f"{camera.depth or 'none'}; outputs under {camera.namespace or '/'}"
            )
        estimator = build_estimator()
        print(f"{PREFIX}: {estimator.describe()}")
        return _process(
            args, recording, cameras, estimator, settings, output, results_path, on_progress
        )


def _process(
    args: argparse.Namespace,
    recording: Recording,
    cameras: list[CameraTopics],
    estimator: Any,
    settings: StreamSettings,
    output: Path | None,
    results_path: Path,
    on_progress: Callable[[int], None] | None,
) -> BagRun:
    """The processing loop: messages in log-time order → pairing → cycles → outputs."""
    from pose_ros.ros.conversions import (
        ImageConversionError,
        compressed_msg_to_array,
        depth_msg_to_array,
        image_msg_to_array,
    )

    core = StreamCore(estimator, settings)
    start_sec = recording.start_ns * 1e-9
    states = {
        camera.image: _Camera(
            camera,
            None
            if camera.depth is None
            else DepthPairing(settings.depth.slop_sec, depth_topic=camera.depth, start=start_sec),
        )
        for camera in cameras
    }
    roles: dict[str, tuple[str, _Camera]] = {}
    for state in states.values():
        roles[state.topics.image] = ("image", state)
        if state.topics.camera_info:
            roles[state.topics.camera_info] = ("camera_info", state)
        if state.topics.depth:
            roles[state.topics.depth] = ("depth", state)
    max_pixels = int(args.max_image_pixels)
    reporter = _Reporter()
    stop = threading.Event()
    total = sum(camera.frames for camera in cameras)
    image_id = 0
    started, cpu_started = time.perf_counter(), time.process_time()

    with ExitStack() as stack:
        writer = None
        if output is not None:
            writer = _output_module().RecordingOutput(
                output,
                cameras,
                storage=args.output_storage,
                annotated=args.annotated,
                keypoint_threshold=args.keypoint_threshold,
            )
            stack.callback(writer.close)
            if args.copy_input:
                writer.copy_topics(recording.connections(list(roles)), recording.typestore)
        results = _ResultsJson(stack.enter_context(atomic_write(results_path, "w")))
        stack.callback(results.close)
        progress = stack.enter_context(
            tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)
        )
        stack.enter_context(_stop_on_signals(stop))

        def post(state: _Camera, frames: list[Paired]) -> None:
            """Colour frames out of the pairing, into the camera's waiting line."""
            for paired in frames:
                if paired.why is not None:
                    state.counts.without_depth += 1
                    reporter.once(
                        state.topics.image,
                        "without_depth",
                        f"{state.topics.image}: frame processed without depth: {paired.why}",
                    )
                state.waiting.append((paired.colour, paired.depth))

        def prepare(state: _Camera, colour: _Colour, depth_msg: Any) -> CameraFrame | None:
            """The stream core's frame of one message; None for a bad frame (counted)."""
            topic = state.topics.image
            convert = compressed_msg_to_array if state.topics.compressed else image_msg_to_array
            try:
                image = convert(colour.msg, max_pixels=max_pixels)
            except ImageConversionError as error:
                state.counts.corrupt += 1
                reporter.once(topic, "image", f"{topic}: bad frame skipped: {error}")
                return None
            if min(image.width, image.height) < MIN_IMAGE_SIDE:
                state.counts.corrupt += 1
                reporter.once(
                    topic,
                    "image",
                    f"{topic}: bad frame skipped: {image.width}x{image.height} is smaller than "
                    f"the {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels the pose network needs",
                )
                return None
            header = colour.msg.header
            if not header.frame_id:
                reporter.once(
                    topic,
                    "frame_id",
                    f"images on {topic} have an empty header.frame_id: poses keep it, but RViz "
                    "cannot place the markers",
                    counted=False,
                )
            depth_m = None
            if depth_msg is not None:
                try:
                    depth_m = depth_msg_to_array(depth_msg, max_pixels=max_pixels)
                except ImageConversionError as error:
                    reporter.once(
                        state.topics.depth or "",
                        "depth",
                        f"bad depth frame on {state.topics.depth}: {error}; frame processed "
                        "without positions",
                    )
            return CameraFrame(
                image.pixels,
                image.color_order,
                stamp_sec=stamp_ns(header) * 1e-9,
                arrival_sec=colour.log_time_ns * 1e-9,
                camera=topic,
                frame_id=str(header.frame_id),
                camera_model=state.model,
                depth_m=depth_m,
                topic=topic,
                depth_topic=state.topics.depth or "",
            )

        def run_cycle(batch: list[tuple[_Camera, tuple[_Colour, Any]]]) -> None:
            """At most one frame per camera: one stream-core cycle (one network batch)."""
            nonlocal image_id
            kept = []
            for state, (colour, depth_msg) in batch:
                frame = prepare(state, colour, depth_msg)
                if frame is not None:
                    kept.append((state, colour, frame))
            for (state, colour, frame), result in zip(
                kept, core.process([frame for _, _, frame in kept]), strict=True
            ):
                topic = state.topics.image
                for event in result.events:
                    reporter.once(topic, event.kind, f"{topic}: {event.message}", counted=False)
                if result.error is not None:
                    state.counts.failed += 1
                    reporter.once(
                        topic,
                        "failed",
                        f"{topic}: processing a frame failed: {type(result.error).__name__}: "
                        f"{result.error}",
                    )
                    continue
                persons = result.persons
                if writer is not None:
                    writer.write_frame(
                        state.topics,
                        colour.msg.header,
                        colour.log_time_ns,
                        frame.image,
                        frame.color_order,
                        persons,
                        frame.camera_model,
                    )
                results.add(_result_entries(persons, image_id, topic, colour))
                image_id += 1
                state.counts.processed += 1
                state.counts.persons += len(persons)
                state.counts.with_positions += int(result.has_positions)
            progress.update(len(batch))
            if on_progress is not None:
                on_progress(progress.n)

        def run_ready_cycles(final: bool = False) -> None:
            """Cycles while every camera has a frame waiting (or has none left to come), or one
            camera is far ahead; at the end, until nothing waits."""
            while not stop.is_set():
                queued = [s for s in states.values() if s.waiting]
                if not queued:
                    return
                everyone = all(s.waiting or s.exhausted for s in states.values())
                crowded = any(len(s.waiting) >= MAX_WAITING_FRAMES for s in queued)
                if not (final or everyone or crowded):
                    return
                run_cycle([(s, s.waiting.popleft()) for s in queued])

        messages = recording.messages(list(roles))
        while not stop.is_set():
            try:
                connection, log_time_ns, raw = next(messages)
            except StopIteration:
                break
            except RecordingError as error:
                # A truncated file: what was read is processed and written, then the summary.
                reporter.say(f"{error}; the outputs hold the frames read before")
                break
            if writer is not None and args.copy_input:
                writer.write_input(connection, log_time_ns, raw)
            now = log_time_ns * 1e-9
            role, state = roles[connection.topic]
            try:
                msg = recording.decode(connection, raw)
            except CorruptMessageError as error:
                if role == "image":
                    state.counts.read += 1
                    state.counts.corrupt += 1
                    progress.update(1)
                reporter.once(
                    connection.topic, "corrupt", f"{connection.topic}: corrupt message: {error}"
                )
                msg = None
            if msg is not None and role == "camera_info":
                _update_camera_model(state, raw, msg, bool(args.rectified), reporter)
            elif msg is not None and role == "depth":
                post(state, state.pairing.add_depth(msg, stamp_ns(msg.header) * 1e-9, now))
            elif msg is not None:
                state.counts.read += 1
                colour = _Colour(msg, log_time_ns)
                if state.pairing is None:
                    post(state, [Paired(colour, None, None, now)])
                else:
                    post(state, state.pairing.add_colour(colour, stamp_ns(msg.header) * 1e-9, now))
            # The recording's log time is the pairing's clock (the node's is its own).
            for other in states.values():
                if other.pairing is not None:
                    post(other, other.pairing.expire(now))
            run_ready_cycles()
        if not stop.is_set():
            for state in states.values():
                if state.pairing is not None:
                    post(state, state.pairing.flush("the recording ended"))
            run_ready_cycles(final=True)
        progress.close()

    elapsed = time.perf_counter() - started
    code = _summary(
        states, core, total, elapsed, output, writer, results_path, stop.is_set(), estimator
    )
    processed = sum(state.counts.processed for state in states.values())
    return BagRun(code, total, processed, elapsed, time.process_time() - cpu_started)


def _output_module() -> Any:
    """pose_ros.ros.recording_output, or a clear refusal where ROS 2 is not installed."""
    try:
        from pose_ros.ros import recording_output
    except ImportError as error:
        raise RecordingError(
            f"writing a recording needs ROS 2's Python messages and the built pose_ros package "
            f"({error}): source the ROS 2 environment (`source install/setup.bash`), or give "
            "--results-only for the results JSON alone"
        ) from None
    return recording_output


def _update_camera_model(
    state: _Camera, raw: bytes, msg: Any, rectified: bool, reporter: _Reporter
) -> None:
    """The camera's model from its latest camera_info, as the node reads it (unchanged bytes:
    nothing to do)."""
    from pose_ros.camera import CameraModelError
    from pose_ros.ros.conversions import camera_from_info

    if state.info_raw == raw:
        return
    state.info_raw = bytes(raw)
    try:
        state.model = camera_from_info(msg, rectified=rectified)
    except CameraModelError as error:
        state.model = None
        reporter.once(
            state.topics.camera_info or "",
            "camera_info",
            f"{state.topics.camera_info}: camera_info refused: {error}; markers on a plane, no "
            "3D positions",
        )


def _result_entries(persons: list, image_id: int, topic: str, colour: _Colour) -> list[dict]:
    from pose_ros.pipeline import coco_keypoint_results

    entries = coco_keypoint_results(persons, image_id, decimals=5)
    stamp = stamp_ns(colour.msg.header)
    for entry, person in zip(entries, persons, strict=True):
        entry["track_id"] = int(person.track_id)
        entry["topic"] = topic
        entry["stamp_ns"] = stamp
    return entries


def _summary(
    states: dict[str, _Camera],
    core: StreamCore,
    total: int,
    elapsed: float,
    output: Path | None,
    writer: Any,
    results_path: Path,
    interrupted: bool,
    estimator: Any,
) -> int:
    for topic, state in states.items():
        print(f"{PREFIX}: {state.counts.line(topic, state.topics.depth is not None)}")
    read = sum(s.counts.read for s in states.values())
    processed = sum(s.counts.processed for s in states.values())
    rate = processed / elapsed if elapsed > 0 else 0.0
    started = sum(state.tracker.stats.tracks_started for state in core.cameras.values())
    print(
        f"{PREFIX}: {processed} frame(s) processed in {elapsed:.1f} s ({rate:.1f} frames/s); "
        f"{started} track(s) started"
    )
    if output is not None:
        print(f"{PREFIX}: output: {output} ({writer.messages_written} message(s))")
    print(f"{PREFIX}: results: {results_path}")
    if estimator.uses_random_weights:
        print(f"{PREFIX}: WARNING: random weights were used, the keypoints are meaningless")
    if interrupted:
        print(
            f"{PREFIX}: interrupted: {read} of {total} frame(s) read, {processed} processed; the "
            "outputs hold every processed frame",
            file=sys.stderr,
        )
        return 130
    return 0 if processed else 1
