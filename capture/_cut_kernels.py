"""numba kernels of the person cut (``capture.cut``): pure functions over arrays, cached.

Every step takes the positions and ``idx``, the increasing indices of the points still in
play, and returns the indices it keeps (still increasing), so no step copies positions
and the cut keeps the input's point order. The voxel steps give each point a voxel
number by radix-sorting runs of points by voxel key (O(N); numpy's argsort of as many
keys is timed beside the cut in docs/capture.md, ``python -m benchmarks.cut_time``) and
find each voxel's 26 neighbours by sweeping the sorted unique
keys once per (dx, dy) offset: with the key ``(ix * ny + iy) * nz + iz`` a constant
offset keeps the order, so a second pointer only ever moves forward and the z
neighbours are the next three keys. No KD-tree, no hash table, no randomness inside the
kernels: RANSAC's samples come from the caller. Hot loops that keep or drop points are
written branch-free (the next slot is always written, the count advances by the test),
which was faster on data where the outcome is unpredictable.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: The (dx, dy) columns of a 27-voxel neighbourhood, the voxel's own column first.
OFFSETS = ((0, 0), (0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


@njit(cache=True, nogil=True)
def crop(pos, origin, forward, near, far, box_min, box_max):
    """Indices of finite points whose depth along ``forward`` from ``origin`` lies in
    [near, far] and that lie inside [box_min, box_max]; infinite bounds switch a test off.
    Returns (indices, lo, hi): ``lo`` and ``hi`` bound the kept points, for ``voxelize``."""
    n = pos.shape[0]
    out = np.empty(n, np.int64)
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    m = 0
    for i in range(n):
        x = pos[i, 0]
        y = pos[i, 1]
        z = pos[i, 2]
        if not (np.isfinite(x) and np.isfinite(y) and np.isfinite(z)):
            continue
        d = (x - origin[0]) * forward[0] + (y - origin[1]) * forward[1] + (z - origin[2]) * forward[2]
        if d < near or d > far:
            continue
        if x < box_min[0] or x > box_max[0] or y < box_min[1] or y > box_max[1]:
            continue
        if z < box_min[2] or z > box_max[2]:
            continue
        out[m] = i
        m += 1
        lo[0] = min(lo[0], x)
        lo[1] = min(lo[1], y)
        lo[2] = min(lo[2], z)
        hi[0] = max(hi[0], x)
        hi[1] = max(hi[1], y)
        hi[2] = max(hi[2], z)
    return out[:m], lo, hi


@njit(cache=True, nogil=True)
def ransac_plane(pos, sample, triples, up, cos_max, threshold, below_margin, max_below, camera, min_drop):
    """Best floor plane through three sampled points: the most inliers (within
    ``threshold``) among planes whose normal is within acos(cos_max) of ``up`` and with at
    most ``max_below`` sample points more than ``below_margin`` under them (nothing is
    under a floor; a desk or a slice through the body has plenty under it; the margin
    allows for a three-point plane's tilt and the sensor's noise), and with ``camera`` at
    least ``min_drop`` above them (-inf when the camera is unknown).

    ``sample`` indexes ``pos`` (the subsample that scores candidates); each row of
    ``triples`` indexes ``sample``, which must be in random order: candidates failing the
    normal test are dropped before they are scored, and those far behind the best after
    the first 256 sample points are dropped there, so iterations are cheap; the draws stop
    early once the best plane is supported well enough to make a better one unlikely. The
    plane is (nx, ny, nz, d) with n a unit normal on the ``up`` side (n . up >= 0) and
    n . p + d the signed height of p above it. Returns (plane, inliers in the sample).
    """
    s = sample.shape[0]
    early = min(s, 256)  # the sample is in random order, so its first points are a fair subsample
    sp = np.empty((s, 3), np.float64)
    for i in range(s):
        for c in range(3):
            sp[i, c] = pos[sample[i], c]
    best = np.zeros(4, np.float64)
    best_count = 0
    needed = triples.shape[0]
    for t in range(triples.shape[0]):
        if t >= needed:
            break
        a = triples[t, 0]
        b = triples[t, 1]
        c = triples[t, 2]
        ux = sp[b, 0] - sp[a, 0]
        uy = sp[b, 1] - sp[a, 1]
        uz = sp[b, 2] - sp[a, 2]
        vx = sp[c, 0] - sp[a, 0]
        vy = sp[c, 1] - sp[a, 1]
        vz = sp[c, 2] - sp[a, 2]
        nx = uy * vz - uz * vy
        ny = uz * vx - ux * vz
        nz = ux * vy - uy * vx
        norm = np.sqrt(nx * nx + ny * ny + nz * nz)
        if norm < 1e-12:
            continue
        nx /= norm
        ny /= norm
        nz /= norm
        cos = nx * up[0] + ny * up[1] + nz * up[2]
        if cos < 0:
            nx, ny, nz, cos = -nx, -ny, -nz, -cos
        if cos < cos_max:
            continue
        d = -(nx * sp[a, 0] + ny * sp[a, 1] + nz * sp[a, 2])
        if nx * camera[0] + ny * camera[1] + nz * camera[2] + d < min_drop:
            continue
        count = 0
        below = 0
        scored = True
        for i in range(s):
            if i == early and count * s < best_count * early // 2:
                scored = False  # preemptive test: far behind the best after a fair subsample
                break
            h = nx * sp[i, 0] + ny * sp[i, 1] + nz * sp[i, 2] + d
            if h < -below_margin:
                below += 1
                if below > max_below:
                    scored = False
                    break
            elif -threshold <= h <= threshold:
                count += 1
        if scored and count > best_count:
            best_count = count
            best[0] = nx
            best[1] = ny
            best[2] = nz
            best[3] = d
            # the usual adaptive stop: enough draws that three inliers of a plane this well
            # supported would have come up with probability 0.999 (local draws do better)
            w3 = (count / s) ** 3
            if w3 >= 1.0:
                needed = 0
            elif w3 > 0.0:
                needed = min(needed, t + 1 + np.int64(np.ceil(np.log(1e-3) / np.log(1.0 - w3))))
    return best, best_count


@njit(cache=True, nogil=True)
def plane_moments(pos, idx, plane, threshold):
    """Count, sum and sum of outer products of the points within ``threshold`` of ``plane``:
    what a least-squares refit needs (the caller solves the 3x3 eigenproblem)."""
    total = np.zeros(3, np.float64)
    outer = np.zeros((3, 3), np.float64)
    count = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        x = np.float64(pos[i, 0])
        y = np.float64(pos[i, 1])
        z = np.float64(pos[i, 2])
        h = plane[0] * x + plane[1] * y + plane[2] * z + plane[3]
        if -threshold <= h <= threshold:
            count += 1
            total[0] += x
            total[1] += y
            total[2] += z
            outer[0, 0] += x * x
            outer[0, 1] += x * y
            outer[0, 2] += x * z
            outer[1, 1] += y * y
            outer[1, 2] += y * z
            outer[2, 2] += z * z
    outer[1, 0] = outer[0, 1]
    outer[2, 0] = outer[0, 2]
    outer[2, 1] = outer[1, 2]
    return count, total, outer


@njit(cache=True, nogil=True)
def plane_cut(pos, idx, plane, distance, remove_below):
    """Indices of the points farther than ``distance`` from ``plane`` (and, with
    ``remove_below``, on its upper side: higher than ``distance`` above it)."""
    out = np.empty(idx.shape[0] + 1, np.int64)
    m = 0
    for j in range(idx.shape[0]):
        i = idx[j]
        h = plane[0] * pos[i, 0] + plane[1] * pos[i, 1] + plane[2] * pos[i, 2] + plane[3]
        out[m] = i  # branch-free: a dropped point only rewrites the next slot
        m += (h > distance) | ((not remove_below) & (h < -distance))
    return out[:m]


@njit(cache=True, nogil=True)
def _radix_sort(values, shift, bits):
    """Stable LSD radix sort of non-negative int64 ``values`` by their bits
    [shift, shift + bits), the histograms of all passes gathered in one read."""
    n = values.shape[0]
    passes = max(1, (bits + 10) // 11)
    width = (bits + passes - 1) // passes
    mask = (1 << width) - 1
    hist = np.zeros((passes, 1 << width), np.int64)
    for i in range(n):
        v = values[i] >> shift
        for p in range(passes):
            hist[p, (v >> (p * width)) & mask] += 1
    for p in range(passes):
        total = 0
        for d in range(1 << width):
            c = hist[p, d]
            hist[p, d] = total
            total += c
    a = values.copy()
    b = np.empty(n, np.int64)
    for p in range(passes):
        sh = shift + p * width
        for i in range(n):
            v = a[i]
            d = (v >> sh) & mask
            q = hist[p, d]
            hist[p, d] = q + 1
            b[q] = v
        a, b = b, a
    return a


@njit(cache=True, nogil=True)
def voxelize(pos, idx, voxel, lo, hi):
    """Assign the points ``idx`` (all within [lo, hi]) to voxels of edge ``voxel``.

    Returns (keys, starts, vox, sx, sy, origin, ok): the sorted unique voxel keys
    ``ix * sx + iy * sy + iz`` (voxel indices padded by one so that neighbour offsets never
    wrap; voxel (0, 0, 0) has its corner at ``origin``), ``starts`` (M + 1) their running
    point counts (voxel v holds starts[v + 1] - starts[v] points) and ``vox[j]`` the voxel
    of point ``idx[j]``. ``ok`` is False when keys and run numbers do not fit in 62 bits
    together (a volume far too large for the voxel).

    Consecutive points in one voxel (most of them, in a depth image's scan order) form a
    run, and only the runs are radix-sorted, each packed with its number into one int64;
    the points themselves are never reordered.
    """
    n = idx.shape[0]
    empty = np.zeros(0, np.int64)
    origin = lo - voxel
    if n == 0:
        return empty, np.zeros(1, np.int64), empty, 0, 0, origin, True
    inv = 1.0 / voxel
    dims = np.empty(3, np.int64)
    cells = 1.0
    for c in range(3):
        span = np.floor((hi[c] - lo[c]) * inv) + 3.0
        cells *= span
        if not cells < 4.0e18:
            return empty, np.zeros(1, np.int64), empty, 0, 0, origin, False
        dims[c] = np.int64(span)
    sy = dims[2]
    sx = dims[1] * dims[2]
    run_start = np.empty(n + 1, np.int64)
    run_key = np.empty(n + 1, np.int64)
    runs = 0
    previous = -1
    for j in range(n):  # branch-free: a repeated key only rewrites the next, unused slot
        i = idx[j]
        ix = np.int64((pos[i, 0] - lo[0]) * inv) + 1  # non-negative: truncation is floor
        iy = np.int64((pos[i, 1] - lo[1]) * inv) + 1
        iz = np.int64((pos[i, 2] - lo[2]) * inv) + 1
        key = ix * sx + iy * sy + iz
        run_start[runs] = j
        run_key[runs] = key
        runs += key != previous
        previous = key
    run_start[runs] = n
    run_bits = 1
    while (np.int64(1) << run_bits) < runs:
        run_bits += 1
    if not cells * 2.0**run_bits < 4.0e18:
        return empty, np.zeros(1, np.int64), empty, 0, 0, origin, False
    key_bits = 1
    while (np.int64(1) << key_bits) < dims[0] * sx:
        key_bits += 1
    packed = np.empty(runs, np.int64)
    for r in range(runs):
        packed[r] = (run_key[r] << run_bits) | r
    packed = _radix_sort(packed, run_bits, key_bits)
    low = (np.int64(1) << run_bits) - 1
    keys = np.empty(runs + 1, np.int64)
    starts = np.empty(runs + 1, np.int64)
    run_voxel = run_key  # reused: each run's voxel number
    m = 0
    w = 0
    previous = -1
    for q in range(runs):  # branch-free as above
        v = packed[q]
        key = v >> run_bits
        keys[m] = key
        starts[m] = w
        m += key != previous
        previous = key
        r = v & low
        run_voxel[r] = m - 1
        w += run_start[r + 1] - run_start[r]
    starts[m] = n
    vox = np.empty(n, np.int64)
    for r in range(runs):
        for j in range(run_start[r], run_start[r + 1]):
            vox[j] = run_voxel[r]
    return keys[:m], starts[: m + 1], vox, sx, sy, origin, True


@njit(cache=True, nogil=True)
def neighbour_counts(keys, starts, sx, sy, enough):
    """Points in each voxel's 27-voxel neighbourhood (itself included): one forward sweep
    per (dx, dy) keeps the window of keys [key + off, key + off + 2] (z - 1 .. z + 1).

    With ``enough`` > 0 only whether a count reaches ``enough`` matters: a voxel drops out
    of the sweeps once it has (most do after the first, through their own column), so its
    count is then a lower bound. ``enough`` <= 0 counts every voxel exactly.
    """
    m = keys.shape[0]
    out = np.zeros(m, np.int64)
    todo = np.arange(m)
    t_count = m
    for sweep in range(9):
        dx, dy = OFFSETS[sweep]
        off = dx * sx + dy * sy - 1
        j = 0
        e = 0
        for q in range(t_count):
            i = todo[q]
            t = keys[i] + off
            while j < m and keys[j] < t:
                j += 1
            e = max(e, j)
            while e < m and keys[e] <= t + 2:
                e += 1
            out[i] += starts[e] - starts[j]
        if enough > 0:  # keep only the voxels still short of enough
            kept = 0
            for q in range(t_count):
                todo[kept] = todo[q]
                kept += out[todo[q]] < enough
            t_count = kept
    return out


@njit(cache=True, nogil=True)
def outlier_voxels(starts, counts, min_count, std_ratio):
    """Which voxels keep their points: those whose neighbourhood holds at least
    ``min_count`` points and, when ``std_ratio`` >= 0, at least the mean minus
    ``std_ratio`` standard deviations of every point's count (a statistical outlier test
    on the grid). Returns (keep per voxel, threshold used)."""
    m = counts.shape[0]
    threshold = np.float64(min_count)
    if std_ratio >= 0 and m > 0:
        s1 = 0.0
        s2 = 0.0
        for v in range(m):
            w = np.float64(starts[v + 1] - starts[v])
            c = np.float64(counts[v])
            s1 += w * c
            s2 += w * c * c
        n = np.float64(starts[m])
        mean = s1 / n
        std = np.sqrt(max(s2 / n - mean * mean, 0.0))
        threshold = max(threshold, mean - std_ratio * std)
    keep = np.empty(m, np.bool_)
    for v in range(m):
        keep[v] = counts[v] >= threshold
    return keep, threshold


@njit(cache=True, nogil=True)
def select(idx, vox, keep):
    """The entries of ``idx`` (in order) whose voxel ``vox[j]`` has ``keep`` set."""
    out = np.empty(idx.shape[0] + 1, np.int64)
    m = 0
    for j in range(idx.shape[0]):  # branch-free: a dropped point rewrites the next slot
        out[m] = idx[j]
        m += keep[vox[j]]
    return out[:m]


@njit(cache=True, nogil=True)
def _find(parent, a):
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def components(keys, sx, sy, active):
    """Connected components of the ``active`` voxels under 26-connectivity (union-find).

    Each voxel is joined to its 13 forward neighbours, found by sweeping the sorted keys
    once per (dx, dy) offset. Returns each voxel's component label, the smallest voxel
    index in its component (so labels depend on nothing but the keys), -1 if inactive.
    """
    m = keys.shape[0]
    parent = np.arange(m)
    # the 13 forward neighbours: (0, 0, +1), (0, 1, *), (1, *, *); the other 13 are their mirrors
    for case in range(5):
        if case == 0:
            off, span = 1, 0  # (0, 0, +1)
        elif case == 1:
            off, span = sy - 1, 2  # (0, 1, -1..1)
        else:
            off, span = sx + (case - 3) * sy - 1, 2  # (1, -1..1, -1..1)
        j = 0
        for i in range(m):
            if not active[i]:
                continue
            t = keys[i] + off
            while j < m and keys[j] < t:
                j += 1
            k = j
            while k < m and keys[k] <= t + span:
                if active[k]:
                    ra = _find(parent, i)
                    rb = _find(parent, k)
                    if ra < rb:
                        parent[rb] = ra
                    elif rb < ra:
                        parent[ra] = rb
                k += 1
    labels = np.empty(m, np.int64)
    for i in range(m):
        labels[i] = _find(parent, i) if active[i] else -1
    return labels


@njit(cache=True, nogil=True)
def pick_component(pos, idx, vox, keys, starts, labels, sx, sy, origin, voxel, ref, within):
    """The label of the component with the most points among those with a point within
    ``within`` of ``ref`` (all components when ``within`` is infinite); -1 if none; ties
    go to the smaller label. Returns (label, its points, its nearest point's distance).

    A point is measured only when its voxel's centre could beat its component's nearest
    point so far, so few are.
    """
    m = labels.shape[0]
    size = np.zeros(m, np.int64)
    for v in range(m):
        if labels[v] >= 0:
            size[labels[v]] += starts[v + 1] - starts[v]
    near = np.full(m, np.inf)
    check = np.isfinite(within)
    if check:
        half_diagonal = 0.5 * np.sqrt(3.0) * voxel
        bound = np.empty(m, np.float64)  # a lower bound on the squared distance of the voxel's points
        for v in range(m):
            key = keys[v]
            cx = origin[0] + (key // sx + 0.5) * voxel - ref[0]
            cy = origin[1] + ((key % sx) // sy + 0.5) * voxel - ref[1]
            cz = origin[2] + (key % sy + 0.5) * voxel - ref[2]
            b = max(np.sqrt(cx * cx + cy * cy + cz * cz) - half_diagonal, 0.0)
            bound[v] = b * b
        for j in range(idx.shape[0]):
            v = vox[j]
            lab = labels[v]
            if lab < 0 or bound[v] >= near[lab]:
                continue
            i = idx[j]
            dx = pos[i, 0] - ref[0]
            dy = pos[i, 1] - ref[1]
            dz = pos[i, 2] - ref[2]
            near[lab] = min(near[lab], dx * dx + dy * dy + dz * dz)
    pick = -1
    for lab in range(m):
        if size[lab] == 0 or (check and near[lab] > within * within):
            continue
        if pick < 0 or size[lab] > size[pick]:
            pick = lab
    if pick < 0:
        return -1, 0, np.inf
    return pick, size[pick], np.sqrt(near[pick])


@njit(cache=True, nogil=True)
def voxel_means(pos, col, idx, vox, m):
    """Mean position and colour of the points ``idx`` in each of the ``m`` voxels ``vox``."""
    acc = np.zeros((m, 6))
    count = np.zeros(m, np.int64)
    for j in range(idx.shape[0]):
        i, v = idx[j], vox[j]
        count[v] += 1
        for c in range(3):
            acc[v, c] += pos[i, c]
            acc[v, 3 + c] += col[i, c]
    out_pos = np.empty((m, 3), np.float32)
    out_col = np.empty((m, 3), np.uint8)
    for v in range(m):
        for c in range(3):
            out_pos[v, c] = acc[v, c] / count[v]
            out_col[v, c] = np.uint8(min(255.0, acc[v, 3 + c] / count[v] + 0.5))
    return out_pos, out_col
