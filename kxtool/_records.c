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
 * group(data, ends, first, a, b, c, shift, bits, ...)   the shuffle's keys of the records and
 *                                            the records grouped into piles by them (see there)
 * select_scan(data, sep, first, a, b, c, threshold, ...)  the records of data whose key is
 *                                            below threshold (the sample's candidates)
 * gather_where(sources, where, lengths, order, out)   gather from records in several buffers
 *                                            (an input read through a memory mapping)
 * guard_bus(message)                         a SIGBUS (a mapped file that shrank) ends the
 *                                            process with message and exit status 1
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
/* Built for x86-64's baseline, __builtin_popcountll is a call into libgcc; where the
 * compiler can clone the function for CPUs that have the popcnt instruction (all x86-64 CPUs
 * since about 2008), the loader picks that clone at start-up. */
#if defined(__x86_64__) && defined(__has_attribute)
#if __has_attribute(target_clones) && defined(__ELF__)
#define SCAN_CLONES __attribute__((target_clones("popcnt", "default")))
#endif
#endif
#ifndef SCAN_CLONES
#define SCAN_CLONES
#endif
SCAN_CLONES
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
        /* 64 bytes a step, into one 64-bit mask. Whether a block holds a separator, and
         * how many, is as random as the text: a branch on it is mispredicted about once a
         * record, which cost more than the scan. So the first four positions are written
         * whether they exist or not (out has room: k + 64 <= cap), and k moves on by the
         * count; only a block of more than four takes a loop. */
        for (; i + 64 <= n && k + 64 <= cap; i += 64) {
            uint64_t m = (uint64_t)(uint32_t)_mm_movemask_epi8(
                             _mm_cmpeq_epi8(_mm_loadu_si128((const __m128i *)(p + i)), s)) |
                         (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(
                             _mm_loadu_si128((const __m128i *)(p + i + 16)), s))
                             << 16 |
                         (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(
                             _mm_loadu_si128((const __m128i *)(p + i + 32)), s))
                             << 32 |
                         (uint64_t)(uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(
                             _mm_loadu_si128((const __m128i *)(p + i + 48)), s))
                             << 48;
            int cnt = __builtin_popcountll(m);
            const uint64_t top = 1ULL << 63; /* keeps ctz defined once m runs out */
            int64_t base = (int64_t)i + 1;
            out[k] = base + __builtin_ctzll(m | top);
            m &= m - 1;
            out[k + 1] = base + __builtin_ctzll(m | top);
            m &= m - 1;
            out[k + 2] = base + __builtin_ctzll(m | top);
            m &= m - 1;
            out[k + 3] = base + __builtin_ctzll(m | top);
            m &= m - 1;
            if (cnt > 4) {
                Py_ssize_t j = k + 4;
                while (m) {
                    out[j++] = base + __builtin_ctzll(m);
                    m &= m - 1;
                }
            }
            k += cnt;
        }
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

/* How many records ahead the gather asks for the next source (see gather). */
#define AHEAD 16

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
        if (idx && k + AHEAD < count) {
            /* records come from anywhere in data: ask for one a few records ahead, so that
             * its cache misses overlap with the copies in between */
            int64_t j = idx[k + AHEAD];
            if (j >= 0 && j < n && s[j] >= 0 && s[j] < dlen) __builtin_prefetch(src + s[j]);
            if (k + 2 * AHEAD < count) {
                int64_t j2 = idx[k + 2 * AHEAD];
                if (j2 >= 0 && j2 < n) {
                    __builtin_prefetch(s + j2);
                    __builtin_prefetch(l + j2);
                }
            }
        }
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

/* The shuffle's key of record index x (keys.py's record_keys): three rounds of "add or xor a
 * round key, then the murmur3 64-bit finaliser". */
static inline uint64_t fmix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xFF51AFD7ED558CCDULL;
    x ^= x >> 33;
    x *= 0xC4CEB9FE1A85EC53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint64_t record_key(uint64_t x, uint64_t a, uint64_t b, uint64_t c) {
    return fmix((fmix(fmix(x + a) + b)) ^ c);
}

/* group(data, ends, first, a, b, c, shift, bits, out_data, out_keys, out_lengths, counts,
 *       sizes[, base])
 * Keys the records of data (ending at ends; record i has index first + i) and groups them
 * into 2**bits piles by key bits [shift, shift + bits) counted from the top: out_data holds
 * their bytes pile after pile, out_keys and out_lengths their keys and lengths alike, each
 * pile's records in input order; counts and sizes (int64, 2**bits) the records and bytes of
 * each pile. What runs.py does with record_keys, an argsort, two bincounts and a gather, in
 * one pass over the keys and one over the bytes.
 *
 * With base (an int), out_data is instead a uint64 array with an item per record: where each
 * record is (base + its offset in data, see gather_where), grouped like the keys; the bytes
 * stay where they are. */
static PyObject *group(PyObject *self, PyObject *args) {
    PyObject *data_obj, *ends_obj, *od_obj, *ok_obj, *ol_obj, *counts_obj, *sizes_obj;
    PyObject *base_obj = Py_None;
    unsigned long long first, a, b, c;
    int shift, bits;
    if (!PyArg_ParseTuple(args, "OOKKKKiiOOOOO|O", &data_obj, &ends_obj, &first, &a, &b, &c,
                          &shift, &bits, &od_obj, &ok_obj, &ol_obj, &counts_obj, &sizes_obj,
                          &base_obj))
        return NULL;
    if (shift < 0 || bits < 0 || bits > 30 || shift + bits > 64) {
        PyErr_SetString(PyExc_ValueError, "pile bits out of range");
        return NULL;
    }
    int positions = base_obj != Py_None;
    uint64_t base = 0;
    if (positions) {
        base = PyLong_AsUnsignedLongLong(base_obj);
        if (PyErr_Occurred()) return NULL;
    }
    Py_buffer data, ends, od, ok, ol, cnt, siz;
    int got = 0;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0) goto done;
    got = 1;
    if (get_buffer(ends_obj, &ends, 0, 8, "ends") < 0) goto done;
    got = 2;
    if (get_buffer(od_obj, &od, 1, positions ? 8 : 0, "out_data") < 0) goto done;
    got = 3;
    if (get_buffer(ok_obj, &ok, 1, 8, "out_keys") < 0) goto done;
    got = 4;
    if (get_buffer(ol_obj, &ol, 1, 8, "out_lengths") < 0) goto done;
    got = 5;
    if (get_buffer(counts_obj, &cnt, 1, 8, "counts") < 0) goto done;
    got = 6;
    if (get_buffer(sizes_obj, &siz, 1, 8, "sizes") < 0) goto done;
    got = 7;

    Py_ssize_t n = ends.len / 8, piles = (Py_ssize_t)1 << bits;
    const int64_t *e = ends.buf;
    const char *error = NULL;
    if (od.len != (positions ? n * 8 : data.len) || ok.len != n * 8 || ol.len != n * 8)
        error = "outputs of the wrong size";
    else if (cnt.len != piles * 8 || siz.len != piles * 8)
        error = "counts and sizes must have 2**bits items";
    else if (n && e[n - 1] != data.len)
        error = "the last record must end where data does";
    uint32_t *pile = NULL;
    int64_t *kpos = NULL, *dpos = NULL;
    if (!error) {
        pile = malloc((size_t)(n ? n : 1) * sizeof(uint32_t));
        kpos = malloc((size_t)piles * sizeof(int64_t));
        dpos = malloc((size_t)piles * sizeof(int64_t));
        if (!pile || !kpos || !dpos) error = "out of memory";
    }
    if (!error) {
        int64_t *counts = cnt.buf, *sizes = siz.buf;
        uint64_t *keys = ok.buf;
        int64_t *lengths = ol.buf;
        const char *src = data.buf;
        char *dst = od.buf;
        uint64_t *where = od.buf;
        Py_BEGIN_ALLOW_THREADS
        memset(counts, 0, (size_t)piles * 8);
        memset(sizes, 0, (size_t)piles * 8);
        int64_t prev = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t end = e[i];
            if (end < prev || end > data.len) { error = "ends must not decrease"; break; }
            uint64_t k = record_key((uint64_t)first + (uint64_t)i, a, b, c);
            uint32_t p = bits ? (uint32_t)((k << shift) >> (64 - bits)) : 0;
            pile[i] = p;
            counts[p] += 1;
            sizes[p] += end - prev;
            prev = end;
        }
        if (!error) {
            int64_t kat = 0, dat = 0;
            for (Py_ssize_t p = 0; p < piles; p++) {
                kpos[p] = kat;
                dpos[p] = dat;
                kat += counts[p];
                dat += sizes[p];
            }
            prev = 0;
            for (Py_ssize_t i = 0; i < n; i++) {
                int64_t end = e[i], len = end - prev;
                uint32_t p = pile[i];
                int64_t at = kpos[p]++;
                keys[at] = record_key((uint64_t)first + (uint64_t)i, a, b, c);
                lengths[at] = len;
                if (positions) {
                    where[at] = base + (uint64_t)prev;
                } else {
                    memcpy(dst + dpos[p], src + prev, (size_t)len);
                    dpos[p] += len;
                }
                prev = end;
            }
        }
        Py_END_ALLOW_THREADS
    }
    free(pile);
    free(kpos);
    free(dpos);
