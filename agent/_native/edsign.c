/*
 * agent._native.edsign: the DSSE material of many digests, signed with one Ed25519 key, without the GIL.
 *
 * Signer(seed).materials(pae_head, env_head, env_mid, tail, digests) returns, for each 32-byte digest d,
 * base64(env_head + base64(d) + env_mid + base64(sign(pae_head + d)) + tail): exactly what Stamper._material
 * builds in Python. Ed25519 (RFC 8032) is deterministic, so both give the same bytes; the tests hold them to
 * it. The whole batch is signed with the GIL released, so a thread can sign while the event loop goes on; the
 * inputs are copied into C memory first and the results become bytes objects afterwards.
 *
 * The signatures are libsodium's (crypto_sign_detached): on x86-64 it signs about twice as fast as the
 * OpenSSL 3.0 of Debian 12 and faster than the OpenSSL inside the cryptography wheel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DIGEST_LEN 32
#define SIG_LEN 64
#define B64_LEN(n) ((((n) + 2) / 3) * 4)
/* a PAE head or an envelope part longer than this is not ours: refuse rather than allocate for it */
#define MAX_PART 4096

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64(unsigned char *out, const unsigned char *in, size_t n)
{
    unsigned char *o = out;
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = ((unsigned)in[i] << 16) | ((unsigned)in[i + 1] << 8) | in[i + 2];
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = B64[(v >> 6) & 63];
        *o++ = B64[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n)
            v |= (unsigned)in[i + 1] << 8;
        *o++ = B64[v >> 18];
        *o++ = B64[(v >> 12) & 63];
        *o++ = i + 1 < n ? B64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return (size_t)(o - out);
}

typedef struct {
    PyObject_HEAD
    int ready;
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    unsigned char pk[crypto_sign_PUBLICKEYBYTES];
} Signer;

static int Signer_init(Signer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key", NULL};
    Py_buffer key;
    if (self->ready) {
        /* materials() reads the key without the GIL: it must not change under a running batch */
        PyErr_SetString(PyExc_RuntimeError, "a Signer is given its key once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*", kwlist, &key))
        return -1;
    if (key.len != 32) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "an Ed25519 private key is 32 bytes");
        return -1;
    }
    if (crypto_sign_seed_keypair(self->pk, self->sk, key.buf) != 0) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "libsodium refused the Ed25519 key");
        return -1;
    }
    PyBuffer_Release(&key);
    self->ready = 1;
    return 0;
}

static void Signer_dealloc(Signer *self)
{
    sodium_memzero(self->sk, sizeof self->sk);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* sign every digest (libsodium does not fail for a valid key and a bounded message) */
static void sign_all(const unsigned char *sk, const unsigned char *head, size_t head_len,
                     const unsigned char *env_head, size_t env_head_len, const unsigned char *env_mid,
                     size_t env_mid_len, const unsigned char *tail, size_t tail_len, const unsigned char *digests,
                     Py_ssize_t n, unsigned char *out, size_t out_len, unsigned char *msg, unsigned char *env)
{
    memcpy(msg, head, head_len);
    memcpy(env, env_head, env_head_len);
    for (Py_ssize_t i = 0; i < n; i++) {
        const unsigned char *d = digests + (size_t)i * DIGEST_LEN;
        unsigned char sig[SIG_LEN];
        memcpy(msg + head_len, d, DIGEST_LEN);
        crypto_sign_detached(sig, NULL, msg, head_len + DIGEST_LEN, sk);
        unsigned char *e = env + env_head_len;
        e += b64(e, d, DIGEST_LEN);
        memcpy(e, env_mid, env_mid_len);
        e += env_mid_len;
        e += b64(e, sig, SIG_LEN);
        memcpy(e, tail, tail_len);
        e += tail_len;
        b64(out + (size_t)i * out_len, env, (size_t)(e - env));
    }
}

static PyObject *Signer_materials(Signer *self, PyObject *args)
{
    Py_buffer head, env_head, env_mid, tail;
    PyObject *seq_arg;
    if (!self->ready) {
        PyErr_SetString(PyExc_ValueError, "the signer has no key");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*y*y*y*O", &head, &env_head, &env_mid, &tail, &seq_arg))
        return NULL;
    PyObject *result = NULL, *seq = NULL;
    unsigned char *digests = NULL, *out = NULL, *msg = NULL, *env = NULL;
    if (head.len > MAX_PART || env_head.len > MAX_PART || env_mid.len > MAX_PART || tail.len > MAX_PART) {
        PyErr_SetString(PyExc_ValueError, "a PAE head or envelope part is too long");
        goto fail;
    }
    seq = PySequence_Fast(seq_arg, "digests must be a sequence of bytes");
    if (seq == NULL)
        goto fail;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    size_t env_len = (size_t)env_head.len + B64_LEN(DIGEST_LEN) + (size_t)env_mid.len + B64_LEN(SIG_LEN) +
                     (size_t)tail.len;
    size_t out_len = B64_LEN(env_len);
    if ((size_t)n > SIZE_MAX / out_len) {
        PyErr_NoMemory();
        goto fail;
    }
    digests = PyMem_Malloc(n ? (size_t)n * DIGEST_LEN : 1);
    out = PyMem_Malloc(n ? (size_t)n * out_len : 1);
    msg = PyMem_Malloc((size_t)head.len + DIGEST_LEN);
    env = PyMem_Malloc(env_len);
    if (digests == NULL || out == NULL || msg == NULL || env == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i]) || PyBytes_GET_SIZE(items[i]) != DIGEST_LEN) {
            PyErr_Format(PyExc_ValueError, "digest %zd is not 32 bytes", i);
            goto fail;
        }
        memcpy(digests + (size_t)i * DIGEST_LEN, PyBytes_AS_STRING(items[i]), DIGEST_LEN);
    }
    Py_BEGIN_ALLOW_THREADS
    sign_all(self->sk, head.buf, (size_t)head.len, env_head.buf, (size_t)env_head.len, env_mid.buf,
             (size_t)env_mid.len, tail.buf, (size_t)tail.len, digests, n, out, out_len, msg, env);
    Py_END_ALLOW_THREADS
    result = PyList_New(n);
    if (result == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)out + (size_t)i * out_len, (Py_ssize_t)out_len);
        if (b == NULL) {
            Py_CLEAR(result);
            goto fail;
        }
        PyList_SET_ITEM(result, i, b);
    }
