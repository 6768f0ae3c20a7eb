"""Pathfinder: the geometry behind each label, the image behind the tokens, and the arguments."""

import math

import numpy as np
import pytest
import scipy.spatial
import torch

from graphdiff.cli import main
from graphdiff.tasks import CLS, NUM_SPECIAL, TASKS, Pathfinder, get_task
from graphdiff.tasks.pathfinder import (
    BRUTE_FORCE_PAIRS,
    CHECK_SPACING,
    MARKER_RADIUS,
    PLACEMENTS,
    SEPARATION,
    _clear,
)

SMALL = dict(resolution=16, contour_length=6, num_paths=2)  # fast, for the end-to-end run
CONFIGS = [
    {},  # the defaults: 32 x 32, 3 paths of 14 one-pixel dashes
    dict(dash_length=2, gap=1, contour_length=9, max_turn=45),
    dict(dash_length=2, gap=2, contour_length=6, num_paths=4),
    SMALL,
]
# Large enough that the later paths test separation with a k-d tree (> BRUTE_FORCE_PAIRS pairs).
TREE = dict(resolution=64, num_paths=5, contour_length=14, dash_length=2, gap=2)


def dash_samples(paths, count=11):
    """Points along every dash: [paths, dashes * count, 2] (independent of the generator)."""
    t = np.linspace(0.0, 1.0, count)[None, None, :, None]
    points = paths[:, :, None, 0] + t * (paths[:, :, None, 1] - paths[:, :, None, 0])
    return points.reshape(len(paths), -1, 2)


def ends_near(point, paths, tolerance=1.0):
    """The (path, end) pairs whose end lies within ``tolerance`` of ``point``."""
    found = []
    for p, dashes in enumerate(paths):
        for e, end in enumerate((dashes[0, 0], dashes[-1, 1])):
            if math.dist(point, end) <= tolerance:
                found.append((p, e))
    return found


def test_defaults_and_registry():
    assert TASKS["pathfinder"] is Pathfinder
    ds = get_task("pathfinder", "val")
    assert (len(ds), ds.max_len, ds.vocab_size, ds.num_classes) == (2000, 1025, 258, 2)
    assert len(Pathfinder("train")) == 20_000 and len(Pathfinder("test")) == 2000
    assert (ds.resolution, ds.contour_length, ds.num_paths, ds.dash_length, ds.gap) == (
        32,
        14,
        3,
        1,
        1,
    )
    assert "Pathfinder(split='val', examples=2000, vocab_size=258, num_classes=2" in repr(ds)


def test_reproducible_and_distinct_splits_and_seeds():
    a, b = Pathfinder("train", num_samples=4, seed=3), Pathfinder("train", num_samples=4, seed=3)
    assert all(torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1] for i in range(4))
    # random access: an example does not depend on which were generated before it
    assert torch.equal(Pathfinder("train", num_samples=4, seed=3)[2][0], a[2][0])
    for other in (
        Pathfinder("val", num_samples=4, seed=3),
        Pathfinder("train", num_samples=4, seed=4),
    ):
        assert not any(torch.equal(a[i][0], other[i][0]) for i in range(4))


@pytest.mark.parametrize("kwargs", [{}, SMALL])
def test_tokens_are_cls_then_the_image_row_major(kwargs):
    ds = Pathfinder("test", num_samples=5, **kwargs)
    res = ds.resolution
    for i in range(5):
        tokens, label = ds[i]
        image = ds.image(i)
        assert image.shape == (res, res) and image.dtype == np.uint8
        expected = [CLS] + [NUM_SPECIAL + int(image[r, c]) for r in range(res) for c in range(res)]
        assert tokens.dtype == torch.long and tokens.tolist() == expected
        assert label == ds.scene(i).label and 0 <= int(tokens.max()) < ds.vocab_size


def test_labels_are_balanced():
    ds = Pathfinder("train", num_samples=300, seed=1, contour_length=6)  # the label is drawn first
    positives = sum(ds.scene(i).label for i in range(300))
    # Binomial(300, 1/2): mean 150, standard deviation 8.7; 4 deviations is a 1-in-15000 failure.
    assert abs(positives - 150) <= 35, positives


