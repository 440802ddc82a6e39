"""The cost of 3D keypoints per frame: converting a 640x480 depth image to metres, and the
keypoint depth lookup + back-projection (:func:`pose_ros.depth.attach_positions`) for 1, 10 and 20
persons. Prints figures; asserts nothing about speed.

    scripts/ros-env python -m bench.depth_bench
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from pose_ros.camera import PinholeCamera
from pose_ros.depth import DepthConfig, attach_positions
from pose_ros.pipeline import Person
from pose_ros.ros.conversions import depth_array_to_msg, depth_msg_to_array

WIDTH, HEIGHT = 640, 480


def _median_us(call: Callable[[], object], repeats: int) -> float:
    call()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def _persons(count: int, rng: np.random.Generator) -> list[Person]:
    persons = []
    for _ in range(count):
        keypoints = np.zeros((17, 3), np.float32)
        keypoints[:, 0] = rng.uniform(-0.5, WIDTH - 0.5, 17)
        keypoints[:, 1] = rng.uniform(-0.5, HEIGHT - 0.5, 17)
        keypoints[:, 2] = rng.uniform(0, 1, 17)
        persons.append(Person(np.zeros(4, np.float32), 0.9, 0.8, keypoints))
    return persons


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args, _ = parser.parse_known_args(argv)
    repeats = 50 if args.quick else 500
    rng = np.random.default_rng(0)
    # A wall at 4 m with a person-sized block at 2 m and a sprinkle of missing readings.
    depth_mm = np.full((HEIGHT, WIDTH), 4000, np.uint16)
    depth_mm[60:440, 200:440] = 2000
    depth_mm[rng.random((HEIGHT, WIDTH)) < 0.05] = 0
    msg = depth_array_to_msg(depth_mm, "16UC1")
    camera = PinholeCamera(525.0, 525.0, 319.5, 239.5, WIDTH, HEIGHT)
    depth_m = depth_msg_to_array(msg, max_pixels=WIDTH * HEIGHT)

    print(f"depth benchmark ({WIDTH}x{HEIGHT}, median of {repeats} runs, one CPU thread)")
    convert = _median_us(lambda: depth_msg_to_array(msg, max_pixels=WIDTH * HEIGHT), repeats)
    print(f"  16UC1 message -> metres: {convert:8.1f} us")
    for radius in (1, 2, 4):
        config = DepthConfig(patch_radius=radius)
        for count in (1, 10, 20):
            persons = _persons(count, rng)
            lookup = _median_us(
                lambda p=persons, c=config: attach_positions(p, depth_m, camera, c), repeats
            )
            print(
                f"  attach_positions, {count:2d} persons, patch {2 * radius + 1}x{2 * radius + 1}: "
                f"{lookup:8.1f} us"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
