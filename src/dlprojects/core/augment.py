"""Image augmentation computed on the batch's device: no per-sample Python loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Pad (B, C, H, W) by `padding` (zeros after normalisation: the background) and crop back to
    H x W at a random offset per image: random translations of up to `padding` pixels."""
    if padding == 0:
        return images
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding,) * 4, value=float(images.amin()))
    offsets = torch.randint(0, 2 * padding + 1, (2, batch), generator=generator).to(images.device)
    rows = offsets[0, :, None] + torch.arange(height, device=images.device)  # (B, H)
    columns = offsets[1, :, None] + torch.arange(width, device=images.device)  # (B, W)
    batch_index = torch.arange(batch, device=images.device)[:, None, None]
    # (B, H, W, C) gathered, back to (B, C, H, W)
    return padded.permute(0, 2, 3, 1)[batch_index, rows[:, :, None], columns[:, None, :]] \
        .permute(0, 3, 1, 2)


def random_flip(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mirror a random half of the batch left-right (for clothes and objects, never for digits)."""
    flip = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def augmenter(*, crop_padding: int, flip: bool):
    """The `augment` callable for TensorBatches, or None when there is nothing to do."""
    if crop_padding == 0 and not flip:
        return None

    def augment(images: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        images = random_crop(images, crop_padding, generator)
        return random_flip(images, generator) if flip else images

    return augment
