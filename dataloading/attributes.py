"""Style attributes measured from the pixels, and their terciles as words.

Every image gets a few numbers that say *how* it is drawn, not what it shows:

* **thickness** (px): ink area over skeleton length. A stroke of width w and length L covers about w * L pixels,
  and its one-pixel-wide skeleton (Zhang & Suen 1984, "A fast parallel algorithm for thinning digital patterns")
  is about L pixels long, so the ratio is the stroke width. Thinning also eats about w / 2 at each free end, so the
  skeleton is S = L - w long and area = w (S + w): w = (sqrt(S^2 + 4 area) - S) / 2.
* **slant** (degrees, positive = the top leans right): the shear of the second-order image moments, as in classic
  MNIST deskewing: with x the column and y the row (downwards), x drifts by mu11 / mu02 pixels per row, and
  slant = atan(-mu11 / mu02).
* **width** (px): the horizontal spread once the slant is taken out, sqrt(12 * (mu20 - mu11^2 / mu02)). The variance
  of x - s * y with s = mu11 / mu02 is what is left of mu20; sqrt(12 var) is the width of a uniform bar of that
  variance. Height does not vary (MNIST digits were normalised into a 20-pixel box), width does.

Fashion-MNIST gets **size** (the share of the image covered by the item) and **brightness** (the mean intensity
of its pixels), as the issue suggests.

Each attribute is binned into three words by the terciles of its *class* in the training split ("thick" means
thick for a six): ``AttributeBins.fit`` learns the edges once, and since they are computed from the fixed training
split every script that loads the dataset gets the same ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

INK_THRESHOLD = 128  # uint8: a pixel at or above this is ink for the skeleton
ITEM_THRESHOLD = 0.1  # of full scale: a Fashion-MNIST pixel above this belongs to the item (its size and brightness)


# --------------------------------------------------------------------------- skeleton
NEIGHBOUR_OFFSETS = ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))  # P2..P9: N, NE, E, SE, S, SW, W, NW


def neighbourhood_codes(ink: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, H, W] int32: the eight neighbours P2..P9 of every pixel as one byte, P(k+2) in bit k."""
    padded = F.pad(ink.to(torch.uint8), (1, 1, 1, 1)).int()
    h, w = ink.shape[-2:]
    return sum(padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] << k for k, (dy, dx) in enumerate(NEIGHBOUR_OFFSETS))


def removable(first: bool) -> torch.Tensor:
    """[256] bool: whether a boundary pixel with this neighbourhood is removed in Zhang-Suen's first or second sub-iteration."""
    table = torch.zeros(256, dtype=torch.bool)
    for code in range(256):
        p = [(code >> k) & 1 for k in range(8)]  # p[0] = P2 ... p[7] = P9
        count = sum(p)  # B(P1)
        transitions = sum(p[k] == 0 and p[(k + 1) % 8] == 1 for k in range(8))  # A(P1)
        p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
        sides = (p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0) if first else (p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0)
        table[code] = 2 <= count <= 6 and transitions == 1 and sides
    return table


REMOVABLE = (removable(first=True), removable(first=False))


def skeletonize(ink: torch.Tensor, max_iterations: int = 100) -> torch.Tensor:
    """Zhang-Suen thinning of a batch of binary images [N, H, W] bool -> their one-pixel-wide skeletons, same shape.

    Each sub-iteration removes, all at once, the ink pixels P1 with 2 <= B(P1) <= 6 ink neighbours, exactly one
    0 -> 1 transition A(P1) around them, and (first) P2 P4 P6 = 0 and P4 P6 P8 = 0, or (second) P2 P4 P8 = 0 and
    P2 P6 P8 = 0, until nothing changes. The test is a 256-entry table looked up by the neighbourhood's byte.
    """
    skeleton = ink.clone()
    active = torch.arange(len(ink))  # the images still thinning
    for _ in range(max_iterations):
        changed = torch.zeros(len(active), dtype=torch.bool)
        for table in REMOVABLE:
            part = skeleton[active]
            remove = part & table[neighbourhood_codes(part)]
            skeleton[active] = part & ~remove
            changed |= remove.flatten(1).any(1)
        active = active[changed]
        if len(active) == 0:
            break
    return skeleton


