/*
 * kxtool._transport: the exact optimal transport cost between two small discrete
 * distributions with a dense cost matrix (the WMD/WRD problem), by the network simplex
 * method specialised to the transportation problem.
 *
 *   emd(a, b, M, max_iter) -> (cost, status, pivots)
 *
 * a (m,), b (n,) and M (m, n) are C-contiguous float64 buffers; sum(a) == sum(b) is the
 * caller's job. status: 0 optimal, 1 pivot limit reached, 2 out of memory (raised as
 * MemoryError), 3 internal inconsistency, 4 a cost is not finite. On any status but 0 the
 * caller falls back to another solver; the cost is only meaningful with status 0.
 *
 * Why our own: POT's solver (LEMON's network simplex on a general graph) starts from an
 * artificial basis and needs about five pivots per node on WMD problems. Starting here from
 * a greedy basis (cheapest cells first, over each row's few cheapest columns) and pricing
 * whole rows of the dense matrix takes about three, and each pivot is cheaper.
 *
 * The basis is a spanning tree over the m row nodes (0..m-1) and n column nodes (m..m+n-1),
 * rooted at row 0. Every non-root node x stores the flow of the tree edge to its parent
 * (the basic cell of the row and column among x and parent[x]), its depth, and its place in
 * its parent's child list. Potentials u (rows) and v (columns) satisfy u_i + v_j = M_ij on
 * every basic cell; a cell with M_ij - u_i - v_j < 0 enters the basis.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { OPTIMAL = 0, ITER_LIMIT = 1, NO_MEMORY = 2, INCONSISTENT = 3, NOT_FINITE = 4 };

/* shortlist length per row for the initial basis */
#define SHORTLIST 4

typedef struct {
    double c;
    int i, j;
} Cell;

static int cell_cmp(const void *x, const void *y) {
    double a = ((const Cell *)x)->c, b = ((const Cell *)y)->c;
    return (a > b) - (a < b);
}

typedef struct {
    int m, n, N;
    const double *M;
    double *pot, *flow;
    int *parent, *depth, *first, *next, *prev, *stack;
} Tree;

static inline double cell_cost(const Tree *t, int x, int p) {
    /* the cost of the cell joining node x and node p (one a row, the other a column) */
    return x < t->m ? t->M[(size_t)x * t->n + (p - t->m)] : t->M[(size_t)p * t->n + (x - t->m)];
}

static inline void unlink_child(Tree *t, int x) {
    if (t->prev[x] >= 0)
        t->next[t->prev[x]] = t->next[x];
    else
        t->first[t->parent[x]] = t->next[x];
    if (t->next[x] >= 0) t->prev[t->next[x]] = t->prev[x];
}

static inline void link_child(Tree *t, int x, int p) {
    t->parent[x] = p;
    t->prev[x] = -1;
    t->next[x] = t->first[p];
    if (t->first[p] >= 0) t->prev[t->first[p]] = x;
    t->first[p] = x;
}

/*
 * The initial basis: m + n - 1 cells, allocated greedily. Cells come first from the sorted
 * union of each row's SHORTLIST cheapest columns; when those run out, the first open row
 * takes its cheapest open column. Every allocation closes exactly one line (row or column),
 * except the last, which closes both, so the cells form a spanning tree. Writes the cells
 * to (cu, cv, cf) and returns their number.
 */
