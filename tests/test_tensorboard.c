// test_tensorboard.c: TensorBoard event files. CRC-32C against published check values; a file written by
// tb_open/tb_scalars read back by an independent TFRecord + protobuf reader here: framing, both masked CRCs,
// the file-version record, and every step's tags and float values bit for bit; and ./train_clip with
// tensorboard = true: one event per log interval (8 scalars, 9 with MFU on a GPU) whose train/loss is the
// loss in log.jsonl.
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <stdint.h>
#include <time.h>

#include "../optim/tensorboard.h"
#include "test.h"

static void test_crc32c_check_values(void) {
    // "123456789" is the CRC catalogue's check input; the 32-byte vectors are RFC 3720's (iSCSI), appendix B.4
    uint8_t zeros[32] = {0}, ones[32], up[32];
    for (int i = 0; i < 32; i++) ones[i] = 0xFF, up[i] = (uint8_t)i;
    EXPECT(crc32c((const uint8_t *)"123456789", 9) == 0xE3069283u, "check value %08x", crc32c((const uint8_t *)"123456789", 9));
    EXPECT(crc32c(zeros, 32) == 0x8A9136AAu, "zeros %08x", crc32c(zeros, 32));
    EXPECT(crc32c(ones, 32) == 0x62A8AB43u, "ones %08x", crc32c(ones, 32));
    EXPECT(crc32c(up, 32) == 0x46DD794Eu, "ascending %08x", crc32c(up, 32));
    EXPECT(crc32c(NULL, 0) == 0, "empty");
    uint32_t c = crc32c(up, 32);
    EXPECT(crc32c_masked(up, 32) == ((c >> 15 | c << 17) + 0xA282EAD8u), "mask");
}

// ---------------------------------------------------------------- an independent reader

static uint64_t get_le(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static uint64_t get_varint(const uint8_t **p, const uint8_t *end) {
    uint64_t v = 0;
    for (int shift = 0; *p < end && shift < 64; shift += 7) {
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) return v;
    }
    return UINT64_MAX;  // truncated: the callers' checks then fail
}

typedef struct {
    double wall_time;
    long step;
    char version[32];
    int n;
    char tags[8][128];
    float values[8];
    int bad;  // an unexpected field, wire type or length
} Event;

// Value { string tag = 1; float simple_value = 2; }
static void parse_value(const uint8_t *p, const uint8_t *end, Event *e) {
    int k = e->n++;
    if (k >= 8) { e->bad = 1; return; }
    int have_tag = 0, have_value = 0;
    while (p < end) {
        uint64_t key = get_varint(&p, end);
        if (key == (1 << 3 | 2)) {
            uint64_t len = get_varint(&p, end);
            if (len >= sizeof(e->tags[k]) || len > (uint64_t)(end - p)) { e->bad = 1; return; }
            memcpy(e->tags[k], p, len), e->tags[k][len] = '\0', p += len, have_tag = 1;
        } else if (key == (2 << 3 | 5) && end - p >= 4) {
            uint32_t bits = (uint32_t)get_le(p, 4);
            memcpy(&e->values[k], &bits, 4), p += 4, have_value = 1;
        } else {
            e->bad = 1;
            return;
        }
    }
    e->bad |= !have_tag || !have_value;
}

// Event { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }, Summary { repeated Value value = 1; }
static void parse_event(const uint8_t *p, const uint8_t *end, Event *e) {
    memset(e, 0, sizeof(*e));
    while (p < end && !e->bad) {
        uint64_t key = get_varint(&p, end);
        if (key == (1 << 3 | 1) && end - p >= 8) {
            uint64_t bits = get_le(p, 8);
            memcpy(&e->wall_time, &bits, 8), p += 8;
        } else if (key == (2 << 3 | 0)) {
            e->step = (long)get_varint(&p, end);
        } else if (key == (3 << 3 | 2) || key == (5 << 3 | 2)) {
            uint64_t len = get_varint(&p, end);
            if (len > (uint64_t)(end - p)) { e->bad = 1; break; }
            if (key == (3 << 3 | 2)) {
                if (len >= sizeof(e->version)) { e->bad = 1; break; }
                memcpy(e->version, p, len), e->version[len] = '\0';
            } else {
                for (const uint8_t *q = p, *qend = p + len; q < qend && !e->bad;) {
                    if (get_varint(&q, qend) != (1 << 3 | 2)) { e->bad = 1; break; }
                    uint64_t vlen = get_varint(&q, qend);
                    if (vlen > (uint64_t)(qend - q)) { e->bad = 1; break; }
                    parse_value(q, q + vlen, e), q += vlen;
                }
            }
            p += len;
        } else {
            e->bad = 1;
        }
    }
}

