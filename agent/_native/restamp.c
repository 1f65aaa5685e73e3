/*
 * The receiver's hot path in C: the planned path of agent/pipeline/guest.py for one guest event; the passing
 * case of the receiver's attribute checks (check_passes); and the common case of checking a guest's signature
 * (Checker, signing.checker.EventChecker's checks with libsodium's Ed25519).
 *
 * Restamper(shapes, texts, next_seq).stamp(event, seq, head, host_json) takes a parsed guest event (a dict as
 * orjson makes it) and returns what the Python planned path makes of it, or None when it leaves it to Python:
 *
 *     (digest, body_head, body_tail, id, source, type, sequence)
 *
 * where the event's JSON is body_head + dssematerial + body_tail and digest is what the dssematerial signs.
 * It reads the event and never changes it. Everything that could send the event elsewhere (a shape not planned
 * yet, a null, a float or a big integer, a time with an offset, a key that is not ASCII, a string that is not
 * valid Unicode, ...) is decided before the sequence number is taken, so None always means "nothing happened":
 * the Python path then stamps the event, or refuses it, exactly as it does without this module. The output is
 * byte for byte the Python path's; tests compare the two.
 *
 * Inputs shared with the Python path: ``shapes`` (attribute-name tuple -> plan object whose ``native``
 * attribute is made by guest._native_plan), ``texts`` (string -> SHA-256, the digest cache), and ``next_seq``
 * (source -> next sequence number). Per batch: ``head`` (the digests of the host's attributes up to the
 * sequence's) and ``host_json`` (the host's attributes as JSON members, each led by a comma).
 *
 * SHA-256 is OpenSSL's (libcrypto: SHA-NI where the CPU has it). A Restamper is not thread-safe: one per
 * Stamper, called with the GIL held.
 */
#define PY_SSIZE_T_CLEAN
#define OPENSSL_SUPPRESS_DEPRECATED
#include <Python.h>
#include <openssl/sha.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

/* what the Python path does with names and values (keep equal to guest.py, stamp.py) */
#define MAX_NAMES 64           /* guest.MAX_SHAPE_NAMES: larger shapes are never planned */
#define MAX_CACHED_TEXT 256    /* stamp._MAX_CACHED_TEXT */
#define MAX_TEXTS 16384        /* the texts cache starts again above this */
#define MAX_DEPTH 128          /* deeper data is left to Python (the receiver refuses far less deep) */
#define MAX_SAFE_INT 9007199254740991LL
#define BUF_KEEP (64 * 1024)   /* larger work buffers are freed after the event */

/* positions in the plan's ``special`` bytes (position + 1 in the event, 0: absent) */
enum { P_ID, P_SOURCE, P_SPEC, P_TYPE, P_DCT, P_SCHEMA, P_SUBJECT, P_TIME, P_DATA, P_MAT, P_SIG, P_COUNT };

/* results of the helpers: done, leave the event to Python, or a Python exception is set */
#define OK 0
#define PASS 1
#define FAIL (-1)

static const unsigned char EMPTY[32] = {
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int grow(Buf *b, size_t more)
{
    if (more > (size_t)PY_SSIZE_T_MAX - b->n) {
        PyErr_NoMemory();
        return FAIL;
    }
    size_t need = b->n + more;
    if (need <= b->cap)
        return OK;
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < need)
        cap = cap > (size_t)PY_SSIZE_T_MAX / 2 ? need : cap * 2;
    char *p = PyMem_Realloc(b->p, cap);
    if (p == NULL) {
        PyErr_NoMemory();
        return FAIL;
    }
    b->p = p;
    b->cap = cap;
    return OK;
}

static inline int put(Buf *b, const void *s, size_t n)
{
    if (grow(b, n))
        return FAIL;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    return OK;
}

#define PUTS(b, lit) put((b), (lit), sizeof(lit) - 1)

/* a JSON string as orjson and RFC 8785 both write it: '"' and '\' escaped, control characters as \b \t \n
 * \f \r or \u00xx, everything else (DEL, non-ASCII) as it is */
static int put_jstr(Buf *b, const char *s, Py_ssize_t n)
{
    static const char hex[] = "0123456789abcdef";
    if ((size_t)n > ((size_t)PY_SSIZE_T_MAX - 2) / 6) {
        PyErr_NoMemory();
        return FAIL;
    }
    if (grow(b, (size_t)n * 6 + 2))
        return FAIL;
    char *o = b->p + b->n;
    *o++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *o++ = (char)c;
            continue;
        }
        *o++ = '\\';
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '\b': *o++ = 'b'; break;
        case '\f': *o++ = 'f'; break;
        case '\n': *o++ = 'n'; break;
        case '\r': *o++ = 'r'; break;
        case '\t': *o++ = 't'; break;
        default:
            *o++ = 'u';
            *o++ = '0';
            *o++ = '0';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o++ = '"';
    b->n = (size_t)(o - b->p);
    return OK;
}

/* UTF-8 of an exact str; PASS for a subclass or a string with lone surrogates (orjson refuses those) */
static int utf8(PyObject *v, const char **s, Py_ssize_t *n)
{
    if (!PyUnicode_CheckExact(v))
        return PASS;
    *s = PyUnicode_AsUTF8AndSize(v, n);
    if (*s == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError))
            return FAIL;
        PyErr_Clear();
        return PASS;
    }
    return OK;
}

/* an exact int within a signed 64-bit integer; PASS otherwise (bool is not an exact int) */
static int int64(PyObject *v, long long *out)
{
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (*out == -1 && PyErr_Occurred())
        return FAIL;
    return overflow ? PASS : OK;
}

/* decimal of x into out (at least 21 bytes), its length; snprintf costs more than the rest of a short value */
static int itoa64(long long x, char *out)
{
    char tmp[24];
    int n = 0, k = 0;
    unsigned long long u = x < 0 ? 0ULL - (unsigned long long)x : (unsigned long long)x;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (x < 0)
        out[k++] = '-';
    while (n)
        out[k++] = tmp[--n];
    return k;
}

/* the low-level calls: OpenSSL 3's one-shot SHA256() looks the algorithm up on every call, which costs six
 * times the hash of a short string */
static inline void sha(const void *s, size_t n, unsigned char out[32])
{
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, s, n);
    SHA256_Final(out, &ctx);
}

typedef struct {
    PyObject_HEAD
    PyObject *shapes;   /* dict: attribute names -> plan */
    PyObject *texts;    /* dict: str -> 32-byte digest */
    PyObject *next_seq; /* callable: source -> int */
    Buf body, data;
    int busy;
    /* the last normalized time and its digest: times repeat within a second */
    char last_time[20];
    unsigned char last_time_digest[32];
    int have_time;
} Restamper;

