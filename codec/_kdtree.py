"""A small numba KD-tree for nearest-neighbour queries: pure functions over arrays.

The tree is implicit: ``build`` permutes an index array so that every node's points are a
contiguous range split at the median of its widest axis; nodes are stored breadth-first
in arrays (split axis, split value, range). Queries walk it with an explicit stack.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

LEAF_SIZE = 16


@njit(cache=True, nogil=True)
def build(points):
    """Return (order, node_lo, node_hi, node_axis, node_split, node_left) for ``points``."""
    n = points.shape[0]
    order = np.arange(n)
    cap = max(1, 2 * (n // LEAF_SIZE + 1) * 2)
    lo = np.empty(cap, np.int64)
    hi = np.empty(cap, np.int64)
    axis = np.full(cap, -1, np.int64)
    split = np.zeros(cap, np.float64)
    left = np.full(cap, -1, np.int64)
    lo[0], hi[0] = 0, n
    count = 1
    stack = np.empty(cap, np.int64)
    top = 0
    stack[top] = 0
    top += 1
    while top > 0:
        top -= 1
        node = stack[top]
        a, b = lo[node], hi[node]
        if b - a <= LEAF_SIZE:
            continue
        # widest axis of the node's bounding box
        best, best_ext = 0, -1.0
        for d in range(3):
            mn, mx = np.inf, -np.inf
            for i in range(a, b):
                v = points[order[i], d]
                mn = min(mn, v)
                mx = max(mx, v)
            if mx - mn > best_ext:
                best, best_ext = d, mx - mn
        if best_ext <= 0.0:
            continue  # all points identical: keep as a leaf
        vals = np.empty(b - a)
        for i in range(a, b):
            vals[i - a] = points[order[i], best]
        idx = np.argsort(vals, kind="mergesort")
        seg = order[a:b].copy()
        for i in range(b - a):
            order[a + i] = seg[idx[i]]
        mid = (a + b) // 2
        axis[node] = best
        split[node] = points[order[mid], best]
        left[node] = count
        lo[count], hi[count] = a, mid
        lo[count + 1], hi[count + 1] = mid, b
        stack[top] = count
        stack[top + 1] = count + 1
        top += 2
        count += 2
    return order, lo[:count], hi[:count], axis[:count], split[:count], left[:count]


@njit(cache=True, parallel=True)
def knn(points, tree, queries, k):
    """Indices of the ``k`` nearest points of every query row (brute force inside leaves)."""
    order, lo, hi, axis, split, left = tree
    m = queries.shape[0]
    out = np.empty((m, k), np.int64)
    for r in prange(m):
        best_d = np.full(k, np.inf)
        best_i = np.full(k, -1, np.int64)
        stack = np.empty(128, np.int64)
        dist = np.empty(128, np.float64)
        stack[0], dist[0] = 0, 0.0
        top = 1
        q0, q1, q2 = queries[r, 0], queries[r, 1], queries[r, 2]
        while top > 0:
            top -= 1
            node, bound = stack[top], dist[top]
            if bound >= best_d[k - 1]:
                continue
            if axis[node] < 0:
                for i in range(lo[node], hi[node]):
                    j = order[i]
                    d0, d1, d2 = points[j, 0] - q0, points[j, 1] - q1, points[j, 2] - q2
                    d = d0 * d0 + d1 * d1 + d2 * d2
                    if d < best_d[k - 1]:
                        s = k - 1
                        while s > 0 and best_d[s - 1] > d:
                            best_d[s], best_i[s] = best_d[s - 1], best_i[s - 1]
                            s -= 1
                        best_d[s], best_i[s] = d, j
                continue
            ax = axis[node]
            q = q0 if ax == 0 else (q1 if ax == 1 else q2)
            diff = q - split[node]
            near, far = (left[node], left[node] + 1) if diff < 0 else (left[node] + 1, left[node])
            stack[top], dist[top] = far, max(bound, diff * diff)
            stack[top + 1], dist[top + 1] = near, bound
            top += 2
        out[r] = best_i
    return out


def nearest(points, tree, queries):
    """Index of, and squared distance to, the nearest point for every query row."""
    idx = knn(points, tree, queries, 1)[:, 0]
    return idx, ((queries - points[idx]) ** 2).sum(axis=1)
