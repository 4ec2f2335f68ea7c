"""The unit of input: text, image(s) or both, plus an optional task instruction; and how a JSON object becomes one."""

from __future__ import annotations

import io
import os
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image

IMAGE_PLACEHOLDER = "<image>"
#: the keys of an item in a JSON file (training records, collections, trace files)
ITEM_KEYS = ("text", "image", "images", "instruction")
#: the most pixels (width x height) :func:`load_image` decodes: PIL's own default, about 89 megapixels
#: (e.g. 9459x9459). Larger images are refused, before decoding, with a ValueError (a build skips and
#: lists them). Set the environment variable ``MMCASCADE_MAX_IMAGE_PIXELS`` to change it (read at each call).
MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS_ENV = "MMCASCADE_MAX_IMAGE_PIXELS"
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Item:
    """A query or document.

    Args:
        text: the text; may contain ``<image>`` placeholders to interleave several images with it.
        images: images as file paths, encoded bytes or PIL images, in placeholder order.
        instruction: the task instruction (e.g. "Find an image that matches the caption.").
    """

    text: str | None = None
    images: tuple[ImageSource, ...] = field(default_factory=tuple)
    instruction: str | None = None

    def __post_init__(self) -> None:
        if self.text is not None and not isinstance(self.text, str):
            raise ValueError(f"Item.text must be a str or None; got {type(self.text).__name__}")
        if self.instruction is not None and not isinstance(self.instruction, str):
            raise ValueError(f"Item.instruction must be a str or None; got {type(self.instruction).__name__}")
        images = self.images
        if images is None:
            images = ()
        elif _is_image_source(images):
            images = (images,)
        else:
            images = tuple(images)
        for image in images:
            if not _is_image_source(image):
                raise ValueError(f"Item image must be a file path, bytes or a PIL.Image; got {type(image).__name__}")
        object.__setattr__(self, "images", images)
        if not (self.text and self.text.strip()) and not images:
            raise ValueError("an Item needs text, an image, or both; got neither")
        if self.text is not None and IMAGE_PLACEHOLDER in self.text:
            n_placeholders = self.text.count(IMAGE_PLACEHOLDER)
            if n_placeholders != len(images):
                raise ValueError(
                    f"Item text has {n_placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but {len(images)} image(s) were "
                    "given: give one image per placeholder, or no placeholders to put the images before the text"
                )

    def with_instruction(self, instruction: str | None) -> Item:
        """This item with ``instruction`` filled in where it has none."""
        if self.instruction is not None or instruction is None:
            return self
        return Item(text=self.text, images=self.images, instruction=instruction)


def as_item(value: Any) -> Item:
    """Turn what a user passes into an :class:`Item`.

    A ``str`` is text; a ``pathlib.Path``, ``bytes`` or PIL image is an image; a dict may hold
    ``text``, ``image`` (or ``images``) and ``instruction``.
    """
    if isinstance(value, Item):
        return value
    if isinstance(value, str):
        return Item(text=value)
    if isinstance(value, (Path, bytes, Image.Image)):
        return Item(images=(value,))
    if isinstance(value, dict):
        unknown = set(value) - {"text", "image", "images", "instruction"}
        if unknown:
            raise ValueError(f"unknown item keys {sorted(unknown)}; valid keys are text, image, images, instruction")
        if "image" in value and "images" in value:
            raise ValueError("give an item either 'image' or 'images', not both")
        images = value.get("images", value.get("image"))
        return Item(text=value.get("text"), images=images or (), instruction=value.get("instruction"))
    raise ValueError(
        f"cannot make an item from {type(value).__name__}: pass a str (text), a Path/bytes/PIL.Image (image), "
        "a dict with text/image/instruction, or an mmcascade.Item"
    )


def as_items(values: Iterable[Any] | Any) -> list[Item]:
    """:func:`as_item` over a sequence; a single str/item/image is treated as a list of one."""
    if isinstance(values, (str, bytes, dict, Item, Path, Image.Image)):
        values = [values]
    items = []
    for index, value in enumerate(values):
        try:
            items.append(as_item(value))
        except ValueError as error:
            raise ValueError(f"item {index}: {error}") from error
    return items


