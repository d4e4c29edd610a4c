"""Batched crop + zero-pad + resize of many boxes from many images at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def crop_resize(
    images: list[torch.Tensor],
    boxes: torch.Tensor,
    image_index: torch.Tensor,
    size: int,
    max_supersample: int = 4,
) -> torch.Tensor:
    """Cut ``boxes [N,4]`` (x1,y1,x2,y2 floats) out of ``images`` and resize each to ``size``².

    ``images`` is a list of float ``[C, H, W]`` tensors (sizes may differ), ``image_index [N]``
    says which image each box comes from. Pixels outside an image are 0, as in MTCNN's zero
    canvas padding (after (x - 127.5)/128 they read as ≈ -1). Returns ``[N, C, size, size]``.

    Sampling is bilinear at pixel centres; a box much larger than ``size`` is supersampled on a
    k×k sub-grid per output pixel (k = ceil(side/size), at most ``max_supersample``) and averaged,
    so downscaling does not alias. The loops run over images and over at most
    ``max_supersample`` sub-grid sizes, never over boxes.
    """
    n = boxes.shape[0]
    channels = images[0].shape[0] if images else 3
    device = boxes.device
    dtype = images[0].dtype if images else torch.float32
    out = torch.zeros((n, channels, size, size), dtype=dtype, device=device)
    if n == 0:
        return out
    boxes = boxes.to(dtype)
    side = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    k_all = torch.ceil(side / size).clamp(1, max_supersample).long()
    # One host sync for the (image, k) groups present, instead of one per box.
    keys = image_index.long() * (max_supersample + 1) + k_all
    unique_keys = torch.unique(keys).tolist()
    for key in unique_keys:
        b, k = divmod(key, max_supersample + 1)
        sel = torch.nonzero(keys == key, as_tuple=True)[0]
        image = images[b]
        height, width = image.shape[1], image.shape[2]
        grid = _sampling_grid(boxes[sel], size * k, width, height)  # [m, S*k, S*k, 2]
        m = sel.numel()
        # Stacking every box's grid vertically lets one grid_sample call read one image.
        sampled = F.grid_sample(
            image[None],
            grid.reshape(1, m * size * k, size * k, 2),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        sampled = sampled.reshape(channels, m, size * k, size * k).transpose(0, 1)
        if k > 1:
            sampled = F.avg_pool2d(sampled, k)
        out[sel] = sampled
    return out


def _sampling_grid(boxes: torch.Tensor, samples: int, width: int, height: int) -> torch.Tensor:
    steps = (torch.arange(samples, device=boxes.device, dtype=boxes.dtype) + 0.5) / samples
    xs = boxes[:, 0:1] + steps[None, :] * (boxes[:, 2:3] - boxes[:, 0:1])  # [m, S]
    ys = boxes[:, 1:2] + steps[None, :] * (boxes[:, 3:4] - boxes[:, 1:2])
    # align_corners=False: -1 and +1 are the outer edges of the first and last pixels.
    gx = xs * (2.0 / width) - 1.0
    gy = ys * (2.0 / height) - 1.0
    m = boxes.shape[0]
    return torch.stack(
        [gx[:, None, :].expand(m, samples, samples), gy[:, :, None].expand(m, samples, samples)], dim=-1
    )
