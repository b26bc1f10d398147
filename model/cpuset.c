// cpuset.c: CPU lists, the cgroup's allowed CPUs and a local rank's share of them (see cpuset.h).
#define _GNU_SOURCE  // cpu_set_t, CPU_SET
#include "cpuset.h"

#include <stdio.h>
#include <string.h>

#include "distributed.h"

// One CPU number at *p (digits only: no sign, no spaces), advancing p; 0 when there is none or it is too large.
static int read_cpu(const char **p, int *cpu) {
    if (**p < '0' || **p > '9') return 0;
    long x = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++)
        if ((x = x * 10 + (**p - '0')) >= CPU_SETSIZE) return 0;
    *cpu = (int)x;
    return 1;
}

int cpuset_parse(const char *text, cpu_set_t *set) {
    CPU_ZERO(set);
    const char *p = text;
    for (;;) {
        int lo, hi;
        if (!read_cpu(&p, &lo)) return -1;
        hi = lo;
        if (*p == '-' && (p++, !read_cpu(&p, &hi) || hi < lo)) return -1;
        for (int c = lo; c <= hi; c++) CPU_SET(c, set);
        if (*p != ',') break;
        p++;
    }
    if (*p == '\n') p++;
    return *p ? -1 : 0;
}

void cpuset_print(char *buf, size_t size, const cpu_set_t *set) {
    size_t len = 0;
    buf[0] = 0;
    for (int c = 0; c < CPU_SETSIZE && len < size; c++) {
        if (!CPU_ISSET(c, set) || (c > 0 && CPU_ISSET(c - 1, set))) continue;
        int e = c;
        while (e + 1 < CPU_SETSIZE && CPU_ISSET(e + 1, set)) e++;
        len += snprintf(buf + len, size - len, e > c ? "%s%d-%d" : "%s%d", len ? "," : "", c, e);
    }
}

// A small file's whole text into buf: 0, or -1 when it cannot be read or does not fit (a missing file is
// an answer here, not an error: the caller tries the next place).
static int read_text(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, size - 1, f);
    int bad = ferror(f) || n == size - 1;
    bad |= fclose(f) != 0;
    buf[n] = 0;
    return bad ? -1 : 0;
}

// Whether the comma-separated list [s, end) has `word` as one of its items.
static int list_has(const char *s, const char *end, const char *word) {
    size_t n = strlen(word);
    for (const char *p = s; p < end;) {
        const char *q = memchr(p, ',', (size_t)(end - p));
        if (!q) q = end;
        if ((size_t)(q - p) == n && !memcmp(p, word, n)) return 1;
        p = q + 1;
    }
    return 0;
}

int cpuset_from_cgroup(const char *cgroups, const char *root, cpu_set_t *set) {
    // lines "ID:CONTROLLERS:PATH": v1's cpuset hierarchy names "cpuset" among its controllers (and is the one
    // taken), v2's is "0::PATH"
    char path[4096] = "";
    const char *sub = NULL, *name = NULL;
    for (const char *line = cgroups; *line;) {
        const char *end = strchrnul(line, '\n'), *c1 = memchr(line, ':', (size_t)(end - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        int v1 = c2 && list_has(c1 + 1, c2, "cpuset"), v2 = !strncmp(line, "0::", 3);
        if (v1 || v2) {
            snprintf(path, sizeof(path), "%.*s", (int)(end - c2 - 1), c2 + 1);
            sub = v1 ? "/cpuset" : "", name = v1 ? "cpuset.cpus" : "cpuset.cpus.effective";
        }
        if (v1 || !*end) break;
        line = end + 1;
    }
    if (!sub) return -1;
    for (;;) {  // "/a/b", "/a", "": the cgroup, its ancestors, the mount's root
        char file[4608], text[8192];
        snprintf(file, sizeof(file), "%s%s%s/%s", root, sub, path, name);
        if (read_text(file, text, sizeof(text)) == 0) return cpuset_parse(text, set);
        char *up = strrchr(path, '/');
        if (!up) return -1;
        *up = 0;
    }
}

int cpuset_allowed(cpu_set_t *set) {
    char cgroups[8192];
    if (read_text("/proc/self/cgroup", cgroups, sizeof(cgroups))) return -1;
    return cpuset_from_cgroup(cgroups, "/sys/fs/cgroup", set);
}

int cpuset_place(int allowed, const cpu_set_t *affinity, int rank, int size, cpu_set_t *mine) {
    if (CPU_COUNT(affinity) < allowed) {
        *mine = *affinity;
        return 1;
    }
    int lo, hi;
    dist_slice(CPU_COUNT(affinity), rank, size, &lo, &hi);
    CPU_ZERO(mine);
    for (int c = 0, i = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, affinity)) {
            if (i >= lo && i < hi) CPU_SET(c, mine);
            i++;
        }
    return 0;
}
