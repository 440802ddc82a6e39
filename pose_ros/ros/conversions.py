"""sensor_msgs Image / CompressedImage ⇄ numpy, for the node (no cv_bridge).

Why not cv_bridge: ROS 2's cv_bridge exists only in a ROS install (not as a wheel), PyPI's
``cv-bridge`` is ROS 1's and cannot create messages on numpy 2, and both copy every frame. These
functions need only numpy and OpenCV, behave the same on Humble, Jazzy and the PyPI wheels, and
return a *view* on the message buffer wherever the layout allows (rgb8, bgr8, rgba8, bgra8, mono8
before the grey → colour step), padded rows (``step``) included.

Encodings follow sensor_msgs/image_encodings.hpp. Two of its names are easy to get wrong:
``yuv422`` is **UYVY** (U Y0 V Y1), ``yuv422_yuy2`` is **YUYV** (Y0 U Y1 V); ``uyvy`` and
``yuyv`` are the newer, unambiguous names of the same layouts. Bayer names give the colour of the
top-left 2×2 block (``bayer_rggb8``: R G / G B); OpenCV names the pattern one row lower, hence the
table below (the same mapping as cv_bridge). 16-bit images are reduced to 8 bits by dropping the
low byte (as cv_bridge's ``rgb8`` conversion does); ``is_bigendian`` is honoured.

Every problem with a frame raises :class:`ImageConversionError` with a ``kind`` (for rate-limited
logging per kind) and a message that names the problem; sizes are checked against the header
*before* anything is allocated, so a corrupt header cannot make the node allocate gigabytes.
"""

from __future__ import annotations

import array
import io
import struct
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from pose_ros.camera import PinholeCamera

if TYPE_CHECKING:
    # Only the functions that build messages import these (at their call): reading frames works on
    # any object with the messages' fields, so recordings decode without a ROS install
    # (pose_ros.recording reads them with rosbags).
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image
    from std_msgs.msg import Header


