# cython: language_level=3
"""Kernels of the per-run peak-opacity image (core/analysis/peak.py): the distinct frames; one fused pass over
them (probe compare, mask, block sums and each block's peak window); each pixel's window gathered.

Pure functions over buffers: no I/O, no state beyond their arguments. core/analysis/peak.py validates the frames
and builds every other argument; core/analysis/peak_ref.py is the NumPy reference with the same signatures and
the argument documentation. The results are the reference's bit for bit: the same float operations in the same
order and precision (float32 where it is float32, float64 prefix sums in frame order, 3x3 sums grouped as
NumPy groups them), integer sums where NumPy's are integer (exact in any order), and no product feeding a sum
that a fused multiply-add could contract.
"""
cimport cython
from libc.math cimport exp
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memset

import numpy as np

ctypedef fused pix_t:
    uint8_t
    uint16_t


cdef inline bint _same_frame(const pix_t* a, const pix_t* b, Py_ssize_t rs, Py_ssize_t step,
                             Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # One memcmp over a contiguous frame, else one per row; either stops at the first difference, which on a
    # new (noisy) pulse is within the first row.
    cdef Py_ssize_t y, x
    if step == 1 and rs == w:
        return memcmp(a, b, h * w * sizeof(pix_t)) == 0
    for y in range(h):
        if step == 1:
            if memcmp(a + y * rs, b + y * rs, w * sizeof(pix_t)) != 0:
                return False
        else:
            for x in range(w):
                if a[y * rs + x * step] != b[y * rs + x * step]:
                    return False
    return True


cdef inline void _count_same(const pix_t* r, const pix_t* p, Py_ssize_t step, uint8_t* sm,
                             Py_ssize_t w) noexcept nogil:
    cdef Py_ssize_t x
    for x in range(w):
        sm[x] += r[x * step] == p[x * step]


cdef inline void _column_sums(const pix_t* r, Py_ssize_t rs, Py_ssize_t step, Py_ssize_t b, uint32_t* cs,
                              Py_ssize_t n) noexcept nogil:
    # A row of blocks summed down each column first: plain vector adds (the b-long sums across a block do not
    # vectorise), then across once (_blocks_out). Exact: at most 16 x 65535 per block.
    cdef Py_ssize_t x, i
    cdef const pix_t* q
    for x in range(n):
        cs[x] = r[x * step]
    for i in range(1, b):
        q = r + i * rs
        for x in range(n):
            cs[x] += q[x * step]


cdef inline void _column_sums4(const pix_t* r, Py_ssize_t rs, uint32_t* cs, Py_ssize_t n) noexcept nogil:
    # The usual case, 4 contiguous rows: each column's sum in one pass (a third of the loads and stores).
    cdef Py_ssize_t x
    cdef const pix_t* r1 = r + rs
    cdef const pix_t* r2 = r + 2 * rs
    cdef const pix_t* r3 = r + 3 * rs
    for x in range(n):
        cs[x] = (<uint32_t>r[x] + <uint32_t>r1[x]) + (<uint32_t>r2[x] + <uint32_t>r3[x])


cdef inline void _blocks_out(const uint32_t* cs, Py_ssize_t b, Py_ssize_t wb, bint lin, double scale, double off,
                             double* o) noexcept nogil:
    cdef Py_ssize_t bx, i
    cdef uint32_t s
    for bx in range(wb):
        s = 0
        for i in range(b):
            s += cs[bx * b + i]
        if lin:
            o[bx] = <double>s * scale
        else:
            o[bx] = <double>s - off


cdef inline void _frame_rows(const pix_t* f, const pix_t* p, Py_ssize_t rs, Py_ssize_t step, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t b, Py_ssize_t hb, Py_ssize_t wb, bint probe,
                             bint to_mask, const float* lut, float g, bint lin, double scale, double off,
                             uint8_t* sm, float* mk, uint32_t* cs, double* out) noexcept nogil:
    # Every use of one frame while its row is in cache. Literal arguments where they are known (step 1 from
    # the caller, b = 4 here) let the compiler emit one specialised loop per case.
    cdef Py_ssize_t y
    cdef const pix_t* r
    cdef double* o
    for y in range(h):
        r = f + y * rs
        if probe:
            _count_same(r, p + y * rs, step, sm + y * w, w)
        if to_mask:
            _add_log(r, step, lut, g, mk + y * w, 0, w)
        if y % b != b - 1 or y >= hb * b:
            continue
        # A row of blocks complete: its b rows again (still in cache), then the light per block, exposure
        # removed, as the reference's float64 arrays compute it.
        o = out + (y // b) * wb
        if b == 4 and step == 1:
            _column_sums4(r - 3 * rs, rs, cs, wb * 4)
            _blocks_out(cs, 4, wb, lin, scale, off, o)
        else:
            _column_sums(r - (b - 1) * rs, rs, step, b, cs, wb * b)
            _blocks_out(cs, b, wb, lin, scale, off, o)


cdef inline void _add_log(const pix_t* r, Py_ssize_t step, const float* lut, float g, float* tot,
                          Py_ssize_t x0, Py_ssize_t x1) noexcept nogil:
    # tot[x0:x1] += (log value - gain), in float32 like the reference's in-place float32 arrays: the mask's sum
    # and each pixel's window's.
    cdef Py_ssize_t x
    cdef float lg
    for x in range(x0, x1):
        if lut != NULL:
            lg = lut[r[x * step]]
        else:
            lg = <float>r[x * step]
        lg = lg - g
        tot[x] = tot[x] + lg


cdef int _check_frames(Py_ssize_t n, Py_ssize_t h, Py_ssize_t w, Py_ssize_t* strides, Py_ssize_t size,
                       const Py_ssize_t[::1] idx, const float[::1] lut) except -1:
    # Last line of defence for direct callers (core.analysis.peak validates first): a wrong index or table
    # would be an out-of-bounds read, so these O(frames) checks stay even with boundscheck off.
    cdef Py_ssize_t j
    if n < 1 or h < 1 or w < 1 or idx.shape[0] < 1:
        raise ValueError(f"need at least one non-empty frame and one index, got ({n}, {h}, {w})")
    for j in range(3):
        if strides[j] % size:
            raise ValueError("frame strides are not whole pixels")
    for j in range(idx.shape[0]):
        if not 0 <= idx[j] < n:
            raise ValueError(f"frame index {idx[j]} outside 0..{n - 1}")
    if lut is not None and lut.shape[0] != 1 << (8 * size):
        raise ValueError(f"lut must cover every pixel value ({1 << (8 * size)}), got {lut.shape[0]}")
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
def distinct_frames(const pix_t[:, :, :] frames):
    """Indices (intp) of the frames that differ from the frame before them; the first always counts.

    NumPy equivalent: core.analysis.peak_ref.distinct_frames.
    """
    cdef Py_ssize_t n = frames.shape[0], h = frames.shape[1], w = frames.shape[2], i, m = 1
    cdef Py_ssize_t size = sizeof(pix_t)
    if n < 1 or h < 1 or w < 1:
        raise ValueError(f"need at least one non-empty frame, got ({n}, {h}, {w})")
    if frames.strides[0] % size or frames.strides[1] % size or frames.strides[2] % size:
        raise ValueError("frame strides are not whole pixels")
    cdef Py_ssize_t fs = frames.strides[0] // size, rs = frames.strides[1] // size, step = frames.strides[2] // size
    cdef const pix_t* base = &frames[0, 0, 0]
    keep = np.empty(n, np.intp)
    cdef Py_ssize_t[::1] kv = keep
    kv[0] = 0
    with nogil:
        for i in range(1, n):
            if not _same_frame(base + i * fs, base + (i - 1) * fs, rs, step, h, w):
                kv[m] = i
                m += 1
    return keep[:m].copy()


cdef inline void _argmin_step(const double* win, double* best, Py_ssize_t* e, Py_ssize_t j,
                              Py_ssize_t n) noexcept nogil:
    # np.argmin, one window at a time: the first minimum, or the first NaN (a NaN best stays; a NaN
    # window replaces a number). gcc vectorises none of its forms (NaN-aware double compares); selecting
    # the double's bits by mask, branch-free, measured the same.
    cdef Py_ssize_t i, sel
    cdef double v, bv
    for i in range(n):
        v = win[i]
        bv = best[i]
        sel = -<Py_ssize_t>((bv == bv) & (not (v >= bv)))
        best[i] = v if sel else bv
        e[i] = (j & sel) | (e[i] & ~sel)


cdef inline void _win_row(const double* hi, const double* lo, Py_ssize_t wb, double* out) noexcept nogil:
    # One row of window light, c[j] - c[j - k]; the reference's zero row gives c[k - 1] - 0.0.
    cdef Py_ssize_t x
    if lo != NULL:
        for x in range(wb):
            out[x] = hi[x] - lo[x]
    else:
        for x in range(wb):
            out[x] = hi[x] - 0.0


cdef inline void _window(const double* hi, const double* lo, Py_ssize_t hb, Py_ssize_t wb, bint box,
                         Py_ssize_t jw, double* buf, double* best, Py_ssize_t* e) noexcept nogil:
    # Window jw's light per block, its 3x3 vote, and the running argmin over windows, a row of blocks at a
    # time: ``buf`` holds 5 rows (the window's rows above, at and below, their vertical sums, the vote).
    cdef Py_ssize_t y, x, xm, xp, r, ym, yp
    cdef double* up = buf
    cdef double* mid = buf + wb
    cdef double* down = buf + 2 * wb
    cdef double* rows = buf + 3 * wb
    cdef double* vote = buf + 4 * wb
    cdef double* t
    for y in range(hb):
        r = y * wb
        if not box:
            _win_row(hi + r, lo + r if lo != NULL else NULL, wb, vote)
        else:
            # 3x3 sums, edges replicated, grouped like peak_ref.box3: (up + mid) + down, then
            # (left + mid) + right.
            ym = (y - 1 if y > 0 else 0) * wb
            yp = (y + 1 if y < hb - 1 else hb - 1) * wb
            if y == 0:
                _win_row(hi, lo, wb, mid)
                for x in range(wb):
                    up[x] = mid[x]
            else:
                t = up
                up = mid
                mid = down
                down = t
            _win_row(hi + yp, lo + yp if lo != NULL else NULL, wb, down)
            for x in range(wb):
                rows[x] = (up[x] + mid[x]) + down[x]
            for x in range(wb):
                xm = x - 1 if x > 0 else 0
                xp = x + 1 if x < wb - 1 else wb - 1
                vote[x] = (rows[xm] + rows[x]) + rows[xp]
        if jw == 0:
            for x in range(wb):
                best[r + x] = vote[x]
                e[r + x] = 0
        else:
            _argmin_step(vote, best + r, e + r, jw, wb)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
@cython.cdivision(True)
def frame_pass(const pix_t[:, :, :] frames, const Py_ssize_t[::1] idx, const uint8_t[::1] probe,
               Py_ssize_t n_mask, const float[::1] gains, const float[::1] lut, Py_ssize_t b, Py_ssize_t k,
               bint box, uint8_t[:, ::1] same, float[:, ::1] mask, Py_ssize_t[:, ::1] end):
    """One read of each distinct frame: the probe counts, the mask, and each block's peak window.

    NumPy equivalent: core.analysis.peak_ref.frame_pass (which documents every argument). The block sums
    go through a ring of k + 1 prefix-sum planes, never a (frames, blocks) array. The GIL is released for
    the pixel work.
    """
    cdef Py_ssize_t n = frames.shape[0], h = frames.shape[1], w = frames.shape[2], nd = idx.shape[0]
    cdef Py_ssize_t size = sizeof(pix_t), j, i, hb = end.shape[0], wb = end.shape[1], npx = hb * wb
    _check_frames(n, h, w, frames.strides, size, idx, lut)
    if probe.shape[0] != nd or gains.shape[0] != nd or not 1 <= n_mask <= nd or not 1 <= k <= nd:
        raise ValueError(f"probe and gains need one entry per index ({nd}), and 1 <= n_mask, k <= {nd}")
    if probe[0]:
        raise ValueError("the first distinct frame has no previous frame to probe")
    if b < 1 or hb != h // b or wb != w // b or hb < 1 or wb < 1:
        raise ValueError(f"end ({hb}, {wb}) is not the whole {b} x {b} blocks of ({h}, {w})")
    if same.shape[0] != h or same.shape[1] != w or mask.shape[0] != h or mask.shape[1] != w:
        raise ValueError(f"same and mask must have the frame's shape ({h}, {w})")
    cdef Py_ssize_t fs = frames.strides[0] // size, rs = frames.strides[1] // size, step = frames.strides[2] // size
    cdef const pix_t* base = &frames[0, 0, 0]
    cdef const float* lt = &lut[0] if lut is not None else NULL
    cdef bint lin = lut is not None
    cdef uint8_t* sm = &same[0, 0]
    cdef float* mk = &mask[0, 0]
    cdef Py_ssize_t* e = &end[0, 0]
    cdef float g, gb, fb = <float>b, fn = <float>n_mask
    cdef double scale = 0.0, off = 0.0
    cdef double* cur
    cdef double* prev
    cdef uint32_t* cs = <uint32_t*>malloc(wb * b * sizeof(uint32_t))
    cdef double* ring = <double*>malloc((k + 1) * npx * sizeof(double))
    cdef double* buf = <double*>malloc(5 * wb * sizeof(double))
    cdef double* best = <double*>malloc(npx * sizeof(double))
    try:
        if cs == NULL or ring == NULL or buf == NULL or best == NULL:
            raise MemoryError()
        with nogil:
            memset(sm, 0, h * w * sizeof(uint8_t))
            memset(mk, 0, h * w * sizeof(float))
            for j in range(nd):
                g = gains[j]
                if lin:
                    scale = exp(-<double>g)        # math.exp(-gains[j]) of the reference
                else:
                    gb = g * fb                    # gains[j] * b * b, in float32
                    gb = gb * fb
                    off = gb
                cur = ring + (j % (k + 1)) * npx
                if step == 1:
                    _frame_rows(base + idx[j] * fs, base + idx[j - 1] * fs if j > 0 else NULL, rs, 1, h, w,
                                b, hb, wb, probe[j] != 0, j < n_mask, lt, g, lin, scale, off, sm, mk, cs, cur)
                else:
                    _frame_rows(base + idx[j] * fs, base + idx[j - 1] * fs if j > 0 else NULL, rs, step, h, w,
                                b, hb, wb, probe[j] != 0, j < n_mask, lt, g, lin, scale, off, sm, mk, cs, cur)
                # Prefix sums over frames, np.cumsum's c[j] = c[j - 1] + x[j], in a loop of their own: the
                # light's product is stored first, so no fused multiply-add can round it differently.
                if j > 0:
                    prev = ring + ((j - 1) % (k + 1)) * npx
                    for i in range(npx):
                        cur[i] = prev[i] + cur[i]
                if j >= k - 1:
                    _window(cur, ring + ((j - k) % (k + 1)) * npx if j >= k else NULL, hb, wb, box, j - k + 1,
                            buf, best, e)
            for i in range(npx):
                e[i] += k - 1
            for i in range(h * w):
                mk[i] = mk[i] / fn
    finally:
        free(cs)
        free(ring)
        free(buf)
        free(best)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
@cython.cdivision(True)
def gather(const pix_t[:, :, :] frames, const Py_ssize_t[::1] idx, const Py_ssize_t[:, ::1] end, Py_ssize_t b,
           Py_ssize_t k, const float[::1] gains, const float[::1] lut, const float[:, ::1] mask,
           float[:, ::1] peak):
    """peak = mask - the mean log value (exposure removed) of the k distinct frames ending at each pixel's
    block's ``end``; pixels past the last whole block take its edge block's.

    NumPy equivalent: core.analysis.peak_ref.gather.
    """
    cdef Py_ssize_t n = frames.shape[0], h = frames.shape[1], w = frames.shape[2], nd = idx.shape[0]
    cdef Py_ssize_t size = sizeof(pix_t), hb = end.shape[0], wb = end.shape[1], y, x, i, bx, bx1, x0, x1
    cdef Py_ssize_t back, jj, ej
    _check_frames(n, h, w, frames.strides, size, idx, lut)
    if b < 1 or hb != h // b or wb != w // b or hb < 1 or wb < 1 or not 1 <= k <= nd or gains.shape[0] != nd:
        raise ValueError(f"end ({hb}, {wb}) must be the whole {b} x {b} blocks of ({h}, {w}), 1 <= k <= {nd} "
                         f"and gains one per index")
    if mask.shape[0] != h or mask.shape[1] != w or peak.shape[0] != h or peak.shape[1] != w:
        raise ValueError(f"mask and peak must have the frame's shape ({h}, {w})")
    cdef const Py_ssize_t* e = &end[0, 0]
    for i in range(hb * wb):
        if not k - 1 <= e[i] < nd:
            raise ValueError(f"window end {e[i]} outside {k - 1}..{nd - 1}")
    cdef Py_ssize_t fs = frames.strides[0] // size, rs = frames.strides[1] // size, step = frames.strides[2] // size
    cdef const pix_t* base = &frames[0, 0, 0]
    cdef const pix_t* r
    cdef const float* lt = &lut[0] if lut is not None else NULL
    cdef const float* mk = &mask[0, 0]
    cdef float* pk = &peak[0, 0]
    cdef float fk = <float>k
    cdef const Py_ssize_t* er
    cdef float* tot = <float*>malloc(w * sizeof(float))
    if tot == NULL:
        raise MemoryError()
    try:
        with nogil:
            for y in range(h):
                er = e + (y // b if y // b < hb else hb - 1) * wb
                memset(tot, 0, w * sizeof(float))
                # Runs of neighbouring blocks with the same window (most, after the 3x3 vote): one long loop
                # per frame instead of b pixels. Each pixel still adds its frames newest first.
                bx = 0
                while bx < wb:
                    ej = er[bx]
                    bx1 = bx + 1
                    while bx1 < wb and er[bx1] == ej:
                        bx1 += 1
                    x0 = bx * b
                    x1 = bx1 * b if bx1 < wb else w
                    for back in range(k):
                        jj = ej - back
                        r = base + idx[jj] * fs + y * rs
                        if step == 1:
                            _add_log(r, 1, lt, gains[jj], tot, x0, x1)
                        else:
                            _add_log(r, step, lt, gains[jj], tot, x0, x1)
                    bx = bx1
                for x in range(w):
                    pk[y * w + x] = mk[y * w + x] - tot[x] / fk
    finally:
        free(tot)


cdef inline uint32_t _ordinary_row(const pix_t* f, Py_ssize_t step, uint32_t top, const uint8_t* ov,
                                   Py_ssize_t w, uint32_t* n_ov) noexcept nogil:
    # Pixels between black and top (exclusive), and the overlay pixels among them.
    cdef Py_ssize_t x
    cdef uint32_t n = 0, m = 0, o
    for x in range(w):
        o = (f[x * step] > 0) & (<uint32_t>f[x * step] < top)
        n += o
        m += o & ov[x]
    n_ov[0] += m
    return n


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
def static_overlay(const uint8_t[:, ::1] same, Py_ssize_t thr, const pix_t[:, :] first, long long top,
                   uint8_t[:, ::1] overlay):
    """``overlay`` = static pixels (``same`` >= thr) with at least 4 static pixels in their 3x3 neighbourhood
    (edges replicated). Returns (pixels with 0 < ``first`` < top, overlay pixels among them).

    NumPy equivalent: core.analysis.peak_ref.static_overlay.
    """
    cdef Py_ssize_t h = same.shape[0], w = same.shape[1], y, x, ym, yp
    cdef Py_ssize_t size = sizeof(pix_t), n_ord = 0, n_ov_total = 0
    cdef uint32_t n_ov, top32
    cdef uint8_t t8
    cdef uint8_t* col
    cdef uint8_t* o
    cdef const uint8_t* s
    if h < 1 or w < 1 or first.shape[0] != h or first.shape[1] != w or overlay.shape[0] != h \
            or overlay.shape[1] != w:
        raise ValueError(f"same, first and overlay must have one non-empty shape, got ({h}, {w}), "
                         f"({first.shape[0]}, {first.shape[1]}) and ({overlay.shape[0]}, {overlay.shape[1]})")
    if first.strides[0] % size or first.strides[1] % size:
        raise ValueError("first's strides are not whole pixels")
    cdef Py_ssize_t rs = first.strides[0] // size, step = first.strides[1] // size
    cdef const pix_t* fp = &first[0, 0]
    cdef const uint8_t* sp = &same[0, 0]
    cdef uint8_t* op = &overlay[0, 0]
    if not 1 <= thr <= 255:
        raise ValueError(f"thr must be 1..255 (same counts pairs in uint8), got {thr}")
    t8 = <uint8_t>thr
    # top within the dtype's range plus one: the same answers, in 32 bits.
    top32 = <uint32_t>(0 if top < 0 else (top if top <= (1 << (8 * size)) else (1 << (8 * size))))
    col = <uint8_t*>malloc(w)
    if col == NULL:
        raise MemoryError()
    try:
        with nogil:
            for y in range(h):
                ym = (y - 1 if y > 0 else 0) * w
                yp = (y + 1 if y < h - 1 else h - 1) * w
                s = sp + y * w
                o = op + y * w
                for x in range(w):
                    col[x] = (sp[ym + x] >= t8) + (s[x] >= t8) + (sp[yp + x] >= t8)
                # 3x3 count = three columns' sums; the edge columns replicated.
                if w == 1:
                    o[0] = 3 * col[0] >= 4
                else:
                    o[0] = (2 * col[0] + col[1]) >= 4
                    for x in range(1, w - 1):
                        o[x] = (col[x - 1] + col[x] + col[x + 1]) >= 4
                    o[w - 1] = (col[w - 2] + 2 * col[w - 1]) >= 4
                for x in range(w):
                    o[x] = o[x] & (s[x] >= t8)
                n_ov = 0
                if step == 1:
                    n_ord += _ordinary_row(fp + y * rs, 1, top32, o, w, &n_ov)
                else:
                    n_ord += _ordinary_row(fp + y * rs, step, top32, o, w, &n_ov)
                n_ov_total += n_ov
    finally:
        free(col)
    return n_ord, n_ov_total
