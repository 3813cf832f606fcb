# cython: language_level=3
"""Fused per-frame pass and mask builder over raw pixel buffers.

Pure functions: no I/O, no state beyond their arguments. core/analysis/kernels.py validates every argument before
the call, so per-pixel bounds checks are off here (a few O(1) guards remain for direct callers), and
core/analysis/kernels_ref.py is the NumPy reference with the same signatures and the full argument documentation.
"""
cimport cython
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcmp

ctypedef fused pix_t:
    uint8_t
    uint16_t


cdef inline bint _equal(const char* fbase, Py_ssize_t fs0, Py_ssize_t step,
                        const pix_t* p, Py_ssize_t h, Py_ssize_t w) noexcept nogil:
    # Exits at the first differing pixel: on a live (noisy) frame that is within the first row.
    cdef Py_ssize_t y, x
    cdef const pix_t* f
    for y in range(h):
        f = <const pix_t*>(fbase + y * fs0)
        if step == 1:
            if memcmp(f, p + y * w, w * sizeof(pix_t)) != 0:
                return False
        else:
            for x in range(w):
                if f[x * step] != p[y * w + x]:
                    return False
    return True


cdef inline void _change_row(const pix_t* f, Py_ssize_t step, pix_t* p, bint has_prev,
                             uint32_t vmax, Py_ssize_t w, int64_t* mad, int64_t* clipped) noexcept nogil:
    # The SIMD-friendly half of the pass: |frame - prev|, prev = frame, out-of-range count. Blocks of
    # 32768 pixels keep the 32-bit accumulators (which vectorise best) from overflowing.
    cdef Py_ssize_t x0, x, n
    cdef uint32_t v, acc, nclip
    cdef int32_t d
    for x0 in range(0, w, 32768):
        n = min(w - x0, 32768)
        acc = 0
        nclip = 0
        for x in range(x0, x0 + n):
            v = f[x * step]
            if has_prev:
                d = <int32_t>v - <int32_t>p[x]
                acc += <uint32_t>(d if d >= 0 else -d)
            p[x] = <pix_t>v
            nclip += v > vmax
        mad[0] += acc
        clipped[0] += nclip


cdef inline void _scatter_row(const pix_t* f, Py_ssize_t step, bint has_mask, const float* m,
                              const float* lut, const uint8_t* bins, float* o,
                              uint32_t* hists, Py_ssize_t w) noexcept nogil:
    # The scalar half: histogram scatter and opacity through the LUT. Both tables cover every value of
    # the dtype, so there is no clamp here. Four sub-histograms, one per pixel of a group of four: runs
    # of equal grey levels would otherwise serialise on one counter (store-to-load forwarding).
    cdef Py_ssize_t x = 0
    cdef uint32_t v0, v1, v2, v3
    while x + 4 <= w:
        v0 = f[x * step]
        v1 = f[(x + 1) * step]
        v2 = f[(x + 2) * step]
        v3 = f[(x + 3) * step]
        hists[bins[v0]] += 1
        hists[256 + bins[v1]] += 1
        hists[512 + bins[v2]] += 1
        hists[768 + bins[v3]] += 1
        if has_mask:
            o[x] = m[x] - lut[v0]
            o[x + 1] = m[x + 1] - lut[v1]
            o[x + 2] = m[x + 2] - lut[v2]
            o[x + 3] = m[x + 3] - lut[v3]
        x += 4
    while x < w:
        v0 = f[x * step]
        hists[bins[v0]] += 1
        if has_mask:
            o[x] = m[x] - lut[v0]
        x += 1


cdef inline void _pixels_row(const pix_t* f, Py_ssize_t step, pix_t* p, bint has_prev, bint has_mask,
                             const float* m, const float* lut, const uint8_t* bins, uint32_t vmax,
                             float* o, uint32_t* hists, Py_ssize_t w,
                             int64_t* mad, int64_t* clipped) noexcept nogil:
    # Literal flags and, for contiguous rows, a literal step of 1: the compiler emits one specialised
    # loop per case instead of testing them per pixel.
    if step == 1:
        if has_prev:
            _change_row(f, 1, p, True, vmax, w, mad, clipped)
        else:
            _change_row(f, 1, p, False, vmax, w, mad, clipped)
        if has_mask:
            _scatter_row(f, 1, True, m, lut, bins, o, hists, w)
        else:
            _scatter_row(f, 1, False, m, lut, bins, o, hists, w)
    else:
        _change_row(f, step, p, has_prev, vmax, w, mad, clipped)
        _scatter_row(f, step, has_mask, m, lut, bins, o, hists, w)