// Reads every record of the file into events; returns the count, or -1 at a framing or CRC error.
static int read_records(const char *path, Event *events, int cap) {
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    uint8_t buf[4096];
    int n = 0;
    for (uint8_t header[12]; fread(header, 1, 12, f) == 12;) {
        uint64_t len = get_le(header, 8);
        uint8_t footer[4];
        if (n >= cap || (uint32_t)get_le(header + 8, 4) != crc32c_masked(header, 8) || len > sizeof(buf) ||
            fread(buf, 1, len, f) != len || fread(footer, 1, 4, f) != 4 || (uint32_t)get_le(footer, 4) != crc32c_masked(buf, len)) {
            fclose(f);
            return -1;
        }
        parse_event(buf, buf + len, &events[n++]);
    }
    int clean_end = feof(f) && !ferror(f);
    fclose(f);
    return clean_end ? n : -1;
}

// ---------------------------------------------------------------- the writer against the reader

// the events.out.tfevents.* file in dir into path; returns how many there are
static int find_event_file(const char *dir, char *path, size_t cap) {
    DIR *d = opendir(dir);
    int files = 0;
    for (struct dirent *ent; d && (ent = readdir(d));)
        if (strncmp(ent->d_name, "events.out.tfevents.", 20) == 0) snprintf(path, cap, "%s/%s", dir, ent->d_name), files++;
    if (d) closedir(d);
    return files;
}

