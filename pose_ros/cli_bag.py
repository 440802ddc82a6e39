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

from pose_ros.fileio import atomic_write
from pose_ros.recording import (
    CameraTopics,
    CorruptMessageError,
    Recording,
    RecordingError,
    parse_topic_mapping,
    stamp_ns,
)

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
    with_depth: int = 0

    def line(self, topic: str) -> str:
        parts = [f"{self.read} frame(s) read", f"{self.processed} processed"]
        if self.corrupt:
            parts.append(f"{self.corrupt} corrupt (skipped)")
        if self.failed:
            parts.append(f"{self.failed} failed")
        parts.append(f"{self.persons} person(s)")
        if self.with_depth:
            parts.append(f"3D on {self.with_depth}")
        return f"{topic}: " + ", ".join(parts)


@dataclass
class _Camera:
    """The state of one camera while the recording is read."""

    topics: CameraTopics
    counts: TopicCounts = field(default_factory=TopicCounts)
    model: Any = None  # PinholeCamera from the latest usable camera_info, or None
    info_raw: bytes | None = None
    waiting: deque = field(default_factory=deque)  # decoded colour messages ready for a cycle

    @property
    def exhausted(self) -> bool:
        return self.counts.read >= self.topics.frames


@dataclass
class _Waiting:
    """A colour message between the recording and a cycle."""

    msg: Any
    log_time_ns: int
    depth: Any = None