cdef inline double _sumf(const float* a, Py_ssize_t n) noexcept nogil:
    # Eight independent float32 partial sums: one serial double chain would be latency bound.
    cdef float acc[8]
    cdef Py_ssize_t i = 0, k
    cdef double s = 0.0
    for k in range(8):
        acc[k] = 0.0
    while i + 8 <= n:
        for k in range(8):
            acc[k] += a[i + k]
        i += 8
    for k in range(8):
        s += acc[k]
    while i < n:
        s += a[i]
        i += 1
    return s


cdef inline void _peak_chunk(const float* s, float* pk, int32_t* ix, Py_ssize_t n,
                             int32_t index) noexcept nogil:
    # Branch-free selects on loaded values: noisy peaks are unpredictable, and this form vectorises.
    cdef Py_ssize_t x
    cdef float sv, pv
    cdef int32_t sel
    for x in range(n):
        sv = s[x]
        pv = pk[x]
        # An all-ones mask instead of a second conditional: Cython emits conditionals as if/else
        # blocks, which gcc only turns into vector selects for the float one.
        sel = -<int32_t>(sv > pv)
        pk[x] = sv if sv > pv else pv
        ix[x] = (index & sel) | (ix[x] & ~sel)


cdef inline void _peak_row(const float* o, float* pk, int32_t* ix, float* sm, Py_ssize_t w,
                           int32_t index, float alpha, bint first) noexcept nogil:
    # Smooth (alpha < 1) then take the running maximum. The selects rewrite every pixel: with noisy
    # frames most cache lines hold a new maximum anyway, and a test per line cost more than it saved.
    cdef Py_ssize_t x
    # In double, where the float32 products are exact: a fused multiply-add (-march=native) then rounds
    # exactly like separate operations, so the result matches the reference bit for bit on any build.
    cdef double da = alpha, db = <float>(1.0 - alpha)
    cdef const float* s = o
    if sm != NULL:
        if first:
            for x in range(w):
                sm[x] = o[x]
        else:
            for x in range(w):
                sm[x] = <float>(da * o[x] + db * sm[x])
        s = sm
    _peak_chunk(s, pk, ix, w, index)


