"""The checkpoints that training makes run in the node: the tiny network and RTMPose-t trained on
the 4 COCO images (test_training_support) answer real images over DDS with keypoints close to
the annotations."""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image

from pose_ros.msg import PersonPoseArray
from pose_ros.ros.conversions import array_to_image_msg

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import Peer, make_header, pose_node, reliable, with_stamp

pytestmark = pytest.mark.ros

NAMESPACE = "/pose_test_trained"
_stamps = itertools.count(5_000)


def _person_crops(coco_dir: Path, annotations: Path) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(RGB crop of the image to the person's box, annotated keypoints in crop pixels, box size)
    for every well-annotated person: with the full_image detector the crop's frame is the box the
    network was trained on."""
    data = json.loads(annotations.read_text())
    files = {image["id"]: image["file_name"] for image in data["images"]}
    crops = []
    for ann in data["annotations"]:
        if ann["num_keypoints"] < 10:
            continue
        bgr = cv2.imread(str(coco_dir / files[ann["image_id"]]))
        x, y, w, h = ann["bbox"]
        x0, y0 = math.floor(x), math.floor(y)
        x1, y1 = math.ceil(x + w), math.ceil(y + h)
        crop = np.ascontiguousarray(bgr[y0:y1, x0:x1, ::-1])
        keypoints = np.array(ann["keypoints"], dtype=np.float64).reshape(17, 3)
        keypoints[:, 0] -= x0
        keypoints[:, 1] -= y0
        crops.append((crop, keypoints, max(w, h)))
    return crops


#: Least PCK@0.1 per trained network. Both memorised their persons with the image around each
#: box (the crop is the box enlarged 1.25); here the node sees the box alone, black around it.
#: The ResNet keeps its keypoints; RTMPose-t loses some (about 0.68, against 1.0 with the image
#: around, and 0.02 to 0.06 for untrained weights): the bar says the SimCC path works end to end.
PCK_BAR = {"overfit_run": 0.9, "rtmpose_overfit_run": 0.6}


@pytest.mark.parametrize("run", ["overfit_run", "rtmpose_overfit_run"])
def test_trained_checkpoint_runs_in_the_node(
    run: str, request, coco_dir: Path, coco_annotations: Path, tmp_path: Path
) -> None:
    checkpoint = request.getfixturevalue(run).best
    crops = _person_crops(coco_dir, coco_annotations)
    assert len(crops) >= 5
    parameters = {
        "model": str(checkpoint),
        "detector.backend": "full_image",
        "device": "cpu",
        "qos.reliability": "reliable",
    }
    peer = Peer()
    correct = total = 0
    try:
        with pose_node(tmp_path / "pose_node.log", NAMESPACE, parameters) as node:
            publisher = peer.node.create_publisher(Image, f"{NAMESPACE}/image", reliable(5))
            poses, _ = peer.collect(PersonPoseArray, f"{NAMESPACE}/poses", reliable())
            for crop, keypoints, size in crops:
                stamp = next(_stamps)
                msg = array_to_image_msg(crop, "rgb8", header=make_header(stamp, "camera"))
                arrived = peer.publish_until(
                    lambda msg=msg: publisher.publish(msg),
                    lambda stamp=stamp: bool(with_stamp(poses, stamp)),
                    timeout=60.0,
                )
                assert arrived, node.log()[-3000:]
                answer = with_stamp(poses, stamp)[0]
                assert len(answer.persons) == 1
                predicted = np.array([[k.x, k.y] for k in answer.persons[0].keypoints])
                labelled = keypoints[:, 2] > 0
                errors = np.linalg.norm(predicted[labelled] - keypoints[labelled, :2], axis=1)
                correct += int((errors < 0.1 * size).sum())
                total += int(labelled.sum())
            log = node.log()
            assert "RANDOM" not in log.upper().replace("ALLOW_RANDOM", "")
    finally:
        peer.close()
    # PCK@0.1 of the box size over every labelled keypoint of the images it was trained on.
    assert correct / total >= PCK_BAR[run], f"PCK@0.1 {correct}/{total}"
