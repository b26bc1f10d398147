// test.h: the tiny test harness every test binary uses. A binary runs named tests with RUN(fn); each
// prints one line, "ok NAME", "FAIL NAME: first failed check (file:line)" or "skip NAME: why".
// tests/run_tests.sh counts those lines over all binaries (a crash counts as a failure).
#pragma once
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int test_failed_checks;  // failed checks in the test being run
static int test_skipped;        // set by SKIP()
static char test_first_failure[1024];
static int test_total_failed;   // tests failed in this binary

#define EXPECT(cond, ...)                                                                                   \
    do {                                                                                                    \
        if (!(cond)) {                                                                                      \
            if (test_failed_checks++ == 0) {                                                                \
                int n_ = snprintf(test_first_failure, sizeof(test_first_failure), __VA_ARGS__);             \
                if (n_ >= 0 && n_ < (int)sizeof(test_first_failure))                                        \
                    snprintf(test_first_failure + n_, sizeof(test_first_failure) - n_, " (%s:%d)", __FILE__, \
                             __LINE__);                                                                     \
            }                                                                                               \
        }                                                                                                   \
    } while (0)

// Stop the current test as skipped (e.g. no GPU). Use only in the test's own function body.
#define SKIP(...)                                                                        \
    do {                                                                                 \
        test_skipped = 1;                                                                \
        snprintf(test_first_failure, sizeof(test_first_failure), __VA_ARGS__);           \
        return;                                                                          \
    } while (0)

#define RUN(fn)                                                                          \
    do {                                                                                 \
        test_failed_checks = 0, test_skipped = 0, test_first_failure[0] = '\0';          \
        fn();                                                                            \
        if (test_skipped) printf("skip %s: %s\n", #fn, test_first_failure);              \
        else if (test_failed_checks) printf("FAIL %s: %s\n", #fn, test_first_failure), test_total_failed++; \
        else printf("ok %s\n", #fn);                                                     \
        fflush(stdout);                                                                  \
    } while (0)

#define TEST_EXIT() return test_total_failed ? 1 : 0

// ||a - b|| / ||b|| in double; NaN anywhere gives +inf so that it never passes a bound.
static inline double rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        if (a[i] != a[i] || b[i] != b[i]) return INFINITY;
        num += d * d, den += (double)b[i] * (double)b[i];
    }
    if (den == 0) return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

// A private scratch directory for this test process, removed at exit: test binaries of several
// checkouts may run at once on one machine and must not share paths.
static char test_dir_path[64];
static pid_t test_dir_owner;
static void test_dir_cleanup(void) {
    if (getpid() != test_dir_owner) return;  // a forked child that exits must not remove its parent's directory
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", test_dir_path);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", test_dir_path);
}
static inline const char *test_dir(void) {
    if (!test_dir_path[0]) {
        snprintf(test_dir_path, sizeof(test_dir_path), "/tmp/train_clip_test.XXXXXX");
        if (!mkdtemp(test_dir_path)) perror("mkdtemp"), exit(1);
        test_dir_owner = getpid();
        atexit(test_dir_cleanup);
    }
    return test_dir_path;
}
// "<test_dir>/name", in one of 8 rotating buffers.
static inline const char *test_path(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", test_dir(), name);
    return b;
}

// Runs a shell command (2>&1 in it to capture stderr too) and returns its exit code (-1 if it did not exit normally),
// with the first cap - 1 bytes of its output in out. The rest is read and dropped, so the command never blocks on a
// full pipe.
static inline int run_command(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    size_t n = 0, got;
    char buf[4096];
    while (p && (got = fread(buf, 1, sizeof(buf), p)) > 0) {
        size_t keep = got < cap - 1 - n ? got : cap - 1 - n;
        memcpy(out + n, buf, keep), n += keep;
    }
    out[n] = '\0';
    int status = p ? pclose(p) : -1;
    return status != -1 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Runs fn(arg) in a child process (code that is meant to stop the program, such as fatal errors) and
// returns its exit code (-1 if it did not exit normally), with what it wrote to stderr in msg.
static inline int test_in_child(void (*fn)(void *), void *arg, char *msg, size_t cap) {
    int fds[2];
    if (pipe(fds) != 0) return perror("pipe"), -1;
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fds[1], 2);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    for (ssize_t got; len < cap - 1 && (got = read(fds[0], msg + len, cap - 1 - len)) > 0;) len += (size_t)got;
    msg[len] = '\0';
    close(fds[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