def test_marker_distance_does_not_give_the_label_away():
    # Ends of one smooth path lie about a path's span apart; unmatched negatives spread widely
    # (before the matching, a distance band read the label 88% right at 6 dashes).
    from scipy.stats import ks_2samp

    ds = Pathfinder("train", num_samples=400, seed=4, contour_length=6)
    scenes = [ds.scene(i) for i in range(len(ds))]
    distance = {
        label: [
            float(np.linalg.norm(s.markers[0] - s.markers[1])) for s in scenes if s.label == label
        ]
        for label in (0, 1)
    }
    assert ks_2samp(distance[0], distance[1]).pvalue > 1e-3  # the same distribution of distances


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_markers_sit_on_the_ends_the_label_says(kwargs):
    ds = Pathfinder("val", num_samples=30, seed=2, **kwargs)
    labels = []
    for i in range(len(ds)):
        scene = ds.scene(i)
        assert scene.paths.shape == (ds.num_paths, ds.contour_length, 2, 2)
        (first,), (second,) = (ends_near(marker, scene.paths) for marker in scene.markers)
        assert [list(first), list(second)] == scene.marked.tolist()
        if scene.label == 1:  # the two ends of one path
            assert first[0] == second[0] and first[1] != second[1]
        else:  # ends of two different paths
            assert scene.label == 0 and first[0] != second[0]
        labels.append(scene.label)
    assert set(labels) == {0, 1}


@pytest.mark.parametrize("kwargs", CONFIGS + [TREE])
def test_paths_are_smooth_dashed_walks_inside_the_image_and_apart(kwargs):
    ds = Pathfinder("train", num_samples=20, seed=5, **kwargs)
    step = ds.dash_length + ds.gap
    for i in range(len(ds)):
        paths = ds.scene(i).paths
        assert (paths >= 0).all() and (paths <= ds.resolution - 1).all()
        direction = paths[:, :, 1] - paths[:, :, 0]
        np.testing.assert_allclose(np.linalg.norm(direction, axis=-1), ds.dash_length)
        hops = paths[:, 1:, 0] - paths[:, :-1, 0]  # from one dash's start to the next one's
        np.testing.assert_allclose(np.linalg.norm(hops, axis=-1), step)
        heading = np.arctan2(direction[..., 0], direction[..., 1])
        turn = np.angle(np.exp(1j * np.diff(heading, axis=1)), deg=True)
        assert np.abs(turn).max() <= ds.max_turn + 1e-6
        samples = dash_samples(paths)
        for p in range(len(paths)):
            for q in range(p):
                gaps = np.linalg.norm(samples[p][:, None] - samples[q][None], axis=-1)
                # no crossing, no touching: SEPARATION less half the spacing of tested points
                assert gaps.min() >= SEPARATION - CHECK_SPACING / 2


def test_the_tree_and_all_pairs_agree_on_separation():
    walk_points = TREE["contour_length"] * 3  # 3 tested points per dash of 2 pixels
    assert PLACEMENTS * walk_points * 4 * walk_points > BRUTE_FORCE_PAIRS  # TREE's fifth path
    rng = np.random.default_rng(0)
    outcomes = []
    for _ in range(60):
        side = rng.uniform(10, 200)  # from crowded to sparse
        taken = rng.uniform(0, side, size=(int(rng.integers(1, 200)), 2))
        points = rng.uniform(0, side, size=(PLACEMENTS, int(rng.integers(1, 40)), 2))
        brute = _clear(points, taken)
        np.testing.assert_array_equal(_clear(points, taken, scipy.spatial.cKDTree(taken)), brute)
        outcomes += list(brute)
    assert 0.1 < np.mean(outcomes) < 0.9
    # Exactly SEPARATION away is clear for both (integer coordinates: the distance is exact).
    taken = np.array([[5.0, 5.0]])
    points = np.array([[[5.0 + SEPARATION, 5.0]], [[5.0, 5.0 + SEPARATION - 1e-9]]])
    for tree in (None, scipy.spatial.cKDTree(taken)):
        np.testing.assert_array_equal(_clear(points, taken, tree), [True, False])