static int greedy_basis(int m, int n, const double *a, const double *b, const double *M,
                        Cell *cand, double *rest, char *open, int *cu, int *cv, double *cf) {
    int K = n < SHORTLIST ? n : SHORTLIST;
    size_t nc = 0;
    for (int i = 0; i < m; i++) {
        const double *row = M + (size_t)i * n;
        Cell *c0 = cand + nc;
        int cnt = 0;
        for (int j = 0; j < n; j++) {
            double c = row[j];
            int p;
            if (cnt < K)
                p = cnt++;
            else if (c < c0[K - 1].c)
                p = K - 1;
            else
                continue;
            while (p > 0 && c0[p - 1].c > c) {
                c0[p] = c0[p - 1];
                p--;
            }
            c0[p].c = c;
            c0[p].i = i;
            c0[p].j = j;
        }
        nc += (size_t)cnt;
    }
    qsort(cand, nc, sizeof(Cell), cell_cmp);

    int N = m + n;
    memcpy(rest, a, sizeof(double) * (size_t)m);
    memcpy(rest + m, b, sizeof(double) * (size_t)n);
    memset(open, 1, (size_t)N);
    int rows_open = m, cols_open = n, ne = 0, fill = 0;
    size_t k = 0;
    while (rows_open > 0 && cols_open > 0) {
        int i, J;
        if (k < nc) {
            i = cand[k].i;
            J = m + cand[k].j;
            k++;
            if (!open[i] || !open[J]) continue;
        } else {
            while (!open[fill]) fill++;
            i = fill;
            const double *row = M + (size_t)i * n;
            int bj = -1;
            double best = 0.0;
            for (int j = 0; j < n; j++)
                if (open[m + j] && (bj < 0 || row[j] < best)) {
                    best = row[j];
                    bj = j;
                }
            J = m + bj;
        }
        double x = rest[i] < rest[J] ? rest[i] : rest[J];
        if (x < 0) x = 0;
        rest[i] -= x;
        rest[J] -= x;
        cu[ne] = i;
        cv[ne] = J;
        cf[ne] = x;
        ne++;
        if (rows_open == 1 && cols_open == 1) {
            open[i] = open[J] = 0;
            rows_open = cols_open = 0;
        } else if (cols_open == 1 || (rows_open > 1 && rest[i] <= rest[J])) {
            open[i] = 0;
            rows_open--;
        } else {
            open[J] = 0;
            cols_open--;
        }
    }
    return ne;
}

/* Hang the cells (cu, cv, cf) from row 0: parents, flows, depths, potentials, child lists.
 * Returns 0, or -1 if the cells do not span every node. */
static int build_tree(Tree *t, int ne, const int *cu, const int *cv, const double *cf,
                      int *head, int *link, int *to) {
    int N = t->N;
    for (int v = 0; v < N; v++) {
        head[v] = -1;
        t->parent[v] = -2;
        t->first[v] = -1;
    }
    for (int e = 0; e < ne; e++) {
        to[2 * e] = cv[e];
        link[2 * e] = head[cu[e]];
        head[cu[e]] = 2 * e;
        to[2 * e + 1] = cu[e];
        link[2 * e + 1] = head[cv[e]];
        head[cv[e]] = 2 * e + 1;
    }
    int top = 0, seen = 1;
    t->parent[0] = -1;
    t->depth[0] = 0;
    t->pot[0] = 0.0;
    t->flow[0] = 0.0;
    t->prev[0] = t->next[0] = -1;
    t->stack[top++] = 0;
    while (top) {
        int u = t->stack[--top];
        for (int k = head[u]; k >= 0; k = link[k]) {
            int w = to[k];
            if (t->parent[w] != -2) continue;
            link_child(t, w, u);
            t->depth[w] = t->depth[u] + 1;
            t->flow[w] = cf[k / 2];
            t->pot[w] = cell_cost(t, w, u) - t->pot[u];
            t->stack[top++] = w;
            seen++;
        }
    }
    return seen == N ? 0 : -1;
}

/*
 * One pivot: the cell (i, column node J) enters with reduced cost rc < 0. Its cycle runs
 * up the tree from i and from J to their common ancestor; going round it from the entering
 * cell, the tree edges alternate between losing and gaining flow. On i's side the losing
 * edges are those whose lower node is a row; on J's side, those whose lower node is a column.
 * The losing edge with the least flow leaves; the subtree it cut off is re-hung from the
 * entering cell, and its potentials shift so that the entering cell's reduced cost is 0.
 */