cdef int _same_shape(Py_ssize_t* shape, Py_ssize_t h, Py_ssize_t w, str name) except -1:
    if shape[0] != h or shape[1] != w:
        raise ValueError(f"{name} shape ({shape[0]}, {shape[1]}) does not match the frame's ({h}, {w})")
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
def frame_pass(const pix_t[:, :] frame, pix_t[:, ::1] prev, bint has_prev,
               const float[:, ::1] mask_term, const float[::1] lut, const uint8_t[::1] bins,
               uint32_t vmax,
               const int32_t[:, ::1] rois, double[::1] roi_sums, int64_t[::1] hist,
               float[:, ::1] peak, int32_t[:, ::1] peak_index, float[:, ::1] smooth,
               float[:, ::1] opacity, int32_t index, float alpha, bint peak_first,
               bint skip_repeat):
    """One pass over the cropped frame: change metric, histogram, opacity, ROI sums, peak maps.

    Returns ``(mad_sum, repeat, opacity_sum, clipped)``. NumPy equivalent: core.analysis.kernels_ref.frame_pass
    (which documents every argument). The GIL is released for the pixel work.
    """
    cdef Py_ssize_t h = frame.shape[0], w = frame.shape[1], y, r, nroi = rois.shape[0], k
    cdef const char* fbase = <const char*>&frame[0, 0]
    cdef Py_ssize_t fs0 = frame.strides[0], step = frame.strides[1] // <Py_ssize_t>sizeof(pix_t)
    cdef pix_t* p = &prev[0, 0]
    cdef const float* m = NULL
    cdef const float* lt = &lut[0]
    cdef const uint8_t* bn = &bins[0]
    cdef float* pk = &peak[0, 0]
    cdef int32_t* ix = &peak_index[0, 0]
    cdef float* sm = NULL
    cdef float* op = NULL
    cdef const int32_t* rp = NULL
    cdef float* row = NULL
    cdef float* o
    cdef uint32_t* hists = NULL
    cdef bint repeat = False, has_mask = mask_term is not None
    cdef int64_t mad = 0, clipped = 0
    cdef double total = 0.0
    cdef const pix_t* f

    # Last line of defence for direct callers (core.analysis.kernels validates first): a wrong buffer here
    # would be an out-of-bounds write, so the cheap checks stay even with boundscheck off.
    if h < 1 or w < 1:
        raise ValueError(f"empty frame ({h}, {w})")
    if frame.strides[0] % <Py_ssize_t>sizeof(pix_t) or frame.strides[1] % <Py_ssize_t>sizeof(pix_t):
        raise ValueError(f"frame strides ({frame.strides[0]}, {frame.strides[1]}) are not whole pixels")
    _same_shape(prev.shape, h, w, "prev")
    _same_shape(peak.shape, h, w, "peak")
    _same_shape(peak_index.shape, h, w, "peak_index")
    if has_mask:
        _same_shape(mask_term.shape, h, w, "mask_term")
    if smooth is not None:
        _same_shape(smooth.shape, h, w, "smooth")
    if opacity is not None:
        _same_shape(opacity.shape, h, w, "opacity")
    if lut.shape[0] != 1 << (8 * sizeof(pix_t)) or bins.shape[0] != lut.shape[0]:
        raise ValueError(f"lut and bins must cover every pixel value ({1 << (8 * sizeof(pix_t))}), "
                         f"got {lut.shape[0]} and {bins.shape[0]}")
    if hist.shape[0] != 256 or roi_sums.shape[0] != nroi or (nroi > 0 and rois.shape[1] != 4):
        raise ValueError("hist must have 256 bins, rois shape (n, 4) and roi_sums n entries")
    for r in range(nroi):
        if not (0 <= rois[r, 0] < rois[r, 2] <= w and 0 <= rois[r, 1] < rois[r, 3] <= h):
            raise ValueError(f"roi {r} {tuple(rois[r])} is not a non-empty rectangle inside ({h}, {w})")

    if has_mask:
        m = &mask_term[0, 0]
    if smooth is not None:
        sm = &smooth[0, 0]
    if opacity is not None:
        op = &opacity[0, 0]
    if nroi > 0:
        rp = &rois[0, 0]

    if has_prev:
        with nogil:
            repeat = _equal(fbase, fs0, step, <const pix_t*>p, h, w)
        if repeat and skip_repeat:
            return 0, True, 0.0, 0

    hists = <uint32_t*>calloc(4 * 256, sizeof(uint32_t))
    row = <float*>malloc(w * sizeof(float))
    if hists == NULL or row == NULL:
        free(hists)
        free(row)
        raise MemoryError()
    for r in range(nroi):
        roi_sums[r] = 0.0
    try:
        with nogil:
            for y in range(h):
                f = <const pix_t*>(fbase + y * fs0)
                o = op + y * w if op != NULL else row
                _pixels_row(f, step, p + y * w, has_prev, has_mask, m + y * w if has_mask else NULL,
                            lt, bn, vmax, o, hists, w, &mad, &clipped)
                if not has_mask:
                    continue
                total += _sumf(o, w)
                for r in range(nroi):
                    if rp[4 * r + 1] <= y < rp[4 * r + 3]:
                        roi_sums[r] += _sumf(o + rp[4 * r], rp[4 * r + 2] - rp[4 * r])
                if not repeat:
                    _peak_row(o, pk + y * w, ix + y * w, sm + y * w if sm != NULL else NULL, w,
                              index, alpha, peak_first)
            for k in range(256):
                hist[k] = <int64_t>hists[k] + hists[256 + k] + hists[512 + k] + hists[768 + k]
    finally:
        free(hists)
        free(row)
    return mad, repeat, total, clipped


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.initializedcheck(False)
def mask_mean(const pix_t[:, :, :] frames, float[:, ::1] out):
    """Mean of N frames into ``out`` (h, w) float32, with an exact integer sum.

    NumPy equivalent: ``(frames.sum(axis=0, dtype=np.uint64) / N).astype(np.float32)``
    (core.analysis.kernels_ref.mask_mean).
    """
    cdef Py_ssize_t n = frames.shape[0], h = frames.shape[1], w = frames.shape[2], i, y, x
    cdef uint64_t* acc
    cdef double dn = <double>n
    if n < 1 or h < 1 or w < 1 or out.shape[0] != h or out.shape[1] != w:
        raise ValueError(f"need at least one non-empty frame and out of shape ({h}, {w}), "
                         f"got frames ({n}, {h}, {w}) and out ({out.shape[0]}, {out.shape[1]})")
    acc = <uint64_t*>calloc(h * w, sizeof(uint64_t))
    if acc == NULL:
        raise MemoryError()
    try:
        with nogil:
            for i in range(n):
                for y in range(h):
                    for x in range(w):
                        acc[y * w + x] += frames[i, y, x]
            for y in range(h):
                for x in range(w):
                    out[y, x] = <float>(<double>acc[y * w + x] / dn)
    finally:
        free(acc)
