"""Colour frames paired with their registered depth images, for the node (``use_depth:=true``).

Pairing is by header stamp with ``message_filters.ApproximateTimeSynchronizer`` (the ROS way, in
every ROS install): a colour frame and a depth image whose stamps differ by at most ``slop_sec``
form a pair, which is delivered at once. A colour frame never waits long for a partner that is
not coming; it is delivered without depth, with the reason, when

* a depth image arrives whose stamp is beyond the frame's stamp + slop (depth images arrive in
  stamp order, so no partner can follow: the streams are not synchronised), or
* no partner has arrived ``wait_sec`` (wall clock) after the frame (a depth image lost, or a
  depth stream far behind), or
* the depth stream is silent (no depth image for ``silent_sec``): the frame goes on at once, so a
  missing depth stream costs no latency.

A pair for a frame that was already delivered without depth is ignored, so each colour frame is
delivered exactly once. Everything here runs in executor callbacks and only hands messages on:
conversion and lookup happen in the node's worker.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any, Final

import message_filters
from rclpy.node import Node
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image

#: How long (wall clock, seconds) a colour frame waits for its depth partner at most. Large
#: uncompressed images can take a few hundred milliseconds through DDS on a busy machine.
DEPTH_WAIT_SEC: Final[float] = 1.0
#: Without any depth image for this long (seconds), colour frames do not wait at all.
DEPTH_SILENT_SEC: Final[float] = 3.0
#: Colour frames (and depth images) the synchroniser keeps per input while looking for partners.
SYNC_QUEUE_SIZE: Final[int] = 5

#: deliver(colour message, depth image or None, why there is no depth or None, the colour frame's
#: arrival time (time.monotonic())).
Deliver = Callable[[Any, Image | None, str | None, float], None]


def stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


class ColourDepthPairing:
    """Subscribes the colour topic and the depth topic, and delivers each colour frame once, with
    its depth image or without one (and why).

    Args:
        node: the node that owns the subscriptions and the timer.
        colour_type, colour_topic, colour_qos: the colour subscription (Image or CompressedImage).
        depth_topic, depth_qos: the depth subscription (sensor_msgs/Image).
        slop_sec: the synchroniser's slop (``depth.slop_sec``).
        deliver: called in the executor thread for every colour frame.
        colour_kwargs: more arguments of the colour subscription (``event_callbacks``).
    """

    def __init__(
        self,
        node: Node,
        colour_type: type,
        colour_topic: str,
        colour_qos: QoSProfile,
        depth_topic: str,
        depth_qos: QoSProfile,
        slop_sec: float,
        deliver: Deliver,
        *,
        wait_sec: float = DEPTH_WAIT_SEC,
        silent_sec: float = DEPTH_SILENT_SEC,
        **colour_kwargs: Any,
    ) -> None:
        self._node = node
        self._deliver = deliver
        self._slop_ns = round(slop_sec * 1e9)
        self._wait_sec = wait_sec
        self._silent_sec = silent_sec
        # Arrival (monotonic) of the latest depth image; until one arrives, of the start.
        self._depth_arrived = time.monotonic()
        self._lock = threading.Lock()
        # stamp (ns) -> (colour message, arrival time): frames waiting for their depth partner.
        self._pending: OrderedDict[int, tuple[Any, float]] = OrderedDict()
        # Colour stamps already delivered: a late pair for one of them is ignored.
        self._delivered: deque[int] = deque(maxlen=4 * SYNC_QUEUE_SIZE)
        self._latest_depth_ns: int | None = None
        self.pairs = 0

        self.colour_subscriber = message_filters.Subscriber(
            node, colour_type, colour_topic, qos_profile=colour_qos, **colour_kwargs
        )
        self.depth_subscriber = message_filters.Subscriber(
            node, Image, depth_topic, qos_profile=depth_qos
        )
        self._sync = message_filters.ApproximateTimeSynchronizer(
            [self.colour_subscriber, self.depth_subscriber], SYNC_QUEUE_SIZE, slop_sec
        )
        self._sync.registerCallback(self._on_pair)
        # Registered after the synchroniser: a message that completes a pair is delivered as a
        # pair before these see it.
        self.colour_subscriber.registerCallback(self._on_colour)
        self.depth_subscriber.registerCallback(self._on_depth)
        self._timer = node.create_timer(wait_sec / 2, self._expire)

    @property
    def colour_subscription(self) -> Any:
        """The rclpy subscription of the colour topic (topic_name, matching, destroying)."""
        return self.colour_subscriber.sub

    @property
    def depth_subscription(self) -> Any:
        return self.depth_subscriber.sub

    def close(self) -> None:
        """Destroy the subscriptions and the timer (the node stays)."""
        self._node.destroy_timer(self._timer)
        for subscription in (self.colour_subscription, self.depth_subscription):
            self._node.destroy_subscription(subscription)
        with self._lock:
            self._pending.clear()

    # --- executor callbacks ---

    def _on_pair(self, colour: Any, depth: Image) -> None:
        key = stamp_ns(colour)
        with self._lock:
            if key in self._delivered:
                return  # delivered without depth already: once is enough
            _, arrived = self._pending.pop(key, (None, time.monotonic()))
            self._delivered.append(key)
            self.pairs += 1
        self._deliver(colour, depth, None, arrived)

    def _on_colour(self, colour: Any) -> None:
        key = stamp_ns(colour)
        with self._lock:
            if key in self._delivered:
                return  # paired by the synchroniser just now
            self._pending[key] = (colour, time.monotonic())
        self._expire()

    def _on_depth(self, depth: Image) -> None:
        with self._lock:
            self._latest_depth_ns = max(stamp_ns(depth), self._latest_depth_ns or 0)
            self._depth_arrived = time.monotonic()
        self._expire()

    def _expire(self) -> None:
        """Deliver, without depth, the waiting frames that cannot get a partner any more."""
        now = time.monotonic()
        expired: list[tuple[Any, str, float]] = []
        with self._lock:
            latest = self._latest_depth_ns
            silent = now - self._depth_arrived >= self._silent_sec
            for key, (colour, arrived) in list(self._pending.items()):
                if latest is not None and latest > key + self._slop_ns:
                    why = (
                        f"a depth image stamped {(latest - key) / 1e9:.3f} s after this frame "
                        f"arrived, none within depth.slop_sec = {self._slop_ns / 1e9:g} s of it: "
                        "its depth image was lost or late, or colour and depth streams are not "
                        "synchronised"
                    )
                elif silent or now - arrived >= self._wait_sec:
                    topic = self.depth_subscription.topic_name
                    if latest is None:
                        why = (
                            f"no depth image has arrived on {topic} (is 'depth' remapped to the "
                            "aligned depth topic, e.g. "
                            "depth:=/camera/aligned_depth_to_color/image_raw?)"
                        )
                    elif silent:
                        why = f"no depth image on {topic} for {now - self._depth_arrived:.1f} s"
                    else:
                        why = (
                            f"no depth image within depth.slop_sec = {self._slop_ns / 1e9:g} s "
                            f"of its stamp arrived within {self._wait_sec:g} s"
                        )
                else:
                    continue
                del self._pending[key]
                self._delivered.append(key)
                expired.append((colour, why, arrived))
        for colour, why, arrived in expired:
            self._deliver(colour, None, why, arrived)