static void pivot(Tree *t, int i, int J, double rc) {
    const int m = t->m;
    double *flow = t->flow;
    int *parent = t->parent, *depth = t->depth;
    double theta = INFINITY;
    int q = -1, on_j_side = 0;
    int x = i, y = J;
    while (x != y) {
        if (depth[x] >= depth[y]) {
            if (x < m && flow[x] < theta) {
                theta = flow[x];
                q = x;
                on_j_side = 0;
            }
            x = parent[x];
        } else {
            if (y >= m && flow[y] < theta) {
                theta = flow[y];
                q = y;
                on_j_side = 1;
            }
            y = parent[y];
        }
    }
    const int apex = x;
    for (x = i; x != apex; x = parent[x]) flow[x] += x < m ? -theta : theta;
    for (y = J; y != apex; y = parent[y]) flow[y] += y >= m ? -theta : theta;

    /* re-hang the path x0 .. q (reversing it) below y0 */
    const int x0 = on_j_side ? J : i, y0 = on_j_side ? i : J;
    int below = y0;
    double f = theta;
    x = x0;
    for (;;) {
        int up = parent[x];
        double fx = flow[x];
        unlink_child(t, x);
        link_child(t, x, below);
        flow[x] = f;
        if (x == q) break;
        below = x;
        f = fx;
        x = up;
    }
    /* rows of the moved subtree shift by du, columns by -du; depths are recomputed */
    const double du = on_j_side ? -rc : rc;
    int top = 0;
    t->stack[top++] = x0;
    depth[x0] = depth[y0] + 1;
    while (top) {
        int u = t->stack[--top];
        t->pot[u] += u < m ? du : -du;
        for (int w = t->first[u]; w >= 0; w = t->next[w]) {
            depth[w] = depth[u] + 1;
            t->stack[top++] = w;
        }
    }
}

static int solve(int m, int n, const double *a, const double *b, const double *M,
                 long long max_iter, double *cost_out, long long *pivots_out) {
    const int N = m + n;
    const size_t mn = (size_t)m * (size_t)n;
    double maxc = 0.0;
    for (size_t k = 0; k < mn; k++) {
        double c = fabs(M[k]);
        if (!(c <= maxc)) {
            if (!isfinite(c)) return NOT_FINITE;
            maxc = c;
        }
    }
    const size_t ncand = (size_t)m * (size_t)(n < SHORTLIST ? n : SHORTLIST);
    /* doubles: pot, flow, rest, cf (N each); the shortlist cells; ints: six tree arrays,
     * cu, cv and head (N each), link and to (2N each); then the open flags */
    size_t bytes = sizeof(double) * 4 * (size_t)N + sizeof(Cell) * (ncand + 1) +
                   sizeof(int) * 13 * (size_t)N + (size_t)N;
    char *mem = malloc(bytes);
    if (!mem) return NO_MEMORY;
    Tree t;
    t.m = m;
    t.n = n;
    t.N = N;
    t.M = M;
    t.pot = (double *)mem;
    t.flow = t.pot + N;
    double *rest = t.flow + N, *cf = rest + N;
    Cell *cand = (Cell *)(cf + N);
    t.parent = (int *)(cand + ncand + 1);
    t.depth = t.parent + N;
    t.first = t.depth + N;
    t.next = t.first + N;
    t.prev = t.next + N;
    t.stack = t.prev + N;
    int *cu = t.stack + N, *cv = cu + N, *head = cv + N, *link = head + N, *to = link + 2 * N;
    char *open = (char *)(to + 2 * N);

    int ne = greedy_basis(m, n, a, b, M, cand, rest, open, cu, cv, cf);
    if (ne != N - 1 || build_tree(&t, ne, cu, cv, cf, head, link, to) != 0) {
        free(mem);
        return INCONSISTENT;
    }

    /* pricing: scan whole rows, round robin, until a block of about sqrt(m n) cells has
     * been priced and holds a candidate; the most negative reduced cost in it enters */
    const double eps = 1e-12 * (maxc > 1.0 ? maxc : 1.0);
    const size_t block = (size_t)ceil(sqrt((double)mn));
    const double *v = t.pot + m;
    long long pivots = 0;
    int status = OPTIMAL, start = 0;
    for (;;) {
        double best = -eps;
        int bi = -1, bj = -1;
        size_t priced = 0;
        for (int r = 0; r < m; r++) {
            int i = start + r < m ? start + r : start + r - m;
            const double *row = M + (size_t)i * n;
            double low = INFINITY;
            int lj = 0;
            for (int j = 0; j < n; j++) {
                double d = row[j] - v[j];
                if (d < low) {
                    low = d;
                    lj = j;
                }
            }
            low -= t.pot[i];
            if (low < best) {
                best = low;
                bi = i;
                bj = lj;
            }
            priced += (size_t)n;
            if (priced >= block && bi >= 0) {
                start = i + 1 < m ? i + 1 : 0;
                break;
            }
        }
        if (bi < 0) break; /* no cell has a negative reduced cost: optimal */
        if (pivots >= max_iter) {
            status = ITER_LIMIT;
            break;
        }
        pivots++;
        pivot(&t, bi, m + bj, best);
    }
    double cost = 0.0;
    for (int x = 1; x < N; x++) cost += t.flow[x] * cell_cost(&t, x, t.parent[x]);
    *cost_out = cost;
    *pivots_out = pivots;
    free(mem);
    return status;
}