done:
    if (got > 6) PyBuffer_Release(&siz);
    if (got > 5) PyBuffer_Release(&cnt);
    if (got > 4) PyBuffer_Release(&ol);
    if (got > 3) PyBuffer_Release(&ok);
    if (got > 2) PyBuffer_Release(&od);
    if (got > 1) PyBuffer_Release(&ends);
    if (got > 0) PyBuffer_Release(&data);
    if (got < 7) return NULL;
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* gather_where(sources, where, lengths, order, out) -> bytes copied
 * As gather, for records that lie in several buffers: record i is lengths[i] bytes at offset
 * where[i] & (2**WHERE_BITS - 1) of sources[where[i] >> WHERE_BITS] (a sequence of buffers;
 * where is uint64, lengths and order int64, order None for every record in turn). */
#define WHERE_BITS 40
static PyObject *gather_where(PyObject *self, PyObject *args) {
    PyObject *sources_obj, *where_obj, *lengths_obj, *order_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOOOO", &sources_obj, &where_obj, &lengths_obj, &order_obj,
                          &out_obj))
        return NULL;
    PyObject *seq = PySequence_Fast(sources_obj, "sources must be a sequence of buffers");
    if (!seq) return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq), held = 0;
    Py_buffer *src = PyMem_Calloc((size_t)(m ? m : 1), sizeof(Py_buffer));
    const char **base = PyMem_Calloc((size_t)(m ? m : 1), sizeof(char *));
    Py_ssize_t *size = PyMem_Calloc((size_t)(m ? m : 1), sizeof(Py_ssize_t));
    Py_buffer where, lengths, order, out;
    int have_order = order_obj != Py_None, got = 0;
    PyObject *result = NULL;
    if (!src || !base || !size) {
        PyErr_NoMemory();
        goto done;
    }
    for (; held < m; held++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(seq, held), &src[held], 0, 0, "sources") < 0)
            goto done;
        base[held] = src[held].buf;
        size[held] = src[held].len;
    }
    if (get_buffer(where_obj, &where, 0, 8, "where") < 0) goto done;
    got = 1;
    if (get_buffer(lengths_obj, &lengths, 0, 8, "lengths") < 0) goto done;
    got = 2;
    if (have_order && get_buffer(order_obj, &order, 0, 8, "order") < 0) goto done;
    got = 3;
    if (get_buffer(out_obj, &out, 1, 0, "out") < 0) goto done;
    got = 4;

    Py_ssize_t n = where.len / 8;
    Py_ssize_t count = have_order ? order.len / 8 : n;
    const uint64_t *w = where.buf;
    const int64_t *l = lengths.buf, *idx = have_order ? order.buf : NULL;
    const uint64_t mask = ((uint64_t)1 << WHERE_BITS) - 1;
    char *dst = out.buf;
    Py_ssize_t olen = out.len, at = 0;
    const char *error = NULL;
    if (lengths.len != where.len) error = "where and lengths differ in length";
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t k = 0; !error && k < count; k++) {
        int64_t i = idx ? idx[k] : k;
        if (k + AHEAD < count) {
            int64_t j = idx ? idx[k + AHEAD] : k + AHEAD;
            if (j >= 0 && j < n) {
                uint64_t s = w[j] >> WHERE_BITS, o = w[j] & mask;
                if (s < (uint64_t)m && o < (uint64_t)size[s]) __builtin_prefetch(base[s] + o);
            }
            if (idx && k + 2 * AHEAD < count) {
                int64_t j2 = idx[k + 2 * AHEAD];
                if (j2 >= 0 && j2 < n) {
                    __builtin_prefetch(w + j2);
                    __builtin_prefetch(l + j2);
                }
            }
        }
        if (i < 0 || i >= n) { error = "order holds an index out of range"; break; }
        uint64_t s = w[i] >> WHERE_BITS, o = w[i] & mask;
        int64_t len = l[i];
        if (s >= (uint64_t)m || len < 0 || o > (uint64_t)size[s] ||
            (uint64_t)len > (uint64_t)size[s] - o) {
            error = "a record lies outside its source";
            break;
        }
        if (len > olen - at) { error = "out is too small"; break; }
        memcpy(dst + at, base[s] + o, (size_t)len);
        at += len;
    }
    Py_END_ALLOW_THREADS
    if (error)
        PyErr_SetString(PyExc_ValueError, error);
    else
        result = PyLong_FromSsize_t(at);
