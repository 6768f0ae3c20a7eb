"""Pathfinder (Linsley et al. 2018, LRA's Pathfinder-32): are two markers on the same path?

An example is a gray ``resolution x resolution`` image (default 32 x 32) of ``num_paths`` curved
paths drawn as dashed lines, and two small discs, the markers, each sitting on an end of a path.
Label 1 when the markers sit on the two ends of one path, 0 when they sit on ends of two
different paths. Labels are balanced: each example draws its label with probability 1/2, and
both classes show the same number of paths.

Tokens: the image row-major, one token per pixel, ``2 + v`` for intensity ``v`` in 0..255 after
CLS, as in :mod:`graphdiff.tasks.image` (``vocab_size = 258``, 2 classes, sequences of
``resolution ** 2 + 1`` tokens: 1025 at 32 x 32).

Coordinates are ``(row, col)`` in pixels, pixel ``(r, c)`` centred at ``(r, c)``, so the image
covers ``[-0.5, resolution - 0.5]`` in both axes.

Generator (example ``i`` of a split is a function of ``example_rng(seed, split, i)``):

- A path is a chain of ``contour_length`` dashes: a random walk of steps of ``dash_length + gap``
  pixels, each step drawing ink over its first ``dash_length`` pixels and leaving ``gap`` blank,
  and turning by an angle uniform in ``[-max_turn, max_turn]`` degrees from the previous step,
  so paths are smooth. Its ends are the start of its first dash and the end of its last one.
- Walks are drawn whole (:data:`SHAPES` at a time, vectorised) and placed after: a walk that
  comes near itself (two points more than a few dashes apart along it, closer than
  :data:`SEPARATION`) is dropped; one that fits gets :data:`PLACEMENTS` uniform shifts that keep
  it :data:`BORDER` pixels inside the image, and takes the first that keeps it
  :data:`SEPARATION` pixels from the paths already placed (tested on points every
  :data:`CHECK_SPACING` pixel, so at least ``SEPARATION - CHECK_SPACING / 2`` holds between the
  lines). Paths never cross or touch: "the same path" is well defined by looking.
- Markers. Label 1: on both ends of a random path. Label 0: on ends of two different paths,
  chosen so that the markers lie as far apart as the two ends of a random path do (within
  :data:`DISTANCE_TOLERANCE`): otherwise their distance alone would give the label away (a
  distance band fitted on 300 examples scored 0.83-0.88 on others before this matching,
  0.50-0.51 after). The other paths are distractors. The markers are at least
  :data:`MARKER_DISTANCE` pixels apart. A path that cannot be placed, a negative without a matching
  pair of ends, or markers too close redraws the scene; after :data:`SCENE_ATTEMPTS` the arguments
  are declared impossible.
- Rasterisation (numpy only): dashes are sampled densely and splatted with bilinear (tent
  filter) weights, which conserves ink along the line and anti-aliases it; markers are discs of
  radius :data:`MARKER_RADIUS` with a one-pixel soft edge; the brighter of the two wins.

The defaults (14 dashes of 1 pixel with 1-pixel gaps, 3 paths, turns up to 30 degrees) fit
LRA's "hard" contour length into 32 x 32 with room between the paths; longer dashes need a
shorter ``contour_length``, fewer paths or a larger ``resolution``. About 2-3 ms per example
with 6 or 9 dashes and 10 ms at the default 14 (negatives redraw scenes until the distances
match), and 80-130 ms at Path-X's 128 x 128 with 6 paths of 14 dashes of 4 pixels; write a
split once (e.g. ``torch.save`` of the tokens) for long runs.

How it relates to the original: Linsley et al.'s generator (used for LRA's Pathfinder-32 with
6, 9 and 14 dashes, "paddles", for the easy, intermediate and hard sets) draws paddles as thick
rotated rectangles of a set thickness, can vary their contrast, draws distractor paths of their
own ``distractor_length``, bounds curvature by a "continuity" parameter and rejects overlaps on a
pixel mask with a paddle margin. This generator keeps what the task is about (smooth dashed
paths of a set length, equal path counts in both classes, markers on path ends, no crossings)
and simplifies the rest: every path has ``contour_length`` dashes, dashes are anti-aliased lines
one pixel wide at full contrast, curvature is a uniform turn per dash, and overlaps are tested
on sampled points. Its images are therefore not drawn from LRA's distribution: accuracies are
comparable in spirit only.

Splits: ``"train"``, ``"val"`` and ``"test"`` are distinct random streams of 20000 / 2000 /
2000 examples by default (LRA's Pathfinder-32 release has 160000 / 20000 / 20000; pass
``num_samples`` for more).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.spatial

from graphdiff.checks import check_int, is_real
from graphdiff.tasks.base import NUM_SPECIAL, TaskDataset, check_length, example_rng

__all__ = ["Pathfinder", "Scene", "path_ends", "render"]

DEFAULT_SPLIT_SIZES = {"train": 20_000, "val": 2_000, "test": 2_000}
BORDER = 1.0  # dash points stay this far inside the outermost pixel centres
SEPARATION = 3.0  # least distance between points of different paths (and distant parts of one)
MARKER_RADIUS = 1.5  # the markers' radius in pixels
MARKER_DISTANCE = 4.0  # least distance between the two markers, so that they never merge
DISTANCE_TOLERANCE = 0.25  # a negative's marker distance matches a positive's to this (pixels)
MATCH_ATTEMPTS = 100  # scenes drawn for one negative before its matching is declared impossible
FEASIBILITY_PROBES = 8  # scenes drawn when the dataset is made, to refuse impossible arguments
CHECK_SPACING = 1.0  # spacing of the points on which separation is tested
INK_SPACING = 0.25  # spacing of the points splatted when drawing
SHAPES = 16  # walks drawn at once
PLACEMENTS = 16  # shifts tried at once for a walk that fits in the image
SHAPE_ROUNDS = 8  # batches of walks tried for one path before the scene is redrawn
SCENE_ATTEMPTS = 30  # scenes drawn before the arguments are declared impossible
BRUTE_FORCE_PAIRS = 2**16  # separation tests of more point pairs query a k-d tree instead


class Scene(NamedTuple):
    """The geometry of one example.

    Attributes:
        paths: float [num_paths, contour_length, 2, 2]; ``paths[p, k]`` is dash ``k`` of path
            ``p`` as its start and end points ``(row, col)``.
        markers: float [2, 2], the markers' centres ``(row, col)``.
        marked: int [2, 2], the ``(path, end)`` each marker sits on (end 0: the start of the
            first dash, end 1: the end of the last dash).
        label: 1 when both markers are on one path, else 0.
    """

    paths: np.ndarray
    markers: np.ndarray
    marked: np.ndarray
    label: int


def path_ends(paths: np.ndarray) -> np.ndarray:
    """The two ends of each path: float [num_paths, 2 (end), 2 (row, col)]."""
    return np.stack([paths[:, 0, 0], paths[:, -1, 1]], axis=1)


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distances between points ``a`` [..., 2] and ``b`` [M, 2]: [..., M].

    Coordinate by coordinate: ``np.linalg.norm`` over a last axis of 2 is several times slower.
    """
    rows = a[..., 0, None] - b[:, 0]
    cols = a[..., 1, None] - b[:, 1]
    return rows * rows + cols * cols