/* the digest of an attribute value's text (signing.event.attr_text, checker._h_value) into out; PASS for what
 * Python should judge */
static int value_digest(PyObject *v, unsigned char out[32])
{
    if (PyUnicode_CheckExact(v)) {
        const char *s;
        Py_ssize_t n;
        int r = utf8(v, &s, &n);
        if (r == OK)
            sha(s, (size_t)n, out);
        return r;
    }
    if (v == Py_True || v == Py_False) {
        sha(v == Py_True ? "true" : "false", v == Py_True ? 4 : 5, out);
        return OK;
    }
    if (PyLong_CheckExact(v)) {
        long long x;
        int r = int64(v, &x);
        if (r == OK) {
            char num[24];
            sha(num, (size_t)itoa64(x, num), out);
        }
        return r;
    }
    return PASS;
}

/* value_digest through the ``texts`` cache (stamp.Stamper._hash_text) for strings when ``cache`` */
static int text_digest(Restamper *self, PyObject *v, int cache, unsigned char out[32])
{
    cache = cache && PyUnicode_CheckExact(v);
    if (cache) {
        PyObject *hit = PyDict_GetItemWithError(self->texts, v);
        if (hit != NULL && PyBytes_CheckExact(hit) && PyBytes_GET_SIZE(hit) == 32) {
            memcpy(out, PyBytes_AS_STRING(hit), 32);
            return OK;
        }
        if (hit == NULL && PyErr_Occurred())
            return FAIL;
    }
    int r = value_digest(v, out);
    if (r != OK || !cache || PyUnicode_GET_LENGTH(v) > MAX_CACHED_TEXT)
        return r;
    if (PyDict_GET_SIZE(self->texts) > MAX_TEXTS)
        PyDict_Clear(self->texts);
    PyObject *d = PyBytes_FromStringAndSize((const char *)out, 32);
    if (d == NULL)
        return FAIL;
    r = PyDict_SetItem(self->texts, v, d);
    Py_DECREF(d);
    return r < 0 ? FAIL : OK;
}

/* an attribute value as orjson writes it (strings, booleans, 64-bit integers); PASS for anything else */
static int put_value(Buf *b, PyObject *v)
{
    if (PyUnicode_CheckExact(v)) {
        const char *s;
        Py_ssize_t n;
        int r = utf8(v, &s, &n);
        return r != OK ? r : put_jstr(b, s, n);
    }
    if (v == Py_True)
        return PUTS(b, "true");
    if (v == Py_False)
        return PUTS(b, "false");
    if (PyLong_CheckExact(v)) {
        long long x;
        int r = int64(v, &x);
        if (r != OK)
            return r;
        char num[24];
        int k = itoa64(x, num);
        return put(b, num, (size_t)k);
    }
    return PASS;
}

typedef struct {
    const char *k;
    Py_ssize_t n;
    PyObject *v;
} Member;

static int member_cmp(const void *a, const void *b)
{
    const Member *x = a, *y = b;
    Py_ssize_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->k, y->k, (size_t)n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* RFC 8785 (JCS) of event data under the contract's rules (codec.canonical.prepare), for the values whose
 * rendering needs nothing but this: null, booleans, integers within ±(2^53-1), strings, arrays, and objects
 * with ASCII keys (where UTF-8 byte order is JCS's UTF-16 order). PASS for floats, big integers, other keys. */
static int put_jcs(Buf *b, PyObject *v, int depth)
{
    if (depth > MAX_DEPTH)
        return PASS;
    if (v == Py_None)
        return PUTS(b, "null");
    if (PyUnicode_CheckExact(v) || v == Py_True || v == Py_False)
        return put_value(b, v);
    if (PyLong_CheckExact(v)) {
        long long x;
        int r = int64(v, &x);
        if (r != OK)
            return r;
        if (x > MAX_SAFE_INT || x < -MAX_SAFE_INT)
            return PASS;
        char num[24];
        int k = itoa64(x, num);
        return put(b, num, (size_t)k);
    }
    if (PyList_CheckExact(v)) {
        if (PUTS(b, "["))
            return FAIL;
        /* nothing here runs Python code, so the list keeps its items while it is written */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
            if (i && PUTS(b, ","))
                return FAIL;
            int r = put_jcs(b, PyList_GET_ITEM(v, i), depth + 1);
            if (r != OK)
                return r;
        }
        return PUTS(b, "]");
    }
    if (PyDict_CheckExact(v)) {
        Py_ssize_t size = PyDict_GET_SIZE(v);
        Member few[16];
        Member *m = few;
        if (size > 16) {
            m = PyMem_Malloc((size_t)size * sizeof(Member));
            if (m == NULL) {
                PyErr_NoMemory();
                return FAIL;
            }
        }
        int r = OK;
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *val;
        while (PyDict_Next(v, &pos, &k, &val)) {
            if (!PyUnicode_CheckExact(k) || !PyUnicode_IS_ASCII(k)) {
                r = PASS;
                break;
            }
            m[i].k = (const char *)PyUnicode_DATA(k);
            m[i].n = PyUnicode_GET_LENGTH(k);
            m[i].v = val;
            i++;
        }
        if (r == OK) {
            qsort(m, (size_t)i, sizeof(Member), member_cmp);
            r = PUTS(b, "{");
            for (Py_ssize_t j = 0; r == OK && j < i; j++) {
                if (j)
                    r = PUTS(b, ",");
                if (r == OK)
                    r = put_jstr(b, m[j].k, m[j].n);
                if (r == OK)
                    r = PUTS(b, ":");
                if (r == OK)
                    r = put_jcs(b, m[j].v, depth + 1);
            }
            if (r == OK)
                r = PUTS(b, "}");
        }
        if (m != few)
            PyMem_Free(m);
        return r;
    }
    return PASS;
}

static int digits(const char *s, int n)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* signing.event.normalize_time for UTC times: ``YYYY-MM-DD[Tt ]HH:MM:SS[.fraction][Zz]`` of a real date as
 * ``YYYY-MM-DDTHH:MM:SSZ``; PASS for offsets, years before 1000, or anything Python should judge */
static int normalize_time(const char *s, Py_ssize_t n, char out[20])
{
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (n < 20 || (s[n - 1] != 'Z' && s[n - 1] != 'z'))
        return PASS;
    if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || s[13] != ':' ||
        s[16] != ':')
        return PASS;
    if (n > 20) {
        if (s[19] != '.' || n < 22) /* a fraction has one digit at least */
            return PASS;
        for (Py_ssize_t i = 20; i < n - 1; i++)
            if (s[i] < '0' || s[i] > '9')
                return PASS;
    }
    int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
    int h = digits(s + 11, 2), mi = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (y < 1000 || mo < 1 || mo > 12 || d < 1 || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0)
        return PASS;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > days[mo - 1] + (mo == 2 && leap))
        return PASS;
    if (sec > 59)
        sec = 59;
    memcpy(out, s, 19);
    out[10] = 'T';
    out[17] = (char)('0' + sec / 10);
    out[18] = (char)('0' + sec % 10);
    out[19] = 'Z';
    return OK;
}