done:
    if (got > 3) PyBuffer_Release(&out);
    if (got > 2 && have_order) PyBuffer_Release(&order);
    if (got > 1) PyBuffer_Release(&lengths);
    if (got > 0) PyBuffer_Release(&where);
    for (Py_ssize_t i = 0; i < held; i++) PyBuffer_Release(&src[i]);
    PyMem_Free(src);
    PyMem_Free(base);
    PyMem_Free(size);
    Py_DECREF(seq);
    return result;
}

/* guard_bus(message or None)
 * A file that is read through a memory mapping and shrinks meanwhile (another program
 * truncates it) makes the next read of a page past its new end a SIGBUS, which would kill
 * the process without a word. With a message (bytes), a SIGBUS from then on writes it to
 * stderr and ends the process with exit status 1 (what else could go on: the bytes are gone);
 * with None, the handler that was there before is put back. */
#include <signal.h>
#include <unistd.h>
static char bus_message[1024];
static size_t bus_length = 0;
static struct sigaction bus_previous;
static int bus_installed = 0;

static void on_bus(int signum) {
    (void)signum;
    size_t done = 0;
    while (done < bus_length) {
        ssize_t w = write(2, bus_message + done, bus_length - done);
        if (w <= 0) break;
        done += (size_t)w;
    }
    _exit(1);
}