def _clear(
    points: np.ndarray, taken: np.ndarray, tree: scipy.spatial.cKDTree | None = None
) -> np.ndarray:
    """Whether each set of ``points`` [K, P, 2] lies at least :data:`SEPARATION` from every point
    of ``taken`` [M, 2] (M >= 1): bool [K]. With ``tree``, a k-d tree of ``taken``, each point is
    a nearest-neighbour query instead of M distances; the answer is the same.
    """
    if tree is None:
        return _squared_distances(points, taken).min(axis=(1, 2)) >= SEPARATION**2
    # Neighbours at SEPARATION or beyond come back as inf: only the nearest within it counts.
    nearest, _ = tree.query(points.reshape(-1, 2), distance_upper_bound=SEPARATION)
    return (nearest.reshape(points.shape[:2]) >= SEPARATION).all(axis=1)


def _dash_offsets(length: float, spacing: float, midpoints: bool) -> np.ndarray:
    """Distances along a dash of ``length`` at which it is sampled.

    ``midpoints=False``: both ends included (for separation tests); ``True``: the midpoints of
    equal pieces (for drawing: each point then stands for the same length of ink).
    """
    pieces = max(1, math.ceil(length / spacing))
    if midpoints:
        return (np.arange(pieces) + 0.5) * (length / pieces)
    return np.linspace(0.0, length, pieces + 1)


