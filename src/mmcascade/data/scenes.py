"""Moved to :mod:`mmcascade.data.synthetic.scenes`; this alias is kept for one release."""

from mmcascade.data.synthetic.scenes import (
    CAPTION_STYLES,
    COLOURS,
    EDIT_KINDS,
    IMAGE_SIZE,
    MAX_OBJECTS,
    SHAPES,
    SIZES,
    SLOTS,
    Scene,
    SceneEdit,
    SceneObject,
    all_captions,
    caption,
    one_edit_negatives,
    random_scene,
    render,
)

__all__ = [
    "CAPTION_STYLES",
    "COLOURS",
    "EDIT_KINDS",
    "IMAGE_SIZE",
    "MAX_OBJECTS",
    "SHAPES",
    "SIZES",
    "SLOTS",
    "Scene",
    "SceneEdit",
    "SceneObject",
    "all_captions",
    "caption",
    "one_edit_negatives",
    "random_scene",
    "render",
]