static PyObject *guard_bus(PyObject *self, PyObject *args) {
    PyObject *message;
    if (!PyArg_ParseTuple(args, "O", &message)) return NULL;
    if (message == Py_None) {
        if (bus_installed) {
            sigaction(SIGBUS, &bus_previous, NULL);
            bus_installed = 0;
        }
        Py_RETURN_NONE;
    }
    char *text;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(message, &text, &len) < 0) return NULL;
    if (len > (Py_ssize_t)sizeof(bus_message)) len = sizeof(bus_message);
    memcpy(bus_message, text, (size_t)len);
    bus_length = (size_t)len;
    if (!bus_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_bus;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGBUS, &sa, &bus_previous) != 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return NULL;
        }
        bus_installed = 1;
    }
    Py_RETURN_NONE;
}

/* select_scan(data, sep, first, a, b, c, threshold, out_starts, out_lengths, out_keys)
 *   -> (records, chosen, longest)
 * The records of data (found by scanning for sep, as find_ends does, without writing every
 * record's end) whose key (record i has index first + i) is below threshold: their starts,
 * lengths and keys, in input order, into the out arrays (int64, int64, uint64, with room
 * for every record); and the records seen and the longest one's length. Bytes after the
 * last separator are not a record. What sample.py does with find_ends, record_keys, a
 * comparison and flatnonzero, without making every record's key. */
