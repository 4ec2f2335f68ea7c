"""The frozen EfficientNet image encoder both starters share, with an optional per-image feature cache."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch


class FrozenImageFeatures:
    """Mixin for backbones holding ``self.vision`` (EfficientNet-Lite0): features, cache, eval-when-frozen.

    Mix in before :class:`~mmcascade.backbones.base.Backbone`; call :meth:`_init_feature_cache` in ``__init__``.
    """

    vision: Any

    def _init_feature_cache(self) -> None:
        self._feature_cache: OrderedDict[str, torch.Tensor] | None = None
        self._feature_cache_size = 0

    def cache_image_features(self, max_images: int | None = 100_000) -> None:
        """Keep the frozen image encoder's outputs per image file (training and evaluation revisit images).

        ``None`` turns the cache off. Only use while the image encoder is frozen.
        """
        self._feature_cache = None if max_images is None else OrderedDict()
        self._feature_cache_size = max_images or 0

    def train(self, mode: bool = True) -> Any:
        super().train(mode)  # type: ignore[misc]
        if not any(parameter.requires_grad for parameter in self.vision.parameters()):
            self.vision.eval()  # a frozen CNN keeps its batch-norm statistics and no drop-connect
        return self

    def _image_features(self, pixel_values: torch.Tensor, keys: list[str | None] | None) -> torch.Tensor:
        """``(n, 1280, g, g)`` features of the images, from the cache where an image (by key) was seen before."""
        device, dtype = self.device, self.dtype  # type: ignore[attr-defined]
        pixel_values = pixel_values.to(device, dtype)
        if self._feature_cache is None or keys is None:
            return self._encode_images(pixel_values)
        features: list[torch.Tensor | None] = [self._feature_cache.get(key) if key else None for key in keys]
        missing = [index for index, feature in enumerate(features) if feature is None]
        if missing:
            fresh = self._encode_images(pixel_values[missing])  # (m, C, g, g)
            for index, feature in zip(missing, fresh, strict=True):
                # Rounded like the cached copy, so a first and a repeated encoding agree exactly.
                features[index] = feature.to(torch.float16)
                if keys[index] and len(self._feature_cache) < self._feature_cache_size:
                    self._feature_cache[keys[index]] = features[index]
        return torch.stack([feature.to(device, dtype) for feature in features])  # (n, C, g, g)

    def _encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        frozen = not any(parameter.requires_grad for parameter in self.vision.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return self.vision.extract_features(pixel_values)  # (n, 1280, g, g)
