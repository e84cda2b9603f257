"""Deep image prior: a small untrained convolutional network from a fixed random code to an image stack, whose weights
(not the pixels) are optimised, after Ulyanov, Vedaldi & Lempitsky (2018). It is fitted to the dataset itself; no
weights are downloaded. The structure of the network is the prior: it reproduces smooth, repeated structure long
before pixel noise.

Network (``model.dip``); block(x) = LeakyReLU(norm(conv_3x3(x))), the convolution reflect-padded and without bias,
norm the per-channel normalisation over the canvas (zero mean, unit variance; the batch normalisation of DIP for a
batch of one image), which keeps every layer's scale fixed, so Adam steps of one size suit all layers:
  z:        (code_channels, Y, X), a fixed code z ~ U(0, 1) drawn from the seed
  down:     f_0 = block(z); f_l = block(avgpool_2(f_{l-1})), l = 1..levels
  up:       g_levels = f_levels; g_{l-1} = block(up(g_l) + f_{l-1})   (up: bilinear to f_{l-1}'s size; the skip
            term f_{l-1} only with ``skip``)
  head:     n = conv_1x1(g_0) + b, (out_channels, Y, X)
Weights are He-uniform (gain √(2/(1+slope²))), and the head starts at exactly 0, so the network's first output is
n = 0: the parametrisations add n to a base image, and a run starts from the same object as with pixels.

All weights live in one flat vector (``NetworkLayout``), so the state holds one tensor for the network like for
every other optimisable quantity; ``network_output`` reads views of it, so gradients reach the vector itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ptyopt.model.dip_config import DipConfig


@dataclass(frozen=True)
class NetworkLayout:
    """Where each weight tensor of the network sits in the flat vector: shapes[name] and its offset, in order."""

    config: DipConfig
    out_channels: int
    shapes: dict[str, tuple[int, ...]]

    @classmethod
    def of(cls, config: DipConfig, out_channels: int) -> NetworkLayout:
        c = config.channels
        shapes: dict[str, tuple[int, ...]] = {"down0.weight": (c, config.code_channels, 3, 3)}
        for level in range(1, config.levels + 1):
            shapes[f"down{level}.weight"] = (c, c, 3, 3)
        for level in range(config.levels - 1, -1, -1):
            shapes[f"up{level}.weight"] = (c, c, 3, 3)
        shapes |= {"head.weight": (out_channels, c, 1, 1), "head.bias": (out_channels,)}
        return cls(config, out_channels, shapes)

    @property
    def size(self) -> int:
        """Number of weights (the flat vector's length)."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Views of ``flat`` (size,) with the shapes of the layers, by name (gradients flow back into ``flat``)."""
        if flat.shape != (self.size,):
            raise ValueError(f"the network's weights are a ({self.size},) vector, got {tuple(flat.shape)}")
        out, offset = {}, 0
        for name, shape in self.shapes.items():
            count = math.prod(shape)
            out[name] = flat[offset : offset + count].view(shape)
            offset += count
        return out

    def initial_weights(self, generator: torch.Generator, dtype: torch.dtype) -> Tensor:
        """He-uniform convolution weights and a zero head (drawn on the CPU from ``generator``)."""
        gain = math.sqrt(2.0 / (1.0 + self.config.negative_slope**2))
        parts = []
        for name, shape in self.shapes.items():
            if name.startswith("head."):
                parts.append(torch.zeros(math.prod(shape), dtype=dtype))
                continue
            fan_in = math.prod(shape[1:])
            bound = gain * math.sqrt(3.0 / fan_in)
            parts.append((torch.rand(math.prod(shape), generator=generator, dtype=dtype) * 2 - 1) * bound)
        return torch.cat(parts)


def input_code(config: DipConfig, canvas_px: tuple[int, int], generator: torch.Generator,
               dtype: torch.dtype) -> Tensor:
    """The fixed code z (1, code_channels, Y, X) ~ U(0, 1), drawn on the CPU from ``generator`` (its scale does not
    matter: the first block normalises)."""
    return torch.rand((1, config.code_channels, *canvas_px), generator=generator, dtype=dtype)


def _block(x: Tensor, weights: dict[str, Tensor], name: str, slope: float) -> Tensor:
    """LeakyReLU(norm(conv_3x3(x))); reflect padding leaves no zero border for the network to learn around, and a
    bias would be removed by the normalisation."""
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return F.leaky_relu(F.instance_norm(F.conv2d(padded, weights[f"{name}.weight"])), slope)


def network_output(layout: NetworkLayout, flat: Tensor, code: Tensor) -> Tensor:
    """n = network(z; flat): (out_channels, Y, X) for the code (1, code_channels, Y, X); see the module docstring."""
    config = layout.config
    weights = layout.unflatten(flat)
    slope = config.negative_slope
    features = [_block(code, weights, "down0", slope)]
    for level in range(1, config.levels + 1):
        coarse = F.avg_pool2d(features[-1], 2, ceil_mode=True)
        features.append(_block(coarse, weights, f"down{level}", slope))
    x = features[-1]
    for level in range(config.levels - 1, -1, -1):
        skip = features[level]
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        x = _block(x + skip if config.skip else x, weights, f"up{level}", slope)
    return F.conv2d(x, weights["head.weight"], weights["head.bias"])[0]