static int Restamper_init(Restamper *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"shapes", "texts", "next_seq", NULL};
    PyObject *shapes, *texts, *next_seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O:Restamper", kwlist, &PyDict_Type, &shapes, &PyDict_Type,
                                     &texts, &next_seq))
        return -1;
    if (!PyCallable_Check(next_seq)) {
        PyErr_SetString(PyExc_TypeError, "next_seq must be callable");
        return -1;
    }
    Py_INCREF(shapes);
    Py_INCREF(texts);
    Py_INCREF(next_seq);
    Py_XSETREF(self->shapes, shapes);
    Py_XSETREF(self->texts, texts);
    Py_XSETREF(self->next_seq, next_seq);
    self->have_time = 0;
    return 0;
}

static int Restamper_traverse(Restamper *self, visitproc visit, void *arg)
{
    Py_VISIT(self->shapes);
    Py_VISIT(self->texts);
    Py_VISIT(self->next_seq);
    return 0;
}

static int Restamper_clear(Restamper *self)
{
    Py_CLEAR(self->shapes);
    Py_CLEAR(self->texts);
    Py_CLEAR(self->next_seq);
    return 0;
}

static void Restamper_dealloc(Restamper *self)
{
    PyObject_GC_UnTrack(self);
    Restamper_clear(self);
    PyMem_Free(self->body.p);
    PyMem_Free(self->data.p);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *native_name, *str_specversion, *str_id, *str_source, *str_type, *str_datacontenttype,
    *str_dataschema, *str_subject, *str_time, *str_data, *str_data_base64, *str_dssematerial, *str_signedextattrs;

/* the work of one call, with self->busy set; NULL with no exception set: leave the event to Python */
static PyObject *restamp(Restamper *self, PyObject *ev, PyObject *seq_arg, PyObject *head, PyObject *host)
{
    PyObject *vals[MAX_NAMES];
    unsigned char h[9][32]; /* id, source, specversion, type, datacontenttype, dataschema, subject, time, data */
    Py_ssize_t n = PyDict_GET_SIZE(ev);
    if (n > MAX_NAMES || self->shapes == NULL)
        return NULL;

    /* the plan of this shape (its attribute names, in order); no null values */
    PyObject *names = PyTuple_New(n);
    if (names == NULL)
        return NULL;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    int pass = 0;
    while (PyDict_Next(ev, &pos, &k, &v)) {
        if (v == Py_None)
            pass = 1;
        Py_INCREF(k);
        PyTuple_SET_ITEM(names, i, k);
        vals[i++] = v;
    }
    PyObject *shape = pass ? NULL : PyDict_GetItemWithError(self->shapes, names);
    Py_DECREF(names);
    if (shape == NULL || shape == Py_None)
        return NULL;
    Py_INCREF(shape);
    PyObject *plan = PyObject_GetAttr(shape, native_name);
    Py_DECREF(shape);
    if (plan == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError))
            PyErr_Clear();
        return NULL;
    }
    PyObject *result = NULL;
    PyObject *keys_json, *special_b, *rest, *tail_names;
    /* held across next_seq, which runs Python code; released at done */
    PyObject *held_id = NULL, *held_source = NULL, *held_type = NULL, *seq_obj = NULL, *seq_text = NULL;
    if (!PyTuple_CheckExact(plan) || PyTuple_GET_SIZE(plan) != 4)
        goto done;
    keys_json = PyTuple_GET_ITEM(plan, 0);
    special_b = PyTuple_GET_ITEM(plan, 1);
    rest = PyTuple_GET_ITEM(plan, 2);
    tail_names = PyTuple_GET_ITEM(plan, 3);
    if (!PyTuple_CheckExact(keys_json) || PyTuple_GET_SIZE(keys_json) != n || !PyBytes_CheckExact(special_b) ||
        PyBytes_GET_SIZE(special_b) != P_COUNT || !PyTuple_CheckExact(rest) || !PyBytes_CheckExact(tail_names))
        goto done;
    PyObject *sp[P_COUNT];
    for (int j = 0; j < P_COUNT; j++) {
        int p = (unsigned char)PyBytes_AS_STRING(special_b)[j];
        if (p > n)
            goto done;
        sp[j] = p ? vals[p - 1] : NULL;
    }

    /* what the Python path checks before it changes anything */
    PyObject *ev_id = sp[P_ID], *source = sp[P_SOURCE];
    if (ev_id == NULL || source == NULL || sp[P_SPEC] == NULL || sp[P_TYPE] == NULL)
        goto done;
    if (!PyUnicode_CheckExact(ev_id) || !PyUnicode_CheckExact(source))
        goto done;
    if (sp[P_TIME] && !PyUnicode_CheckExact(sp[P_TIME]))
        goto done;
    if (sp[P_MAT] && (!PyUnicode_CheckExact(sp[P_MAT]) || PyUnicode_GET_LENGTH(sp[P_MAT]) == 0))
        goto done;
    if (sp[P_MAT] && sp[P_SIG] && (!PyUnicode_CheckExact(sp[P_SIG]) || PyUnicode_GET_LENGTH(sp[P_SIG]) == 0))
        goto done;
    if (sp[P_DATA] && PyUnicode_CheckExact(sp[P_DATA]))
        goto done;

    /* the digests of the context attributes */
    const char *s;
    Py_ssize_t len;
    int r;
    if ((r = utf8(ev_id, &s, &len)) != OK)
        goto failed;
    sha(s, (size_t)len, h[0]);
    static const int cached[] = {P_SOURCE, P_SPEC, P_TYPE, P_DCT, P_SCHEMA, P_SUBJECT};
    for (int j = 0; j < 6; j++) {
        int p = cached[j];
        if (sp[p] == NULL)
            memcpy(h[p], EMPTY, 32);
        else if ((r = text_digest(self, sp[p], 1, h[p])) != OK)
            goto failed;
    }
    if (sp[P_TIME] == NULL) {
        memcpy(h[P_TIME], EMPTY, 32);
    } else {
        char t[20];
        if ((r = utf8(sp[P_TIME], &s, &len)) != OK || (r = normalize_time(s, len, t)) != OK)
            goto failed;
        if (!self->have_time || memcmp(t, self->last_time, 20) != 0) {
            memcpy(self->last_time, t, 20);
            sha(t, 20, self->last_time_digest);
            self->have_time = 1;
        }
        memcpy(h[P_TIME], self->last_time_digest, 32);
    }
    Buf *data = &self->data, *body = &self->body;
    data->n = body->n = 0;
    int has_data = sp[P_DATA] != NULL;
    if (sp[P_DATA] == NULL) {
        memcpy(h[P_DATA], EMPTY, 32);
    } else {
        if ((r = put_jcs(data, sp[P_DATA], 0)) != OK)
            goto failed;
        sha(data->p, data->n, h[P_DATA]);
    }

    /* the event JSON up to the sequence: the guest's attributes in their order but for those the host drops,
     * the guest's signature material moved, then the host's */
    if ((r = PUTS(body, "{")) != OK)
        goto failed;
    int first = 1;
    for (i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(keys_json, i);
        if (key == Py_None)
            continue;
        if (!PyBytes_CheckExact(key))
            goto done;
        if ((!first && (r = PUTS(body, ",")) != OK) ||
            (r = put(body, PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key))) != OK ||
            (r = put_value(body, vals[i])) != OK)
            goto failed;
        first = 0;
    }
    if (first)
        goto done; /* not a shape the plan makes (id, source, ... are always written) */
    if (sp[P_MAT]) {
        if ((r = PUTS(body, ",\"guestdssematerial\":")) != OK || (r = put_value(body, sp[P_MAT])) != OK)
            goto failed;
        if (sp[P_SIG] &&
            ((r = PUTS(body, ",\"guestsignedextattrs\":")) != OK || (r = put_value(body, sp[P_SIG])) != OK))
            goto failed;
    }
    if ((r = put(body, PyBytes_AS_STRING(host), (size_t)PyBytes_GET_SIZE(host))) != OK)
        goto failed;

    /* the extension attributes after the host's, sorted: name digest, value digest */
    Py_ssize_t nrest = PyTuple_GET_SIZE(rest);
    if (nrest > MAX_NAMES + 2)
        goto done;
    unsigned char hrest[MAX_NAMES + 2][64];
    for (i = 0; i < nrest; i++) {
        PyObject *item = PyTuple_GET_ITEM(rest, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3)
            goto done;
        PyObject *hn = PyTuple_GET_ITEM(item, 0), *pn = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(hn) || PyBytes_GET_SIZE(hn) != 32 || !PyLong_CheckExact(pn))
            goto done;
        long p = PyLong_AsLong(pn);
        if (p < 0 || p >= n)
            goto done;
        memcpy(hrest[i], PyBytes_AS_STRING(hn), 32);
        int cache = PyObject_IsTrue(PyTuple_GET_ITEM(item, 2));
        if (cache < 0)
            goto done;
        if ((r = text_digest(self, vals[p], cache, hrest[i] + 32)) != OK)
            goto failed;
    }

    /* the sequence number: from here on the event is this path's. next_seq runs Python code, which could
     * change the event, so what is still needed of it is held */
    held_id = Py_NewRef(ev_id);
    held_source = Py_NewRef(source);
    held_type = Py_NewRef(sp[P_TYPE]);
    if (seq_arg == Py_None) {
        PyObject *next_seq = Py_NewRef(self->next_seq);
        seq_obj = PyObject_CallOneArg(next_seq, held_source);
        Py_DECREF(next_seq);
        if (seq_obj == NULL)
            goto done;
        if (!PyLong_CheckExact(seq_obj)) {
            PyErr_Format(PyExc_TypeError, "next_seq returned %.40s, not an int", Py_TYPE(seq_obj)->tp_name);
            goto done;
        }
    } else {
        seq_obj = Py_NewRef(seq_arg); /* an exact int: checked on the way in */
    }
    char seq_small[24];
    const char *seq_b = seq_small;
    Py_ssize_t seq_n;
    long long seq;
    if ((r = int64(seq_obj, &seq)) == FAIL)
        goto done;
    if (r == OK) {
        seq_n = itoa64(seq, seq_small);
    } else { /* beyond 64 bits: what Python's "%d" writes */
        seq_text = PyObject_Str(seq_obj);
        if (seq_text == NULL || (seq_b = PyUnicode_AsUTF8AndSize(seq_text, &seq_n)) == NULL)
            goto done;
    }
    if (PUTS(body, ",\"sequence\":\"") || put(body, seq_b, (size_t)seq_n) || PUTS(body, "\"") ||
        put(body, PyBytes_AS_STRING(tail_names), (size_t)PyBytes_GET_SIZE(tail_names)))
        goto done;

    unsigned char h_seq[32], digest[32];
    sha(seq_b, (size_t)seq_n, h_seq);
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    SHA256_Update(&ctx, h, sizeof h);
    SHA256_Update(&ctx, PyBytes_AS_STRING(head), (size_t)PyBytes_GET_SIZE(head));
    SHA256_Update(&ctx, h_seq, 32);
    SHA256_Update(&ctx, hrest, (size_t)nrest * 64);
    SHA256_Final(digest, &ctx);

    PyObject *tail;
    if (!has_data) {
        tail = PyBytes_FromStringAndSize("\"}", 2);
    } else {
        static const char lead[] = "\",\"data\":";
        tail = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(sizeof lead - 1 + data->n + 1));
        if (tail != NULL) {
            char *o = PyBytes_AS_STRING(tail);
            memcpy(o, lead, sizeof lead - 1);
            memcpy(o + sizeof lead - 1, data->p, data->n);
            o[sizeof lead - 1 + data->n] = '}';
        }
    }
    if (tail == NULL)
        goto done;
    PyObject *d = PyBytes_FromStringAndSize((const char *)digest, 32);
    PyObject *bh = PyBytes_FromStringAndSize(body->p, (Py_ssize_t)body->n);
    result = d && bh ? PyTuple_New(7) : NULL;
    if (result == NULL) {
        Py_XDECREF(d);
        Py_XDECREF(bh);
        Py_DECREF(tail);
        goto done;
    }
    PyTuple_SET_ITEM(result, 0, d);
    PyTuple_SET_ITEM(result, 1, bh);
    PyTuple_SET_ITEM(result, 2, tail);
    PyTuple_SET_ITEM(result, 3, Py_NewRef(held_id));
    PyTuple_SET_ITEM(result, 4, Py_NewRef(held_source));
    PyTuple_SET_ITEM(result, 5, Py_NewRef(held_type));
    PyTuple_SET_ITEM(result, 6, Py_NewRef(seq_obj));
    goto done;