fail:
    PyMem_Free(digests);
    PyMem_Free(out);
    PyMem_Free(msg);
    PyMem_Free(env);
    Py_XDECREF(seq);
    PyBuffer_Release(&head);
    PyBuffer_Release(&env_head);
    PyBuffer_Release(&env_mid);
    PyBuffer_Release(&tail);
    return result;
}

static PyObject *Signer_sign(Signer *self, PyObject *arg)
{
    Py_buffer msg;
    unsigned char sig[SIG_LEN];
    if (!self->ready) {
        PyErr_SetString(PyExc_ValueError, "the signer has no key");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &msg, PyBUF_SIMPLE) < 0)
        return NULL;
    crypto_sign_detached(sig, NULL, msg.buf, (unsigned long long)msg.len, self->sk);
    PyBuffer_Release(&msg);
    return PyBytes_FromStringAndSize((const char *)sig, SIG_LEN);
}

static PyMethodDef Signer_methods[] = {
    {"sign", (PyCFunction)Signer_sign, METH_O, "sign(message) -> the 64-byte Ed25519 signature (the GIL held)"},
    {"materials", (PyCFunction)Signer_materials, METH_VARARGS,
     "materials(pae_head, env_head, env_mid, tail, digests) -> list of base64 DSSE envelopes, one per digest"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SignerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._native.edsign.Signer",
    .tp_doc = "Signer(key): Ed25519 signatures of DSSE envelopes, a batch at a time, without the GIL",
    .tp_basicsize = sizeof(Signer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Signer_init,
    .tp_dealloc = (destructor)Signer_dealloc,
    .tp_methods = Signer_methods,
};

/* ---------------------------------------------------------------------------------------------------------------
 * SignPool: threads of its own (not Python's) that sign batches and never take the GIL.
 *
 * submit() copies a batch of digests into a job and queues it; a pool thread signs it and moves it to the done
 * list, then adds 1 to an eventfd; the event loop watches that eventfd (fileno()) and calls collect(), which
 * returns the finished jobs' envelopes. A Python thread would need the GIL back to return its results and would
 * wait for it while the loop's thread runs; these threads only take the pool's own mutex, for a few pointer
 * moves.
 *
 * With nice=N the threads run N nice steps below their creator: the event loop that feeds them and settles what
 * they return then gets its core whenever it has work, and the signatures take every cycle it leaves. At the same
 * priority the scheduler shares a core evenly between the loop and a signing thread; the loop falls behind, the
 * signing threads run out of batches, and a core idles while both wait on each other.
 * ------------------------------------------------------------------------------------------------------------- */

typedef struct Job {
    struct Job *next;
    unsigned long long id;
    Py_ssize_t n;
    unsigned char *digests;
    unsigned char *out;
} Job;

typedef struct {
    PyObject_HEAD
    unsigned char sk[crypto_sign_SECRETKEYBYTES];
    unsigned char *head, *env_head, *env_mid, *tail;
    size_t head_len, env_head_len, env_mid_len, tail_len, env_len, out_len;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    Job *todo, *todo_last, *done, *done_last;
    unsigned long long next_id;
    int efd;
    int started;    /* threads running */
    int closing;    /* close() has begun: no new jobs, and a second close() returns at once */
    pid_t owner;    /* the process the threads run in (a forked child has none of them) */
    int stopping;
    int locks_ready;
    int nice;       /* how much lower than their creator's the threads' priority is (0: the same) */
    pthread_t *threads;
} SignPool;

static void job_free(Job *j)
{
    while (j != NULL) {
        Job *next = j->next;
        PyMem_RawFree(j->digests);
        PyMem_RawFree(j->out);
        PyMem_RawFree(j);
        j = next;
    }
}

/* Lower the calling thread's priority by `by` nice steps (Linux keeps a nice value per thread). Best effort: at
 * nice 19 already, or where the kernel refuses, the thread simply runs as it is. */
static void lower_priority(int by)
{
    if (by <= 0)
        return;
    pid_t tid = (pid_t)syscall(SYS_gettid);
    errno = 0;
    int now = getpriority(PRIO_PROCESS, (id_t)tid);
    if (now == -1 && errno != 0)
        return;
    int want = now + by > 19 ? 19 : now + by;
    if (want > now)
        (void)setpriority(PRIO_PROCESS, (id_t)tid, want);
}

static void *pool_thread(void *arg)
{
    SignPool *p = arg;
    lower_priority(p->nice);
    unsigned char *msg = malloc(p->head_len + DIGEST_LEN);
    unsigned char *env = malloc(p->env_len);
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (p->todo == NULL && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        if (p->stopping) {
            pthread_mutex_unlock(&p->lock);
            break;
        }
        Job *j = p->todo;
        p->todo = j->next;
        if (p->todo == NULL)
            p->todo_last = NULL;
        pthread_mutex_unlock(&p->lock);
        j->next = NULL;
        if (msg != NULL && env != NULL)
            sign_all(p->sk, p->head, p->head_len, p->env_head, p->env_head_len, p->env_mid, p->env_mid_len, p->tail,
                     p->tail_len, j->digests, j->n, j->out, p->out_len, msg, env);
        else
            j->n = -1; /* no memory for the scratch buffers: collect() reports the job failed */
        pthread_mutex_lock(&p->lock);
        if (p->done_last != NULL)
            p->done_last->next = j;
        else
            p->done = j;
        p->done_last = j;
        pthread_mutex_unlock(&p->lock);
        uint64_t one = 1;
        ssize_t w;
        do
            w = write(p->efd, &one, sizeof one);
        while (w < 0 && errno == EINTR);
    }
    free(msg);
    free(env);
    return NULL;
}

static unsigned char *copy_part(Py_buffer *b)
{
    unsigned char *c = PyMem_RawMalloc(b->len ? (size_t)b->len : 1);
    if (c != NULL)
        memcpy(c, b->buf, (size_t)b->len);
    return c;
}

static void pool_stop(SignPool *p)
{
    if (p->closing)
        return;
    p->closing = 1;
    if (p->started && p->owner != getpid()) {
        /* a forked child: the threads, and whoever held the lock, are in the parent; only memory is ours */
        p->started = 0;
        p->locks_ready = 0; /* the lock may be held for ever: do not destroy it either */
        p->todo = p->todo_last = p->done = p->done_last = NULL;
        if (p->efd >= 0) {
            close(p->efd); /* this process's copy; the parent's stays open */
            p->efd = -1;
        }
        sodium_memzero(p->sk, sizeof p->sk);
        return;
    }
    if (p->started) {
        pthread_mutex_lock(&p->lock);
        p->stopping = 1;
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->lock);
        int n = p->started;
        Py_BEGIN_ALLOW_THREADS
        for (int i = 0; i < n; i++)
            pthread_join(p->threads[i], NULL);
        Py_END_ALLOW_THREADS
        p->started = 0;
    }
    p->stopping = 1;
    job_free(p->todo);
    job_free(p->done);
    p->todo = p->todo_last = p->done = p->done_last = NULL;
    if (p->locks_ready && p->efd >= 0) {
        close(p->efd);
        p->efd = -1;
    }
    sodium_memzero(p->sk, sizeof p->sk);
}

static int SignPool_init(SignPool *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"signer", "pae_head", "env_head", "env_mid", "tail", "threads", "nice", NULL};
    PyObject *signer;
    Py_buffer head, env_head, env_mid, tail;
    int threads = 1, nice = 0, rc = -1;
    if (!self->locks_ready)
        self->efd = -1;
    if (self->locks_ready || self->closing) {
        PyErr_SetString(PyExc_RuntimeError, "a SignPool is set up once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!y*y*y*y*|ii", kwlist, &SignerType, &signer, &head, &env_head,
                                     &env_mid, &tail, &threads, &nice))
        return -1;
    if (!((Signer *)signer)->ready) {
        PyErr_SetString(PyExc_ValueError, "the signer has no key");
        goto out;
    }
    if (threads < 1 || threads > 64) {
        PyErr_SetString(PyExc_ValueError, "threads must be between 1 and 64");
        goto out;
    }
    if (nice < 0 || nice > 39) {
        PyErr_SetString(PyExc_ValueError, "nice must be between 0 and 39 (steps below the creator's priority)");
        goto out;
    }
    self->nice = nice;
    if (head.len > MAX_PART || env_head.len > MAX_PART || env_mid.len > MAX_PART || tail.len > MAX_PART) {
        PyErr_SetString(PyExc_ValueError, "a PAE head or envelope part is too long");
        goto out;
    }
    if (pthread_mutex_init(&self->lock, NULL) != 0) {
        PyErr_SetString(PyExc_OSError, "cannot set up the pool's lock");
        goto out;
    }
    if (pthread_cond_init(&self->wake, NULL) != 0) {
        pthread_mutex_destroy(&self->lock);
        PyErr_SetString(PyExc_OSError, "cannot set up the pool's condition variable");
        goto out;
    }
    self->locks_ready = 1;
    self->owner = getpid();
    memcpy(self->sk, ((Signer *)signer)->sk, sizeof self->sk);
    self->head = copy_part(&head);
    self->env_head = copy_part(&env_head);
    self->env_mid = copy_part(&env_mid);
    self->tail = copy_part(&tail);
    self->threads = PyMem_RawCalloc((size_t)threads, sizeof(pthread_t));
    if (!self->head || !self->env_head || !self->env_mid || !self->tail || !self->threads) {
        PyErr_NoMemory();
        goto out;
    }
    self->head_len = (size_t)head.len;
    self->env_head_len = (size_t)env_head.len;
    self->env_mid_len = (size_t)env_mid.len;
    self->tail_len = (size_t)tail.len;
    self->env_len = self->env_head_len + B64_LEN(DIGEST_LEN) + self->env_mid_len + B64_LEN(SIG_LEN) + self->tail_len;
    self->out_len = B64_LEN(self->env_len);
    self->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->efd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        goto out;
    }
    for (int i = 0; i < threads; i++) {
        int err = pthread_create(&self->threads[i], NULL, pool_thread, self);
        if (err != 0) {
            errno = err;
            PyErr_SetFromErrno(PyExc_OSError);
            pool_stop(self);
            goto out;
        }
        self->started++;
    }
    rc = 0;