def render(paths: np.ndarray, markers: np.ndarray, resolution: int) -> np.ndarray:
    """Draw dashes ``paths`` [..., 2, 2] and ``markers`` [M, 2] into a uint8 image [res, res].

    All dashes must have one length and every point must lie inside ``[0, resolution - 1]``
    (as the generator's do).
    """
    dashes = paths.reshape(-1, 2, 2)
    direction = dashes[:, 1] - dashes[:, 0]
    length = float(np.linalg.norm(direction[0])) if len(dashes) else 0.0
    ink = np.zeros(resolution * resolution)
    if length > 0:
        offsets = _dash_offsets(length, INK_SPACING, midpoints=True)
        points = dashes[:, None, 0] + (offsets / length)[None, :, None] * direction[:, None]
        points = points.reshape(-1, 2)
        # Bilinear splat: each point spreads its share of ink (length / pieces) over the four
        # pixels around it, a tent filter whose integral along a line is about 1 per pixel.
        base = np.floor(points).astype(np.int64)
        frac = points - base
        share = length / len(offsets)
        for dr in (0, 1):
            for dc in (0, 1):
                weight = share * np.abs(1 - dr - frac[:, 0]) * np.abs(1 - dc - frac[:, 1])
                row = np.minimum(base[:, 0] + dr, resolution - 1)  # weight 0 when clipped
                col = np.minimum(base[:, 1] + dc, resolution - 1)
                ink += np.bincount(row * resolution + col, weight, resolution * resolution)
    grid = np.stack(np.meshgrid(np.arange(resolution), np.arange(resolution), indexing="ij"), -1)
    distance = np.linalg.norm(grid.reshape(-1, 1, 2) - markers[None], axis=-1)  # [res^2, M]
    disc = np.clip(MARKER_RADIUS + 0.5 - distance, 0.0, 1.0).max(axis=1, initial=0.0)
    intensity = np.maximum(np.minimum(ink, 1.0), disc)
    return np.rint(intensity * 255).astype(np.uint8).reshape(resolution, resolution)


