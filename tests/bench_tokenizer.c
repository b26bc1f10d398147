// bench_tokenizer.c: tokenizer_encode throughput, captions/s per thread, on the parity fixture's
// captions (all of them, and the plain-ASCII ones, which is what most alt-text is), with 1 thread and
// with one per core: the first pass (every word new to the thread's cache), then repeated passes for
// about 2 s (warm cache, as in training). Times are each thread's CPU time, so that other work on a
// shared machine does not count against it. Needs data/bpe_simple_vocab_16e6.txt.gz;
// TRAIN_CLIP_TOKENIZER_FIXTURE picks another file in the fixture's format.
#include <pthread.h>
#include <unistd.h>

#include "../data/tokenizer.h"
#include "../model/utils.h"

#define T 77

static char **captions;
static int n_captions;
static Tokenizer *tok;

static double thread_seconds(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        fatal("clock_gettime failed at %s:%d: %s", __FILE__, __LINE__, strerror(errno));
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    char **set;
    int n;
    double seconds;  // timed encoding
    long done;       // captions encoded in that time
} Job;

// One pass by a new thread: every word is new to its cache.
static void *first_pass(void *arg) {
    Job *j = arg;
    int32_t ids[T];
    double t0 = thread_seconds();
    for (int i = 0; i < j->n; i++) tokenizer_encode(tok, j->set[i], ids, T);
    j->seconds += thread_seconds() - t0, j->done += j->n;
    return NULL;
}

// An untimed pass, then passes for about 2 s with a warm cache.
static void *warm_passes(void *arg) {
    Job *j = arg;
    int32_t ids[T];
    for (int i = 0; i < j->n; i++) tokenizer_encode(tok, j->set[i], ids, T);
    double t0 = thread_seconds();
    do {
        for (int i = 0; i < j->n; i++) tokenizer_encode(tok, j->set[i], ids, T);
        j->done += j->n;
        j->seconds = thread_seconds() - t0;
    } while (j->seconds < 2.0);
    return NULL;
}

static void spawn(void *(*fn)(void *), Job *jobs, int threads) {
    pthread_t th[64];
    for (int i = 0; i < threads; i++) {
        int rc = pthread_create(&th[i], NULL, fn, &jobs[i]);
        if (rc) fatal("pthread_create failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    }
    for (int i = 0; i < threads; i++) {
        int rc = pthread_join(th[i], NULL);
        if (rc) fatal("pthread_join failed at %s:%d: %s", __FILE__, __LINE__, strerror(rc));
    }
}

// Mean captions/s per thread of fn over `threads` threads.
static double rate(void *(*fn)(void *), char **set, int n, int threads) {
    Job jobs[64];
    for (int i = 0; i < threads; i++) jobs[i] = (Job){set, n, 0, 0};
    do spawn(fn, jobs, threads);  // first passes are short: repeat them (new threads) for 1 s
    while (fn == first_pass && jobs[0].seconds < 1.0);
    double r = 0;
    for (int i = 0; i < threads; i++) r += jobs[i].done / jobs[i].seconds / threads;
    return r;
}

static void measure(const char *name, char **set, int n, int threads) {
    printf("%-22s %8d %8d %12.0f %12.0f\n", name, n, threads, rate(first_pass, set, n, threads),
           rate(warm_passes, set, n, threads));
}

int main(void) {
    const char *path = getenv("TRAIN_CLIP_TOKENIZER_FIXTURE");
    if (!path || !*path) path = "tests/fixtures/tokenizer_parity.tsv";
    FILE *f = fopenCheck(path, "r");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, f)) >= 0) {
        if (line[0] == '#') continue;
        char *tab = strrchr(line, '\t');
        if (!tab || strstr(line, "\\x")) continue;  // skip captions with escapes (controls, non-UTF-8)
        *tab = '\0';
        captions = reallocCheck(captions, (size_t)(n_captions + 1) * sizeof(char *));
        captions[n_captions] = strdup(line);
        if (!captions[n_captions++]) fatal("strdup failed at %s:%d", __FILE__, __LINE__);
    }
    free(line);
    fcloseCheck(f);
    char **ascii = mallocCheck((size_t)n_captions * sizeof(char *));
    int n_ascii = 0;
    for (int i = 0; i < n_captions; i++) {
        int plain = 1;
        for (const char *p = captions[i]; *p && plain; p++) plain = (unsigned char)*p < 0x80;
        if (plain) ascii[n_ascii++] = captions[i];
    }
    tok = tokenizer_load(NULL);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1 || cores > 64) cores = cores < 1 ? 1 : 64;
    printf("tokenizer_encode on %s, context 77: captions/s per thread\n", path);
    printf("%-22s %8s %8s %12s %12s\n", "captions", "count", "threads", "first pass", "warm cache");
    for (int threads = 1; threads <= cores; threads = threads < cores && 2 * threads > cores ? (int)cores : 2 * threads) {
        measure("all (no escapes)", captions, n_captions, threads);
        measure("plain ASCII", ascii, n_ascii, threads);
    }
    tokenizer_free(tok);
    for (int i = 0; i < n_captions; i++) free(captions[i]);
    free(captions);
    free(ascii);
    return 0;
}