# --------------------------------------------------------------------------- measures
def stroke_thickness(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> [N] stroke width in pixels from the soft ink area and the skeleton length S,
    w = (sqrt(S^2 + 4 area) - S) / 2 (area = w (S + w), the ends included; 0 for an empty image)."""
    area = (images[:, 0].float() / 255).flatten(1).sum(1)  # [N]
    skeleton_length = skeletonize(images[:, 0] >= INK_THRESHOLD).flatten(1).sum(1).float()  # [N]
    return ((skeleton_length**2 + 4 * area).sqrt() - skeleton_length) / 2


def central_moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """uint8 [N, 1, H, W] -> (mu20, mu11, mu02), each [N]: intensity-weighted second moments about the centroid (x = column, y = row)."""
    weight = images[:, 0].float()  # [N, H, W]
    h, w = weight.shape[-2:]
    ys = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
    xs = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
    mass = weight.flatten(1).sum(1).clamp(min=1e-6)  # [N]
    mean = lambda grid: (weight * grid).flatten(1).sum(1) / mass  # noqa: E731
    dx, dy = xs - mean(xs)[:, None, None], ys - mean(ys)[:, None, None]  # [N, H, W]
    moment = lambda a, b: (weight * a * b).flatten(1).sum(1) / mass  # noqa: E731
    return moment(dx, dx), moment(dx, dy), moment(dy, dy)


def slant_degrees(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> [N] slant in degrees, positive when the top leans right: atan(-mu11 / mu02)."""
    _, mu11, mu02 = central_moments(images)
    return torch.rad2deg(torch.atan(-mu11 / mu02.clamp(min=1e-6)))


def deskewed_width(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1, H, W] -> [N] width in pixels once the slant is sheared out: sqrt(12 (mu20 - mu11^2 / mu02))."""
    mu20, mu11, mu02 = central_moments(images)
    return (12 * (mu20 - mu11**2 / mu02.clamp(min=1e-6))).clamp(min=0).sqrt()


def item_pixels(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, C, H, W] -> (gray [N, H, W] in 0..1, mask [N, H, W] of the item's pixels, those above ITEM_THRESHOLD)."""
    gray = images.float().mean(1) / 255
    return gray, gray > ITEM_THRESHOLD


def covered_share(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> [N] the share of the image the item covers: its size."""
    return item_pixels(images)[1].flatten(1).float().mean(1)


def brightness(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, C, H, W] -> [N] the mean intensity (0..1) of the item's pixels."""
    gray, item = item_pixels(images)
    return (gray * item).flatten(1).sum(1) / item.flatten(1).sum(1).clamp(min=1)


# --------------------------------------------------------------------------- attributes and their words
@dataclass(frozen=True)
class Attribute:
    """One measured attribute and the words for its low, middle and high tercile (an empty tuple: left unnamed).

    ``adjectives`` go before the class name ("a thick six"), ``predicates`` after it ("a six slanted left").
    """

    name: str
    unit: str
    measure: Callable[[torch.Tensor], torch.Tensor]  # uint8 [N, C, H, W] -> [N]
    adjectives: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]
    predicates: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]

    def words(self, tercile: int) -> tuple[str, ...]:
        """Every word form of one tercile (adjectives first)."""
        return self.adjectives[tercile] + tuple(p for p in self.predicates[tercile] if p not in self.adjectives[tercile])


THICKNESS = Attribute("thickness", "px", stroke_thickness,
                      adjectives=(("thin",), (), ("thick", "bold")),
                      predicates=(("written thin", "thin"), (), ("written thick", "thick", "bold")))