class Pathfinder(TaskDataset):
    """The Pathfinder task, generated (see the module docstring for the construction).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (distinct random streams).
        num_samples: examples in the split; default 20000 / 2000 / 2000.
        seed: base seed; same arguments give the same examples.
        resolution: image side in pixels (sequences of ``resolution ** 2 + 1`` tokens).
        contour_length: dashes per path (LRA: 6 easy, 9 intermediate, 14 hard).
        num_paths: paths in the image, the two that may carry markers included (>= 2).
        dash_length: length of a dash in pixels.
        gap: blank pixels between two dashes of a path (0: solid lines).
        max_turn: largest turn between successive dashes, in degrees, in [0, 90].
        max_len: longest sequence, CLS included; default ``resolution ** 2 + 1``.
        truncate: allow a smaller ``max_len`` and keep only the first pixels.

    Raises:
        ValueError: for arguments out of range, or paths that cannot be placed (too many or too
            long for the image), naming the arguments.
    """

    vocab_size = NUM_SPECIAL + 256
    num_classes = 2

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        seed: int = 0,
        resolution: int = 32,
        contour_length: int = 14,
        num_paths: int = 3,
        dash_length: int = 1,
        gap: int = 1,
        max_turn: float = 30.0,
        max_len: int | None = None,
        truncate: bool = False,
    ) -> None:
        self.resolution = check_int("resolution", resolution, 8)
        pixels = self.resolution**2
        super().__init__(split, pixels + 1 if max_len is None else max_len, truncate)
        self.num_samples = check_int(
            "num_samples", DEFAULT_SPLIT_SIZES[split] if num_samples is None else num_samples, 0
        )
        self.seed = check_int("seed", seed, 0)
        self.contour_length = check_int("contour_length", contour_length, 2)
        self.num_paths = check_int("num_paths", num_paths, 2, why="a negative needs two paths")
        # A dash (or gap) longer than a quarter of the image leaves the walk no room to turn.
        limit = self.resolution // 4
        self.dash_length = check_int("dash_length", dash_length, 1, limit, "resolution // 4")
        self.gap = check_int("gap", gap, 0, limit, "resolution // 4")
        if not is_real(max_turn):
            raise TypeError(f"max_turn must be a number of degrees in [0, 90], got {max_turn!r}")
        if not 0 <= max_turn <= 90:
            raise ValueError(f"max_turn must be in [0, 90] degrees, got {max_turn}")
        self.max_turn = float(max_turn)
        span = self.contour_length * (self.dash_length + self.gap) - self.gap
        if span < 2 * MARKER_DISTANCE:  # the two markers of one path need room between them
            raise ValueError(
                f"contour_length * (dash_length + gap) - gap, the length of a path, must be >= "
                f"{2 * MARKER_DISTANCE:g} pixels, got {span}: raise contour_length or dash_length"
            )
        check_length(pixels + 1, self.max_len, truncate, f"Pathfinder {split}")
        self._check_points = _dash_offsets(self.dash_length, CHECK_SPACING, midpoints=False)
        # Points of dashes this close along a path are neighbours, not a self-crossing.
        skip = math.ceil(2 * SEPARATION / (self.dash_length + self.gap)) + 1
        dash = np.repeat(np.arange(self.contour_length), len(self._check_points))
        self._near = np.abs(dash[:, None] - dash[None]) < skip
        # Arguments that fail often fail here, before training, rather than at some index
        # (arguments that fail rarely can still fail later, naming themselves).
        for index in range(min(self.num_samples, FEASIBILITY_PROBES)):
            self.scene(index)

    def __len__(self) -> int:
        return self.num_samples

    def _shapes(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """:data:`SHAPES` random walks from the origin that do not come near themselves.

        Returns:
            dashes: float [S, contour_length, 2, 2], each walk's dashes (start, end).
            points: float [S, contour_length * per_dash, 2], the points separation is tested on.
        """
        length, step = self.contour_length, self.dash_length + self.gap
        turns = rng.uniform(-1.0, 1.0, size=(SHAPES, length)) * math.radians(self.max_turn)
        turns[:, 0] = rng.uniform(0.0, 2 * math.pi, size=SHAPES)  # the first heading: any
        headings = np.cumsum(turns, axis=1)
        units = np.stack([np.sin(headings), np.cos(headings)], axis=-1)  # (row, col)
        starts = np.cumsum(step * units, axis=1) - step * units  # step k starts after k steps
        dashes = np.stack([starts, starts + self.dash_length * units], axis=2)
        points = starts[:, :, None] + self._check_points[None, None, :, None] * units[:, :, None]
        points = points.reshape(SHAPES, -1, 2)
        # A point may come near its own path's points only within the last few dashes.
        rows = points[:, :, None, 0] - points[:, None, :, 0]  # [S, P, P]
        cols = points[:, :, None, 1] - points[:, None, :, 1]
        keep = (rows * rows + cols * cols >= SEPARATION**2) | self._near[None]
        return dashes[keep.all(axis=(1, 2))], points[keep.all(axis=(1, 2))]

    def _place(
        self, rng: np.random.Generator, taken: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """A new path clear of ``taken`` [M, 2]: its dashes and test points, or ``None``.

        Walks are drawn first and placed after: each fitting walk gets :data:`PLACEMENTS`
        uniform shifts that keep it inside the image, and the first shift that keeps it
        :data:`SEPARATION` away from ``taken`` is taken.
        """
        low, high = BORDER, self.resolution - 1 - BORDER
        # Many pairs to test: a tree of the taken points answers "anything within SEPARATION?"
        # per point in O(log M). All pairs took most of the time on large images (1.1 s per
        # example at 128 x 128 with 6 paths, 0.13 s with the tree); on small ones they are faster.
        pairs = PLACEMENTS * self.contour_length * len(self._check_points) * len(taken)
        tree = scipy.spatial.cKDTree(taken) if pairs > BRUTE_FORCE_PAIRS else None
        for _ in range(SHAPE_ROUNDS):
            for dashes, points in zip(*self._shapes(rng)):
                lowest = low - points.min(axis=0)  # the shifts that keep every point inside
                highest = high - points.max(axis=0)
                if (lowest > highest).any():
                    continue  # the walk does not fit in the image, however shifted
                shifts = rng.uniform(lowest, highest, size=(PLACEMENTS, 2))
                if len(taken):
                    clear = _clear(points[None] + shifts[:, None], taken, tree)  # [PLACEMENTS]
                    if not clear.any():
                        continue
                    shifts = shifts[np.argmax(clear) :]  # the first clear shift
                return dashes + shifts[0], points + shifts[0]
        return None

    def _paths(self, rng: np.random.Generator) -> np.ndarray | None:
        """All paths [num_paths, contour_length, 2, 2], or ``None`` when one cannot be placed."""
        paths, taken = [], np.empty((0, 2))
        for _ in range(self.num_paths):
            placed = self._place(rng, taken)
            if placed is None:
                return None
            paths.append(placed[0])
            taken = np.concatenate([taken, placed[1]])
        return np.stack(paths)

    def scene(self, index: int) -> Scene:
        """The geometry of example ``index``: paths, markers, which ends they mark, label."""
        rng = example_rng(self.seed, self.split, self._index(index))
        label = int(rng.random() < 0.5)
        failures = unmatched = 0
        # Two budgets: scenes that cannot be drawn (too many or too long paths), and negatives
        # without a matching pair of ends, which about 1 scene in 4-5 has (100 allowed: a
        # chance of about 1e-10 to run out).
        while failures < SCENE_ATTEMPTS and unmatched < MATCH_ATTEMPTS:
            paths = self._paths(rng)
            if paths is None:
                failures += 1
                continue
            # A random path, not the first: that one was placed in the emptiest image.
            first = rng.integers(self.num_paths)
            marked = np.array([[first, 0], [first, 1]]) if label else self._negative(paths, first)
            if marked is None:
                unmatched += 1
                continue
            markers = path_ends(paths)[marked[:, 0], marked[:, 1]]
            if np.linalg.norm(markers[0] - markers[1]) >= MARKER_DISTANCE:
                return Scene(paths, markers, marked, label)
            failures += 1
        raise ValueError(
            f"could not place num_paths={self.num_paths} paths of contour_length="
            f"{self.contour_length} dashes (dash_length={self.dash_length}, gap={self.gap}) in a "
            f"resolution={self.resolution} image; lower num_paths or contour_length, or raise "
            "resolution"
        )

    @staticmethod
    def _negative(paths: np.ndarray, first: int) -> np.ndarray | None:
        """Marks ``[[path, end], [path, end]]`` on two different paths, as far apart as the
        ends of path ``first`` are (within :data:`DISTANCE_TOLERANCE`), or ``None``.

        Without this the markers' distance alone would give the label away: the two ends of one
        smooth path lie about a path's span apart, ends of two random paths anywhere (a
        threshold on the distance scored 0.83 on the default settings). Matching each negative
        to the distance a positive of the same scene would have makes both classes' distances
        the same distribution, up to the tolerance.
        """
        ends = path_ends(paths)  # [P, 2, 2]
        target = np.linalg.norm(ends[first, 0] - ends[first, 1])
        path = np.arange(len(paths))
        flat = ends.reshape(-1, 2)
        distance = np.sqrt(_squared_distances(flat, flat))  # [2P, 2P], end 2p + e of path p
        owner = np.repeat(path, 2)
        gap = np.where(owner[:, None] != owner[None], np.abs(distance - target), np.inf)
        a, b = np.unravel_index(np.argmin(gap), gap.shape)
        if gap[a, b] > DISTANCE_TOLERANCE:
            return None
        return np.array([[a // 2, a % 2], [b // 2, b % 2]])

    def image(self, index: int) -> np.ndarray:
        """The image of example ``index``: uint8 [resolution, resolution]."""
        scene = self.scene(index)
        return render(scene.paths, scene.markers, self.resolution)

    def content(self, index: int) -> tuple[np.ndarray, int]:
        scene = self.scene(index)
        pixels = render(scene.paths, scene.markers, self.resolution).reshape(-1)
        return pixels.astype(np.int64) + NUM_SPECIAL, scene.label
