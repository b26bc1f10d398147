// utils.h: fatal errors and checked wrappers around the libc calls every part of train_clip uses.
// Each wrapper names the call and the caller's file:line, so a failure is never anonymous.
#pragma once
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Print "error: <message>" to stderr and exit(1).
__attribute__((noreturn, format(printf, 1, 2))) static inline void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "error: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

static inline FILE *fopen_check(const char *path, const char *mode, const char *file, int line) {
    FILE *f = fopen(path, mode);
    if (!f) fatal("fopen(\"%s\", \"%s\") failed at %s:%d: %s", path, mode, file, line, strerror(errno));
    return f;
}
#define fopenCheck(path, mode) fopen_check(path, mode, __FILE__, __LINE__)

static inline void fread_check(void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    size_t got = fread(ptr, size, n, f);
    if (got != n) {
        fatal("fread failed at %s:%d: wanted %zu items, got %zu (%s)", file, line, n, got,
              feof(f) ? "unexpected end of file" : strerror(errno));
    }
}
#define freadCheck(ptr, size, n, f) fread_check(ptr, size, n, f, __FILE__, __LINE__)

static inline void fwrite_check(const void *ptr, size_t size, size_t n, FILE *f, const char *file, int line) {
    size_t put = fwrite(ptr, size, n, f);
    if (put != n) fatal("fwrite failed at %s:%d: wrote %zu of %zu items: %s", file, line, put, n, strerror(errno));
}
#define fwriteCheck(ptr, size, n, f) fwrite_check(ptr, size, n, f, __FILE__, __LINE__)

static inline void fclose_check(FILE *f, const char *file, int line) {
    if (fclose(f) != 0) fatal("fclose failed at %s:%d: %s", file, line, strerror(errno));
}
#define fcloseCheck(f) fclose_check(f, __FILE__, __LINE__)

static inline void *malloc_check(size_t size, const char *file, int line) {
    void *p = malloc(size ? size : 1);
    if (!p) fatal("malloc(%zu bytes) failed at %s:%d: out of host memory", size, file, line);
    return p;
}
#define mallocCheck(size) malloc_check(size, __FILE__, __LINE__)

static inline void *calloc_check(size_t n, size_t size, const char *file, int line) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fatal("calloc(%zu x %zu bytes) failed at %s:%d: out of host memory", n, size, file, line);
    return p;
}
#define callocCheck(n, size) calloc_check(n, size, __FILE__, __LINE__)

static inline void *realloc_check(void *ptr, size_t size, const char *file, int line) {
    void *p = realloc(ptr, size ? size : 1);
    if (!p) fatal("realloc(%zu bytes) failed at %s:%d: out of host memory", size, file, line);
    return p;
}
#define reallocCheck(ptr, size) realloc_check(ptr, size, __FILE__, __LINE__)

// Wall-clock seconds from a monotonic clock.
#include <time.h>
static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// mkdir -p. Returns 0, or -1 with errno set.
#include <sys/stat.h>
static inline int mkdir_p(const char *path) {
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf)) return errno = ENAMETOOLONG, -1;
    memcpy(buf, path, n + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) return -1;
    return 0;
}
