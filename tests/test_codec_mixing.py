"""Context mixing (codec._mixing) and the G-PCC reference figures and BD-rate that the
codec benchmark compares against (benchmarks.gpcc_reference)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from benchmarks import gpcc_reference
from codec import _mixing as M


def test_squash_is_the_logistic_curve_and_stretch_its_inverse():
    x = np.arange(-2047, 2048)
    p = np.array([M.squash(int(v)) for v in x])
    assert (np.diff(p) >= 0).all() and p[0] >= 1 and p[-1] <= 4095
    logistic = 4096 / (1 + np.exp(-x / 256))
    assert np.abs(p - logistic).max() < 16  # 33 points 128 apart, linear between them
    assert np.abs(p - logistic)[::128].max() < 1.5  # at the points themselves
    for q in range(1, 4096):
        # stretch(q) is the smallest x whose squash reaches q: within a step of ln(q / (1 - q))
        s = M.stretch(q)
        assert M.squash(s) >= q or s == 2047
        assert abs(s - 256 * math.log(q / (4096 - q))) < 40 or abs(s) == 2047


def test_the_mixer_learns_to_trust_the_model_that_is_right():
    """Two inputs, one always right and one noise: after some bits the mixed probability
    is sharper than the right model's own and the noise's weight has shrunk."""
    rng = np.random.default_rng(1)
    w = np.full((1, 4), (3 * M.ONE) // 10, np.int64)
    bits = rng.integers(0, 2, 4000)
    for bit in bits:
        good = M.stretch(300 if bit else 3796)  # p(0) = 0.07 before a 1, 0.93 before a 0
        noise = M.stretch(int(rng.integers(1, 4096)))
        p = M.mix3(w, 0, good, noise, 0, 256)
        M.learn3(w, 0, good, noise, 0, 256, p, int(bit), 48)
    assert w[0, 0] > 3 * w[0, 1] and w[0, 0] > (3 * M.ONE) // 10
    assert M.mix3(w, 0, M.stretch(300), 0, 0, 256) < 300


def test_hash_keys_stay_in_their_table():
    for bits in (8, 13, 20):
        keys = [M.hash_key(np.uint64(a), np.uint64(b), np.uint64(c), bits)
                for a, b, c in np.random.default_rng(2).integers(0, 2**62, (500, 3))]
        assert min(keys) >= 0 and max(keys) < 2**bits and len(set(keys)) > 200


README = """
G-PCC RAHT at every common-test-condition QP:

| frame | points | geometry bpp | QP 22 | QP 28 | QP 34 | QP 40 |
|---|---|---|---|---|---|---|
| a_8bit | 78,530 | 1.187 | 4.201 / 39.87 | 2.740 / 34.95 | 1.880 / 29.78 | 1.352 / 25.42 |
| b_8bit | 100 | 1.0 | 2.0 / 40.0 | 1.5 / 36.0 | 1.2 / 33.0 | 1.1 / 30.0 |

Draco ...
"""


def test_the_g_pcc_table_is_read_from_a_readme(tmp_path):
    (tmp_path / "README.md").write_text(README)
    g = gpcc_reference.published(tmp_path / "README.md")
    assert set(g) == {"a_8bit", "b_8bit"}
    assert g["a_8bit"].points == 78530 and g["a_8bit"].geometry_bpp == 1.187
    assert g["a_8bit"].total_bpp == (4.201, 2.740, 1.880, 1.352)
    assert g["b_8bit"].y_psnr == (40.0, 36.0, 33.0, 30.0)
    assert gpcc_reference.published(tmp_path / "absent.md") == {}


def test_the_shared_readme_has_g_pcc_figures_for_every_mvub_frame(mvub_frames, data_dir):
    g = gpcc_reference.published(data_dir / "README.md")
    assert {f.stem for f in mvub_frames} <= set(g)


def test_bd_rate_of_a_curve_against_itself_and_against_a_scaled_copy():
    rate, psnr = [1.587, 1.298, 1.162, 1.099], [44.02, 40.64, 37.39, 34.29]
    assert gpcc_reference.bd_rate(rate, psnr, rate, psnr) == (pytest.approx(0, abs=1e-9), 34.29, 44.02)
    bd, lo, hi = gpcc_reference.bd_rate([r * 0.9 for r in rate], psnr, rate, psnr)
    assert bd == pytest.approx(-10) and (lo, hi) == (34.29, 44.02)
    # only the common PSNR range counts; 1 dB better at equal rate is fewer bits
    bd, lo, hi = gpcc_reference.bd_rate(rate, [p + 1 for p in psnr], rate, psnr)
    assert bd < 0 and (lo, hi) == (35.29, 44.02)
    assert gpcc_reference.bd_rate([1, 2], [10, 11], [1, 2], [20, 21])[0] is None
    # a frame of one colour decodes losslessly at every step (PSNR inf or null): no curve
    assert gpcc_reference.bd_rate([1.0, 0.9], [math.inf, None], rate, psnr) == (None, None, None)
    assert gpcc_reference.bd_rate([], [], rate, psnr) == (None, None, None)
    # the points without a finite PSNR are left out, the rest still make a curve
    assert gpcc_reference.bd_rate([*rate, 9.0], [*psnr, math.inf], rate, psnr)[0] == pytest.approx(0, abs=1e-9)


def test_the_codec_benchmark_compares_with_g_pcc_per_frame(mvub_frames, tmp_path):
    from benchmarks import codec_rd

    frames = tmp_path / "frames"
    frames.mkdir()
    ricardo = next(f for f in mvub_frames if "ricardo" in f.name)
    (frames / ricardo.name).symlink_to(ricardo)
    out = tmp_path / "codec.json"
    assert codec_rd.main(["--data", str(frames), "--repeats", "1", "--warmup", "0", "--no-draco",
                          "--steps", "8", "16", "32", "64", "--json", str(out),
                          "--markdown", str(tmp_path / "codec.md")]) == 0
    records = json.loads(out.read_text())
    assert sum(r["codec"] == codec_rd.GPCC_CODEC for r in records) == 4
    rows = json.loads((tmp_path / "codec-gpcc.json").read_text())
    row = rows[0]
    assert set(row) == set(codec_rd.GPCC_FIELDS) and row["frame"] == "ricardo_8bit"
    assert row["role"] == "validation" and row["gpcc_geom_bpp"] == 1.029
    mine = next(r for r in records if r["params"] == "lossless slices=1")
    assert row["geom_vs_gpcc"] == pytest.approx(mine["geom_bpp"] / 1.029)
    assert row["geom_vs_gpcc"] <= 1.0
    assert row["bd_rate_total_pct"] is not None and 30 < row["psnr_lo"] < row["psnr_hi"] < 44
    assert "G-PCC" in (tmp_path / "codec.md").read_text()