failed:
    if (r == PASS)
        result = NULL; /* Python's */
done:
    Py_XDECREF(held_id);
    Py_XDECREF(held_source);
    Py_XDECREF(held_type);
    Py_XDECREF(seq_obj);
    Py_XDECREF(seq_text);
    Py_DECREF(plan);
    return result;
}

static PyObject *Restamper_stamp(Restamper *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "stamp(event, seq, head, host_json) takes 4 arguments");
        return NULL;
    }
    PyObject *ev = args[0], *seq_arg = args[1], *head = args[2], *host = args[3];
    if (!PyBytes_CheckExact(head) || !PyBytes_CheckExact(host)) {
        PyErr_SetString(PyExc_TypeError, "head and host_json must be bytes");
        return NULL;
    }
    if (!PyDict_CheckExact(ev) || (seq_arg != Py_None && !PyLong_CheckExact(seq_arg)))
        Py_RETURN_NONE; /* Python's to judge */
    if (self->shapes == NULL || self->texts == NULL || self->next_seq == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Restamper was not initialised");
        return NULL;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Restamper.stamp is not re-entrant");
        return NULL;
    }
    self->busy = 1;
    PyObject *result = restamp(self, ev, seq_arg, head, host);
    self->busy = 0;
    /* a huge event does not keep its buffers: ordinary ones are a few hundred bytes */
    if (self->body.cap > BUF_KEEP) {
        PyMem_Free(self->body.p);
        self->body = (Buf){NULL, 0, 0};
    }
    if (self->data.cap > BUF_KEEP) {
        PyMem_Free(self->data.p);
        self->data = (Buf){NULL, 0, 0};
    }
    if (result == NULL && !PyErr_Occurred())
        Py_RETURN_NONE;
    return result;
}