@pytest.mark.parametrize("kwargs", [{}, SMALL])
def test_markers_are_visible_and_ink_lies_on_the_paths(kwargs):
    ds = Pathfinder("test", num_samples=10, seed=7, **kwargs)
    res = ds.resolution
    rows, cols = np.meshgrid(np.arange(res), np.arange(res), indexing="ij")
    pixels = np.stack([rows, cols], axis=-1).reshape(-1, 2)
    for i in range(len(ds)):
        scene, image = ds.scene(i), ds.image(i)
        for marker in scene.markers:
            distance = np.linalg.norm(pixels - marker, axis=-1)
            assert (image.reshape(-1)[distance <= 1.0] == 255).all()  # a white disc at the centre
            assert (image.reshape(-1)[distance <= MARKER_RADIUS] >= 127).all()  # half-bright rim
        ink = np.concatenate([dash_samples(scene.paths).reshape(-1, 2), scene.markers])
        far = np.linalg.norm(pixels[:, None] - ink[None], axis=-1).min(axis=1) > 2.5
        assert (image.reshape(-1)[far] == 0).all()  # nothing drawn away from paths and markers
        for dash in scene.paths.reshape(-1, 2, 2):  # every dash leaves ink where it is
            r, c = np.rint(dash.mean(axis=0)).astype(int)
            assert image[r, c] > 10


def test_truncate_keeps_the_first_pixels():
    full = Pathfinder("train", num_samples=3)
    cut = Pathfinder("train", num_samples=3, max_len=100, truncate=True)
    for i in range(3):
        assert len(cut[i][0]) == 100 and torch.equal(cut[i][0], full[i][0][:100])
        assert cut[i][1] == full[i][1]


def test_index_checks():
    ds = Pathfinder("train", **SMALL, num_samples=3)
    assert torch.equal(ds[-1][0], ds[2][0])
    np.testing.assert_array_equal(ds.image(-1), ds.image(2))
    for call in (ds.__getitem__, ds.scene, ds.image):
        with pytest.raises(IndexError, match="index 3 out of range for 3 examples"):
            call(3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(resolution=4), ValueError, r"resolution must be >= 8, got 4"),
        (dict(num_paths=1), ValueError, r"num_paths must be >= 2 \(a negative needs two paths\)"),
        (dict(contour_length=1), ValueError, r"contour_length must be >= 2"),
        (dict(contour_length=3), ValueError, r"length of a path, must be >= 8 pixels, got 5"),
        (dict(dash_length=0), ValueError, r"dash_length must be in \[1, 8\]"),
        (dict(gap=9), ValueError, r"gap must be in \[0, 8\]"),
        (dict(max_turn=120), ValueError, r"max_turn must be in \[0, 90\] degrees"),
        (dict(max_turn="30"), TypeError, r"max_turn must be a number"),
        (dict(num_paths=2.0), TypeError, r"num_paths must be an integer"),
        (dict(num_samples=-1), ValueError, r"num_samples must be >= 0"),
        (dict(seed=-1), ValueError, r"seed must be >= 0"),
        (dict(max_len=100), ValueError, r"1025 tokens .*exceeds max_len=100"),
        (dict(split="dev"), ValueError, r"split must be one of"),
        (
            dict(resolution=16),
            ValueError,
            r"could not place num_paths=3 paths of contour_length=14",
        ),
    ],
)
def test_argument_errors(kwargs, error, match):
    kwargs = {"split": "train", **kwargs}
    with pytest.raises(error, match=match):
        Pathfinder(**kwargs)


def test_trains_end_to_end_from_the_command_line(tmp_path):
    argv = ["train", "--task", "pathfinder", "--task-arg", "num_samples=8"]
    for key, value in SMALL.items():
        argv += ["--task-arg", f"{key}={value}"]
    argv += [
        "--preset",
        "tiny",
        "--pattern",
        "Window(8) | Global(1)",
        "--batch-size",
        "4",
        "--max-steps",
        "2",
        "--log-every",
        "1",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert (tmp_path / "last.pt").is_file() and (tmp_path / "metrics.jsonl").is_file()
