"""benchmarks.grid_frames: frames of other sensors on an integer grid, for the codec benchmark."""

from __future__ import annotations

import numpy as np

from benchmarks import grid_frames
from capture.ply import read_ply, write_ply


def test_a_cloud_lands_on_its_bounding_cube_cells_merged_and_colours_averaged(tmp_path):
    positions = np.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.25], [0.001, 0.0, 0.0], [0.52, 0.52, 0.52]], np.float32)
    colors = np.array([[10, 20, 30], [255, 255, 255], [30, 40, 50], [0, 0, 0]], np.uint8)
    grid, means = grid_frames.grid_frame(positions, colors, 4)
    assert grid.dtype == np.float32 and np.array_equal(grid, np.floor(grid))
    assert len(grid) == 3  # the first and third points share the corner cell
    by_cell = {tuple(map(int, p)): tuple(map(int, c)) for p, c in zip(grid, means, strict=True)}
    assert by_cell[(0, 0, 0)] == (20, 30, 40)
    assert by_cell[(15, 7, 3)] == (255, 255, 255)  # the far corner is the last cell, not outside
    assert by_cell[(8, 8, 8)] == (0, 0, 0)
    path = tmp_path / "f.ply"
    write_ply(path, grid, means)
    back_pos, back_col = read_ply(path)
    order = np.lexsort(grid.T)
    back = np.lexsort(back_pos.T)
    assert np.array_equal(back_pos[back], grid[order]) and np.array_equal(back_col[back], means[order])
    write_ply(path, grid)  # positions only (what Draco's geometry alone costs)
    assert b"red" not in path.read_bytes()[:300]
    assert np.array_equal(np.sort(read_ply(path)[0], axis=0), np.sort(grid, axis=0))


def test_the_shared_sensors_become_integer_frames_the_benchmark_reads(data_dir, tmp_path):
    assert grid_frames.main(["--data", str(data_dir), "--out", str(tmp_path), "--bits", "7"]) == 0
    made = {p.stem: p for p in tmp_path.glob("*.ply")}
    assert "kinect-person_7bit" in made and "slambook-0_7bit" in made
    for name, path in made.items():
        pos, col = read_ply(path)
        assert len(pos) > 1000, name
        assert np.array_equal(pos, np.floor(pos)) and pos.min() >= 0 and pos.max() <= 127, name
        assert pos.max() == 127, name  # the cloud spans its cube along its longest side
    _, grey = read_ply(made["kinect-person_7bit"])
    assert (grey == 128).all()  # no colour in that frame: grey, and said so
    _, colour = read_ply(made["slambook-0_7bit"])
    assert len(np.unique(colour, axis=0)) > 100