static PyMethodDef Restamper_methods[] = {
    {"stamp", (PyCFunction)(void (*)(void))Restamper_stamp, METH_FASTCALL,
     "stamp(event, seq, head, host_json) -> (digest, body_head, body_tail, id, source, type, sequence) or None"},
    {NULL, NULL, 0, NULL},
};

/* ---- the receiver's attribute checks (receiver.validate.check_attributes), the passing case ---- */

/* names the checks leave alone: the required ones (checked first), the data, and the names the host drops or
 * writes itself (receiver.validate._SKIP) */
static const char *const SKIP[] = {"specversion", "id", "source", "type", "data", "guestdssematerial",
                                   "guestsignedextattrs", "guesthostid", "guesthostreceivedat", "guestsequence",
                                   "guesthostpeer", NULL};
/* the host's own attributes: left alone too unless the event carries a dssematerial that is not empty (the
 * guest's values are then kept, as guest<name>, and checked as any extension is) */
static const char *const HOSTS[] = {"hostid", "hostreceivedat", "sequence", "hostpeer", NULL};

static int name_is(const char *s, Py_ssize_t n, const char *const *names)
{
    for (; *names; names++)
        if ((size_t)n == strlen(*names) && memcmp(s, *names, (size_t)n) == 0)
            return 1;
    return 0;
}

/* a str holding no character a CloudEvents String excludes (model.NOT_IN_STRINGS): the control characters
 * U+0000-U+001F and U+007F-U+009F, surrogates, and the noncharacters */
static int allowed_text(PyObject *v)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    if (PyUnicode_IS_ASCII(v)) {
        const unsigned char *s = (const unsigned char *)PyUnicode_DATA(v);
        for (Py_ssize_t i = 0; i < n; i++)
            if (s[i] < 0x20 || s[i] == 0x7f)
                return 0;
        return 1;
    }
    int kind = PyUnicode_KIND(v);
    const void *data = PyUnicode_DATA(v);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c < 0x20 || (c >= 0x7f && c <= 0x9f) || (c >= 0xd800 && c <= 0xdfff) || (c >= 0xfdd0 && c <= 0xfdef) ||
            (c & 0xfffe) == 0xfffe)
            return 0;
    }
    return 1;
}

/* a non-empty exact str of allowed characters */
static int some_text(PyObject *v)
{
    return v != NULL && PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) > 0 && allowed_text(v);
}

/* validate._RFC3339 without its space: YYYY-MM-DD[Tt]HH:MM:SS[.digits](Z|z|+HH:MM|-HH:MM), ASCII digits, nothing
   after (a space between date and time is the receiver's to refuse, with its reason) */
static int rfc3339(const char *s, Py_ssize_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd";
    if (n < 20)
        return 0;
    for (int i = 0; i < 19; i++) {
        char c = s[i];
        if (shape[i] == 'd' ? (c < '0' || c > '9') : shape[i] == 'T' ? (c != 'T' && c != 't') : c != shape[i])
            return 0;
    }
    Py_ssize_t i = 19;
    if (s[i] == '.') {
        Py_ssize_t start = ++i;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
        if (i == start)
            return 0;
    }
    if (i == n - 1)
        return s[i] == 'Z' || s[i] == 'z';
    if (i != n - 6 || (s[i] != '+' && s[i] != '-') || s[i + 3] != ':')
        return 0;
    return s[i + 1] >= '0' && s[i + 1] <= '9' && s[i + 2] >= '0' && s[i + 2] <= '9' && s[i + 4] >= '0' &&
           s[i + 4] <= '9' && s[i + 5] >= '0' && s[i + 5] <= '9';
}

/* is the nesting of ``v`` (validate.json_depth: a scalar 0, {} 1) at most ``left``, and holds it no float that
 * may be an integer too large for orjson (which parses an integer beyond its 64 bits as a rounded float: from
 * 2^64 up, or from -2^63 down)? Such an event goes to the Python checks, which parse it again exactly. */
static int nests_within(PyObject *v, int left)
{
    if (PyFloat_CheckExact(v)) {
        double d = PyFloat_AS_DOUBLE(v);
        return d < 18446744073709551616.0 && d > -9223372036854775808.0;
    }
    if (PyDict_CheckExact(v)) {
        if (left == 0)
            return 0;
        Py_ssize_t pos = 0;
        PyObject *k, *item;
        while (PyDict_Next(v, &pos, &k, &item))
            if (!nests_within(item, left - 1))
                return 0;
    } else if (PyList_CheckExact(v)) {
        if (left == 0)
            return 0;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++)
            if (!nests_within(PyList_GET_ITEM(v, i), left - 1))
                return 0;
    }
    return 1;
}

