# cython: language_level=3
"""Vessel geometry kernels: cross-section profiles (bilinear, averaged along the vessel), the geodesic
distance of the automatic centreline's path search, and the search outwards from a column's top for a
neighbouring column (core/analysis/neighbours.py).

Pure functions over buffers: no I/O, no state beyond their arguments. core/analysis/vessel.py validates every
argument before the call (shapes, dtypes, contiguity), so bounds checks are off here, and
core/analysis/vessel_ref.py is the NumPy / pure-Python reference with the same signatures: each kernel
computes the same operations in the same order and precision, so the two agree to the bit.
"""
cimport cython
from libc.math cimport INFINITY, NAN, isfinite
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc, realloc


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def sample_profiles(const float[:, ::1] img, const double[:, ::1] xy, const double[:, ::1] normal,
                    const double[:, ::1] tangent, const double[::1] across, const double[::1] along,
                    float[:, ::1] out):
    """``out`` (M, K) float32: ``img`` bilinear at xy + a * normal + b * tangent, the mean over ``along`` b.

    NumPy equivalent: core.analysis.vessel_ref.sample_profiles. NaN for a sample outside the image or touching
    a NaN pixel (and so for its profile sample).
    """
    cdef Py_ssize_t h = img.shape[0], w = img.shape[1]
    cdef Py_ssize_t m = xy.shape[0], k = across.shape[0], nb = along.shape[0]
    cdef Py_ssize_t i, j, l, x0, y0, x1, y1
    cdef Py_ssize_t xmax = w - 2 if w >= 2 else 0
    cdef Py_ssize_t ymax = h - 2 if h >= 2 else 0
    cdef double x, y, px, py
    cdef float fx, fy, gx, gy, v, acc
    cdef float one = 1     # a float variable: Cython writes a literal 1 - fx as double arithmetic
    cdef bint all_inside
    cdef const float* im = &img[0, 0]
    cdef const float* r0
    cdef const float* r1
    with nogil:
        for i in range(m):
            for j in range(k):
                px = xy[i, 0] + across[j] * normal[i, 0]
                py = xy[i, 1] + across[j] * normal[i, 1]
                acc = 0.0
                all_inside = True
                for l in range(nb):
                    x = px + along[l] * tangent[i, 0]
                    y = py + along[l] * tangent[i, 1]
                    if not (x >= 0 and x <= w - 1 and y >= 0 and y <= h - 1):
                        all_inside = False
                        break
                    x0 = <Py_ssize_t>x          # x >= 0: truncation is floor
                    y0 = <Py_ssize_t>y
                    x0 = x0 if x0 < xmax else xmax
                    y0 = y0 if y0 < ymax else ymax
                    fx = <float>(x - x0)
                    fy = <float>(y - y0)
                    gx = one - fx
                    gy = one - fy
                    x1 = x0 + 1 if x0 + 1 < w - 1 else w - 1
                    y1 = y0 + 1 if y0 + 1 < h - 1 else h - 1
                    # float32 throughout, in NumPy's order: ((a + b) + c) + d of (pixel * weight) * weight
                    r0 = im + y0 * w
                    r1 = im + y1 * w
                    v = r0[x0] * gx * gy + r0[x1] * fx * gy + r1[x0] * gx * fy + r1[x1] * fx * fy
                    acc = acc + v
                out[i, j] = acc / <float>nb if all_inside else NAN


ctypedef fused cost_t:
    float
    double


cdef struct _Entry:
    double d
    int64_t v