static int get_f64(PyObject *obj, Py_buffer *view, int ndim, const char *name) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) return -1;
    const char *fmt = view->format ? view->format : "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<') fmt++;
    if (view->ndim != ndim || view->itemsize != 8 || strcmp(fmt, "d") != 0) {
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous %d-d float64 array", name,
                     ndim);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static PyObject *py_emd(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ao, *bo, *mo;
    long long max_iter;
    if (!PyArg_ParseTuple(args, "OOOL", &ao, &bo, &mo, &max_iter)) return NULL;
    Py_buffer A, B, Mv;
    if (get_f64(ao, &A, 1, "a") != 0) return NULL;
    if (get_f64(bo, &B, 1, "b") != 0) {
        PyBuffer_Release(&A);
        return NULL;
    }
    if (get_f64(mo, &Mv, 2, "M") != 0) {
        PyBuffer_Release(&A);
        PyBuffer_Release(&B);
        return NULL;
    }
    Py_ssize_t m = Mv.shape[0], n = Mv.shape[1];
    int status = -1;
    double cost = 0.0;
    long long pivots = 0;
    if (m < 1 || n < 1 || m > INT_MAX / 16 || n > INT_MAX / 16 || A.shape[0] != m ||
        B.shape[0] != n) {
        PyErr_SetString(PyExc_ValueError, "shapes of a, b and M do not match (or are empty)");
    } else {
        Py_BEGIN_ALLOW_THREADS status = solve((int)m, (int)n, (const double *)A.buf,
                                              (const double *)B.buf, (const double *)Mv.buf,
                                              max_iter, &cost, &pivots);
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(&A);
    PyBuffer_Release(&B);
    PyBuffer_Release(&Mv);
    if (status < 0) return NULL;
    if (status == NO_MEMORY) return PyErr_NoMemory();
    return Py_BuildValue("(diL)", cost, status, pivots);
}

static PyMethodDef methods[] = {
    {"emd", py_emd, METH_VARARGS,
     "emd(a, b, M, max_iter) -> (cost, status, pivots)\n\n"
     "Exact transport cost between float64 histograms a (m,) and b (n,) of equal mass under\n"
     "the C-contiguous float64 cost matrix M (m, n). status 0: optimal; 1: max_iter pivots\n"
     "reached; 3: internal inconsistency; 4: a cost is not finite (cost meaningless)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_transport",
    "kxtool's exact transport solver (network simplex for dense transportation problems).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__transport(void) { return PyModule_Create(&module); }
