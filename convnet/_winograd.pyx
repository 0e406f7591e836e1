"""Compiled Winograd F(m x m, 3x3) transforms (m = 2 or 4) for ``convnet.winograd``.

A chunk of NCHW images goes through three steps, the middle one numpy's batched GEMM:

1. :func:`transform_tiles`: each image is copied into a zero-padded channel-interleaved
   scratch (H, W, C) and every tile is transformed, ``B^T d B`` (an alpha x alpha input
   tile, alpha = m + 2) or ``A dy A^T`` (an m x m gradient tile), into
   ``v[xi, tile, channel]``, one (tiles x channels) matrix per xi < alpha^2.
2. The GEMMs ``v[xi] @ u[xi]`` with the transformed filters.
3. :func:`untransform_tiles`: ``A^T M A`` of every tile, cropped to the output and
   written back as NCHW, plus the bias.

The formulas live in ``_winograd_tiles_impl.h``: C loops over contiguous channels that
the compiler vectorizes. The entry points check every size they rely on (a wrong call is
a ``ValueError``, never an access outside an array), release the GIL and run
single-threaded: ``convnet.winograd`` calls them from one worker thread per core.
"""

from cython cimport floating


cdef extern from "_winograd_tiles.h" nogil:
    void wg_to_interleaved_float(const float* src, Py_ssize_t n, Py_ssize_t h,
                                 Py_ssize_t w, float* scratch, Py_ssize_t sh,
                                 Py_ssize_t sw, Py_ssize_t off_h, Py_ssize_t off_w)
    void wg_to_interleaved_double(const double* src, Py_ssize_t n, Py_ssize_t h,
                                  Py_ssize_t w, double* scratch, Py_ssize_t sh,
                                  Py_ssize_t sw, Py_ssize_t off_h, Py_ssize_t off_w)
    int wg_from_interleaved_float(const float* scratch, Py_ssize_t sw, Py_ssize_t n,
                                  float* out, Py_ssize_t h, Py_ssize_t w, const float* bias)
    int wg_from_interleaved_double(const double* scratch, Py_ssize_t sw, Py_ssize_t n,
                                   double* out, Py_ssize_t h, Py_ssize_t w,
                                   const double* bias)
    void wg_input_tiles_float(const float* scratch, Py_ssize_t sw, Py_ssize_t n,
                              Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m, float* v,
                              Py_ssize_t plane, float* tmp)
    void wg_input_tiles_double(const double* scratch, Py_ssize_t sw, Py_ssize_t n,
                               Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m, double* v,
                               Py_ssize_t plane, double* tmp)
    void wg_gradient_tiles_float(const float* scratch, Py_ssize_t sw, Py_ssize_t n,
                                 Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m, float* v,
                                 Py_ssize_t plane, float* tmp)
    void wg_gradient_tiles_double(const double* scratch, Py_ssize_t sw, Py_ssize_t n,
                                  Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m, double* v,
                                  Py_ssize_t plane, double* tmp)
    void wg_output_tiles_float(const float* v, Py_ssize_t plane, Py_ssize_t n,
                               Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m,
                               float* scratch, float* tmp)
    void wg_output_tiles_double(const double* v, Py_ssize_t plane, Py_ssize_t n,
                                Py_ssize_t tiles_h, Py_ssize_t tiles_w, int m,
                                double* scratch, double* tmp)


cdef Py_ssize_t _alpha(Py_ssize_t m) except -1:
    if m != 2 and m != 4:
        raise ValueError(f"Winograd output tiles must be 2x2 or 4x4, got m={m}")
    return m + 2