out:
    PyBuffer_Release(&head);
    PyBuffer_Release(&env_head);
    PyBuffer_Release(&env_mid);
    PyBuffer_Release(&tail);
    return rc;
}

static void SignPool_dealloc(SignPool *self)
{
    pool_stop(self);
    if (self->locks_ready) {
        pthread_mutex_destroy(&self->lock);
        pthread_cond_destroy(&self->wake);
    }
    PyMem_RawFree(self->head);
    PyMem_RawFree(self->env_head);
    PyMem_RawFree(self->env_mid);
    PyMem_RawFree(self->tail);
    PyMem_RawFree(self->threads);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int pool_open(SignPool *p)
{
    if (!p->started || p->closing) {
        PyErr_SetString(PyExc_ValueError, "the pool is closed");
        return 0;
    }
    if (p->owner != getpid()) {
        PyErr_SetString(PyExc_ValueError, "the pool's threads are in the parent process (this one was forked)");
        return 0;
    }
    return 1;
}

static PyObject *SignPool_submit(SignPool *self, PyObject *arg)
{
    if (!pool_open(self))
        return NULL;
    PyObject *seq = PySequence_Fast(arg, "digests must be a sequence of bytes");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if ((size_t)n > SIZE_MAX / self->out_len) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    Job *j = PyMem_RawCalloc(1, sizeof(Job));
    if (j != NULL) {
        j->digests = PyMem_RawMalloc(n ? (size_t)n * DIGEST_LEN : 1);
        j->out = PyMem_RawMalloc(n ? (size_t)n * self->out_len : 1);
    }
    if (j == NULL || j->digests == NULL || j->out == NULL) {
        job_free(j);
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i]) || PyBytes_GET_SIZE(items[i]) != DIGEST_LEN) {
            PyErr_Format(PyExc_ValueError, "digest %zd is not 32 bytes", i);
            job_free(j);
            Py_DECREF(seq);
            return NULL;
        }
        memcpy(j->digests + (size_t)i * DIGEST_LEN, PyBytes_AS_STRING(items[i]), DIGEST_LEN);
    }
    Py_DECREF(seq);
    j->n = n;
    pthread_mutex_lock(&self->lock);
    j->id = ++self->next_id;
    if (self->todo_last != NULL)
        self->todo_last->next = j;
    else
        self->todo = j;
    self->todo_last = j;
    pthread_cond_signal(&self->wake);
    pthread_mutex_unlock(&self->lock);
    return PyLong_FromUnsignedLongLong(j->id);
}

