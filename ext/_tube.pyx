# cython: language_level=3
"""Tube-model kernels of the catheter fit (core.analysis.catheter_linear): the misfit of one tube, the chords of
its outer and inner discs bin-averaged on the fine grid, convolved with a kernel, read through a matrix, the
background projected out, the attenuations solved within their bounds. The catheter and vein-blur searches
evaluate it tens of thousands of times per sizing: in NumPy, array overhead was most of its time.

Pure function over buffers: no I/O, no state. core/analysis/catheter_linear.py validates the arguments and
holds the NumPy reference (LinearTube's ``impl="reference"``); the sums here run in another order than NumPy's
dot products, so the two agree to rounding (tests/test_catheter_linear.py), not to the bit. And ``erf_into``,
the error function of an array for core.analysis.catheter_background's edge models (libm's erf, which math.erf
also calls: the same bits as its NumPy reference there).
"""
cimport cython
from libc.math cimport NAN, asin, ceil, erf, floor, sqrt
from libc.stdlib cimport free, malloc


cdef inline double _F(double x, double R) noexcept nogil:
    if x < -R:
        x = -R
    elif x > R:
        x = R
    return x * sqrt(R * R - x * x) + R * R * asin(x / R)


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
cdef int _read(const double[:, ::1] m, const double* fine, Py_ssize_t nf, double step, double R,
               const double* kern, Py_ssize_t nk, double* out, double* work, bint mirrored) noexcept nogil:
    """``out`` (N) = m @ (chord(R) convolved with kern), over the chord's support; 1 where the convolved chord
    would leave the grid (kernel longer than one sample), else 0. ``mirrored``: m's rows read the same backwards
    (row i is row N-1-i), so the first half is computed and copied."""
    cdef Py_ssize_t n = m.shape[0], lo, hi, j, i, t, t0, t1, r = nk // 2, w, rows = n
    cdef double reach, a, b, acc
    if mirrored:
        rows = (n + 1) // 2
    for i in range(n):
        out[i] = 0.0
    if R <= 0:
        return 0
    reach = R + step
    lo = <Py_ssize_t>floor((-reach - fine[0]) / step) - 2
    hi = <Py_ssize_t>ceil((reach - fine[0]) / step) + 3
    if lo < 0:
        lo = 0
    if hi > nf:
        hi = nf
    if r > 0 and (lo - r < 0 or hi + r > nf):
        return 1
    for j in range(lo, hi):
        a = fine[j] - 0.5 * step
        b = fine[j] + 0.5 * step
        work[j - lo] = (_F(b, R) - _F(a, R)) / (b - a)
    w = hi - lo
    if nk > 1:        # the full convolution, placed from lo - r
        for j in range(w + nk - 1):
            acc = 0.0
            t0 = j - w + 1 if j - w + 1 > 0 else 0
            t1 = j + 1 if j + 1 < nk else nk
            for t in range(t0, t1):
                acc = acc + work[j - t] * kern[t]
            work[w + j] = acc
        for i in range(rows):
            acc = 0.0
            for j in range(w + nk - 1):
                acc = acc + m[i, lo - r + j] * work[w + j]
            out[i] = acc
    else:
        for i in range(rows):
            acc = 0.0
            for j in range(w):
                acc = acc + m[i, lo + j] * work[j] * kern[0]
            out[i] = acc
    for i in range(rows, n):
        out[i] = out[n - 1 - i]
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
@cython.cdivision(True)
def tube_misfit(const double[:, ::1] m, const double[::1] fine, double step, double R, double r_inner,
                const double[::1] kern, const double[::1] pc, double pp, const double[:, ::1] basis,
                double lumen_max, bint mirrored=False):
    """Sum of squares left by the best ``a outer + b inner + background`` where ``outer``/``inner`` are
    ``m @ (chord * kern)`` of the discs of radius ``R`` / ``r_inner`` (catheter_fit._misfit's bounds: a >= 0,
    0 <= a + b <= lumen_max a); ``pc`` the profile, orthogonal to ``basis`` (N, B, orthonormal), ``pp`` its sum
    of squares. NaN where a convolved chord would leave the grid (the caller's plain path continues its ends).
    ``mirrored``: m's rows read the same backwards (catheter_fit symmetrises its sampler): half the products."""
    cdef Py_ssize_t n = m.shape[0], nf = fine.shape[0], nb = basis.shape[1], nk = kern.shape[0]
    cdef Py_ssize_t i, k, need = 2 * (nf + nk) + 2 * n
    cdef double* buf = <double*>malloc(need * sizeof(double))
    cdef double* o = buf
    cdef double* q = buf + n
    cdef double* work = buf + 2 * n
    cdef double po, pn, oo = 0.0, nn = 0.0, on = 0.0, op = 0.0, np_ = 0.0
    cdef double det, a, b, best, hh, hp, kk, cand, res = NAN
    cdef int bad
    if buf == NULL:
        raise MemoryError()
    try:
        with nogil:
            bad = _read(m, &fine[0], nf, step, R, &kern[0], nk, o, work, mirrored)
            if bad == 0:
                bad = _read(m, &fine[0], nf, step, r_inner, &kern[0], nk, q, work, mirrored)
            if bad == 0:
                for k in range(nb):
                    po = 0.0
                    pn = 0.0
                    for i in range(n):
                        po = po + o[i] * basis[i, k]
                        pn = pn + q[i] * basis[i, k]
                    for i in range(n):
                        o[i] = o[i] - basis[i, k] * po
                        q[i] = q[i] - basis[i, k] * pn
                for i in range(n):
                    oo = oo + o[i] * o[i]
                    nn = nn + q[i] * q[i]
                    on = on + o[i] * q[i]
                    op = op + o[i] * pc[i]
                    np_ = np_ + q[i] * pc[i]
                best = 1.0 / 0.0
                det = oo * nn - on * on
                if det > 1e-9 * (oo * nn if oo * nn > 1e-300 else 1e-300):
                    a = (nn * op - on * np_) / det
                    b = (oo * np_ - on * op) / det
                    if a >= 0 and a + b >= 0 and a + b <= lumen_max * a:
                        best = pp - (a * op + b * np_)
                for k in range(2):
                    kk = -1.0 if k == 0 else lumen_max - 1.0
                    hh = oo + 2 * kk * on + kk * kk * nn
                    hp = op + kk * np_
                    cand = pp - hp * hp / hh if (hp > 0 and hh > 0) else pp
                    if cand < best:
                        best = cand
                res = best
    finally:
        free(buf)
    return res


@cython.boundscheck(False)
@cython.wraparound(False)
def erf_into(const double[::1] x, double[::1] out):
    """``out[i] = erf(x[i])`` (C's erf, as math.erf). NumPy reference: core.analysis.catheter_background.erf_ref."""
    cdef Py_ssize_t i, n = x.shape[0]
    if out.shape[0] != n:
        raise ValueError(f"out must hold {n} values, got {out.shape[0]}")
    with nogil:
        for i in range(n):
            out[i] = erf(x[i])
