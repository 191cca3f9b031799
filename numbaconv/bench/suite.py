"""The suite: the layers the bench measures and the data it measures them on.

The ids (``a`` ... ``k2``) are quoted by the README and the notebooks: add layers,
do not renumber them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Shape:
    """One layer of the suite: conv3d(N x Cin x D x H x W input, Cout output channels)."""

    id: str
    name: str
    batch: int
    in_channels: int
    size: tuple
    out_channels: int
    kernel: tuple
    stride: tuple = (1, 1, 1)
    padding: tuple = (0, 0, 0)
    dilation: tuple = (1, 1, 1)
    groups: int = 1

    def describe(self) -> str:
        """``1x64x16x56x56 -> 128 k3 p1``: the table's "layer" text."""
        def triple(t):
            return str(t[0]) if len(set(t)) == 1 else "(" + ",".join(map(str, t)) + ")"

        text = (f"{self.batch}x{self.in_channels}x{'x'.join(map(str, self.size))}"
                f" -> {self.out_channels} k{triple(self.kernel)}")
        if self.stride != (1, 1, 1):
            text += f" s{triple(self.stride)}"
        if self.padding != (0, 0, 0):
            text += f" p{triple(self.padding)}"
        if self.dilation != (1, 1, 1):
            text += f" d{triple(self.dilation)}"
        if self.groups != 1:
            text += f" g{self.groups}"
        return text

    def config(self) -> dict:
        """The layer as JSON (the result's ``config``)."""
        return {"N": self.batch, "Cin": self.in_channels, "size": list(self.size),
                "Cout": self.out_channels, "kernel": list(self.kernel),
                "stride": list(self.stride), "padding": list(self.padding),
                "dilation": list(self.dilation), "groups": self.groups}

    def args(self) -> dict:
        """The keyword arguments that both ``numbaconv.conv3d`` and torch's take."""
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    def inputs(self, dtype, rng):
        """(input, weight, bias) drawn from ``rng``; the weight scaled by 1/sqrt(fan-in)
        so that outputs stay near 1 and relative differences mean the same on every layer."""
        x = rng.standard_normal((self.batch, self.in_channels) + self.size).astype(dtype)
        cin_g = self.in_channels // self.groups
        fan_in = cin_g * math.prod(self.kernel)
        w = (rng.standard_normal((self.out_channels, cin_g) + self.kernel)
             / math.sqrt(fan_in)).astype(dtype)
        b = (0.1 * rng.standard_normal(self.out_channels)).astype(dtype)
        return x, w, b


def _s(k, *, s=1, p=0, d=1):
    t = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v, v)  # noqa: E731
    return {"kernel": t(k), "stride": t(s), "padding": t(p), "dilation": t(d)}


SHAPES = (
    Shape("a", "seed", 2, 3, (4, 4, 4), 1, **_s(3)),
    Shape("b", "C3D conv2", 1, 64, (16, 56, 56), 128, **_s(3, p=1)),
    Shape("c", "U-Net mid", 1, 32, (64, 64, 64), 32, **_s(3, p=1)),
    Shape("d", "U-Net first", 1, 1, (96, 96, 96), 16, **_s(3, p=1)),
    Shape("e", "strided", 2, 32, (32, 64, 64), 64, **_s(3, s=2, p=1)),
    Shape("f", "grouped", 2, 64, (16, 32, 32), 64, **_s(3, p=1), groups=4),
    Shape("g", "depthwise", 4, 96, (16, 28, 28), 96, **_s(3, p=1), groups=96),
    Shape("h", "depthwise x2", 2, 32, (16, 32, 32), 64, **_s(3, p=1), groups=32),
    Shape("i", "dilated", 1, 16, (32, 32, 32), 16, **_s(3, p=2, d=2)),
    Shape("j", "pointwise", 2, 128, (16, 28, 28), 256, **_s(1)),
    Shape("k1", "(1,3,3)", 2, 64, (8, 56, 56), 64, **_s((1, 3, 3), p=(0, 1, 1))),
    Shape("k2", "(3,1,1)", 2, 64, (8, 56, 56), 64, **_s((3, 1, 1), p=(1, 0, 0))),
    # deep layers: many channels on small planes (where the reduction outgrows L2)
    Shape("l1", "deep 128", 2, 128, (8, 28, 28), 128, **_s(3, p=1)),
    Shape("l2", "deep 256", 1, 256, (4, 14, 14), 256, **_s(3, p=1)),
    Shape("l3", "deep 512", 1, 512, (2, 7, 7), 512, **_s(3, p=1)),
    # a video stem: RGB frames, (3,7,7) kernel, stride (1,2,2)
    Shape("m", "video stem", 1, 3, (16, 112, 112), 64, **_s((3, 7, 7), s=(1, 2, 2), p=(1, 3, 3))),
)
#: A quick subset that shows dense layers (c, l1) beside the wins, so it is representative.
QUICK_SHAPES = ("a", "c", "d", "g", "i", "j", "l1")
BY_ID = {s.id: s for s in SHAPES}


def select(shapes, quick: bool) -> list:
    """The layers to run: ``shapes`` as ids (a list or "a,b,c"), or the whole suite (the
    quick subset with ``quick``). Unknown ids are a ValueError naming the valid ones."""
    if shapes is None:
        return [BY_ID[s] for s in (QUICK_SHAPES if quick else BY_ID)]
    if isinstance(shapes, str):
        shapes = shapes.split(",")
    ids = [str(s).strip() for s in shapes if str(s).strip()]
    unknown = [s for s in ids if s not in BY_ID]
    if unknown or not ids:
        raise ValueError(f"unknown shape id(s) {unknown or shapes!r}; "
                         f"choose from {', '.join(BY_ID)}")
    return [BY_ID[s] for s in ids]