class _Reporter:
    """Problems reported once per topic and kind (then only counted for the summary), printed
    above the progress bar."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()

    def once(self, topic: str, kind: str, message: str) -> None:
        if (topic, kind) in self._said:
            return
        self._said.add((topic, kind))
        tqdm.write(f"{PREFIX}: {message} (further ones on {topic} are counted)", file=sys.stderr)

    @staticmethod
    def say(message: str) -> None:
        tqdm.write(f"{PREFIX}: {message}", file=sys.stderr)


class _ResultsJson:
    """COCO keypoint results streamed into a JSON array (memory stays flat however long the
    recording), written under a temporary name and renamed when closed."""

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


class _FrameProcessor:
    """One cycle of frames (at most one per camera) through the pipeline and the per-camera
    temporal path."""

    def __init__(self, estimator: Any, build_tracker: Any) -> None:
        self._estimator = estimator
        self._build_tracker = build_tracker
        self._trackers: dict[str, Any] = {}

    def process(
        self, frames: list[tuple[str, Any, str, float]]
    ) -> list[tuple[list, Exception | None]]:
        from pose_ros.tracking import track_frame

        results: list[tuple[list, Exception | None]] = []
        for camera, pixels, color_order, stamp in frames:
            tracker = self._trackers.get(camera)
            if tracker is None:
                tracker = self._trackers[camera] = self._build_tracker()
            try:
                persons = track_frame(
                    self._estimator, tracker, pixels, stamp, color_order=color_order
                )
                results.append((persons, None))
            except Exception as error:  # only this frame is lost
                results.append(([], error))
        return results

    @property
    def tracks_started(self) -> int:
        return sum(t.stats.tracks_started for t in self._trackers.values())


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
    build_tracker: Callable[[], Any],
    *,
    on_progress: Callable[[int], None] | None = None,
) -> BagRun:
    """``pose-ros-infer --bag``.

    Args:
        args: the parsed options.
        build_estimator: makes the pose estimator (called after every check has passed).
        build_tracker: makes one camera's tracker.
        on_progress: called with the number of frames done after each cycle (the benchmark's
            memory probe).

    Raises:
        RecordingError, pose_ros.ros.recording_output.OutputError: refusals, before any work.
    """
    from pose_ros.ros.conversions import (
        ImageConversionError,
        camera_from_info,
        compressed_msg_to_array,
        image_msg_to_array,
    )

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
        processor = _FrameProcessor(estimator, build_tracker)
        states = {camera.image: _Camera(camera) for camera in cameras}
        roles: dict[str, tuple[str, _Camera]] = {}
        for state in states.values():
            roles[state.topics.image] = ("image", state)
            if state.topics.camera_info:
                roles[state.topics.camera_info] = ("camera_info", state)
        max_pixels = int(args.max_image_pixels)
        reporter = _Reporter()
        stop = threading.Event()
        total = sum(camera.frames for camera in cameras)
        image_id = 0
        started, cpu_started = time.perf_counter(), time.process_time()

        with ExitStack() as stack:
            writer = None
            if output_module is not None:
                writer = output_module.RecordingOutput(
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

            def run_cycle(batch: list[tuple[_Camera, _Waiting]]) -> None:
                nonlocal image_id
                frames, kept = [], []
                for state, waiting in batch:
                    convert = (
                        compressed_msg_to_array if state.topics.compressed else image_msg_to_array
                    )
                    try:
                        image = convert(waiting.msg, max_pixels=max_pixels)
                    except ImageConversionError as error:
                        state.counts.corrupt += 1
                        reporter.once(
                            state.topics.image,
                            "image",
                            f"{state.topics.image}: bad frame skipped: {error}",
                        )
                        continue
                    stamp = stamp_ns(waiting.msg.header) * 1e-9
                    frames.append((state.topics.image, image.pixels, image.color_order, stamp))
                    kept.append((state, waiting, image))
                for (state, waiting, image), (persons, error) in zip(
                    kept, processor.process(frames), strict=True
                ):
                    if error is not None:
                        state.counts.failed += 1
                        reporter.once(
                            state.topics.image,
                            "failed",
                            f"{state.topics.image}: processing a frame failed: "
                            f"{type(error).__name__}: {error}",
                        )
                        continue
                    if writer is not None:
                        writer.write_frame(
                            state.topics,
                            waiting.msg.header,
                            waiting.log_time_ns,
                            image.pixels,
                            image.color_order,
                            persons,
                            state.model,
                        )
                    results.add(_result_entries(persons, image_id, state.topics.image, waiting))
                    image_id += 1
                    state.counts.processed += 1
                    state.counts.persons += len(persons)
                progress.update(len(batch))
                if on_progress is not None:
                    on_progress(progress.n)

            def run_ready_cycles(final: bool = False) -> None:
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
                    continue
                if role == "camera_info":
                    _update_camera_model(state, raw, msg, camera_from_info, reporter)
                    continue
                state.counts.read += 1
                state.waiting.append(_Waiting(msg, log_time_ns))
                run_ready_cycles()
            run_ready_cycles(final=True)
            progress.close()

        elapsed = time.perf_counter() - started
        code = _summary(
            states,
            processor,
            total,
            elapsed,
            output,
            writer,
            results_path,
            stop.is_set(),
            estimator,
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
    state: _Camera, raw: bytes, msg: Any, camera_from_info: Any, reporter: _Reporter
) -> None:
    """The camera's model from its latest camera_info (unchanged bytes: nothing to do)."""
    from pose_ros.camera import CameraModelError

    if state.info_raw == raw:
        return
    state.info_raw = bytes(raw)
    try:
        state.model = camera_from_info(msg)
    except CameraModelError as error:
        state.model = None
        reporter.once(
            state.topics.camera_info or "",
            "camera_info",
            f"{state.topics.camera_info}: camera_info refused: {error}; markers on a plane, no "
            "3D positions",
        )


def _result_entries(persons: list, image_id: int, topic: str, waiting: _Waiting) -> list[dict]:
    from pose_ros.pipeline import coco_keypoint_results

    entries = coco_keypoint_results(persons, image_id, decimals=5)
    stamp = stamp_ns(waiting.msg.header)
    for entry, person in zip(entries, persons, strict=True):
        entry["track_id"] = int(person.track_id)
        entry["topic"] = topic
        entry["stamp_ns"] = stamp
    return entries


def _summary(
    states: dict[str, _Camera],
    processor: _FrameProcessor,
    total: int,
    elapsed: float,
    output: Path | None,
    writer: Any,
    results_path: Path,
    interrupted: bool,
    estimator: Any,
) -> int:
    for topic, state in states.items():
        print(f"{PREFIX}: {state.counts.line(topic)}")
    read = sum(s.counts.read for s in states.values())
    processed = sum(s.counts.processed for s in states.values())
    rate = processed / elapsed if elapsed > 0 else 0.0
    print(
        f"{PREFIX}: {processed} frame(s) processed in {elapsed:.1f} s ({rate:.1f} frames/s); "
        f"{processor.tracks_started} track(s) started"
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