cdef inline bint _less(_Entry a, _Entry b) noexcept nogil:
    # Python's tuple order on (distance, node): any heap popping under one total order pops the same sequence.
    return a.d < b.d or (a.d == b.d and a.v < b.v)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def geodesic(const uint8_t[:, ::1] mask, const cost_t[:, ::1] cost, Py_ssize_t start,
             double[::1] dist, int64_t[::1] prev):
    """Dijkstra inside ``mask`` from the flat node ``start`` (8-neighbours, step length x mean cost of its two
    nodes) into ``dist`` (H * W, filled with inf by the caller) and ``prev`` (filled with -1). The distances are
    summed in the cost's precision (float32 costs: float32 sums, as NumPy scalars add), stored as float64.

    Reference: core.analysis.vessel_ref.geodesic (heapq over (distance, node) tuples).
    """
    cdef Py_ssize_t h = mask.shape[0], w = mask.shape[1]
    cdef Py_ssize_t cap = 1024, n = 0, i, c, uy, ux, vy, vx, s
    cdef int64_t u, v
    cdef double d, nd
    cdef cost_t diag = <cost_t>(1.4142135623730951 * 0.5), straight = <cost_t>(1.0 * 0.5)
    cdef _Entry e, tmp
    cdef int dy, dx
    cdef _Entry* tmp_heap
    cdef _Entry* heap = <_Entry*>malloc(cap * sizeof(_Entry))
    if heap == NULL:
        raise MemoryError()
    cdef const uint8_t* m = &mask[0, 0]
    cdef const cost_t* cs = &cost[0, 0]
    with nogil:
        dist[start] = 0.0
        heap[0].d = 0.0
        heap[0].v = start
        n = 1
        while n > 0:
            e = heap[0]
            n -= 1
            if n > 0:                      # last entry to the root, sift down
                heap[0] = heap[n]
                i = 0
                while True:
                    c = 2 * i + 1
                    if c >= n:
                        break
                    if c + 1 < n and _less(heap[c + 1], heap[c]):
                        c += 1
                    if _less(heap[c], heap[i]):
                        tmp = heap[c]
                        heap[c] = heap[i]
                        heap[i] = tmp
                        i = c
                    else:
                        break
            d = e.d
            u = e.v
            if d > dist[u]:
                continue
            uy = u // w
            ux = u - uy * w
            for dy in range(-1, 2):
                for dx in range(-1, 2):
                    if dy == 0 and dx == 0:
                        continue
                    vy = uy + dy
                    vx = ux + dx
                    if vy < 0 or vy >= h or vx < 0 or vx >= w:
                        continue
                    v = vy * w + vx
                    if not m[v]:
                        continue
                    nd = <cost_t>(<cost_t>d + (diag if (dy != 0 and dx != 0) else straight) * (cs[u] + cs[v]))
                    if nd < dist[v]:
                        dist[v] = nd
                        prev[v] = u
                        if n == cap:
                            cap *= 2
                            tmp_heap = <_Entry*>realloc(heap, cap * sizeof(_Entry))
                            if tmp_heap == NULL:
                                free(heap)
                                with gil:
                                    raise MemoryError()
                            heap = tmp_heap
                        i = n
                        n += 1
                        heap[i].d = nd
                        heap[i].v = v
                        while i > 0:      # sift up
                            s = (i - 1) // 2
                            if _less(heap[i], heap[s]):
                                tmp = heap[s]
                                heap[s] = heap[i]
                                heap[i] = tmp
                                i = s
                            else:
                                break
    free(heap)


ctypedef fused real_t:
    float
    double


@cython.boundscheck(False)
@cython.wraparound(False)
def rise_outwards(const real_t[:, ::1] ps, const Py_ssize_t[::1] top, const double[::1] rise,
                  Py_ssize_t[::1] start, real_t[::1] floor, Py_ssize_t[::1] end):
    """Per row of ``ps`` (M, K), from ``top`` towards higher indices: ``start`` where a neighbouring column's
    ascent begins (K when none), ``floor`` the valley's level (NaN when none), ``end`` where that column has
    fallen back to the valley's level (K when it does not). One pass per row, where the reference takes
    running maxima and minima over the whole row.

    NumPy equivalent and the rule in full: core.analysis.vessel_ref.rise_outwards. Differences in the element
    type, compared in double, as NumPy promotes them.
    """
    cdef Py_ssize_t m = ps.shape[0], k = ps.shape[1]
    cdef Py_ssize_t r, i, t, first, trig
    cdef real_t v, high, low, d
    cdef double rs, level
    with nogil:
        for r in range(m):
            t = top[r]
            rs = rise[r]
            high = -INFINITY
            low = INFINITY
            first = k
            trig = k          # where the profile has first fallen by the rise from its highest point
            for i in range(t if t > 0 else 0, k):
                v = ps[r, i]
                if not isfinite(v):
                    continue
                if v > high:
                    high = v
                if trig == k:
                    d = high - v
                    if d > rs:
                        trig = i
                if trig < k:
                    if v < low:
                        low = v
                    d = v - low
                    if d > rs:
                        first = i
                        break
            if first == k:
                start[r] = k
                floor[r] = NAN
                end[r] = k
                continue
            floor[r] = low
            level = <double>low + 0.5 * rs
            # The ascent begins at the last sample since the fall within half the rise of the valley's floor.
            start[r] = t
            i = first - 1
            while i >= trig:
                v = ps[r, i]
                if isfinite(v) and v <= level:
                    start[r] = i
                    break
                i -= 1
            end[r] = k
            for i in range(first + 1, k):
                v = ps[r, i]
                if isfinite(v) and v <= level:
                    end[r] = i
                    break
