/* The shuffle's two byte loops, compiled: finding the records' ends and gathering records.
 *
 * kxtool/records.py does both with numpy (a comparison and flatnonzero over every byte; a
 * fixed-width fancy-index copy per record). Measured on the 300 MB benchmark file they were
 * most of the shuffle's CPU time: here they are a scan that compares 16 bytes at a time and a
 * memcpy per record, both without the interpreter lock, so the shuffle's threads run them side
 * by side. Optional, like _transport.c: where it cannot be built, records.py's numpy code
 * gives the same bytes.
 *
 * count_ends(data, sep) -> int               records (separators) in data
 * find_ends(data, sep, out[, start])          offsets one past each separator from start on into
 *   -> (found, resume)                          out (int64) until it is full; resume is where
 *                                               to go on (len(data) when done)
 * gather(data, starts, lengths, order, out)  out = data[starts[i]:starts[i]+lengths[i]] for i
 *                                            in order (int64; None: every i in turn)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* Separators in p[i0:n]: counted (out == NULL) or their offsets + 1 written to out (at most
 * cap of them; *resume is then where a further call should go on: n when the scan is done,
 * otherwise one past the last separator written). 16 bytes compared at a time where SSE2 is
 * there (every x86-64), one by one otherwise; the answer is the same. */
static Py_ssize_t scan(const unsigned char *p, Py_ssize_t i0, Py_ssize_t n, int sep,
                       int64_t *out, Py_ssize_t cap, Py_ssize_t *resume) {
    Py_ssize_t i = i0, k = 0;
    if (resume) *resume = n;
#if defined(__SSE2__)
    const __m128i s = _mm_set1_epi8((char)sep);
    if (!out) {
        /* each byte lane counts its matches (a match is -1: subtracting it adds one) for at
         * most 255 blocks, then the lanes are summed into two 64-bit counters */
        const __m128i zero = _mm_setzero_si128();
        __m128i total = zero;
        while (i + 16 <= n) {
            __m128i lanes = zero;
            for (int b = 0; b < 255 && i + 16 <= n; b++, i += 16) {
                __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
                lanes = _mm_sub_epi8(lanes, _mm_cmpeq_epi8(v, s));
            }
            total = _mm_add_epi64(total, _mm_sad_epu8(lanes, zero));
        }
        k = (Py_ssize_t)(_mm_cvtsi128_si64(total) +
                         _mm_cvtsi128_si64(_mm_unpackhi_epi64(total, total)));
    } else {
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            unsigned m = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, s));
            while (m) {
                if (k >= cap) goto full;
                out[k++] = (int64_t)(i + __builtin_ctz(m)) + 1;
                m &= m - 1;
            }
        }
    }
#endif
    for (; i < n; i++) {
        if (p[i] == (unsigned char)sep) {
            if (out) {
                if (k >= cap) goto full;
                out[k] = (int64_t)i + 1;
            }
            k++;
        }
    }
    return k;
full:
    if (resume) *resume = k ? (Py_ssize_t)out[k - 1] : i0;
    return k;
}

static int get_buffer(PyObject *obj, Py_buffer *view, int writable, Py_ssize_t item,
                      const char *name) {
    int flags = PyBUF_C_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0);
    if (PyObject_GetBuffer(obj, view, flags) < 0) return -1;
    if (item && view->itemsize != item) {
        PyErr_Format(PyExc_TypeError, "%s: items of %zd bytes expected", name, item);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *count_ends(PyObject *self, PyObject *args) {
    PyObject *data_obj;
    int sep;
    if (!PyArg_ParseTuple(args, "Oi", &data_obj, &sep)) return NULL;
    Py_buffer data;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0) return NULL;
    Py_ssize_t n;
    Py_BEGIN_ALLOW_THREADS
    n = scan(data.buf, 0, data.len, sep, NULL, 0, NULL);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    return PyLong_FromSsize_t(n);
}

static PyObject *find_ends(PyObject *self, PyObject *args) {
    PyObject *data_obj, *out_obj;
    int sep;
    Py_ssize_t start = 0;
    if (!PyArg_ParseTuple(args, "OiO|n", &data_obj, &sep, &out_obj, &start)) return NULL;
    Py_buffer data, out;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0) return NULL;
    if (get_buffer(out_obj, &out, 1, 8, "out") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (start < 0 || start > data.len) {
        PyBuffer_Release(&data);
        PyBuffer_Release(&out);
        PyErr_SetString(PyExc_ValueError, "start lies outside data");
        return NULL;
    }
    Py_ssize_t n, resume;
    Py_BEGIN_ALLOW_THREADS
    n = scan(data.buf, start, data.len, sep, out.buf, out.len / 8, &resume);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&data);
    PyBuffer_Release(&out);
    return Py_BuildValue("nn", n, resume);
}

static PyObject *gather(PyObject *self, PyObject *args) {
    PyObject *data_obj, *starts_obj, *lengths_obj, *order_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &data_obj, &starts_obj, &lengths_obj, &order_obj,
                          &out_obj))
        return NULL;
    Py_buffer data, starts, lengths, order, out;
    int have_order = order_obj != Py_None;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0) return NULL;
    if (get_buffer(starts_obj, &starts, 0, 8, "starts") < 0) goto fail_data;
    if (get_buffer(lengths_obj, &lengths, 0, 8, "lengths") < 0) goto fail_starts;
    if (have_order && get_buffer(order_obj, &order, 0, 8, "order") < 0) goto fail_lengths;
    if (get_buffer(out_obj, &out, 1, 0, "out") < 0) goto fail_order;

    Py_ssize_t n = starts.len / 8;
    Py_ssize_t count = have_order ? order.len / 8 : n;
    const int64_t *s = starts.buf, *l = lengths.buf, *idx = have_order ? order.buf : NULL;
    const char *src = data.buf;
    char *dst = out.buf;
    Py_ssize_t dlen = data.len, olen = out.len, at = 0;
    const char *error = NULL;
    if (lengths.len != starts.len) error = "starts and lengths differ in length";
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; !error && k < count; k++) {
        int64_t i = idx ? idx[k] : k;
        if (i < 0 || i >= n) { error = "order holds an index out of range"; break; }
        int64_t a = s[i], len = l[i];
        if (a < 0 || len < 0 || a > dlen - len) { error = "a record lies outside data"; break; }
        if (len > olen - at) { error = "out is too small"; break; }
        memcpy(dst + at, src + a, (size_t)len);
        at += len;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&out);
    if (have_order) PyBuffer_Release(&order);
    PyBuffer_Release(&lengths);
    PyBuffer_Release(&starts);
    PyBuffer_Release(&data);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    return PyLong_FromSsize_t(at);

fail_order:
    if (have_order) PyBuffer_Release(&order);
fail_lengths:
    PyBuffer_Release(&lengths);
fail_starts:
    PyBuffer_Release(&starts);
fail_data:
    PyBuffer_Release(&data);
    return NULL;
}

static PyMethodDef methods[] = {
    {"count_ends", count_ends, METH_VARARGS, "Separators in data."},
    {"find_ends", find_ends, METH_VARARGS, "Offsets one past each separator, into out."},
    {"gather", gather, METH_VARARGS, "Copy records in the given order into out."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "The shuffle's byte loops (see records.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
