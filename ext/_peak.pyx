# cython: language_level=3
"""Kernels of the per-run peak-opacity image (core/analysis/peak.py): the distinct frames, one fused pass per
frame (probe compare, mask, block sums), the peak window of each block, each pixel's window gathered.

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
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp, memset

import numpy as np

ctypedef fused pix_t:
    uint8_t
    uint16_t


cdef inline bint _same_frame(const pix_t* a, const pix_t* b, Py_ssize_t rs, Py_ssize_t step,
                             Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # Row by row, exiting at the first difference: on a new (noisy) pulse that is within the first row.
    cdef Py_ssize_t y, x
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


cdef inline void _add_log(const pix_t* r, Py_ssize_t step, const float* lut, float g, float* mk,
                          Py_ssize_t w) noexcept nogil:
    # mask += (log value - gain), in float32 like the reference's in-place float32 arrays.
    cdef Py_ssize_t x
    cdef float lg
    for x in range(w):
        if lut != NULL:
            lg = lut[r[x * step]]
        else:
            lg = <float>r[x * step]
        lg = lg - g
        mk[x] = mk[x] + lg


cdef inline void _block_row(const pix_t* r, Py_ssize_t step, Py_ssize_t b, uint32_t* cs,
                            Py_ssize_t wb) noexcept nogil:
    # One image row into the column sums of its row of blocks (exact: at most 16 x 65535 per block).
    cdef Py_ssize_t bx, o
    cdef uint32_t s
    for bx in range(wb):
        s = 0
        for o in range(b):
            s += r[(bx * b + o) * step]
        cs[bx] += s


cdef inline void _frame_rows(const pix_t* f, const pix_t* p, Py_ssize_t rs, Py_ssize_t step, Py_ssize_t h,
                             Py_ssize_t w, Py_ssize_t b, Py_ssize_t hb, Py_ssize_t wb, bint probe,
                             bint to_mask, const float* lut, float g, bint lin, double scale, double off,
                             uint8_t* sm, float* mk, uint32_t* cs, double* out) noexcept nogil:
    # Every use of one frame while its row is in cache. Literal arguments where they are known (step 1,
    # b = 4) let the compiler emit one specialised loop per case.
    cdef Py_ssize_t y, bx
    cdef const pix_t* r
    cdef double* o
    for y in range(h):
        r = f + y * rs
        if probe:
            _count_same(r, p + y * rs, step, sm + y * w, w)
        if to_mask:
            _add_log(r, step, lut, g, mk + y * w, w)
        if y >= hb * b:
            continue
        if step == 1 and b == 4:
            _block_row(r, 1, 4, cs, wb)
        else:
            _block_row(r, step, b, cs, wb)
        if y % b == b - 1:
            # Light per block, exposure removed, as the reference's float64 arrays compute it.
            o = out + (y // b) * wb
            for bx in range(wb):
                if lin:
                    o[bx] = <double>cs[bx] * scale
                else:
                    o[bx] = <double>cs[bx] - off
                cs[bx] = 0


cdef inline void _gather_run(const pix_t* r, Py_ssize_t step, const float* lut, float g, float* tot,
                             Py_ssize_t x0, Py_ssize_t x1) noexcept nogil:
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


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
@cython.cdivision(True)
def frame_pass(const pix_t[:, :, :] frames, const Py_ssize_t[::1] idx, const uint8_t[::1] probe,
               Py_ssize_t n_mask, const float[::1] gains, const float[::1] lut, Py_ssize_t b,
               uint8_t[:, ::1] same, float[:, ::1] mask, double[:, :, ::1] blocks):
    """One read of each distinct frame: the probe counts, the mask, the block sums.

    NumPy equivalent: core.analysis.peak_ref.frame_pass (which documents every argument). The GIL is
    released for the pixel work.
    """
    cdef Py_ssize_t n = frames.shape[0], h = frames.shape[1], w = frames.shape[2], nd = idx.shape[0]
    cdef Py_ssize_t size = sizeof(pix_t), j, i, hb = blocks.shape[1], wb = blocks.shape[2]
    _check_frames(n, h, w, frames.strides, size, idx, lut)
    if probe.shape[0] != nd or gains.shape[0] != nd or blocks.shape[0] != nd or not 1 <= n_mask <= nd:
        raise ValueError(f"probe, gains and blocks need one entry per index ({nd}), and 1 <= n_mask <= {nd}")
    if probe[0]:
        raise ValueError("the first distinct frame has no previous frame to probe")
    if b < 1 or hb != h // b or wb != w // b or hb < 1 or wb < 1:
        raise ValueError(f"blocks ({hb}, {wb}) are not the whole {b} x {b} blocks of ({h}, {w})")
    if same.shape[0] != h or same.shape[1] != w or mask.shape[0] != h or mask.shape[1] != w:
        raise ValueError(f"same and mask must have the frame's shape ({h}, {w})")
    cdef Py_ssize_t fs = frames.strides[0] // size, rs = frames.strides[1] // size, step = frames.strides[2] // size
    cdef const pix_t* base = &frames[0, 0, 0]
    cdef const float* lt = &lut[0] if lut is not None else NULL
    cdef bint lin = lut is not None
    cdef uint8_t* sm = &same[0, 0]
    cdef float* mk = &mask[0, 0]
    cdef double* bl = &blocks[0, 0, 0]
    cdef float g, gb, fb = <float>b, fn = <float>n_mask
    cdef double scale = 0.0, off = 0.0
    cdef uint32_t* cs = <uint32_t*>calloc(wb, sizeof(uint32_t))
    if cs == NULL:
        raise MemoryError()
    try:
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
                if step == 1:
                    _frame_rows(base + idx[j] * fs, base + idx[j - 1] * fs if j > 0 else NULL, rs, 1, h, w,
                                b, hb, wb, probe[j] != 0, j < n_mask, lt, g, lin, scale, off, sm, mk, cs,
                                bl + j * hb * wb)
                else:
                    _frame_rows(base + idx[j] * fs, base + idx[j - 1] * fs if j > 0 else NULL, rs, step, h, w,
                                b, hb, wb, probe[j] != 0, j < n_mask, lt, g, lin, scale, off, sm, mk, cs,
                                bl + j * hb * wb)
            for i in range(h * w):
                mk[i] = mk[i] / fn
    finally:
        free(cs)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
def peak_end(double[:, :, ::1] blocks, Py_ssize_t k, bint box, Py_ssize_t[:, ::1] end):
    """The last distinct frame of each block's darkest window of k frames (3x3 blocks voting when ``box``).

    ``blocks`` is overwritten (its prefix sums). NumPy equivalent: core.analysis.peak_ref.peak_end.
    """
    cdef Py_ssize_t n = blocks.shape[0], hb = blocks.shape[1], wb = blocks.shape[2], npx = hb * wb
    cdef Py_ssize_t j, i, y, x, ym, yp, xm, xp
    if n < 1 or npx < 1 or not 1 <= k <= n or end.shape[0] != hb or end.shape[1] != wb:
        raise ValueError(f"need 1 <= k <= {n} and end of shape ({hb}, {wb}), got k={k}, "
                         f"end ({end.shape[0]}, {end.shape[1]})")
    cdef double* c = &blocks[0, 0, 0]
    cdef Py_ssize_t* e = &end[0, 0]
    cdef double* hi
    cdef double* lo
    cdef double v, best_v
    cdef double* win = <double*>malloc(npx * sizeof(double))
    cdef double* rows = <double*>malloc(npx * sizeof(double))
    cdef double* best = <double*>malloc(npx * sizeof(double))
    if win == NULL or rows == NULL or best == NULL:
        free(win)
        free(rows)
        free(best)
        raise MemoryError()
    try:
        with nogil:
            # Prefix sums over frames (np.cumsum: c[j] = c[j-1] + x[j]), the first k here, the rest just
            # before the window that first needs them.
            for j in range(1, k):
                for i in range(npx):
                    c[j * npx + i] = c[(j - 1) * npx + i] + c[j * npx + i]
            for j in range(n - k + 1):
                hi = c + (j + k - 1) * npx
                if j > 0:
                    lo = hi - npx
                    for i in range(npx):
                        hi[i] = lo[i] + hi[i]
                # Window j: c[j + k - 1] - c[j - 1], the reference's zero row giving c[k - 1] - 0.0.
                if j > 0:
                    lo = c + (j - 1) * npx
                    for i in range(npx):
                        win[i] = hi[i] - lo[i]
                else:
                    for i in range(npx):
                        win[i] = hi[i] - 0.0
                if box:
                    # 3x3 sums, edges replicated, grouped like peak_ref.box3: (up + mid) + down, then
                    # (left + mid) + right.
                    for y in range(hb):
                        ym = y - 1 if y > 0 else 0
                        yp = y + 1 if y < hb - 1 else hb - 1
                        for x in range(wb):
                            rows[y * wb + x] = (win[ym * wb + x] + win[y * wb + x]) + win[yp * wb + x]
                    for y in range(hb):
                        for x in range(wb):
                            xm = x - 1 if x > 0 else 0
                            xp = x + 1 if x < wb - 1 else wb - 1
                            win[y * wb + x] = (rows[y * wb + xm] + rows[y * wb + x]) + rows[y * wb + xp]
                # np.argmin: the first minimum, or the first NaN.
                for i in range(npx):
                    v = win[i]
                    if j == 0:
                        best[i] = v
                        e[i] = 0
                        continue
                    best_v = best[i]
                    if best_v != best_v:
                        continue
                    if v < best_v or v != v:
                        best[i] = v
                        e[i] = j
            for i in range(npx):
                e[i] += k - 1
    finally:
        free(win)
        free(rows)
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
                            _gather_run(r, 1, lt, gains[jj], tot, x0, x1)
                        else:
                            _gather_run(r, step, lt, gains[jj], tot, x0, x1)
                    bx = bx1
                for x in range(w):
                    pk[y * w + x] = mk[y * w + x] - tot[x] / fk
    finally:
        free(tot)