def transform_tiles(const floating[:, :, :, ::1] src, floating[:, :, ::1] v,
                    floating[::1] scratch, Py_ssize_t m, Py_ssize_t tiles_h,
                    Py_ssize_t tiles_w, Py_ssize_t off_h, Py_ssize_t off_w,
                    bint gradient) -> None:
    """Transform every tile of ``src`` (N, n, h, w) into ``v`` (alpha^2, >= N*tiles, n).

    Tile (th, tw) of image i covers ``src[i, :, th*m - off_h + r, tw*m - off_w + s]``
    (0 outside ``src``) for r, s < alpha, transformed as ``B^T d B``; with ``gradient``
    it covers r, s < m, transformed as ``A dy A^T``; rows of ``v`` beyond the tiles
    (padding between the planes) are left alone. ``scratch`` needs
    ``(tiles_h*m + 2) * (tiles_w*m + 2) * n + alpha^2 * n`` values.
    """
    cdef Py_ssize_t alpha = _alpha(m)
    cdef Py_ssize_t num = src.shape[0], n = src.shape[1], h = src.shape[2], w = src.shape[3]
    cdef Py_ssize_t tiles = tiles_h * tiles_w
    cdef Py_ssize_t sh = tiles_h * m + 2, sw = tiles_w * m + 2
    cdef Py_ssize_t plane = v.shape[1] * n, image
    if tiles_h < 0 or tiles_w < 0:
        raise ValueError("tile counts must be >= 0")
    if v.shape[0] != alpha * alpha or v.shape[1] < num * tiles or v.shape[2] != n:
        raise ValueError(f"v must have shape ({alpha * alpha}, >= {num * tiles}, {n})")
    if scratch.shape[0] < (sh * sw + alpha * alpha) * n:
        raise ValueError(f"scratch needs {(sh * sw + alpha * alpha) * n} values")
    if num == 0 or tiles == 0 or n == 0:
        return
    with nogil:
        for image in range(num):
            if floating is float:
                wg_to_interleaved_float(&src[image, 0, 0, 0], n, h, w, &scratch[0], sh, sw,
                                        off_h, off_w)
                if gradient:
                    wg_gradient_tiles_float(&scratch[0], sw, n, tiles_h, tiles_w, <int>m,
                                            &v[0, image * tiles, 0], plane,
                                            &scratch[sh * sw * n])
                else:
                    wg_input_tiles_float(&scratch[0], sw, n, tiles_h, tiles_w, <int>m,
                                         &v[0, image * tiles, 0], plane, &scratch[sh * sw * n])
            else:
                wg_to_interleaved_double(&src[image, 0, 0, 0], n, h, w, &scratch[0], sh, sw,
                                         off_h, off_w)
                if gradient:
                    wg_gradient_tiles_double(&scratch[0], sw, n, tiles_h, tiles_w, <int>m,
                                             &v[0, image * tiles, 0], plane,
                                             &scratch[sh * sw * n])
                else:
                    wg_input_tiles_double(&scratch[0], sw, n, tiles_h, tiles_w, <int>m,
                                          &v[0, image * tiles, 0], plane, &scratch[sh * sw * n])


def untransform_tiles(const floating[:, :, ::1] v, floating[:, :, :, ::1] out,
                      const floating[::1] bias, floating[::1] scratch, Py_ssize_t m,
                      Py_ssize_t tiles_h, Py_ssize_t tiles_w) -> bool:
    """Write ``A^T v A + bias`` of every tile into ``out`` (N, n, h, w), cropped.

    ``v`` is (alpha^2, >= N*tiles_h*tiles_w, n) (rows beyond the tiles are ignored); tile (th, tw) of image i gives
    ``out[i, :, th*m:(th+1)*m, tw*m:(tw+1)*m]`` (what lies beyond h, w is dropped).
    ``scratch`` needs ``(tiles_h*m) * (tiles_w*m) * n + alpha^2 * n`` values.

    Returns
    -------
    bool
        True if every value written is finite.
    """
    cdef Py_ssize_t alpha = _alpha(m)
    cdef Py_ssize_t num = out.shape[0], n = out.shape[1], h = out.shape[2], w = out.shape[3]
    cdef Py_ssize_t tiles = tiles_h * tiles_w
    cdef Py_ssize_t sh = tiles_h * m, sw = tiles_w * m
    cdef Py_ssize_t plane = v.shape[1] * n, image
    cdef int finite = 1
    if tiles_h < 0 or tiles_w < 0 or sh < h or sw < w:
        raise ValueError(f"{tiles_h}x{tiles_w} tiles of {m}x{m} do not cover {h}x{w}")
    if v.shape[0] != alpha * alpha or v.shape[1] < num * tiles or v.shape[2] != n:
        raise ValueError(f"v must have shape ({alpha * alpha}, >= {num * tiles}, {n})")
    if bias.shape[0] != n:
        raise ValueError(f"bias must have {n} values")
    if scratch.shape[0] < (sh * sw + alpha * alpha) * n:
        raise ValueError(f"scratch needs {(sh * sw + alpha * alpha) * n} values")
    if num == 0 or n == 0 or h == 0 or w == 0:
        return True
    with nogil:
        for image in range(num):
            if floating is float:
                wg_output_tiles_float(&v[0, image * tiles, 0], plane, n, tiles_h, tiles_w,
                                      <int>m, &scratch[0], &scratch[sh * sw * n])
                finite &= wg_from_interleaved_float(&scratch[0], sw, n, &out[image, 0, 0, 0],
                                                    h, w, &bias[0])
            else:
                wg_output_tiles_double(&v[0, image * tiles, 0], plane, n, tiles_h, tiles_w,
                                       <int>m, &scratch[0], &scratch[sh * sw * n])
                finite &= wg_from_interleaved_double(&scratch[0], sw, n, &out[image, 0, 0, 0],
                                                     h, w, &bias[0])
    return finite == 1
