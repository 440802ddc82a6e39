"""sensor_msgs Image / CompressedImage → numpy (pose_ros.ros.conversions), without DDS: every
supported encoding against a known picture, padded rows, byte order, zero-copy, and each kind of
bad frame."""

from __future__ import annotations

import array
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from pose_ros.ros.conversions import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    array_to_image_msg,
    compressed_image_size,
    compressed_msg_to_array,
    image_msg_to_array,
)

sys.path.insert(0, str(Path(__file__).parent / "ros_nodes"))
from pose_node_harness import pack_yuv422

MAX_PIXELS = 10_000_000


@pytest.fixture(scope="module")
def picture() -> np.ndarray:
    """A smooth RGB test picture (48 x 64) with distinct colours in each quadrant: smooth so that
    chroma subsampling and demosaicing stay close to it, distinct so a channel swap shows."""
    yy, xx = np.mgrid[0:48, 0:64].astype(np.float32)
    rgb = np.stack([40 + 3 * xx, 60 + 3 * yy, 200 - 1.5 * xx - yy], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _rgb(result) -> np.ndarray:
    pixels = np.asarray(result.pixels)
    return pixels if result.color_order == "RGB" else pixels[..., ::-1]


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("rgb8", lambda rgb: rgb),
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("8UC3", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
        ("rgb16", lambda rgb: rgb.astype(np.uint16) * 257),
        ("bgra16", lambda rgb: np.dstack([rgb[..., ::-1], rgb[..., :1]]).astype(np.uint16) * 257),
    ],
)
@pytest.mark.parametrize("padding", [0, 13])
def test_colour_encodings_give_the_picture(picture, encoding, make, padding) -> None:
    stored = make(picture)
    bytes_per_pixel = stored.shape[2] * stored.itemsize
    msg = array_to_image_msg(stored, encoding, step=64 * bytes_per_pixel + padding)
    result = image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert result.pixels.shape == (48, 64, 3)
    np.testing.assert_array_equal(_rgb(result), picture)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_8bit_colour_is_a_view_on_the_message_buffer(picture, encoding) -> None:
    channels = 4 if "a" in encoding[3:] else 3
    stored = np.dstack([picture, picture[..., :1]])[..., :channels].copy()
    msg = array_to_image_msg(stored, encoding, step=64 * channels + 8)  # padded rows too
    result = image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert result.zero_copy
    assert result.color_order == ("RGB" if encoding.startswith("rgb") else "BGR")
    assert np.shares_memory(result.pixels, np.frombuffer(msg.data, np.uint8))
    # and the view sees the message: change a byte there, the pixel changes
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    assert int(result.pixels[0, 0, 0]) == msg.data[0]


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8(picture, encoding) -> None:
    gray = _gray(picture)
    result = image_msg_to_array(array_to_image_msg(gray, encoding, step=70), max_pixels=MAX_PIXELS)
    assert result.pixels.shape == (48, 64, 3)
    for channel in range(3):
        np.testing.assert_array_equal(result.pixels[..., channel], gray)