/* The finished jobs, taken off the done list; if making their results fails (no memory), they are dropped and
 * MemoryError raised: the caller must count every job it is waiting for as failed. */
static PyObject *SignPool_collect(SignPool *self, PyObject *Py_UNUSED(ignored))
{
    if (!pool_open(self))
        return NULL;
    uint64_t count;
    ssize_t r;
    do
        r = read(self->efd, &count, sizeof count); /* resets the counter; EAGAIN: nothing new */
    while (r < 0 && errno == EINTR);
    pthread_mutex_lock(&self->lock);
    Job *jobs = self->done;
    self->done = self->done_last = NULL;
    pthread_mutex_unlock(&self->lock);
    PyObject *result = PyList_New(0);
    for (Job *j = jobs; j != NULL && result != NULL; j = j->next) {
        PyObject *mats;
        if (j->n < 0) {
            mats = Py_None;
            Py_INCREF(mats);
        } else {
            mats = PyList_New(j->n);
            for (Py_ssize_t i = 0; mats != NULL && i < j->n; i++) {
                PyObject *b = PyBytes_FromStringAndSize((const char *)j->out + (size_t)i * self->out_len,
                                                        (Py_ssize_t)self->out_len);
                if (b == NULL)
                    Py_CLEAR(mats);
                else
                    PyList_SET_ITEM(mats, i, b);
            }
        }
        PyObject *item = mats == NULL ? NULL : Py_BuildValue("(KN)", j->id, mats);
        if (item == NULL || PyList_Append(result, item) < 0)
            Py_CLEAR(result);
        Py_XDECREF(item);
    }
    job_free(jobs);
    return result;
}