SLANT = Attribute("slant", "degrees", slant_degrees,
                  adjectives=(("left-slanted",), ("upright",), ("right-slanted",)),
                  predicates=(("slanted left", "leaning left"), ("upright", "straight"), ("slanted right", "leaning right")))
WIDTH = Attribute("width", "px", deskewed_width,
                  adjectives=(("narrow",), (), ("wide",)),
                  predicates=(("narrow",), (), ("wide",)))
SIZE = Attribute("size", "share of pixels", covered_share,
                 adjectives=(("small",), (), ("large",)),
                 predicates=(("small",), (), ("large",)))
BRIGHTNESS = Attribute("brightness", "mean intensity", brightness,
                       adjectives=(("dark",), (), ("bright",)),
                       predicates=(("dark",), (), ("bright",)))

DATASET_ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {"mnist": (THICKNESS, SLANT, WIDTH), "fashion": (SIZE, BRIGHTNESS)}


def measure(images: torch.Tensor, attributes: tuple[Attribute, ...], batch: int = 4096) -> torch.Tensor:
    """uint8 [N, C, H, W] -> [N, A] float: every attribute of every image, in batches (the skeleton pass holds N x H x W ints)."""
    parts = [torch.stack([a.measure(images[i : i + batch]) for a in attributes], 1) for i in range(0, len(images), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, len(attributes))


@dataclass(frozen=True)
class AttributeBins:
    """Tercile edges per class and attribute, learnt from the training split: edges[c, a] = (lower, upper)."""

    attributes: tuple[Attribute, ...]
    edges: torch.Tensor  # [C, A, 2] float

    @classmethod
    def fit(cls, values: torch.Tensor, labels: torch.Tensor, num_classes: int, attributes: tuple[Attribute, ...]) -> "AttributeBins":
        """values [N, A] measured on the training split, labels [N] -> the per-class terciles of every attribute
        (a class without images, as in a tiny test subset, takes the terciles of all images)."""
        quantiles = torch.tensor([1 / 3, 2 / 3])
        overall = torch.quantile(values, quantiles, dim=0).T if len(values) else torch.zeros(len(attributes), 2)  # [A, 2]
        edges = torch.stack([torch.quantile(values[labels == c], quantiles, dim=0).T if (labels == c).any() else overall
                             for c in range(num_classes)])  # [C, A, 2]
        return cls(attributes, edges)

    def terciles(self, values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """values [N, A], labels [N] -> [N, A] long: 0 (low), 1 (middle) or 2 (high) by the class's edges."""
        edges = self.edges[labels]  # [N, A, 2]
        return (values >= edges[..., 0]).long() + (values >= edges[..., 1]).long()


def synthetic_stroke(size: int = 28, thickness: float = 3.0, slant: float = 0.0, length: float = 18.0, width: float = 0.0) -> torch.Tensor:
    """A test image, uint8 [1, 1, size, size]: a vertical bar (or, with ``width`` > 0, a box outline) whose strokes
    are ``thickness`` pixels wide in every row, ``length`` px tall, sheared so that its top leans right by ``slant`` degrees."""
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32), indexing="ij")
    centre = size // 2
    x = xs - centre + (ys - centre) * math.tan(math.radians(slant))  # undo the shear: the top (small y) moves right
    y = ys - centre
    inside_height = y.abs() <= length / 2
    band = lambda v: (v >= -thickness / 2) & (v < thickness / 2)  # noqa: E731 - half open: exactly `thickness` pixels per row
    if width <= 0:
        ink = inside_height & band(x)
    else:  # two vertical strokes ``width`` apart, joined top and bottom: a box outline
        caps = band(y.abs() - length / 2) & (x.abs() <= width / 2 + thickness / 2)
        ink = (inside_height & (band(x - width / 2) | band(x + width / 2))) | caps
    return (ink.float() * 255).to(torch.uint8)[None, None]