@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_keeps_the_high_byte_in_either_byte_order(big_endian) -> None:
    values = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21 % 65536).astype(np.uint16)
    msg = array_to_image_msg(values, "mono16")
    if big_endian:
        msg.data = array.array("B", values.astype(">u2").tobytes())
        msg.is_bigendian = 1
    result = image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(result.pixels[..., 1], (values >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")],
)
def test_yuv422_layouts(picture, encoding, order) -> None:
    """sensor_msgs' "yuv422" is UYVY and "yuv422_yuy2" is YUYV: packed by hand here, so decoding
    with the other layout (or swapping U and V) would be far off."""
    msg = array_to_image_msg(pack_yuv422(picture, order), encoding, step=64 * 2 + 6)
    result = image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    error = np.abs(_rgb(result).astype(int) - picture.astype(int))
    assert error.mean() < 4 and error.max() < 20, (error.mean(), error.max())


def test_yuv422_decoded_as_the_wrong_layout_is_far_off(picture) -> None:
    """The check above can tell the two layouts apart."""
    msg = array_to_image_msg(pack_yuv422(picture, "YUYV"), "yuv422")  # labelled UYVY: wrong
    result = image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert np.abs(_rgb(result).astype(int) - picture.astype(int)).mean() > 20


@pytest.mark.parametrize(
    ("encoding", "pattern"),
    [
        ("bayer_rggb8", "RGGB"),
        ("bayer_bggr8", "BGGR"),
        ("bayer_gbrg8", "GBRG"),
        ("bayer_grbg8", "GRBG"),
    ],
)
def test_bayer_patterns(picture, encoding, pattern) -> None:
    """A mosaic sampled from the picture with the named 2x2 pattern demosaics back to it."""
    channel = {"R": 0, "G": 1, "B": 2}
    mosaic = np.empty(picture.shape[:2], np.uint8)
    for index, letter in enumerate(pattern):
        dy, dx = divmod(index, 2)
        mosaic[dy::2, dx::2] = picture[dy::2, dx::2, channel[letter]]
    result = image_msg_to_array(array_to_image_msg(mosaic, encoding), max_pixels=MAX_PIXELS)
    inner = (slice(2, -2), slice(2, -2))  # demosaicing guesses at the border
    error = np.abs(_rgb(result)[inner].astype(int) - picture[inner].astype(int))
    assert error.mean() < 6, error.mean()


def test_every_supported_encoding_is_tested() -> None:
    tested = {
        "rgb8", "bgr8", "8UC3", "rgba8", "bgra8", "rgb16", "bgra16", "mono8", "8UC1", "mono16",
        "yuv422", "uyvy", "yuv422_yuy2", "yuyv", "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8",
        "bayer_grbg8",
    }  # fmt: skip
    # the remaining 16-bit colour layouts share the code path of rgb16 / bgra16
    assert set(SUPPORTED_ENCODINGS) - tested == {"bgr16", "rgba16", "16UC1"}


# --- bad frames: each refused with a message that names the problem, before allocating ---


def _raw(width: int, height: int, encoding: str, step: int, data_len: int) -> Image:
    msg = Image(height=height, width=width, encoding=encoding, step=step)
    msg.data = array.array("B", bytes(data_len))
    return msg


@pytest.mark.parametrize(
    ("msg", "kind", "words"),
    [
        (_raw(64, 48, "rgb8", 100, 100 * 48), "step", ["step 100", "192 bytes"]),
        (_raw(64, 48, "rgb8", 192, 192 * 47), "data_size", ["9024 bytes", "48 x 192 = 9216"]),
        (_raw(64, 48, "weird16", 192, 192 * 48), "encoding", ["unsupported encoding 'weird16'"]),
        (_raw(0, 0, "rgb8", 0, 0), "empty", ["empty image", "0x0"]),
        (_raw(64, 0, "rgb8", 192, 0), "empty", ["empty image"]),
        (_raw(20000, 20000, "rgb8", 60000, 16), "too_large", ["20000x20000", "max_image_pixels"]),
        (_raw(63, 48, "yuv422", 126, 126 * 48), "step", ["even width"]),
    ],
    ids=["step", "short-data", "encoding", "0x0", "zero-height", "enormous", "odd-yuv"],
)
def test_bad_raw_frames_are_refused_with_a_reason(msg, kind, words) -> None:
    with pytest.raises(ImageConversionError) as caught:
        image_msg_to_array(msg, max_pixels=MAX_PIXELS)
    assert caught.value.kind == kind
    for word in words:
        assert word in str(caught.value)


def test_the_pixel_limit_applies_to_well_formed_frames_too(picture) -> None:
    msg = array_to_image_msg(picture, "rgb8")
    assert image_msg_to_array(msg, max_pixels=64 * 48).pixels.shape == (48, 64, 3)
    with pytest.raises(ImageConversionError, match="exceeds max_image_pixels"):
        image_msg_to_array(msg, max_pixels=64 * 48 - 1)


# --- compressed ---


def _compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage(format=fmt)
    msg.data = array.array("B", data)
    return msg


@pytest.mark.parametrize(("ext", "fmt"), [(".jpg", "rgb8; jpeg compressed bgr8"), (".png", "png")])
def test_compressed_jpeg_and_png(picture, ext, fmt) -> None:
    ok, encoded = cv2.imencode(ext, picture[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    assert compressed_image_size(encoded.tobytes()) == (64, 48)
    result = compressed_msg_to_array(_compressed(encoded.tobytes(), fmt), max_pixels=MAX_PIXELS)
    error = np.abs(_rgb(result).astype(int) - picture.astype(int))
    assert error.mean() < (3 if ext == ".jpg" else 0.01)
    # The same pixels OpenCV decodes (same libjpeg-turbo rules), whatever the decoder's order.
    reference = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(_rgb(result), reference)


@pytest.mark.parametrize("mode", ["grey8", "grey16", "rgba", "palette"])
def test_compressed_png_pixel_formats(picture, mode) -> None:
    """PNGs that are not 8-bit RGB come out as (H, W, 3) uint8 like OpenCV's IMREAD_COLOR."""
    grey = _gray(picture)
    if mode == "grey8":
        ok, encoded = cv2.imencode(".png", grey)
        expected = np.dstack([grey] * 3)
    elif mode == "grey16":
        wide = grey.astype(np.uint16) * 257 + 3  # high byte = grey
        ok, encoded = cv2.imencode(".png", wide)
        expected = np.dstack([grey] * 3)
    elif mode == "rgba":
        ok, encoded = cv2.imencode(".png", np.dstack([picture[..., ::-1], np.full_like(grey, 9)]))
        expected = picture
    else:
        import io

        from PIL import Image as PillowImage

        buffer = io.BytesIO()
        PillowImage.fromarray(picture).quantize(16).save(buffer, format="PNG")
        encoded = np.frombuffer(buffer.getvalue(), np.uint8)
        ok = True
        expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[..., ::-1]
    assert ok
    result = compressed_msg_to_array(_compressed(encoded.tobytes(), "png"), max_pixels=MAX_PIXELS)
    assert result.pixels.shape == (48, 64, 3) and result.pixels.dtype == np.uint8
    np.testing.assert_array_equal(_rgb(result), expected)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG whose frame header is rewritten to claim another size (nothing else changed)."""
    _, encoded = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def test_compressed_size_is_checked_before_decoding() -> None:
    huge = _jpeg_claiming(60000, 60000)
    assert compressed_image_size(huge) == (60000, 60000)
    with pytest.raises(ImageConversionError) as caught:
        compressed_msg_to_array(_compressed(huge, "jpeg"), max_pixels=MAX_PIXELS)
    assert caught.value.kind == "too_large"
    assert "60000x60000" in str(caught.value)


@pytest.mark.parametrize(
    ("data", "fmt", "kind", "words"),
    [
        (
            b"\xff\xd8\xff\xe0garbage that is no JPEG at all" * 3,
            "jpeg",
            "decode",
            ["not a readable"],
        ),
        (b"GIF89a" + bytes(40), "jpeg", "decode", ["not a readable JPEG or PNG"]),
        (b"", "jpeg", "empty", ["empty compressed image"]),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "16UC1; compressedDepth", "format", ["depth"]),
    ],
    ids=["corrupt-jpeg", "gif", "empty", "compressed-depth"],
)
def test_bad_compressed_frames_are_refused(data, fmt, kind, words) -> None:
    with pytest.raises(ImageConversionError) as caught:
        compressed_msg_to_array(_compressed(data, fmt), max_pixels=MAX_PIXELS)
    assert caught.value.kind == kind
    for word in words:
        assert word in str(caught.value)


def test_jpeg_with_a_valid_header_and_a_corrupt_body_is_refused() -> None:
    _, encoded = cv2.imencode(".jpg", np.zeros((32, 32, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    sos = data.index(b"\xff\xda")
    corrupt = bytes(data[: sos + 4])  # header intact (size readable), scan cut off
    assert compressed_image_size(corrupt) == (32, 32)
    with pytest.raises(ImageConversionError) as caught:
        compressed_msg_to_array(_compressed(corrupt, "jpeg"), max_pixels=MAX_PIXELS)
    assert caught.value.kind == "decode"


# Decodes corrupt JPEG and PNG data the way the node does; prints what was refused. Run in a child
# process, so that its stderr holds exactly what the decoding libraries printed (file descriptor 2:
# libjpeg and libpng write there directly, not through Python).
_DECODE_CORRUPT = """
import sys
import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage
from pose_ros.ros.conversions import ImageConversionError, compressed_msg_to_array

jpeg = open(sys.argv[1], "rb").read()
_, png = cv2.imencode(".png", np.full((40, 50, 3), 7, np.uint8))
png = png.tobytes()
idat = png.index(b"IDAT")
cases = {
    "jpeg-garbage-in-scan": jpeg[:2000] + bytes(range(256)) * 4 + jpeg[3024:],
    "jpeg-truncated": jpeg[: len(jpeg) // 2],
    "png-bad-crc": png[: idat + 6] + bytes([png[idat + 6] ^ 0xFF]) + png[idat + 7 :],
    "png-cut": png[: idat + 10],
}
for name, data in cases.items():
    msg = CompressedImage(format="jpeg" if name.startswith("jpeg") else "png")
    msg.data = data
    try:
        compressed_msg_to_array(msg, max_pixels=10**8)
        print(name, "decoded")
    except ImageConversionError as error:
        print(name, "refused:", error)
"""


def test_corrupt_compressed_frames_are_refused_without_printing(coco_dir, tmp_path) -> None:
    """libjpeg, libpng and OpenCV print complaints about corrupt data straight to stderr; the
    node's decoder keeps them off stderr and refuses such frames with the decoder's own words."""
    import subprocess

    script = tmp_path / "decode_corrupt.py"
    script.write_text(_DECODE_CORRUPT)
    result = subprocess.run(
        [sys.executable, str(script), str(coco_dir / "000000000785.jpg")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr  # e.g. "Corrupt JPEG data: premature end of data"
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert set(lines) == {"jpeg-garbage-in-scan", "jpeg-truncated", "png-bad-crc", "png-cut"}
    for name, outcome in lines.items():
        assert outcome.startswith("refused: corrupt"), (name, outcome)
        assert "the decoder says:" in outcome, (name, outcome)
    assert "truncated" in lines["jpeg-truncated"]


# --- the annotated-image direction ---


def test_array_to_image_msg_keeps_header_and_layout(picture) -> None:
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    msg = array_to_image_msg(picture, "rgb8", header=header)
    assert (msg.width, msg.height, msg.step, msg.encoding) == (64, 48, 192, "rgb8")
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == ("cam", 12, 34)
    assert bytes(msg.data) == picture.tobytes()
    with pytest.raises(ValueError, match="channels"):
        array_to_image_msg(picture, "mono8")
