"""Images decoded straight into a batch: the one interface between ``Decode`` and ``Batch``.

A decoded image that a batch then stacks is copied once more than it needs to be. So a
``Batch`` with the default collate asks the stage that feeds it (directly, or through
stages that only choose or rename fields: ``Stage.passes_values``) whether it can defer
its images (``DefersImages.defer_images``). A stage that agrees yields ``PendingImage``
values in place of decoded images from then on, and the batch decodes each into its own
row (``open``, then ``pack``), or, for an image that does not fit the batch, takes the
value the stage would have yielded (``value``). A ``PendingImage`` never leaves the batch;
a decoding error it raises is the stage's own ``DecodeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..codecs.decoders import decode_error
from ..codecs.images import ImageForm, pack_image
from ..stage import Stage

__all__ = ["DefersImages", "PendingImage", "image_source"]


@runtime_checkable
class DefersImages(Protocol):
    """A stage that can leave its images to the batch it feeds."""

    def defer_images(self) -> bool:
        """Yield ``PendingImage`` values instead of decoded images from now on, where
        that gives the same values; return whether it will."""


def image_source(stage: Stage[Any] | None) -> DefersImages | None:
    """The stage that feeds ``stage`` directly or through stages that pass values on
    (``Stage.passes_values``), if it can defer its images."""
    while stage is not None and stage.passes_values:
        stage = stage.source
    return stage if isinstance(stage, DefersImages) else None


class PendingImage:
    """An image field left to the batch: its bytes, decoded in ``form`` when the batch
    asks. The sample and field name are kept for the error only (formatted on failure)."""

    __slots__ = ("data", "form", "item", "name")

    def __init__(self, data: bytes, form: ImageForm, item: Mapping[str, object], name: str) -> None:
        self.data, self.form, self.item, self.name = data, form, item, name

    def open(self) -> Any:
        """The decoded PIL image. Raises ``DecodeError`` naming the shard and member."""
        try:
            return self.form.open(self.data)
        except Exception as e:
            raise decode_error(self.item, self.name, e) from e

    def value(self, image: Any = None, *, pixels: bool = True) -> Any:
        """The decoded value (of ``image`` from ``open``, if given); with ``pixels=False``
        its shape and type only, the pixels unwritten."""
        return self.form.value(self.open() if image is None else image, pixels=pixels)

    def shape(self, image: Any) -> tuple[int, ...]:
        """The shape ``value(image)`` has, without making it."""
        return self.form.shape(image)

    @staticmethod
    def pack(image: Any, out: np.ndarray) -> None:
        """Write the pixels of ``image`` into ``out``: C-contiguous uint8 memory of the
        value's size, in the value's memory order (H x W x C)."""
        pack_image(image, out)