/* check_passes(event[, max_depth]) -> True when receiver.validate.check_attributes certainly passes ``event``
 * (and, given ``max_depth``, its nesting is within it and no float in it may be a rounded big integer, see
 * nests_within); False when only the Python checks can tell (they then refuse it, with the reason, or pass it) */
static PyObject *check_passes(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "check_passes(event[, max_depth])");
        return NULL;
    }
    PyObject *ev = args[0];
    if (nargs == 2) {
        long max_depth = PyLong_AsLong(args[1]);
        if (max_depth == -1 && PyErr_Occurred())
            return NULL;
        /* deeper than MAX_DEPTH is never walked here: Python counts it */
        if (!PyDict_CheckExact(ev) || max_depth < 0 || !nests_within(ev, max_depth > MAX_DEPTH ? MAX_DEPTH
                                                                                                : (int)max_depth))
            Py_RETURN_FALSE;
    }
    if (!PyDict_CheckExact(ev))
        Py_RETURN_FALSE;
    PyObject *spec = PyDict_GetItemWithError(ev, str_specversion);
    if (spec == NULL && PyErr_Occurred())
        return NULL;
    if (spec == NULL || !PyUnicode_CheckExact(spec) || PyUnicode_CompareWithASCIIString(spec, "1.0") != 0)
        Py_RETURN_FALSE;
    static PyObject **required[] = {&str_id, &str_source, &str_type};
    for (int j = 0; j < 3; j++) {
        PyObject *v = PyDict_GetItemWithError(ev, *required[j]);
        if (v == NULL && PyErr_Occurred())
            return NULL;
        if (!some_text(v))
            Py_RETURN_FALSE;
    }
    static const char *const optional_text[] = {"datacontenttype", "dataschema", "subject", NULL};
    /* signed: a dssematerial that is a string not empty (one of another type is refused, by Python) */
    PyObject *mat = PyDict_GetItemWithError(ev, str_dssematerial);
    if (mat == NULL && PyErr_Occurred())
        return NULL;
    int signed_ = mat != NULL && PyUnicode_CheckExact(mat) && PyUnicode_GET_LENGTH(mat) > 0;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(ev, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k) || !PyUnicode_IS_ASCII(k))
            Py_RETURN_FALSE;
        const char *name = (const char *)PyUnicode_DATA(k);
        Py_ssize_t n = PyUnicode_GET_LENGTH(k);
        if (name_is(name, n, SKIP) || (!signed_ && name_is(name, n, HOSTS)))
            continue;
        if (name_is(name, n, optional_text)) {
            if (v != Py_None && !some_text(v))
                Py_RETURN_FALSE; /* an empty one (or a control character) is refused, by Python, with the reason */
            continue;
        }
        if (n == 4 && memcmp(name, "time", 4) == 0) {
            if (v != Py_None && (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v) ||
                                 !rfc3339((const char *)PyUnicode_DATA(v), PyUnicode_GET_LENGTH(v))))
                Py_RETURN_FALSE;
            continue;
        }
        /* the verifiability extension's attributes are strings: anything else is refused, by Python */
        if (((n == 12 && memcmp(name, "dssematerial", 12) == 0) || (n == 14 && memcmp(name, "signedextattrs", 14) == 0))
            && v != Py_None && !PyUnicode_CheckExact(v))
            Py_RETURN_FALSE;
        /* an extension attribute: its name is checked whatever its value (data_base64 is Python's too) */
        if (n < 1 || n > 64)
            Py_RETURN_FALSE;
        for (Py_ssize_t i = 0; i < n; i++)
            if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9')))
                Py_RETURN_FALSE;
        if (v == Py_None || PyBool_Check(v))
            continue;
        if (PyUnicode_CheckExact(v)) {
            if (!allowed_text(v))
                Py_RETURN_FALSE;
            continue;
        }
        if (!PyLong_CheckExact(v))
            Py_RETURN_FALSE;
        long long x;
        int r = int64(v, &x);
        if (r == FAIL)
            return NULL;
        if (r == PASS || x > MAX_SAFE_INT || x < -MAX_SAFE_INT)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static PyTypeObject RestamperType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._native.restamp.Restamper",
    .tp_basicsize = sizeof(Restamper),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Restamper(shapes, texts, next_seq): the planned guest path in C (see stamp).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Restamper_init,
    .tp_dealloc = (destructor)Restamper_dealloc,
    .tp_traverse = (traverseproc)Restamper_traverse,
    .tp_clear = (inquiry)Restamper_clear,
    .tp_methods = Restamper_methods,
};

/* ---- guest signatures: the common case of signing.checker.EventChecker.check ---- */

/* strict standard base64 of n characters (n a multiple of 4, padding only where due, unused bits zero) into out;
 * the decoded length, or -1 for anything else (which Python judges) */
static Py_ssize_t unb64(const char *s, Py_ssize_t n, unsigned char *out)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    static signed char map[256];
    static int ready = 0; /* set once, with the GIL held */
    if (!ready) {
        memset(map, -1, sizeof map);
        for (int i = 0; i < 64; i++)
            map[(unsigned char)alphabet[i]] = (signed char)i;
        ready = 1;
    }
    if (n == 0 || n % 4)
        return -1;
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < n; i += 4) {
        int pad = 0;
        if (i + 4 == n)
            pad = (s[n - 1] == '=') + (s[n - 2] == '=' && s[n - 1] == '=');
        int a = map[(unsigned char)s[i]], b = map[(unsigned char)s[i + 1]];
        int c = pad >= 2 ? 0 : map[(unsigned char)s[i + 2]];
        int d = pad >= 1 ? 0 : map[(unsigned char)s[i + 3]];
        if ((a | b | c | d) < 0)
            return -1;
        unsigned v = (unsigned)a << 18 | (unsigned)b << 12 | (unsigned)c << 6 | (unsigned)d;
        if ((pad == 1 && (v & 0xff)) || (pad == 2 && (v & 0xffff)))
            return -1;
        out[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            out[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            out[o++] = (unsigned char)v;
    }
    return o;
}

typedef struct {
    PyObject_HEAD
    PyObject *keys;  /* dict: key id (str) -> 32-byte Ed25519 public key */
    PyObject *ext;   /* dict: signedextattrs (str) -> tuple of the names it signs, as the Python checker keeps */
    PyObject *pae_head, *t_head, *t_mid, *t_sig, *t_tail; /* bytes */
} Checker;

static int Checker_init(Checker *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"keys", "ext", "pae_head", "t_head", "t_mid", "t_sig", "t_tail", NULL};
    PyObject *keys, *ext, *ph, *th, *tm, *ts, *tt;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!SSSSS:Checker", kwlist, &PyDict_Type, &keys, &PyDict_Type,
                                     &ext, &ph, &th, &tm, &ts, &tt))
        return -1;
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(keys, &pos, &k, &v))
        if (!PyUnicode_CheckExact(k) || !PyBytes_CheckExact(v) || PyBytes_GET_SIZE(v) != 32) {
            PyErr_SetString(PyExc_ValueError, "keys: key id -> 32-byte Ed25519 public key");
            return -1;
        }
    if (PyBytes_GET_SIZE(ph) + 32 > 256) {
        PyErr_SetString(PyExc_ValueError, "pae_head is too long");
        return -1;
    }
    Py_XSETREF(self->keys, Py_NewRef(keys));
    Py_XSETREF(self->ext, Py_NewRef(ext));
    Py_XSETREF(self->pae_head, Py_NewRef(ph));
    Py_XSETREF(self->t_head, Py_NewRef(th));
    Py_XSETREF(self->t_mid, Py_NewRef(tm));
    Py_XSETREF(self->t_sig, Py_NewRef(ts));
    Py_XSETREF(self->t_tail, Py_NewRef(tt));
    return 0;
}