def item_from_json(
    value: Any,
    base: str | os.PathLike,
    *,
    name: str = "item",
    keys: Sequence[str] = ITEM_KEYS,
    check_images: bool = False,
) -> Item:
    """A JSON object ``{"text", "image" | "images", "instruction"}`` read from a file -> an :class:`Item`.

    Image paths become absolute strings (``~`` expanded, relative ones resolved against ``base``, the
    folder of the file they came from); nothing is decoded. A ``null`` field counts as absent. ``keys``
    narrows what is accepted (a format with one image per item leaves out ``images``); ``check_images``
    also checks that every image file exists.

    Raises:
        ValueError: every problem found, each naming its field (``query.text must be a string, got
            number``); ``name`` is what the object is called in them, ``""`` for fields at the top level.
    """
    fields = _item_fields(value, name, keys)
    images = _image_paths(fields, name, Path(os.path.abspath(base)), check_images)
    try:
        return Item(text=fields.get("text"), images=images, instruction=fields.get("instruction"))
    except ValueError as error:
        raise ValueError(f"{_prefix(name)}{error}") from None


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type (``number``, ``array`` ...), for error messages."""
    if value is None:
        return "null"
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(value), type(value).__name__
    )


_EXPECTED_TYPE = {"text": "a string", "image": "a string", "instruction": "a string", "images": "a list of strings"}


def _item_fields(value: Any, name: str, keys: Sequence[str]) -> dict[str, Any]:
    """The object's non-null fields, type-checked; every problem is listed before raising."""
    if not isinstance(value, dict):
        subject = f"'{name}' must be" if name else "expected"
        raise ValueError(f"{subject} an object with {'/'.join(keys)}, got {json_type(value)}")
    reasons = []
    unknown = sorted(set(value) - set(keys))
    if unknown:
        reasons.append(f"{_prefix(name)}unknown key(s) {unknown} (valid keys: {', '.join(keys)})")
    fields = {key: value[key] for key in keys if value.get(key) is not None}
    if "image" in fields and "images" in fields:
        reasons.append(f"{_prefix(name)}give either 'image' or 'images', not both")
    for key, field_value in fields.items():
        valid = isinstance(field_value, str) if key != "images" else _is_string_list(field_value)
        if not valid:
            reasons.append(f"{_field(name, key)} must be {_EXPECTED_TYPE[key]}, got {json_type(field_value)}")
    if not {"text", "image", "images"} & set(fields):
        reasons.append(f"{name or 'an item'} needs 'text' or 'image' (or both)")
    if reasons:
        raise ValueError("; ".join(reasons))
    return fields


def _image_paths(fields: dict[str, Any], name: str, base: Path, check_images: bool) -> tuple[str, ...]:
    if "image" in fields:
        sources = {_field(name, "image"): fields["image"]}
    else:
        sources = {f"{_field(name, 'images')}[{index}]": path for index, path in enumerate(fields.get("images", []))}
    paths = []
    for label, source in sources.items():
        if not source.strip():
            raise ValueError(f"{label} is an empty path")
        path = Path(source).expanduser()
        path = path if path.is_absolute() else base / path
        if check_images and not path.is_file():
            raise ValueError(f"{label}: file not found: {path}")
        paths.append(str(path))
    return tuple(paths)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(entry, str) for entry in value)


def _field(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _prefix(name: str) -> str:
    return f"{name}: " if name else ""


def load_image(source: ImageSource) -> Image.Image:
    """Open an image as RGB, fully decoded, with an error that names the file on failure.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not a readable image, or it has more than :func:`max_image_pixels` pixels
            (checked from its header, before decoding; no PIL ``DecompressionBomb*`` warning or error escapes).
    """
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, bytes):
        name, stream = f"<{len(source)} bytes>", io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        name, stream = str(path), path
    limit = max_image_pixels()
    try:
        with _pil_limit_at_least(limit), warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own check below replaces it
            with Image.open(stream) as image:  # reads the header only
                width, height = image.size
                if width * height > limit:
                    raise _TooLargeError(
                        f"image {name} is {width}x{height} ({width * height:,} pixels), over the limit of "
                        f"{limit:,} pixels; shrink it, or raise the limit with the environment variable "
                        f"{MAX_IMAGE_PIXELS_ENV}"
                    )
                image.load()  # decode now, so truncated files fail here and not deep inside a batch
                return image.convert("RGB")
    except _TooLargeError as error:
        raise ValueError(str(error)) from None
    except Image.DecompressionBombError as error:
        # PIL refuses over twice its own limit inside Image.open, before we see the size: read the header
        # again with its check off, for a message that says how large the image is
        size = _header_size(source if isinstance(source, bytes) else stream)
        if size and size[0] * size[1] > limit:
            described = f"{size[0]}x{size[1]} ({size[0] * size[1]:,} pixels)"
        else:  # e.g. a GIF frame larger than the size its header gives
            described = f"too large to decode ({error})"
        raise ValueError(
            f"image {name} is {described}, over the limit of {limit:,} pixels; shrink it, or raise the limit with "
            f"the environment variable {MAX_IMAGE_PIXELS_ENV}"
        ) from None
    except UnidentifiedImageError as error:  # PIL's text names the stream object, not the input
        raise ValueError(
            f"image {name} is not a readable image (unknown or damaged format); check the file or remove it"
        ) from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {name} is not a readable image ({error}); check the file or remove it") from error


def max_image_pixels() -> int:
    """The pixel limit of :func:`load_image`: ``$MMCASCADE_MAX_IMAGE_PIXELS`` if set, else :data:`MAX_IMAGE_PIXELS`."""
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENV, "").strip()
    if not raw:
        return MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", ""))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{MAX_IMAGE_PIXELS_ENV}={raw!r} must be a positive whole number of pixels")
    return value


def _header_size(source: bytes | Path) -> tuple[int, int] | None:
    """The size in an image's header, read with PIL's bomb check off (nothing is decoded)."""
    with _PIL_LIMIT_LOCK:
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return image.size
        except Exception:  # only for the message; the caller raises either way
            return None
        finally:
            Image.MAX_IMAGE_PIXELS = saved


class _TooLargeError(Exception):
    """An image over the pixel limit (kept apart from PIL's own ValueErrors)."""


@contextmanager
def _pil_limit_at_least(limit: int) -> Iterator[None]:
    """PIL's own bomb limit raised to ``limit`` for the duration, where it is lower; restored after.

    Only taken when a user raised :func:`max_image_pixels` above PIL's limit; the lock keeps
    concurrent calls from restoring each other's value.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is None or limit <= current:
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = limit if saved is not None else None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _is_image_source(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike, bytes, Image.Image))
