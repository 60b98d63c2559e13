"""Point cloud quality metrics, as MPEG's pc_error computes them (ARCHITECTURE.md).

For clouds A (original) and B (decoded), e(a) = a - nn_B(a):
- D1 (point-to-point) MSE(A->B) = mean |e(a)|^2; D2 (point-to-plane) = mean (e(a).n)^2 with
  n the original's normal at a (for B->A, at nn_A(b)). Both symmetric: the larger MSE of
  the two directions. Geometry PSNR = 10 log10(3 p^2 / MSE) with p = 2^depth - 1.
- Hausdorff: the largest squared error per direction, the larger of the two.
- Colour: BT.709 Y, Cb, Cr from RGB in [0, 1]; each point takes the colour of its nearest
  neighbour in the other cloud; PSNR = 10 log10(1 / MSE) per channel, symmetric by the
  larger MSE; YUV-PSNR = (6 Y + U + V) / 8.

Identical clouds have MSE 0 and PSNR ``inf``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from codec import _kdtree

_BT709 = np.array([[0.2126, 0.7152, 0.0722],
                   [-0.1146, -0.3854, 0.5],
                   [0.5, -0.4542, -0.0458]])


@dataclass(frozen=True)
class Quality:
    d1_mse: float
    d2_mse: float
    d1_psnr: float
    d2_psnr: float
    hausdorff: float  # squared distance, in the clouds' units
    y_psnr: float
    u_psnr: float
    v_psnr: float
    yuv_psnr: float

    def as_dict(self) -> dict:
        return asdict(self)


def psnr(mse: float, peak_squared: float) -> float:
    return math.inf if mse <= 0 else 10.0 * math.log10(peak_squared / mse)


def rgb_to_yuv(colors: np.ndarray) -> np.ndarray:
    """BT.709 Y, Cb, Cr of uint8 RGB, each in [0, 1]."""
    yuv = (np.asarray(colors, dtype=np.float64) / 255.0) @ _BT709.T
    yuv[:, 1:] += 0.5
    return yuv


def estimate_normals(points: np.ndarray, k: int = 12) -> np.ndarray:
    """Unit normals from the smallest principal axis of each point's k nearest neighbours."""
    pts = np.ascontiguousarray(points, dtype=np.float64)
    k = min(k, len(pts))
    tree = _kdtree.build(pts)
    neighbours = _kdtree.knn(pts, tree, pts, k)
    nb = pts[neighbours]  # (N, k, 3)
    centred = nb - nb.mean(axis=1, keepdims=True)
    cov = np.einsum("nki,nkj->nij", centred, centred)
    _, vectors = np.linalg.eigh(cov)
    return vectors[:, :, 0]


def _directional(src, dst, tree_dst, normals_src, normals_dst):
    """One direction: squared errors, point-to-plane errors, and the matched indices."""
    idx, d2 = _kdtree.nearest(dst, tree_dst, src)
    err = src - dst[idx]
    if normals_src is not None:  # A -> B: the original's normal at a
        plane = np.einsum("ij,ij->i", err, normals_src) ** 2
    else:  # B -> A: the original's normal at nn_A(b)
        plane = np.einsum("ij,ij->i", err, normals_dst[idx]) ** 2
    return d2, plane, idx


def quality(positions_a: np.ndarray, colors_a: np.ndarray, positions_b: np.ndarray,
            colors_b: np.ndarray, depth: int, normals_a: np.ndarray | None = None) -> Quality:
    """Compare a decoded cloud B with its original A on a grid of ``2**depth`` cells.

    ``positions`` are in grid units (as voxelized frames are); ``normals_a`` are estimated
    from A when not given.
    """
    a = np.ascontiguousarray(positions_a, dtype=np.float64)
    b = np.ascontiguousarray(positions_b, dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both clouds need at least one point")
    normals = estimate_normals(a) if normals_a is None else np.asarray(normals_a, np.float64)
    tree_a, tree_b = _kdtree.build(a), _kdtree.build(b)
    d_ab, p_ab, idx_ab = _directional(a, b, tree_b, normals, None)
    d_ba, p_ba, idx_ba = _directional(b, a, tree_a, None, normals)
    peak = 3.0 * (2**depth - 1) ** 2
    d1 = max(d_ab.mean(), d_ba.mean())
    d2 = max(p_ab.mean(), p_ba.mean())
    yuv_a, yuv_b = rgb_to_yuv(colors_a), rgb_to_yuv(colors_b)
    mse_ab = ((yuv_a - yuv_b[idx_ab]) ** 2).mean(axis=0)
    mse_ba = ((yuv_b - yuv_a[idx_ba]) ** 2).mean(axis=0)
    y, u, v = (psnr(max(mse_ab[c], mse_ba[c]), 1.0) for c in range(3))
    return Quality(
        d1_mse=float(d1), d2_mse=float(d2), d1_psnr=psnr(d1, peak), d2_psnr=psnr(d2, peak),
        hausdorff=float(max(d_ab.max(), d_ba.max())), y_psnr=y, u_psnr=u, v_psnr=v,
        yuv_psnr=(6 * y + u + v) / 8,
    )