static int Checker_traverse(Checker *self, visitproc visit, void *arg)
{
    Py_VISIT(self->keys);
    Py_VISIT(self->ext);
    return 0;
}

static int Checker_clear(Checker *self)
{
    Py_CLEAR(self->keys);
    Py_CLEAR(self->ext);
    Py_CLEAR(self->pae_head);
    Py_CLEAR(self->t_head);
    Py_CLEAR(self->t_mid);
    Py_CLEAR(self->t_sig);
    Py_CLEAR(self->t_tail);
    return 0;
}

static void Checker_dealloc(Checker *self)
{
    PyObject_GC_UnTrack(self);
    Checker_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* does ``s`` continue at ``*at`` with the bytes of ``b``? (then ``*at`` moves past them) */
static int expect(const char *s, Py_ssize_t n, Py_ssize_t *at, PyObject *b)
{
    Py_ssize_t k = PyBytes_GET_SIZE(b);
    if (*at + k > n || memcmp(s + *at, PyBytes_AS_STRING(b), (size_t)k) != 0)
        return 0;
    *at += k;
    return 1;
}

/* OK when ``event`` verifies, PASS when only Python can tell (a refusal, or a form this does not read) */
static int verify(Checker *self, PyObject *ev, Buf *data)
{
    static PyObject **core[] = {&str_source, &str_specversion, &str_type, &str_datacontenttype, &str_dataschema,
                                &str_subject};
    unsigned char env[512], msg[256], payload[48], sig[72], digest[32], h[32];
    const char *s;
    Py_ssize_t n;
    int r;

    /* dssematerial: strict base64 of an envelope in encode_envelope's layout, one signature, by a trusted key */
    PyObject *mat = PyDict_GetItemWithError(ev, str_dssematerial);
    if (mat == NULL)
        return PyErr_Occurred() ? FAIL : PASS;
    if (!PyUnicode_CheckExact(mat) || !PyUnicode_IS_ASCII(mat))
        return PASS;
    s = (const char *)PyUnicode_DATA(mat);
    n = PyUnicode_GET_LENGTH(mat);
    if (n > (Py_ssize_t)(sizeof env / 3 * 4))
        return PASS;
    Py_ssize_t envn = unb64(s, n, env), at = 0;
    if (envn < 0 || !expect((const char *)env, envn, &at, self->t_head) || at + 44 > envn ||
        unb64((const char *)env + at, 44, payload) != 32)
        return PASS;
    at += 44;
    if (!expect((const char *)env, envn, &at, self->t_mid) || at + 64 > envn)
        return PASS;
    const char *keyid = (const char *)env + at;
    for (int i = 0; i < 64; i++)
        if (!((keyid[i] >= '0' && keyid[i] <= '9') || (keyid[i] >= 'a' && keyid[i] <= 'z') ||
              (keyid[i] >= 'A' && keyid[i] <= 'Z')))
            return PASS;
    at += 64;
    if (!expect((const char *)env, envn, &at, self->t_sig) || at + 88 > envn ||
        unb64((const char *)env + at, 88, sig) != 64)
        return PASS;
    at += 88;
    if (!expect((const char *)env, envn, &at, self->t_tail) || at != envn)
        return PASS;
    PyObject *kid = PyUnicode_DecodeASCII(keyid, 64, NULL);
    if (kid == NULL)
        return FAIL;
    PyObject *pk = PyDict_GetItemWithError(self->keys, kid);
    Py_DECREF(kid);
    if (pk == NULL)
        return PyErr_Occurred() ? FAIL : PASS;
    Py_ssize_t headn = PyBytes_GET_SIZE(self->pae_head);
    memcpy(msg, PyBytes_AS_STRING(self->pae_head), (size_t)headn);
    memcpy(msg + headn, payload, 32);
    if (crypto_sign_verify_detached(sig, msg, (unsigned long long)(headn + 32),
                                    (const unsigned char *)PyBytes_AS_STRING(pk)) != 0)
        return PASS; /* refused: Python says why (and is the judge of what libsodium is stricter about) */

    /* the material, as signing.event.material computes it */
    SHA256_CTX ctx;
    SHA256_Init(&ctx);
    PyObject *v = PyDict_GetItemWithError(ev, str_id);
    if (v == NULL && PyErr_Occurred())
        return FAIL;
    if (v == NULL || !PyUnicode_CheckExact(v))
        return PASS;
    if ((r = value_digest(v, h)) != OK)
        return r;
    SHA256_Update(&ctx, h, 32);
    for (int i = 0; i < 6; i++) {
        v = PyDict_GetItemWithError(ev, *core[i]);
        if (v == NULL && PyErr_Occurred())
            return FAIL;
        if (v == NULL || v == Py_None)
            memcpy(h, EMPTY, 32);
        else if ((r = value_digest(v, h)) != OK)
            return r;
        SHA256_Update(&ctx, h, 32);
    }
    v = PyDict_GetItemWithError(ev, str_time);
    if (v == NULL && PyErr_Occurred())
        return FAIL;
    if (v == NULL || v == Py_None) {
        SHA256_Update(&ctx, EMPTY, 32);
    } else {
        char t[20];
        if ((r = utf8(v, &s, &n)) != OK || (r = normalize_time(s, n, t)) != OK)
            return r;
        sha(t, 20, h);
        SHA256_Update(&ctx, h, 32);
    }
    /* data: JSON data of the forms the JCS writer here covers; strings, data_base64 and the rest are Python's */
    v = PyDict_GetItemWithError(ev, str_data_base64);
    if (v != NULL || PyErr_Occurred())
        return v != NULL ? PASS : FAIL;
    v = PyDict_GetItemWithError(ev, str_data);
    if (v == NULL && PyErr_Occurred())
        return FAIL;
    if (v == NULL) {
        SHA256_Update(&ctx, EMPTY, 32);
    } else {
        if (!PyDict_CheckExact(v) && !PyList_CheckExact(v))
            return PASS;
        data->n = 0;
        if ((r = put_jcs(data, v, 0)) != OK)
            return r;
        sha(data->p, data->n, h);
        SHA256_Update(&ctx, h, 32);
    }
    /* the signed extension attributes, as the Python checker read and validated them */
    v = PyDict_GetItemWithError(ev, str_signedextattrs);
    if (v == NULL && PyErr_Occurred())
        return FAIL;
    if (v != NULL && v != Py_None && !(PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) == 0)) {
        if (!PyUnicode_CheckExact(v))
            return PASS;
        PyObject *names = PyDict_GetItemWithError(self->ext, v);
        if (names == NULL)
            return PyErr_Occurred() ? FAIL : PASS; /* not read yet: Python reads and keeps it */
        if (!PyTuple_CheckExact(names))
            return PASS;
        Py_INCREF(names);
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++) {
            PyObject *name = PyTuple_GET_ITEM(names, i), *val;
            if (!PyUnicode_CheckExact(name) || (val = PyDict_GetItemWithError(ev, name)) == NULL ||
                (r = value_digest(name, h)) != OK) {
                Py_DECREF(names);
                return PyErr_Occurred() ? FAIL : PASS;
            }
            SHA256_Update(&ctx, h, 32);
            if ((r = value_digest(val, h)) != OK) {
                Py_DECREF(names);
                return r;
            }
            SHA256_Update(&ctx, h, 32);
        }
        Py_DECREF(names);
    }
    SHA256_Final(digest, &ctx);
    return sodium_memcmp(digest, payload, 32) == 0 ? OK : PASS;
}