#define SELECT_BATCH 1024

static PyObject *select_scan(PyObject *self, PyObject *args) {
    PyObject *data_obj, *os_obj, *ol_obj, *ok_obj;
    int sep;
    unsigned long long first, a, b, c, threshold;
    if (!PyArg_ParseTuple(args, "OiKKKKKOOO", &data_obj, &sep, &first, &a, &b, &c, &threshold,
                          &os_obj, &ol_obj, &ok_obj))
        return NULL;
    Py_buffer data, os_, ol, ok;
    if (get_buffer(data_obj, &data, 0, 0, "data") < 0) return NULL;
    if (get_buffer(os_obj, &os_, 1, 8, "out_starts") < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (get_buffer(ol_obj, &ol, 1, 8, "out_lengths") < 0) {
        PyBuffer_Release(&os_);
        PyBuffer_Release(&data);
        return NULL;
    }
    if (get_buffer(ok_obj, &ok, 1, 8, "out_keys") < 0) {
        PyBuffer_Release(&ol);
        PyBuffer_Release(&os_);
        PyBuffer_Release(&data);
        return NULL;
    }
    Py_ssize_t cap = os_.len / 8, rec = 0, m = 0;
    if (ol.len / 8 < cap) cap = ol.len / 8;
    if (ok.len / 8 < cap) cap = ok.len / 8;
    int64_t longest = 0;
    const char *error = NULL;
    {
        const unsigned char *p = data.buf;
        Py_ssize_t n = data.len, at = 0;
        int64_t *st = os_.buf, *le = ol.buf;
        uint64_t *ke = ok.buf;
        int64_t prev = 0;
        /* a batch of ends found by the scan, their keys made in a loop of their own (no
         * branch between records, so the multiplications of several records overlap), then
         * compared */
        int64_t ends[SELECT_BATCH];
        uint64_t keys[SELECT_BATCH];
        Py_BEGIN_ALLOW_THREADS
        while (at < n && !error) {
            Py_ssize_t resume;
            Py_ssize_t k = scan(p, at, n, sep, ends, SELECT_BATCH, &resume);
            for (Py_ssize_t t = 0; t < k; t++)
                keys[t] = record_key((uint64_t)first + (uint64_t)(rec + t), a, b, c);
            for (Py_ssize_t t = 0; t < k; t++) {
                int64_t len = ends[t] - prev;
                if (len > longest) longest = len;
                if (keys[t] < threshold) {
                    if (m >= cap) { error = "out arrays too small"; break; }
                    st[m] = prev;
                    le[m] = len;
                    ke[m] = keys[t];
                    m++;
                }
                prev = ends[t];
            }
            rec += k;
            if (k == 0 || resume <= at) break;  /* no separator left */
            at = resume;
        }
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&ok);
    PyBuffer_Release(&ol);
    PyBuffer_Release(&os_);
    PyBuffer_Release(&data);
    if (error) {
        PyErr_SetString(PyExc_ValueError, error);
        return NULL;
    }
    return Py_BuildValue("nnL", rec, m, (long long)longest);
}

static PyMethodDef methods[] = {
    {"count_ends", count_ends, METH_VARARGS, "Separators in data."},
    {"find_ends", find_ends, METH_VARARGS, "Offsets one past each separator, into out."},
    {"gather", gather, METH_VARARGS, "Copy records in the given order into out."},
    {"group", group, METH_VARARGS, "Key records and group them into piles by key bits."},
    {"select_scan", select_scan, METH_VARARGS, "select() over records found by a scan."},
    {"gather_where", gather_where, METH_VARARGS, "gather() from records in several buffers."},
    {"guard_bus", guard_bus, METH_VARARGS, "Exit with a message on SIGBUS (or stop that)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_records", "The shuffle's byte loops (see records.py).", -1, methods,
};

PyMODINIT_FUNC PyInit__records(void) { return PyModule_Create(&module); }
