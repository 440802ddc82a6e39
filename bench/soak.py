"""Soak: the real ``pose_node`` (installed executable, its own process, DDS on loopback) under a
30 Hz 640x480 camera stream for 10 minutes, with faults injected on a schedule, and pass criteria
printed at the end. A script with figures, not a timed test: ``make soak`` (``SOAK_ARGS=...``).

Every 30 s it prints the node's resident memory, the image -> /poses latency (p50/p90, measured
here from the moment a frame was published to the moment its answer arrived), the rate of
answers, and the node's own counts of dropped and bad frames (from /diagnostics).

Faults, in cycles after the warm-up (each once per cycle):

* the publisher stops for 10 s and comes back (a camera driver restarting: a new publisher);
* the resolution changes mid-stream (1280x720 for 20 s, then back to 640x480);
* camera_info changes (another K, as after a recalibration);
* a burst of 50 malformed frames (row step shorter than a row) at 100 Hz;
* the stamp jumps backwards by a day (a bag played in a loop, a clock reset).

Pass criteria: RSS growth after the warm-up under 50 MB; no answer to a frame older than 1 s;
after each fault, an answer to a normal frame within 2 s.

    python -m bench.soak                        # through scripts/ros-env (make soak)
    python -m bench.soak --minutes 3 --model random:simplebaseline_res50
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from devtools.ros_harness import Peer, make_header, reliable, running_pose_node
from pose_ros.demo_scene import demo_frames
from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg

NAMESPACE = "/pose_soak"
FRAME_ID = "soak_camera_optical_frame"
#: Pass criteria.
MAX_RSS_GROWTH_MB = 50.0
MAX_ANSWER_AGE_S = 1.0
MAX_RECOVERY_S = 2.0
#: Fault schedule: offsets (s) within each cycle, and the cycle length.
CYCLE_S = 200.0
FAULT_OFFSETS = {
    "publisher stops 10 s": 0.0,
    "resolution 1280x720 for 20 s": 40.0,
    "camera_info changes": 90.0,
    "burst of 50 malformed frames": 120.0,
    "stamp jumps backwards": 160.0,
}
FAULT_DURATION_S = {
    "publisher stops 10 s": 10.0,
    "resolution 1280x720 for 20 s": 20.0,
    "camera_info changes": 0.0,
    "burst of 50 malformed frames": 0.5,
    "stamp jumps backwards": 0.0,
}
BACKWARDS_JUMP_S = 86_400


@dataclass
class Fault:
    name: str
    start: float  # seconds from the start of the run
    #: monotonic time at which normal frames resume (set when it happens)
    resumed_at: float | None = None
    #: stamps (sec) of the normal frames sent from resumed_at on
    recovery_stamps: set[int] = field(default_factory=set)
    recovered_after: float | None = None


def schedule(total_s: float, warmup_s: float) -> list[Fault]:
    """The faults of a run of ``total_s`` seconds: cycles after the warm-up, each fault only if
    it (and 20 s to see the recovery) fits before the end."""
    faults = []
    for cycle_start in itertools.count(warmup_s, CYCLE_S):
        if cycle_start >= total_s:
            break
        for name, offset in FAULT_OFFSETS.items():
            start = cycle_start + offset
            if start + FAULT_DURATION_S[name] + 20.0 <= total_s:
                faults.append(Fault(name, start))
    return sorted(faults, key=lambda fault: fault.start)


def camera_info(width: int, height: int, fx: float) -> CameraInfo:
    info = CameraInfo(header=make_header(0, FRAME_ID), width=width, height=height)
    info.k = [fx, 0.0, (width - 1) / 2, 0.0, fx, (height - 1) / 2, 0.0, 0.0, 1.0]
    info.distortion_model = "plumb_bob"
    info.d = [0.0] * 5
    return info


def malformed(stamp: int) -> Image:
    msg = Image(header=make_header(stamp, FRAME_ID), width=640, height=480, encoding="rgb8")
    msg.step = 100  # shorter than a row: refused as bad input
    msg.data = bytes(100 * 480)
    return msg


class Soak:
    """Publishes the stream and the faults, collects answers and diagnostics, keeps figures."""

    def __init__(self, args: argparse.Namespace, node: Any, peer: Peer) -> None:
        self.args = args
        self.node = node
        self.peer = peer
        self.frames = {
            (640, 480): [f for f, _ in demo_frames(30, width=640, height=480, fps=30)],
            (1280, 720): [f for f, _ in demo_frames(30, width=1280, height=720, fps=30)],
        }
        self.size = (640, 480)
        self.sent_at: dict[int, float] = {}  # stamp sec -> monotonic send time
        self.answers: list[tuple[float, int, float]] = []  # (arrival, stamp, age s)
        self.poses_seen = 0
        self.diagnostics: dict[str, str] = {}
        self.stamp_offset = 1_000_000  # stamps: seconds on a synthetic clock, unique per frame
        self.sequence = itertools.count()
        self.publisher: Any = None
        self.info_publisher = peer.node.create_publisher(
            CameraInfo, f"{NAMESPACE}/camera_info", reliable(1)
        )
        self.info = camera_info(640, 480, 525.0)
        peer.node.create_subscription(
            PersonPoseArray, f"{NAMESPACE}/poses", self._on_poses, reliable(100)
        )
        peer.node.create_subscription(
            DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable(10)
        )
        self._start_publisher()

    def _start_publisher(self) -> None:
        qos = reliable(2) if self.args.qos == "reliable" else qos_profile_sensor_data
        self.publisher = self.peer.node.create_publisher(Image, f"{NAMESPACE}/image", qos)

    def _on_poses(self, msg: PersonPoseArray) -> None:
        now = time.monotonic()
        stamp = msg.header.stamp.sec
        sent = self.sent_at.get(stamp)
        if sent is not None:
            self.answers.append((now, stamp, now - sent))
        self.poses_seen += 1

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == f"pose_node: {NAMESPACE}/image":
                self.diagnostics = {kv.key: kv.value for kv in status.values}
                self.diagnostics["message"] = status.message

    def next_stamp(self) -> int:
        # One second per frame on the synthetic clock keeps every stamp unique (answers are
        # matched to frames by their stamp) while the stamps still only move forward.
        return self.stamp_offset + next(self.sequence)

    def publish_frame(self) -> int:
        stamp = self.next_stamp()
        frames = self.frames[self.size]
        pixels = frames[stamp % len(frames)]
        msg = array_to_image_msg(pixels, "rgb8", header=make_header(stamp, FRAME_ID))
        self.sent_at[stamp] = time.monotonic()
        self.publisher.publish(msg)
        return stamp


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    p50, p90 = np.percentile(values, [50, 90]) * 1e3
    return f"p50 {p50:.0f} ms, p90 {p90:.0f} ms"


def run(args: argparse.Namespace) -> int:
    total_s = args.minutes * 60.0
    warmup_s = min(60.0, total_s / 5)
    faults = schedule(total_s, warmup_s)
    parameters = {
        "model": args.model,
        "allow_random_weights": args.model.startswith("random:"),
        "detector.backend": "full_image",
        "device": args.device,
        "qos.reliability": args.qos,
        "no_input_warning_sec": 2.0,
    }
    print(
        f"soak: {args.minutes:g} min of {args.rate:g} Hz 640x480 rgb8 ({args.qos}), model "
        f"{args.model} on {args.device}; warm-up {warmup_s:.0f} s; faults at "
        + ", ".join(f"{f.start:.0f} s {f.name}" for f in faults),
        flush=True,
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_pose_node(Path(tmp) / "pose_node.log", NAMESPACE, parameters) as node,
    ):
        peer = Peer("pose_soak")
        try:
            soak = Soak(args, node, peer)
            result = _drive(soak, faults, total_s, warmup_s)
            log = node.log()
        finally:
            peer.close()
    errors = [line for line in log.splitlines() if "[ERROR]" in line or "Traceback" in line]
    result["node_error_lines"] = len(errors)
    result["node_error_examples"] = sorted({e.split("]: ", 1)[-1][:160] for e in errors})[:5]
    # What the node said about the stopped camera (log and /diagnostics say the same).
    result["node_camera_stopped_warnings"] = log.count("has the camera stopped?")
    result["node_frames_again_lines"] = log.count("frames arriving again")
    return _report(result, args)


def _drive(soak: Soak, faults: list[Fault], total_s: float, warmup_s: float) -> dict[str, Any]:
    args, peer = soak.args, soak.peer
    start = time.monotonic()
    period = 1.0 / args.rate
    next_frame = start
    next_report = start + args.report_every
    next_info = start
    rss_at_warmup: float | None = None
    rss_max_after_warmup = 0.0
    reports = []
    pending = list(faults)
    active: Fault | None = None
    window_start_answers = 0
    restore: tuple[float, str] | None = None  # (monotonic time, what) to undo a timed fault

    last_iteration = start
    stalls: list[tuple[float, float]] = []  # (run time, seconds) this process did not run
    while (now := time.monotonic()) < start + total_s:
        elapsed = now - start
        # This process is the measuring end: when it is not scheduled (a busy machine), answers
        # wait unread and look older than they are. Such stalls are recorded beside the ages.
        if now - last_iteration > 0.5:
            stalls.append((round(elapsed, 1), round(now - last_iteration, 2)))
        last_iteration = now
        # --- faults ---
        if active is None and pending and elapsed >= pending[0].start:
            active = pending.pop(0)
            if active.name.startswith("publisher stops"):
                peer.node.destroy_publisher(soak.publisher)
                soak.publisher = None
                restore = (now + 10.0, "publisher")
            elif active.name.startswith("resolution"):
                soak.size = (1280, 720)
                soak.info = camera_info(1280, 720, 1050.0)
                active.resumed_at = now  # frames at the new size are the normal ones now
                restore = (now + 20.0, "resolution")
            elif active.name.startswith("camera_info"):
                soak.info = camera_info(640, 480, 900.0)
                soak.info_publisher.publish(soak.info)
                active.resumed_at = now
            elif active.name.startswith("burst"):
                for _ in range(50):
                    soak.publisher.publish(malformed(soak.next_stamp()))
                    peer.spin_for(0.01)
                active.resumed_at = last_iteration = time.monotonic()  # not a stall
            elif active.name.startswith("stamp"):
                soak.stamp_offset -= BACKWARDS_JUMP_S
                active.resumed_at = now
            continue_publishing = soak.publisher is not None
        else:
            continue_publishing = soak.publisher is not None
        if restore is not None and now >= restore[0]:
            if restore[1] == "publisher":
                soak._start_publisher()
            else:
                soak.size = (640, 480)
                soak.info = camera_info(640, 480, 525.0)
            # Recovery counts from here: answers to frames sent from now on.
            active.resumed_at = time.monotonic()
            active.recovery_stamps.clear()
            restore = None
        # --- the stream ---
        if now >= next_frame:
            next_frame += period
            if next_frame < now - 1.0:  # fell far behind (machine busy): do not catch up in bulk
                next_frame = now + period
            if continue_publishing:
                stamp = soak.publish_frame()
                if active is not None and active.resumed_at is not None:
                    active.recovery_stamps.add(stamp)
        if now >= next_info:
            soak.info_publisher.publish(soak.info)
            next_info = now + 1.0
        # --- recovery of the active fault ---
        if active is not None and active.recovery_stamps and restore is None:
            for arrival, stamp, _ in reversed(soak.answers[-50:]):
                if stamp in active.recovery_stamps:
                    active.recovered_after = arrival - active.resumed_at
                    break
            if active.recovered_after is not None or now - active.resumed_at > 10.0:
                faults_done = active
                active = None
                print(
                    f"  {elapsed:6.0f} s  fault '{faults_done.name}': "
                    + (
                        f"answers again after {faults_done.recovered_after:.2f} s"
                        if faults_done.recovered_after is not None
                        else "NO answer within 10 s"
                    ),
                    flush=True,
                )
        # --- figures ---
        if rss_at_warmup is None and elapsed >= warmup_s:
            rss_at_warmup = soak.node.rss_mb()
        if now >= next_report:
            rss = soak.node.rss_mb()
            if rss_at_warmup is not None:
                rss_max_after_warmup = max(rss_max_after_warmup, rss)
            window = soak.answers[window_start_answers:]
            window_start_answers = len(soak.answers)
            ages = [age for _, _, age in window]
            diag = soak.diagnostics
            report = {
                "t_s": round(elapsed),
                "rss_mb": round(rss, 1),
                "latency": _percentiles(ages),
                "answers_per_s": round(len(window) / args.report_every, 1),
                "dropped": diag.get("dropped", "?"),
                "bad_frames": diag.get("bad frames", "?"),
                "failed": diag.get("failed", "?"),
                "load_1min": round(os.getloadavg()[0], 1),
            }
            reports.append(report)
            print(
                f"  {report['t_s']:6d} s  RSS {report['rss_mb']:.0f} MB | latency "
                f"{report['latency']} | {report['answers_per_s']:.1f} answers/s | dropped "
                f"{report['dropped']} | bad frames {report['bad_frames']} | failed "
                f"{report['failed']} | machine load {report['load_1min']}",
                flush=True,
            )
            next_report += args.report_every
        peer.spin_until(lambda: False, max(0.0, min(next_frame, next_report) - time.monotonic()))

    peer.spin_for(2.0)  # last answers
    rss_end = soak.node.rss_mb()
    rss_max_after_warmup = max(rss_max_after_warmup, rss_end)
    ages = [age for _, _, age in soak.answers]
    old_answers = [
        (round(arrival - start, 1), round(age, 2))
        for arrival, _, age in soak.answers
        if age >= MAX_ANSWER_AGE_S
    ]
    return {
        "answers_older_than_limit": old_answers,
        "measuring_process_stalls": stalls,
        "reports": reports,
        "faults": [
            {"name": f.name, "start_s": f.start, "recovered_after_s": f.recovered_after}
            for f in faults
        ],
        "rss_at_warmup_mb": rss_at_warmup,
        "rss_max_after_warmup_mb": rss_max_after_warmup,
        "rss_end_mb": rss_end,
        "frames_sent": len(soak.sent_at),
        "answers": len(soak.answers),
        "oldest_answer_s": max(ages) if ages else None,
        "latency_overall": _percentiles(ages),
        "diagnostics_last": soak.diagnostics,
    }


def _recovery_text(fault: dict[str, Any]) -> str:
    after = fault["recovered_after_s"]
    return f"{fault['name']}: " + ("no answer" if after is None else f"{after:.2f} s")


def _report(result: dict[str, Any], args: argparse.Namespace) -> int:
    growth = result["rss_max_after_warmup_mb"] - (result["rss_at_warmup_mb"] or 0.0)
    oldest = result["oldest_answer_s"]
    recoveries = [f["recovered_after_s"] for f in result["faults"]]
    checks = [
        (
            f"RSS growth after warm-up < {MAX_RSS_GROWTH_MB:g} MB",
            growth < MAX_RSS_GROWTH_MB,
            f"{result['rss_at_warmup_mb']:.0f} MB at warm-up, max "
            f"{result['rss_max_after_warmup_mb']:.0f} MB after (+{growth:.0f} MB), "
            f"{result['rss_end_mb']:.0f} MB at the end",
        ),
        (
            f"no frame older than {MAX_ANSWER_AGE_S:g} s answered",
            oldest is not None and oldest < MAX_ANSWER_AGE_S,
            (
                f"oldest answered frame {oldest * 1e3:.0f} ms; answers at or over the limit "
                f"(run time s, age s): {result['answers_older_than_limit'][:10]}; this process "
                f"stalled (run time s, s): {result['measuring_process_stalls'][:10]}"
            )
            if oldest is not None
            else "no answers",
        ),
        (
            f"every fault followed by answers within {MAX_RECOVERY_S:g} s",
            bool(recoveries) and all(r is not None and r < MAX_RECOVERY_S for r in recoveries),
            ", ".join(_recovery_text(f) for f in result["faults"]) or "no faults fitted in the run",
        ),
    ]
    print(
        f"\nsoak summary: {result['frames_sent']} frames sent, {result['answers']} answered "
        f"(latency {result['latency_overall']}); node error lines: {result['node_error_lines']} "
        f"(the malformed frames' reports: {result['node_error_examples']}); 'camera stopped' "
        f"warnings: {result['node_camera_stopped_warnings']}, 'frames arriving again': "
        f"{result['node_frames_again_lines']}"
    )
    passed = True
    for name, ok, detail in checks:
        passed &= ok
        print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    print(f"soak: {'PASS' if passed else 'FAIL'}")
    if args.output:
        result["checks"] = [{"check": n, "pass": ok, "detail": d} for n, ok, d in checks]
        Path(args.output).write_text(json.dumps(result, indent=2, default=str))
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the run")
    parser.add_argument(
        "--model",
        default="random:simplebaseline_res18",
        help="pose network (random weights: memory and timing do not depend on them)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--rate", type=float, default=30.0, help="camera rate (Hz)")
    parser.add_argument(
        "--qos",
        choices=("reliable", "best_effort"),
        default="reliable",
        help="QoS of the stream (reliable: every frame reaches the node, so latencies and drops "
        "are the node's; 640x480 rgb8 exceeds Fast DDS's shared memory and goes as UDP fragments)",
    )
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between lines")
    parser.add_argument("--output", help="also write the figures as JSON here")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