static PyObject *Checker_verifies(Checker *self, PyObject *ev)
{
    if (self->keys == NULL || self->t_tail == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Checker was not initialised");
        return NULL;
    }
    if (!PyDict_CheckExact(ev))
        Py_RETURN_FALSE;
    Buf data = {NULL, 0, 0};
    int r = verify(self, ev, &data);
    PyMem_Free(data.p);
    if (r == FAIL)
        return NULL;
    return PyBool_FromLong(r == OK);
}

static PyMethodDef Checker_methods[] = {
    {"verifies", (PyCFunction)Checker_verifies, METH_O,
     "verifies(event) -> True when the event's signature and material verify; False: Python decides"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CheckerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._native.restamp.Checker",
    .tp_basicsize = sizeof(Checker),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Checker(keys, ext, pae_head, t_head, t_mid, t_sig, t_tail): the common case of EventChecker.check.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Checker_init,
    .tp_dealloc = (destructor)Checker_dealloc,
    .tp_traverse = (traverseproc)Checker_traverse,
    .tp_clear = (inquiry)Checker_clear,
    .tp_methods = Checker_methods,
};

/* verify_detached(sig, msg, public_key) -> bool: one Ed25519 check, as the Checker makes it (for measuring) */
static PyObject *verify_detached(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]) ||
        !PyBytes_CheckExact(args[2]) || PyBytes_GET_SIZE(args[0]) != 64 || PyBytes_GET_SIZE(args[2]) != 32) {
        PyErr_SetString(PyExc_TypeError, "verify_detached(sig: 64 bytes, msg: bytes, public_key: 32 bytes)");
        return NULL;
    }
    return PyBool_FromLong(crypto_sign_verify_detached(
        (const unsigned char *)PyBytes_AS_STRING(args[0]), (const unsigned char *)PyBytes_AS_STRING(args[1]),
        (unsigned long long)PyBytes_GET_SIZE(args[1]), (const unsigned char *)PyBytes_AS_STRING(args[2])) == 0);
}

static PyMethodDef module_methods[] = {
    {"check_passes", (PyCFunction)(void (*)(void))check_passes, METH_FASTCALL,
     "check_passes(event[, max_depth]) -> True when receiver.validate.check_attributes certainly passes it"},
    {"verify_detached", (PyCFunction)(void (*)(void))verify_detached, METH_FASTCALL,
     "verify_detached(sig, msg, public_key) -> True when the Ed25519 signature verifies (libsodium)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent._native.restamp",
    .m_doc = "The receiver's per-event work in C: the planned guest path of agent.pipeline.guest, and the passing "
             "case of receiver.validate.check_attributes.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit_restamp(void)
{
    native_name = PyUnicode_InternFromString("native");
    str_specversion = PyUnicode_InternFromString("specversion");
    str_id = PyUnicode_InternFromString("id");
    str_source = PyUnicode_InternFromString("source");
    str_type = PyUnicode_InternFromString("type");
    str_datacontenttype = PyUnicode_InternFromString("datacontenttype");
    str_dataschema = PyUnicode_InternFromString("dataschema");
    str_subject = PyUnicode_InternFromString("subject");
    str_time = PyUnicode_InternFromString("time");
    str_data = PyUnicode_InternFromString("data");
    str_data_base64 = PyUnicode_InternFromString("data_base64");
    str_dssematerial = PyUnicode_InternFromString("dssematerial");
    str_signedextattrs = PyUnicode_InternFromString("signedextattrs");
    if (!native_name || !str_specversion || !str_id || !str_source || !str_type || !str_datacontenttype ||
        !str_dataschema || !str_subject || !str_time || !str_data || !str_data_base64 || !str_dssematerial ||
        !str_signedextattrs)
        return NULL;
    if (sodium_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "libsodium could not be initialised");
        return NULL;
    }
    if (PyType_Ready(&RestamperType) < 0 || PyType_Ready(&CheckerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&RestamperType);
    if (PyModule_AddObject(m, "Restamper", (PyObject *)&RestamperType) < 0) {
        Py_DECREF(&RestamperType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&CheckerType);
    if (PyModule_AddObject(m, "Checker", (PyObject *)&CheckerType) < 0) {
        Py_DECREF(&CheckerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