// The writer's clock (CLOCK_REALTIME). Not time(): it reads the coarse clock, which can lag by a tick, so an event
// written just after a second began could fall after a time() taken later.
static double realtime_now(void) {
    struct timespec ts;
    EXPECT(clock_gettime(CLOCK_REALTIME, &ts) == 0, "clock_gettime(CLOCK_REALTIME) failed");
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_event_file_roundtrip(void) {
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", test_path("tb"));
    EXPECT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    double before = realtime_now();
    TbWriter w;
    tb_open(&w, dir);
    // step 0 (left out of the encoding, as proto3 does), small and large steps (multi-byte varints),
    // negative, zero, tiny and huge floats, a NaN's bits, and tags of varied length
    TbScalar a[3] = {{"train/loss", 4.2102f}, {"train/lr", 9.98e-4f}, {"train/logit_scale", -0.0f}};
    TbScalar b[2] = {{"eval/zeroshot_per_class", 0.259f}, {"x", 3.4e38f}};
    TbScalar c[1] = {{"train/grad_norm", NAN}};
    // step 128 and a value of 128 bytes (a tag of 121): the first two-byte varints
    TbScalar e[1] = {{"eval/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 1}};
    tb_scalars(&w, 0, a, 3);
    tb_scalars(&w, 400, b, 2);
    tb_scalars(&w, 123456789012L, c, 1);
    tb_scalars(&w, 128, e, 1);
    tb_close(&w);
    double after = realtime_now();

    char path[1200];
    int files = 0;
    DIR *d = opendir(dir);
    for (struct dirent *ent; d && (ent = readdir(d));) files += ent->d_name[0] != '.';
    if (d) closedir(d);
    EXPECT(files == 1 && find_event_file(dir, path, sizeof(path)) == 1, "%d files in the directory, want one event file", files);

    Event ev[8];
    int n = read_records(path, ev, 8);
    EXPECT(n == 5, "%d records (framing or CRC error if -1)", n);
    if (n != 5) return;
    for (int i = 0; i < n; i++) {
        EXPECT(!ev[i].bad, "record %d: unexpected protobuf content", i);
        EXPECT(ev[i].wall_time >= before && ev[i].wall_time <= after, "record %d: wall time %.6f not in [%.6f, %.6f]", i, ev[i].wall_time, before, after);
    }
    EXPECT(strcmp(ev[0].version, "brain.Event:2") == 0 && ev[0].n == 0 && ev[0].step == 0, "version record '%s'", ev[0].version);
    const TbScalar *want[4] = {a, b, c, e};
    long steps[4] = {0, 400, 123456789012L, 128};
    int counts[4] = {3, 2, 1, 1};
    for (int r = 0; r < 4; r++) {
        const Event *e = &ev[r + 1];
        EXPECT(e->step == steps[r] && e->n == counts[r] && !e->version[0], "record %d: step %ld, %d values", r + 1, e->step, e->n);
        for (int k = 0; k < counts[r] && k < e->n; k++) {
            EXPECT(strcmp(e->tags[k], want[r][k].tag) == 0, "record %d value %d: tag '%s'", r + 1, k, e->tags[k]);
            EXPECT(memcmp(&e->values[k], &want[r][k].value, 4) == 0, "record %d value %d: %g, wrote %g", r + 1, k, e->values[k], want[r][k].value);
        }
    }

    // a flipped bit anywhere in the data must fail its record's CRC
    FILE *f = fopen(path, "r+b");
    EXPECT(f && fseek(f, 12 + 3, SEEK_SET) == 0, "reopen");
    if (!f) return;
    int byte = fgetc(f);
    fseek(f, 12 + 3, SEEK_SET);
    fputc(byte ^ 0x10, f);
    fclose(f);
    EXPECT(read_records(path, ev, 8) == -1, "a damaged record was read without a CRC error");
}

// A resumed run adds a file: one started within the same second as the last (stop_after, then resume at once)
// must not overwrite it. Two writers in one directory and second: two files, each with its own events.
static void test_second_writer_keeps_the_first_file(void) {
    char dir[600], path[1200];
    snprintf(dir, sizeof(dir), "%s", test_path("tb2"));
    EXPECT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    TbScalar a[1] = {{"train/loss", 1.5f}}, b[1] = {{"train/loss", 2.5f}};
    time_t t0;
    TbWriter w1, w2;
    do {  // both in one second
        t0 = time(NULL);
        tb_open(&w1, dir);
        tb_scalars(&w1, 10, a, 1);
        tb_close(&w1);
        tb_open(&w2, dir);
        tb_scalars(&w2, 20, b, 1);
        tb_close(&w2);
    } while (time(NULL) != t0);
    int files = 0, events = 0;
    DIR *d = opendir(dir);
    for (struct dirent *ent; d && (ent = readdir(d));) {
        if (strncmp(ent->d_name, "events.out.tfevents.", 20) != 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, ent->d_name);
        Event ev[4];
        int n = read_records(path, ev, 4);
        EXPECT(n == 2 && ev[1].n == 1, "%s: %d records", ent->d_name, n);
        files++, events += n;
    }
    if (d) closedir(d);
    EXPECT(events == 2 * files && events >= 4, "%d event files with %d records: the second writer overwrote the first", files, events);
}

// A write that fails (here /dev/full: a full disk) warns and ends the file's events, not the run: tb_scalars and
// tb_close return, and the writer is marked failed.
static void test_failed_write_goes_on(void) {
    char dir[600];
    snprintf(dir, sizeof(dir), "%s", test_path("tb_full"));
    EXPECT(mkdir(dir, 0755) == 0, "mkdir %s", dir);
    TbWriter w;
    tb_open(&w, dir);
    FILE *full = fopen("/dev/full", "w");
    if (!full) {
        tb_close(&w);
        SKIP("no /dev/full");
    }
    fclose(w.f);
    w.f = full;
    TbScalar s[1] = {{"train/loss", 1.5f}};
    tb_scalars(&w, 1, s, 1);
    tb_scalars(&w, 2, s, 1);
    EXPECT(w.failed == 1, "a failed write was not noticed");
    tb_close(&w);
}

static void test_training_run_writes_events(void) {
    char cmd[1024], path[1200];
    snprintf(cmd, sizeof(cmd), "./train_clip -c configs/tiny.conf --set batch_size=16 --set steps=12 --set warmup=2 --set log_every=4 "
             "--set tensorboard=true --set run_dir=%s > /dev/null", test_path("run"));
    int status = system(cmd);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "train_clip failed");
    EXPECT(find_event_file(test_path("run"), path, sizeof(path)) == 1, "want one event file in run_dir");
    Event ev[8];
    int n = read_records(path, ev, 8);
    EXPECT(n == 4, "%d records, want the version + 3 log intervals (-1: framing or CRC error)", n);
    FILE *f = fopen(test_path("run/log.jsonl"), "r");
    double loss[13] = {0};
    char line[4096];
    while (f && fgets(line, sizeof(line), f)) {
        char *s = strstr(line, "{\"step\":"), *l = strstr(line, "\"loss\":");
        long step = s ? atol(s + 8) : 0;
        if (l && step >= 1 && step <= 12) loss[step] = atof(l + 7);
    }
    if (f) fclose(f);
    for (int i = 1; i < n && n == 4; i++) {
        EXPECT(ev[i].step == 4L * i && !ev[i].bad && ev[i].n >= 8, "record %d: step %ld, %d values", i, ev[i].step, ev[i].n);
        EXPECT(!strcmp(ev[i].tags[0], "train/loss") && fabs(ev[i].values[0] - loss[4 * i]) <= 1e-5 * fabs(loss[4 * i]),
               "record %d: %s = %g, log.jsonl loss %g", i, ev[i].tags[0], ev[i].values[0], loss[4 * i]);
    }
}

int main(void) {
    RUN(test_crc32c_check_values);
    RUN(test_event_file_roundtrip);
    RUN(test_second_writer_keeps_the_first_file);
    RUN(test_failed_write_goes_on);
    RUN(test_training_run_writes_events);
    TEST_EXIT();
}