static PyObject *SignPool_fileno(SignPool *self, PyObject *Py_UNUSED(ignored))
{
    if (!pool_open(self))
        return NULL;
    return PyLong_FromLong(self->efd);
}

static PyObject *SignPool_close(SignPool *self, PyObject *Py_UNUSED(ignored))
{
    pool_stop(self);
    Py_RETURN_NONE;
}

static PyMethodDef SignPool_methods[] = {
    {"submit", (PyCFunction)SignPool_submit, METH_O,
     "submit(digests) -> job id: queue a batch of 32-byte digests for the pool's threads"},
    {"collect", (PyCFunction)SignPool_collect, METH_NOARGS,
     "collect() -> [(job id, [envelope, ...] or None if it failed)] for the jobs finished since the last call"},
    {"fileno", (PyCFunction)SignPool_fileno, METH_NOARGS,
     "fileno() -> the eventfd that becomes readable when a job is finished"},
    {"close", (PyCFunction)SignPool_close, METH_NOARGS,
     "close(): stop the threads (a batch being signed is finished first) and drop unfinished jobs"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SignPoolType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "agent._native.edsign.SignPool",
    .tp_doc = "SignPool(signer, pae_head, env_head, env_mid, tail, threads=1, nice=0): native threads that sign batches "
              "of digests without ever taking the GIL",
    .tp_basicsize = sizeof(SignPool),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)SignPool_init,
    .tp_dealloc = (destructor)SignPool_dealloc,
    .tp_methods = SignPool_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "agent._native.edsign", "Batch Ed25519 DSSE signing without the GIL.", -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit_edsign(void)
{
    if (sodium_init() < 0) {
        PyErr_SetString(PyExc_ImportError, "libsodium could not be initialised");
        return NULL;
    }
    if (PyType_Ready(&SignerType) < 0 || PyType_Ready(&SignPoolType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SignerType);
    if (PyModule_AddObject(m, "Signer", (PyObject *)&SignerType) < 0) {
        Py_DECREF(&SignerType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SignPoolType);
    if (PyModule_AddObject(m, "SignPool", (PyObject *)&SignPoolType) < 0) {
        Py_DECREF(&SignPoolType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
