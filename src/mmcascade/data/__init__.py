"""Records and items: what users hand to the embedder, reasoner and index."""

from mmcascade.data.items import Item, as_item, as_items, load_image

__all__ = ["Item", "as_item", "as_items", "load_image"]
