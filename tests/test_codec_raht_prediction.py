"""RAHT with transform-domain prediction (codec._raht_prediction, issue 19): the encoder
rebuilds exactly what the decoder will, prediction removes most of what the transform
leaves, and the whole colour coder beats G-PCC's RAHT at equal Y-PSNR on every frame."""

from __future__ import annotations

import numpy as np
import pytest

from codec import OctreeCodec, _raht_kernels, _raht_prediction
from codec._entropy import new_buffer, new_model
from codec._voxel_kernels import morton


def _frame(path):
    from capture.ply import read_ply

    pos, col = read_ply(path)
    xyz = pos.astype(np.int64)
    codes = np.array([morton(*p) for p in xyz], np.int64)
    order = np.argsort(codes)
    depth = max(1, int(np.ceil(np.log2(xyz.max() + 1))))
    return codes[order], col[order], depth


def _steps(depth, step):
    return np.full(depth + 1, step), np.full(depth + 1, 2 * step)


@pytest.fixture(scope="module")
def ricardo(mvub_frames):
    return _frame(next(f for f in mvub_frames if "ricardo" in f.name))


def test_the_encoder_rebuilds_exactly_what_the_decoder_decodes(ricardo):
    codes, col, depth = ricardo
    n, step = len(codes), 16.0
    plan = _raht_prediction.plan(codes, depth)
    actual = _raht_prediction.level_means(_raht_kernels.to_ycbcr(col), *plan, depth)
    coeffs, q, zero = np.zeros((n, 3)), np.zeros((n, 3), np.int64), np.zeros(n, np.uint8)
    rebuilt = _raht_prediction.descend(coeffs, actual, *plan, depth, True, *_steps(depth, step), q, zero)
    data = _raht_prediction.encode(col, codes, depth, step, 2 * step, new_buffer(n // 2),
                                   *new_model(_raht_kernels.N_CONTEXTS))
    residuals, status = _raht_kernels.decode_coefficients(data, n, step, 2 * step,
                                                          *new_model(_raht_kernels.N_CONTEXTS))
    assert status == 0
    np.testing.assert_array_equal(residuals, coeffs)  # the dequantized residuals, bit for bit
    decoded = _raht_prediction.synthesize(residuals, codes, depth)
    np.testing.assert_array_equal(decoded, _raht_kernels.to_rgb(rebuilt))
    assert np.abs(decoded.astype(int) - col).mean() < 6


def _plain_raht(codes, col, depth):
    """RAHT without prediction, block by block in the same order (the reference)."""
    counts, off, weight, first, occ = plan = _raht_prediction.plan(codes, depth)
    means = _raht_prediction.level_means(_raht_kernels.to_ycbcr(col), *plan, depth)
    rows = [means[0] * np.sqrt(weight[0])]
    for lv in range(depth):
        for p in range(counts[lv]):
            f = first[off[lv] + p]
            e = first[off[lv] + p + 1] if p + 1 < counts[lv] else counts[lv + 1]
            v, wt, hi = np.zeros((8, 3)), np.zeros(8, np.int64), np.zeros((7, 3))
            slots = [c for c in range(8) if (occ[off[lv] + p] >> c) & 1]
            for i, ci in zip(range(f, e), slots, strict=True):
                wt[ci] = weight[off[lv + 1] + i]
                v[ci] = means[off[lv + 1] + i] * np.sqrt(wt[ci])
            k = _raht_prediction._block_forward(v, wt, hi)
            rows += list(hi[:k])
    return np.array(rows)


def test_prediction_leaves_far_fewer_coefficients_to_code(ricardo):
    """The same transform and quantizer without prediction, side by side: prediction from the
    level above must remove a large share of the non-zero coefficients and of the bits."""
    codes, col, depth = ricardo
    n, step = len(codes), 16.0
    plain = _plain_raht(codes, col, depth)
    plain_q, plain_zero = np.zeros((n, 3), np.int64), np.zeros(n, np.uint8)
    row = np.empty(3, np.int64)
    for j in range(n):
        plain_zero[j] = _raht_kernels.quantize(plain, j, step, 2 * step, row)
        if not plain_zero[j]:
            plain_q[j] = row
    plan = _raht_prediction.plan(codes, depth)
    actual = _raht_prediction.level_means(_raht_kernels.to_ycbcr(col), *plan, depth)
    coeffs, q, zero = np.zeros((n, 3)), np.zeros((n, 3), np.int64), np.zeros(n, np.uint8)
    _raht_prediction.descend(coeffs, actual, *plan, depth, True, *_steps(depth, step), q, zero)
    assert (zero == 0).sum() < 0.8 * (plain_zero == 0).sum()

    def size(qq, zz):
        return len(_raht_kernels.code_coefficients(qq, zz, new_buffer(n), *new_model(_raht_kernels.N_CONTEXTS)))

    assert size(q, zero) < 0.85 * size(plain_q, plain_zero)


def test_colour_beats_g_pcc_raht_at_equal_y_psnr_on_every_shared_frame(mvub_frames, data_dir):
    """Issue 19: BD-rate of total bits (lossless geometry, RAHT over the steps that span
    G-PCC's QP 22-40) against G-PCC's published RAHT figures at most 0% on every frame.
    The prediction weights are G-PCC's; no frame was tuned on for them."""
    from benchmarks.codec_rd import DEFAULT_STEPS, grid_bits
    from benchmarks.gpcc_reference import bd_rate, published
    from capture.ply import read_ply
    from codec.metrics import estimate_normals, quality

    gpcc = published(data_dir / "README.md")
    checked = 0
    for path in mvub_frames:
        if path.stem not in gpcc:
            continue
        pos, col = read_ply(path)
        bits = grid_bits(pos)
        normals = estimate_normals(pos)
        rates, psnrs = [], []
        for step in DEFAULT_STEPS:  # the benchmark's steps: BD-rate depends on the sampling
            c = OctreeCodec(depth=bits, origin=(-0.5,) * 3, size=float(2**bits), color_step=step, slices=1)
            data = c.encode(pos, col)
            dec_pos, dec_col = OctreeCodec.decode(data)
            rates.append(len(data) * 8 / len(pos))
            psnrs.append(quality(pos, col, dec_pos, dec_col, bits, normals).y_psnr)
        g = gpcc[path.stem]
        bd, lo, hi = bd_rate(rates, psnrs, list(g.total_bpp), list(g.y_psnr))
        assert bd is not None and hi - lo > 5, (path.stem, lo, hi)  # most of G-PCC's range
        print(path.stem, f"BD-rate {bd:+.2f}% over {lo:.1f}-{hi:.1f} dB")
        assert bd <= 0.0, (path.stem, bd)
        checked += 1
    assert checked >= 6
