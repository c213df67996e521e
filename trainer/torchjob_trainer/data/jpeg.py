"""In-memory JPEGs decoded with PIL and augmented with torchvision transforms v2: real decode work.

The synthetic dataset burns a fixed CPU time per sample; this one does what an image pipeline does
(entropy decode, colour conversion, resized crop, flip, float conversion, normalisation), so the
loader tuning is measured against real per-sample work whose cost varies from sample to sample.
The JPEG bytes are generated once in memory (no files, no download) and shared by forked workers.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch.utils.data import Dataset

Sample = tuple[torch.Tensor, torch.Tensor]
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def encode_images(count: int, side: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    """`count` JPEG-encoded RGB images of `side` x `side`: smooth gradients plus noise, like photos."""
    from PIL import Image  # noqa: PLC0415  (Pillow comes with torchvision; only this dataset needs it)

    gen = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0, 1, side)
    out: list[bytes] = []
    for _ in range(count):
        colour = torch.rand(3, 1, 1, generator=gen)
        base = colour * ramp.view(1, side, 1) + (1 - colour) * ramp.view(1, 1, side)
        noise = torch.rand(3, side, side, generator=gen) * 0.25
        pixels = ((base * 0.75 + noise).clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def augment(image_size: int) -> Any:
    """The usual training augmentation, torchvision transforms v2."""
    from torchvision.transforms import v2  # noqa: PLC0415  (slow import)

    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(MEAN, STD),
        ]
    )


class JpegDataset(Dataset[Sample]):
    """`size` samples over `distinct` in-memory JPEGs of side `source_side`, decoded per access.

    `__getitems__` decodes the batch's images and stacks them in the worker, so the loader hands one
    tensor per batch to the main process (collate passes tuples through).
    """

    def __init__(
        self,
        size: int,
        image_size: int,
        num_classes: int,
        *,
        source_side: int | None = None,
        distinct: int = 64,
        seed: int = 0,
    ) -> None:
        self.size = size
        self.num_classes = num_classes
        self.seed = seed
        self.images = encode_images(min(distinct, size), source_side or 2 * image_size, seed)
        self.transform = augment(image_size)

    def __len__(self) -> int:
        return self.size

    def _decode(self, index: int) -> torch.Tensor:
        from PIL import Image  # noqa: PLC0415

        if not 0 <= index < self.size:
            raise IndexError(index)
        with Image.open(io.BytesIO(self.images[index % len(self.images)])) as img:
            tensor: torch.Tensor = self.transform(img.convert("RGB"))
        return tensor

    def _target(self, index: int) -> int:
        return (index * 7 + self.seed) % self.num_classes

    def __getitem__(self, index: int) -> Sample:
        return self._decode(index), torch.tensor(self._target(index))

    def __getitems__(self, indices: list[int]) -> Sample:
        x = torch.stack([self._decode(i) for i in indices])
        return x, torch.tensor([self._target(i) for i in indices])
