/* CRF decoding for the serving path: Viterbi and the path posteriors, one C loop per sequence.
 *
 * The NumPy versions in slotfill/decoding/reference.py are the reference; this module computes the same
 * results (Viterbi paths identical, posteriors to float rounding) without NumPy's per-call cost,
 * which is most of the time for utterances of ~10 tokens. It takes and fills plain buffers (any
 * object with the buffer protocol, C-contiguous; slotfill/decoding/kernels.py checks dtypes and shapes)
 * and releases the interpreter lock while it works.
 *
 * Shapes: B rows, T padded steps, K labels; lengths are in 1..T.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Probabilities below this fraction of a step's total are set to 0, as in decoding.py: they change
 * no rounded confidence, and skipping them makes each step cost (live labels) x K, not K x K. */
#define FLUSH 1e-30f

static int check_size(Py_buffer *view, Py_ssize_t count, Py_ssize_t item, const char *name) {
    if (view->len != count * item) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd bytes, got %zd", name, count * item, view->len);
        return 0;
    }
    return 1;
}

static int check_lengths(const int64_t *lengths, Py_ssize_t rows, Py_ssize_t steps) {
    for (Py_ssize_t b = 0; b < rows; b++) {
        if (lengths[b] < 1 || lengths[b] > steps) {
            PyErr_Format(PyExc_ValueError, "lengths[%zd] = %lld is outside 1..%zd", b, (long long)lengths[b], steps);
            return 0;
        }
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ Viterbi
 * For each step and target label j, the best source i of score[i] + trans[i][j] (float32, lowest i on
 * ties: NumPy's argmax). Exact pruning: a target with few allowed sources
 * (kind[j] = how many, listed ascending in sources[j]) looks at those, and is checked against
 * bound[j], the highest transition into j from any other label; an open target (kind[j] = 0) takes
 * the row's best label, checked against the second-best score plus bound[j], the highest transition
 * into j. A target whose winner does not beat its bound strictly is scanned in full.
 */
static void viterbi_row(const float *em, Py_ssize_t n, Py_ssize_t K, const float *trans, const float *start,
                        const float *end, const int32_t *kind, const int32_t *sources, Py_ssize_t max_sources,
                        const float *bound, float *score, float *next, int32_t *back, int64_t *path) {
    for (Py_ssize_t j = 0; j < K; j++) score[j] = start[j] + em[j];
    for (Py_ssize_t t = 1; t < n; t++) {
        Py_ssize_t top = 0;
        for (Py_ssize_t i = 1; i < K; i++)
            if (score[i] > score[top]) top = i;
        float first = score[top], second = -INFINITY;
        for (Py_ssize_t i = 0; i < K; i++)
            if (i != top && score[i] > second) second = score[i];
        const float *top_row = trans + top * K;
        int32_t *bp = back + t * K;
        for (Py_ssize_t j = 0; j < K; j++) {
            float best;
            Py_ssize_t arg;
            int exact;
            if (kind[j] > 0) {
                const int32_t *src = sources + j * max_sources;
                arg = src[0];
                best = score[arg] + trans[arg * K + j];
                for (int32_t s = 1; s < kind[j]; s++) {
                    float v = score[src[s]] + trans[src[s] * K + j];
                    if (v > best) { best = v; arg = src[s]; }
                }
                exact = best > first + bound[j];
            } else {
                arg = top;
                best = first + top_row[j];
                exact = best > second + bound[j];
            }
            if (!exact) {
                arg = 0;
                best = score[0] + trans[j];
                for (Py_ssize_t i = 1; i < K; i++) {
                    float v = score[i] + trans[i * K + j];
                    if (v > best) { best = v; arg = i; }
                }
            }
            next[j] = best + em[t * K + j];
            bp[j] = (int32_t)arg;
        }
        memcpy(score, next, (size_t)K * sizeof(float));
    }
    Py_ssize_t current = 0;
    float best = score[0] + end[0];
    for (Py_ssize_t j = 1; j < K; j++) {
        float v = score[j] + end[j];
        if (v > best) { best = v; current = j; }
    }
    path[n - 1] = current;
    for (Py_ssize_t t = n - 1; t > 0; t--) {
        current = back[t * K + current];
        path[t - 1] = current;
    }
}

static PyObject *viterbi(PyObject *self, PyObject *args) {
    Py_buffer em, len, tr, st, en, ki, so, bo, out;
    Py_ssize_t B, T, K, S;
    if (!PyArg_ParseTuple(args, "y*y*y*y*y*y*y*y*w*nnnn", &em, &len, &tr, &st, &en, &ki, &so, &bo, &out,
                          &B, &T, &K, &S))
        return NULL;
    PyObject *result = NULL;
    float *work = NULL;
    int32_t *back = NULL;
    if (B < 0 || T < 1 || K < 1 || S < 1) {
        PyErr_SetString(PyExc_ValueError, "viterbi: bad shape");
        goto done;
    }
    if (!check_size(&em, B * T * K, 4, "emissions") || !check_size(&len, B, 8, "lengths")
        || !check_size(&tr, K * K, 4, "transitions") || !check_size(&st, K, 4, "start")
        || !check_size(&en, K, 4, "end") || !check_size(&ki, K, 4, "kind") || !check_size(&so, K * S, 4, "sources")
        || !check_size(&bo, K, 4, "bound") || !check_size(&out, B * T, 8, "paths")
        || !check_lengths((const int64_t *)len.buf, B, T))
        goto done;
    work = (float *)malloc((size_t)(2 * K) * sizeof(float));
    back = (int32_t *)malloc((size_t)(T * K) * sizeof(int32_t));
    if (work == NULL || back == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const int64_t *lengths = (const int64_t *)len.buf;
    int64_t *paths = (int64_t *)out.buf;
    memset(paths, 0, (size_t)(B * T) * sizeof(int64_t));
    for (Py_ssize_t b = 0; b < B; b++)
        viterbi_row((const float *)em.buf + b * T * K, (Py_ssize_t)lengths[b], K, (const float *)tr.buf,
                    (const float *)st.buf, (const float *)en.buf, (const int32_t *)ki.buf, (const int32_t *)so.buf, S,
                    (const float *)bo.buf, work, work + K, back, paths + b * T);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(work);
    free(back);
    PyBuffer_Release(&em); PyBuffer_Release(&len); PyBuffer_Release(&tr); PyBuffer_Release(&st);
    PyBuffer_Release(&en); PyBuffer_Release(&ki); PyBuffer_Release(&so); PyBuffer_Release(&bo);
    PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------------------------- posteriors
 * Forward-backward in probability space with per-step rescaling, as decoding.forward_backward does for
 * a batch (float32 vectors, float64 log-scales), then, along the given path: each position's marginal
 * probability of its label (conf), and the probability of each given segment [s, e) of the path,
 * exp(log_alpha[s] + running[e-1] - running[s] + log_beta[e-1] - log_z), where log_alpha and log_beta
 * are read at the path's labels and running sums the path's transition and emission scores from
 * step 1; and log Z.
 *
 * exp_trans (K, K) is exp(transitions - trans_shift) with forbidden moves 0, exp_trans_t its
 * transpose; exp_start / exp_end likewise with their shifts. trans are the scores the running sum
 * adds up. The products x @ E are sums of rows of E scaled by the live entries of x (a confident
 * tagger has few), each an axpy the compiler vectorises; on x86-64 with glibc the function is also
 * built for AVX2/FMA and the loader picks the build the CPU runs.
 */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* out = (x @ M) for x (K,) with zeros skipped, M (K, K) row-major */
static inline void row_product(const float *x, const float *M, Py_ssize_t K, float *out) {
    memset(out, 0, (size_t)K * sizeof(float));
    for (Py_ssize_t i = 0; i < K; i++) {
        float p = x[i];
        if (p == 0.0f) continue;
        const float *r = M + i * K;
        for (Py_ssize_t j = 0; j < K; j++) out[j] += p * r[j];
    }
}

/* v /= sum(v), entries below FLUSH set to 0; returns the sum */
static inline float normalise(float *v, Py_ssize_t K) {
    float total = 0.0f;
    for (Py_ssize_t j = 0; j < K; j++) total += v[j];
    float inverse = 1.0f / total;
    for (Py_ssize_t j = 0; j < K; j++) {
        float q = v[j] * inverse;
        v[j] = q < FLUSH ? 0.0f : q;
    }
    return total;
}

VECTOR_CLONES
static void posterior_row(const float *em, Py_ssize_t n, Py_ssize_t K, const float *exp_trans,
                          const float *exp_trans_t, double trans_shift, const float *exp_start, double start_shift,
                          const float *exp_end, double end_shift, const float *trans, const int64_t *path,
                          float *alpha, float *ee, float *beta, float *x, double *log_scale, double *shift,
                          double *log_alpha, double *log_beta, double *running, double *conf, double *log_z,
                          const int64_t *span_starts, const int64_t *span_ends, Py_ssize_t spans,
                          double *span_out) {
    for (Py_ssize_t t = 0; t < n; t++) {
        const float *row = em + t * K;
        float m = row[0];
        for (Py_ssize_t j = 1; j < K; j++)
            if (row[j] > m) m = row[j];
        shift[t] = (double)m;
        float *e = ee + t * K;
        for (Py_ssize_t j = 0; j < K; j++) {
            float d = row[j] - m;
            e[j] = d < -69.0f ? 0.0f : expf(d);  /* exp(-69) ~ 1e-30: flushed anyway */
        }
    }
    /* forward: alpha[t] sums to 1; log_scale[t] is the log of everything it was divided by */
    for (Py_ssize_t j = 0; j < K; j++) alpha[j] = exp_start[j] * ee[j];
    log_scale[0] = log((double)normalise(alpha, K)) + shift[0] + start_shift;
    for (Py_ssize_t t = 1; t < n; t++) {
        float *a = alpha + t * K;
        row_product(alpha + (t - 1) * K, exp_trans, K, a);
        const float *e = ee + t * K;
        for (Py_ssize_t j = 0; j < K; j++) a[j] *= e[j];
        log_scale[t] = log_scale[t - 1] + log((double)normalise(a, K)) + shift[t] + trans_shift;
    }
    const float *last = alpha + (n - 1) * K;
    double total = 0.0;
    for (Py_ssize_t j = 0; j < K; j++) total += (double)last[j] * (double)exp_end[j];
    *log_z = log(total) + log_scale[n - 1] + end_shift;

    /* backward, one step at a time, with each position's marginal as soon as its beta is known */
    memcpy(beta, exp_end, (size_t)K * sizeof(float));
    double log_b = end_shift;
    for (Py_ssize_t t = n - 1; t >= 0; t--) {
        if (t < n - 1) {
            const float *e = ee + (t + 1) * K;
            for (Py_ssize_t i = 0; i < K; i++) x[i] = e[i] * beta[i];
            row_product(x, exp_trans_t, K, beta);
            log_b += log((double)normalise(beta, K)) + shift[t + 1] + trans_shift;
        }
        const float *a = alpha + t * K;
        double norm = 0.0;
        for (Py_ssize_t j = 0; j < K; j++) norm += (double)a[j] * (double)beta[j];
        Py_ssize_t y = (Py_ssize_t)path[t];
        conf[t] = norm > 0.0 ? (double)a[y] * (double)beta[y] / norm : 0.0;
        log_alpha[t] = a[y] > 0.0f ? log((double)a[y]) + log_scale[t] : -INFINITY;
        log_beta[t] = beta[y] > 0.0f ? log((double)beta[y]) + log_b : -INFINITY;
    }
    running[0] = 0.0;
    for (Py_ssize_t t = 1; t < n; t++)
        running[t] = running[t - 1] + ((double)trans[path[t - 1] * K + path[t]] + (double)em[t * K + path[t]]);
    for (Py_ssize_t i = 0; i < spans; i++) {
        Py_ssize_t s = (Py_ssize_t)span_starts[i], e = (Py_ssize_t)span_ends[i] - 1;
        double p = exp(log_alpha[s] + running[e] - running[s] + log_beta[e] - *log_z);
        span_out[i] = p < 1.0 ? p : 1.0;
    }
}

static PyObject *posteriors(PyObject *self, PyObject *args) {
    Py_buffer em, len, et, ett, es, ee_, tr, pa, sr, ss, se, co, so, lz;
    Py_ssize_t B, T, K, N;
    double trans_shift, start_shift, end_shift;
    if (!PyArg_ParseTuple(args, "y*y*y*y*dy*dy*dy*y*y*y*y*w*w*w*nnnn", &em, &len, &et, &ett, &trans_shift, &es,
                          &start_shift, &ee_, &end_shift, &tr, &pa, &sr, &ss, &se, &co, &so, &lz, &B, &T, &K, &N))
        return NULL;
    PyObject *result = NULL;
    void *work = NULL;
    if (B < 0 || T < 1 || K < 1 || N < 0) {
        PyErr_SetString(PyExc_ValueError, "posteriors: bad shape");
        goto done;
    }
    if (!check_size(&em, B * T * K, 4, "emissions") || !check_size(&len, B, 8, "lengths")
        || !check_size(&et, K * K, 4, "exp_trans") || !check_size(&ett, K * K, 4, "exp_trans_t")
        || !check_size(&es, K, 4, "exp_start") || !check_size(&ee_, K, 4, "exp_end")
        || !check_size(&tr, K * K, 4, "transitions") || !check_size(&pa, B * T, 8, "paths")
        || !check_size(&sr, N, 8, "span_rows") || !check_size(&ss, N, 8, "span_starts")
        || !check_size(&se, N, 8, "span_ends") || !check_size(&co, B * T, 8, "conf")
        || !check_size(&so, N, 8, "span_out") || !check_size(&lz, B, 8, "log_z")
        || !check_lengths((const int64_t *)len.buf, B, T))
        goto done;
    {
        const int64_t *paths = (const int64_t *)pa.buf;
        for (Py_ssize_t i = 0; i < B * T; i++) {
            if (paths[i] < 0 || paths[i] >= K) {
                PyErr_Format(PyExc_ValueError, "paths hold label %lld, outside 0..%zd", (long long)paths[i], K - 1);
                goto done;
            }
        }
        /* Spans come row by row (rows ascending), each within its row's length. */
        const int64_t *rows = (const int64_t *)sr.buf, *starts = (const int64_t *)ss.buf;
        const int64_t *ends = (const int64_t *)se.buf, *lengths = (const int64_t *)len.buf;
        for (Py_ssize_t i = 0; i < N; i++) {
            if (rows[i] < 0 || rows[i] >= B || (i > 0 && rows[i] < rows[i - 1])) {
                PyErr_Format(PyExc_ValueError, "span %zd: row %lld is outside 0..%zd or out of order", i,
                             (long long)rows[i], B - 1);
                goto done;
            }
            if (starts[i] < 0 || ends[i] <= starts[i] || ends[i] > lengths[rows[i]]) {
                PyErr_Format(PyExc_ValueError, "span %zd: [%lld, %lld) is empty or outside its row's %lld steps", i,
                             (long long)starts[i], (long long)ends[i], (long long)lengths[rows[i]]);
                goto done;
            }
        }
    }
    /* doubles: log_scale, shift, log_alpha, log_beta, running (T each); floats: alpha, ee (T, K), beta, x (K) */
    work = malloc((size_t)(5 * T) * sizeof(double) + (size_t)(2 * T * K + 2 * K) * sizeof(float));
    if (work == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    const int64_t *lengths = (const int64_t *)len.buf, *rows = (const int64_t *)sr.buf;
    const int64_t *starts = (const int64_t *)ss.buf, *ends = (const int64_t *)se.buf;
    double *log_scale = (double *)work, *shift = log_scale + T, *log_alpha = shift + T, *log_beta = log_alpha + T;
    double *running = log_beta + T;
    float *alpha = (float *)(running + T), *ee = alpha + T * K, *beta = ee + T * K, *x = beta + K;
    memset(co.buf, 0, (size_t)(B * T) * sizeof(double));
    Py_ssize_t first = 0;
    for (Py_ssize_t b = 0; b < B; b++) {
        Py_ssize_t count = 0;
        while (first + count < N && rows[first + count] == b) count++;
        posterior_row((const float *)em.buf + b * T * K, (Py_ssize_t)lengths[b], K, (const float *)et.buf,
                      (const float *)ett.buf, trans_shift, (const float *)es.buf, start_shift, (const float *)ee_.buf,
                      end_shift, (const float *)tr.buf, (const int64_t *)pa.buf + b * T, alpha, ee, beta, x, log_scale,
                      shift, log_alpha, log_beta, running, (double *)co.buf + b * T, (double *)lz.buf + b,
                      starts + first, ends + first, count, (double *)so.buf + first);
        first += count;
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    free(work);
    PyBuffer_Release(&em); PyBuffer_Release(&len); PyBuffer_Release(&et); PyBuffer_Release(&ett);
    PyBuffer_Release(&es); PyBuffer_Release(&ee_); PyBuffer_Release(&tr); PyBuffer_Release(&pa);
    PyBuffer_Release(&sr); PyBuffer_Release(&ss); PyBuffer_Release(&se); PyBuffer_Release(&co);
    PyBuffer_Release(&so); PyBuffer_Release(&lz);
    return result;
}

static PyMethodDef methods[] = {
    {"viterbi", viterbi, METH_VARARGS,
     "viterbi(emissions, lengths, transitions, start, end, kind, sources, bound, paths_out, B, T, K, S)"},
    {"posteriors", posteriors, METH_VARARGS,
     "posteriors(emissions, lengths, exp_trans, exp_trans_t, trans_shift, exp_start, start_shift, exp_end, "
     "end_shift, transitions, paths, span_rows, span_starts, span_ends, conf_out, span_out, log_z_out, B, T, K, N)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "slotfill.decoding._kernels", "CRF decoding kernels.", -1, methods};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&module); }
