"""The unit of input: text, image(s) or both, plus an optional task instruction."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

ImageSource = str | os.PathLike | bytes | Image.Image

IMAGE_PLACEHOLDER = "<image>"


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


def load_image(source: ImageSource) -> Image.Image:
    """Open an image as RGB, fully decoded, with an error that names the file on failure."""
    if isinstance(source, Image.Image):
        return source if source.mode == "RGB" else source.convert("RGB")
    if isinstance(source, bytes):
        name, stream = f"<{len(source)} bytes>", io.BytesIO(source)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"image file not found: {path}")
        name, stream = str(path), path
    try:
        with Image.open(stream) as image:
            image.load()  # decode now, so truncated files fail here and not deep inside a batch
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"image {name} is not a readable image ({error}); check the file or remove it") from error


def _is_image_source(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike, bytes, Image.Image))