class ImageConversionError(ValueError):
    """A frame that cannot be turned into an image. ``kind`` names the class of problem."""

    #: The kinds, for logging and counting: one rate limit per kind.
    KINDS: Final[tuple[str, ...]] = (
        "empty",
        "encoding",
        "too_large",
        "step",
        "data_size",
        "format",
        "decode",
    )

    def __init__(self, kind: str, message: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown ImageConversionError kind {kind!r}")
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ConvertedImage:
    """A frame ready for the pipeline.

    Attributes:
        pixels: (H, W, 3) uint8. May be a non-contiguous view on the message's buffer (it keeps
            the buffer alive); the pipeline makes it contiguous where it needs to.
        color_order: "RGB" or "BGR": the channel order of ``pixels`` (no swap was made for it).
        zero_copy: True when ``pixels`` is a view on the message data (nothing was copied).
    """

    pixels: np.ndarray
    color_order: str
    zero_copy: bool

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class _Layout:
    channels: int  # channels stored per pixel (2 for packed YUV 4:2:2: one luma + one chroma)
    bytes_per_channel: int
    kind: str  # "color", "mono", "yuv", "bayer"
    color_order: str = "RGB"  # for "color": the order of the first three channels
    cv_code: int | None = None  # for "yuv" and "bayer": the OpenCV conversion to RGB

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.bytes_per_channel


_UYVY = _Layout(2, 1, "yuv", cv_code=cv2.COLOR_YUV2RGB_UYVY)
_YUYV = _Layout(2, 1, "yuv", cv_code=cv2.COLOR_YUV2RGB_YUY2)

#: Supported encodings and their memory layout.
_LAYOUTS: Final[dict[str, _Layout]] = {
    "rgb8": _Layout(3, 1, "color", "RGB"),
    "bgr8": _Layout(3, 1, "color", "BGR"),
    "rgba8": _Layout(4, 1, "color", "RGB"),
    "bgra8": _Layout(4, 1, "color", "BGR"),
    "rgb16": _Layout(3, 2, "color", "RGB"),
    "bgr16": _Layout(3, 2, "color", "BGR"),
    "rgba16": _Layout(4, 2, "color", "RGB"),
    "bgra16": _Layout(4, 2, "color", "BGR"),
    # OpenCV's convention for an untyped 3-channel 8-bit image is BGR (cv_bridge agrees).
    "8UC3": _Layout(3, 1, "color", "BGR"),
    "mono8": _Layout(1, 1, "mono"),
    "8UC1": _Layout(1, 1, "mono"),
    "mono16": _Layout(1, 2, "mono"),
    "16UC1": _Layout(1, 2, "mono"),
    "yuv422": _UYVY,
    "uyvy": _UYVY,
    "yuv422_yuy2": _YUYV,
    "yuyv": _YUYV,
    "bayer_rggb8": _Layout(1, 1, "bayer", cv_code=cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": _Layout(1, 1, "bayer", cv_code=cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": _Layout(1, 1, "bayer", cv_code=cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": _Layout(1, 1, "bayer", cv_code=cv2.COLOR_BayerGB2RGB),
}

#: Encodings :func:`image_msg_to_array` accepts.
SUPPORTED_ENCODINGS: Final[tuple[str, ...]] = tuple(_LAYOUTS)


def image_msg_to_array(msg: Image, *, max_pixels: int) -> ConvertedImage:
    """The pixels of a sensor_msgs/Image as an (H, W, 3) uint8 array, without copying if possible.

    Args:
        msg: the image; ``step`` (bytes per row, rows may be padded) and ``is_bigendian`` are
            honoured.
        max_pixels: frames with more than this many pixels are refused.

    Raises:
        ImageConversionError: empty image, unknown encoding, too large, step too small, data
            shorter than height × step.
    """
    encoding = msg.encoding
    layout = _LAYOUTS.get(encoding)
    height, width, step = _check_image_header(
        msg,
        noun="image",
        bytes_per_pixel=None if layout is None else layout.bytes_per_pixel,
        unsupported=""
        if layout is not None
        else f"unsupported encoding {encoding!r} ({msg.width}x{msg.height}); supported: "
        + ", ".join(SUPPORTED_ENCODINGS),
        max_pixels=max_pixels,
        even_width=layout is not None and layout.kind == "yuv",
    )
    # From here on the encoding is known: _check_image_header refused it otherwise.
    data = msg.data

    dtype = np.dtype(np.uint8)
    if layout.bytes_per_channel == 2:
        dtype = np.dtype(">u2" if msg.is_bigendian else "<u2")
    # A view on the message buffer: rows `step` bytes apart, pixels packed within a row.
    if layout.channels == 1:
        shape: tuple[int, ...] = (height, width)
        strides: tuple[int, ...] = (step, layout.bytes_per_channel)
    else:
        shape = (height, width, layout.channels)
        strides = (step, layout.bytes_per_pixel, layout.bytes_per_channel)
    view = np.ndarray(shape, dtype=dtype, buffer=_buffer(data), strides=strides)

    zero_copy = layout.bytes_per_channel == 1
    if not zero_copy:
        # Keep the high byte (cv_bridge's 16 → 8 bit scaling); makes a new uint8 array.
        view = (view >> 8).astype(np.uint8)
    if layout.kind == "color":
        # Dropping alpha is a view too; channel order is passed on instead of swapped.
        return ConvertedImage(view[:, :, :3], layout.color_order, zero_copy)
    if layout.kind == "mono":
        return ConvertedImage(cv2.cvtColor(view, cv2.COLOR_GRAY2RGB), "RGB", False)
    # YUV 4:2:2 (viewed as H x W x 2) and Bayer mosaics: OpenCV converts straight to RGB.
    return ConvertedImage(cv2.cvtColor(view, layout.cv_code), "RGB", False)


def compressed_msg_to_array(msg: CompressedImage, *, max_pixels: int) -> ConvertedImage:
    """Decode a sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's ``compressed``
    plugin publishes) to an (H, W, 3) uint8 RGB array.

    The image size is read from the JPEG/PNG header and checked against ``max_pixels`` before
    decoding, so a tiny file claiming a gigapixel image is refused without allocating it.

    Raises:
        ImageConversionError: empty data, a depth image (``compressedDepth``), an unreadable
            header, too large, or data that does not decode.
    """
    data = msg.data
    fmt = msg.format
    if "compresseddepth" in fmt.replace(" ", "").lower():
        raise ImageConversionError(
            "format",
            f"format {fmt!r} is a compressed depth image, not a camera image (subscribe the "
            "node to the colour stream)",
        )
    if len(data) == 0:
        raise ImageConversionError("empty", f"empty compressed image (format {fmt!r})")
    size = compressed_image_size(_buffer(data))
    if size is None:
        raise ImageConversionError(
            "decode",
            f"not a readable JPEG or PNG ({len(data)} bytes, format {fmt!r}): corrupt or "
            "unsupported data",
        )
    width, height = size
    if width == 0 or height == 0:
        raise ImageConversionError("empty", f"compressed image header says {width}x{height}")
    _check_pixel_count(width, height, max_pixels)
    return ConvertedImage(_decode_rgb8(_buffer(data), fmt), "RGB", False)


def _decode_rgb8(data: memoryview, fmt: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of a JPEG or PNG, decoded by Pillow.

    Not OpenCV's imdecode: libjpeg, libpng and OpenCV print their complaints about corrupt data
    straight to the process's stderr (unthrottled, one line per frame), and cannot be asked to
    stop. Pillow silences the libraries and raises instead, so every complaint reaches the node's
    rate-limited error as the message of an ImageConversionError. EXIF orientation is not applied:
    keypoints refer to the stored pixels, as image_transport decodes them.
    """
    from PIL import Image as PillowImage

    try:
        with warnings.catch_warnings():
            # The size was checked against max_image_pixels already; Pillow's own bomb limit
            # would only add a Python warning on stderr.
            warnings.simplefilter("ignore", PillowImage.DecompressionBombWarning)
            with PillowImage.open(io.BytesIO(data)) as decoded:
                decoded.load()
                if decoded.mode in ("I;16", "I;16B", "I;16L", "I"):
                    # 16-bit grey: keep the high byte, as for raw 16-bit images
                    grey = (np.asarray(decoded, dtype=np.uint32) >> 8).astype(np.uint8)
                    return cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
                return np.asarray(decoded if decoded.mode == "RGB" else decoded.convert("RGB"))
    except (OSError, ValueError, SyntaxError, PillowImage.DecompressionBombError) as error:
        said = str(error)
        if isinstance(error, PillowImage.UnidentifiedImageError):
            said = "no JPEG or PNG it can read"  # its own text names an in-memory object
        raise ImageConversionError(
            "decode",
            f"corrupt {fmt or 'compressed'} image ({len(data)} bytes): the decoder says: {said}",
        ) from None


def compressed_image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) from a JPEG or PNG header, or None when the data is neither (or is cut
    before the size)."""
    view = memoryview(data).cast("B")
    if (
        len(view) >= 24
        and bytes(view[:8]) == b"\x89PNG\r\n\x1a\n"
        and bytes(view[12:16]) == b"IHDR"
    ):
        width, height = struct.unpack(">II", view[16:24])
        return int(width), int(height)
    if len(view) >= 4 and view[0] == 0xFF and view[1] == 0xD8:
        return _jpeg_size(view)
    return None


# Start-of-frame markers (baseline, progressive, lossless, arithmetic); C4, C8, CC are not SOFs.
_JPEG_SOF = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
)
# Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_size(view: memoryview) -> tuple[int, int] | None:
    pos = 2
    end = len(view)
    while pos + 4 <= end:
        if view[pos] != 0xFF:
            return None  # segments must follow each other: this is not a JPEG we can read
        marker = view[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = (view[pos + 2] << 8) | view[pos + 3]
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height = (view[pos + 5] << 8) | view[pos + 6]
            width = (view[pos + 7] << 8) | view[pos + 8]
            return width, height
        pos += 2 + length
    return None


def _check_image_header(
    msg: Image,
    *,
    noun: str,
    bytes_per_pixel: int | None,
    unsupported: str,
    max_pixels: int,
    even_width: bool = False,
) -> tuple[int, int, int]:
    """(height, width, step) of a colour or depth image whose header describes data that is
    really there; checked in this order, before anything is allocated: not empty, a known
    encoding (``bytes_per_pixel`` None: refused with the message ``unsupported``), at most
    ``max_pixels``, an even width where 2 pixels share chroma, rows of at least ``step`` bytes,
    data of at least height x step bytes. ``noun`` ("image", "depth image") starts the messages.

    Raises:
        ImageConversionError: of kind empty, encoding, too_large, step or data_size.
    """
    height, width, step, encoding = int(msg.height), int(msg.width), int(msg.step), msg.encoding
    if height == 0 or width == 0:
        raise ImageConversionError(
            "empty", f"empty {noun} ({width}x{height}, encoding {encoding!r})"
        )
    if bytes_per_pixel is None:
        raise ImageConversionError("encoding", unsupported)
    _check_pixel_count(width, height, max_pixels)
    if even_width and width % 2:
        raise ImageConversionError(
            "step", f"{encoding} needs an even width (2 pixels share chroma), got {width}"
        )
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise ImageConversionError(
            "step",
            f"{noun} step {step} is smaller than a row of {width} {encoding} pixels "
            f"({width} x {bytes_per_pixel} = {row_bytes} bytes)",
        )
    if len(msg.data) < height * step:
        raise ImageConversionError(
            "data_size",
            f"{noun} data has {len(msg.data)} bytes, fewer than height x step = {height} x "
            f"{step} = {height * step} ({encoding}, {width}x{height})",
        )
    return height, width, step


def _check_pixel_count(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageConversionError(
            "too_large",
            f"image of {width}x{height} = {width * height} pixels exceeds max_image_pixels "
            f"({max_pixels}); refused before allocating",
        )


def _buffer(data: array.array | bytes | memoryview | list) -> memoryview:
    """A byte view of a message's data field without copying (rclpy gives array.array('B') for
    uint8[]; hand-built messages may hold bytes or a list)."""
    if isinstance(data, list):
        data = bytes(data)  # only hand-built messages hold lists; copy is unavoidable then
    return memoryview(data).cast("B")


def array_to_image_msg(
    pixels: np.ndarray, encoding: str, *, header: Header | None = None, step: int | None = None
) -> Image:
    """A sensor_msgs/Image holding ``pixels`` (the node's annotated image; tests and the demo use
    it to publish frames).

    Args:
        pixels: (H, W) or (H, W, C) array laid out as ``encoding`` stores it: uint8 for 8-bit
            encodings, uint16 for 16-bit ones, (H, W, 2) uint8 for packed YUV 4:2:2.
        encoding: a name of :data:`SUPPORTED_ENCODINGS`.
        header: copied into the message (stamp and frame_id); an empty header when None.
        step: bytes per row; larger than a packed row to add padding (filled with zeros).
    """
    layout = _LAYOUTS.get(encoding)
    if layout is None:
        raise ValueError(f"unsupported encoding {encoding!r}")
    expected_dtype = np.uint16 if layout.bytes_per_channel == 2 else np.uint8
    if pixels.dtype != expected_dtype:
        raise ValueError(f"{encoding} needs {np.dtype(expected_dtype)} pixels, got {pixels.dtype}")
    height, width = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    if channels != layout.channels:
        raise ValueError(f"{encoding} needs {layout.channels} channels, got {channels}")
    row_bytes = width * layout.bytes_per_pixel
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than a row ({row_bytes} bytes)")
    # Little-endian payload (is_bigendian = 0), as every x86/ARM driver publishes.
    rows = np.ascontiguousarray(pixels, dtype=np.dtype(expected_dtype).newbyteorder("<"))
    rows = rows.reshape(height, row_bytes // layout.bytes_per_channel).view(np.uint8)
    if step > row_bytes:
        padded = np.zeros((height, step), np.uint8)
        padded[:, :row_bytes] = rows
        rows = padded
    from sensor_msgs.msg import Image

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.is_bigendian, msg.step = (
        height,
        width,
        encoding,
        0,
        step,
    )
    msg.data = array.array("B", rows.tobytes())
    return msg


# --- depth images (REP 118) and camera_info ---

#: Depth encodings: (stored numpy type, metres per stored unit). REP 118: integer depth is in
#: millimetres, float depth in metres.
DEPTH_ENCODINGS: Final[dict[str, tuple[str, float]]] = {
    "16UC1": ("u2", 0.001),
    "mono16": ("u2", 0.001),
    "32FC1": ("f4", 1.0),
}


def depth_msg_to_array(msg: Image, *, max_pixels: int) -> np.ndarray:
    """A depth image (registered to the colour image) as (H, W) float32 metres.

    ``16UC1`` / ``mono16`` are millimetres, ``32FC1`` metres (REP 118). 0, NaN, ±inf (and negative
    floats) mean "no reading" and become NaN. ``step`` (padded rows) and ``is_bigendian`` are
    honoured as for colour images, and sizes are checked before anything is allocated.

    Raises:
        ImageConversionError: empty image, not a depth encoding, too large, step too small, data
            shorter than height x step.
    """
    encoding = msg.encoding
    spec = DEPTH_ENCODINGS.get(encoding)
    dtype = None if spec is None else np.dtype((">" if msg.is_bigendian else "<") + spec[0])
    height, width, step = _check_image_header(
        msg,
        noun="depth image",
        bytes_per_pixel=None if dtype is None else dtype.itemsize,
        unsupported=f"depth image has encoding {encoding!r}, which is not a depth encoding: "
        "expected 16UC1 or mono16 (millimetres) or 32FC1 (metres)",
        max_pixels=max_pixels,
    )
    # From here on the encoding is a depth encoding: _check_image_header refused it otherwise.
    scale = DEPTH_ENCODINGS[encoding][1]
    stored = np.ndarray(
        (height, width), dtype=dtype, buffer=_buffer(msg.data), strides=(step, dtype.itemsize)
    )
    metres = stored.astype(np.float32)  # a native-order copy: the pipeline keeps it past the msg
    if scale != 1.0:
        metres *= np.float32(scale)
    # NaN compares false and inf is not below inf: one test keeps only real readings.
    metres[~((metres > 0) & (metres < np.inf))] = np.nan
    return metres


def depth_array_to_msg(
    depth: np.ndarray,
    encoding: str,
    *,
    header: Header | None = None,
    step: int | None = None,
    big_endian: bool = False,
) -> Image:
    """A depth sensor_msgs/Image (the demo's and the tests' synthetic depth).

    Args:
        depth: (H, W) uint16 millimetres for 16UC1 / mono16, float32 metres for 32FC1.
        encoding: a key of :data:`DEPTH_ENCODINGS`.
        header: copied into the message; an empty header when None.
        step: bytes per row; larger than a packed row to add padding (filled with zeros).
        big_endian: store the values big-endian (``is_bigendian`` = 1).
    """
    spec = DEPTH_ENCODINGS.get(encoding)
    if spec is None:
        raise ValueError(f"not a depth encoding: {encoding!r}")
    dtype = np.dtype((">" if big_endian else "<") + spec[0])
    if depth.ndim != 2 or depth.dtype.kind != dtype.kind:
        raise ValueError(
            f"{encoding} needs (H, W) {dtype.name} values, got {depth.dtype} {depth.shape}"
        )
    height, width = depth.shape
    row_bytes = width * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise ValueError(f"step {step} is smaller than a row ({row_bytes} bytes)")
    rows = np.zeros((height, step), np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(depth, dtype=dtype).view(np.uint8)
    from sensor_msgs.msg import Image

    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width, msg.encoding, msg.step = height, width, encoding, step
    msg.is_bigendian = int(big_endian)
    msg.data = array.array("B", rows.tobytes())
    return msg


def camera_from_info(msg: CameraInfo, *, rectified: bool = False) -> PinholeCamera:
    """The camera model of a CameraInfo (K, D, R, P for an image of msg.width x msg.height), as
    image_geometry reads it; ``rectified``: the images it describes are rectified already.

    Raises:
        pose_ros.camera.CameraModelError: K all zero (``uncalibrated``), non-finite, or outside a
            physically sane range; an unsupported distortion model for a raw image; the message
            says which value and why.
    """
    return PinholeCamera.from_camera_info(
        msg.k,
        int(msg.width),
        int(msg.height),
        distortion_model=str(msg.distortion_model),
        d=list(msg.d),
        r=list(msg.r),
        p=list(msg.p),
        rectified=rectified,
    )
