// tensorboard.c: TensorBoard event files (see tensorboard.h). The Event and Summary messages are encoded by
// hand, field by field, as protobuf's proto3 serializer writes them (fields in number order, a zero
// wall_time or step left out), from tensorflow/core/util/event.proto and framework/summary.proto:
//   Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
#include "tensorboard.h"

#include <errno.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../model/utils.h"

uint32_t crc32c(const uint8_t *data, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {  // bitwise: a log interval writes a few hundred bytes
        crc ^= data[i];
        for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
    }
    return ~crc;
}

uint32_t crc32c_masked(const uint8_t *data, size_t n) {
    uint32_t crc = crc32c(data, n);
    return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}

// ---------------------------------------------------------------- protobuf wire format

static size_t varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) v >>= 7, n++;
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v) {
    while (v >= 0x80) *p++ = (uint8_t)(v | 0x80), v >>= 7;
    *p++ = (uint8_t)v;
    return p;
}

static uint8_t *put_le(uint8_t *p, uint64_t bits, int bytes) {
    for (int i = 0; i < bytes; i++) *p++ = (uint8_t)(bits >> (8 * i));
    return p;
}

// a length-delimited field (wire type 2): key, length, then the caller writes `len` bytes
static uint8_t *put_len_key(uint8_t *p, int field, size_t len) { return put_varint(put_varint(p, (uint64_t)field << 3 | 2), len); }

static uint8_t *put_bytes(uint8_t *p, int field, const void *data, size_t len) {
    p = put_len_key(p, field, len);
    memcpy(p, data, len);
    return p + len;
}

static size_t value_size(const TbScalar *s) {
    size_t tag = strlen(s->tag);
    return 1 + varint_size(tag) + tag + 1 + 4;
}

// ---------------------------------------------------------------- records

static void write_record(TbWriter *w, size_t len) {
    if (w->failed) return;
    uint8_t header[12];
    put_le(header, len, 8);
    put_le(header + 8, crc32c_masked(header, 8), 4);
    uint8_t footer[4];
    put_le(footer, crc32c_masked(w->buf, len), 4);
    size_t put = fwrite(header, 1, sizeof(header), w->f) + fwrite(w->buf, 1, len, w->f) + fwrite(footer, 1, sizeof(footer), w->f);
    // a full disk or a network file system's hiccup: the run, which checkpoints keep, goes on without its events
    if (put != sizeof(header) + len + sizeof(footer) || fflush(w->f) != 0) {
        fprintf(stderr, "warning: writing the TensorBoard event file failed: %s; training goes on, the file takes no more events\n",
                strerror(errno));
        w->failed = 1;
    }
}

static void reserve(TbWriter *w, size_t n) {
    if (n > w->cap) w->buf = reallocCheck(w->buf, n), w->cap = n;
}

// Event fields 1 and 2 (wall_time, step); returns the end
static uint8_t *put_event_header(uint8_t *p, long step) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) fatal("clock_gettime failed: %s", strerror(errno));
    double wall = (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
    uint64_t bits;
    memcpy(&bits, &wall, sizeof(bits));
    *p++ = 1 << 3 | 1;  // field 1, fixed 64-bit
    p = put_le(p, bits, 8);
    if (step != 0) p = put_varint(p, 2 << 3 | 0), p = put_varint(p, (uint64_t)step);
    return p;
}

void tb_open(TbWriter *w, const char *dir) {
    char host[256], path[4096];
    if (gethostname(host, sizeof(host)) != 0) fatal("gethostname failed: %s", strerror(errno));
    host[sizeof(host) - 1] = '\0';
    // the process id and a count, as torch's SummaryWriter names them, so that a run resumed within the same second
    // adds its own file; "x": an existing file is never overwritten
    static int opened = 0;
    snprintf(path, sizeof(path), "%s/events.out.tfevents.%010ld.%s.%ld.%d", dir, (long)time(NULL), host, (long)getpid(), opened++);
    w->f = fopenCheck(path, "wbx");
    w->buf = NULL, w->cap = 0, w->failed = 0;
    static const char version[] = "brain.Event:2";
    reserve(w, 64);
    uint8_t *end = put_bytes(put_event_header(w->buf, 0), 3, version, strlen(version));
    write_record(w, (size_t)(end - w->buf));
}

void tb_scalars(TbWriter *w, long step, const TbScalar *s, int n) {
    size_t summary = 0;
    for (int i = 0; i < n; i++) summary += 1 + varint_size(value_size(&s[i])) + value_size(&s[i]);
    reserve(w, 32 + summary);
    uint8_t *p = put_len_key(put_event_header(w->buf, step), 5, summary);
    for (int i = 0; i < n; i++) {
        p = put_len_key(p, 1, value_size(&s[i]));
        p = put_bytes(p, 1, s[i].tag, strlen(s[i].tag));
        uint32_t bits;
        memcpy(&bits, &s[i].value, sizeof(bits));
        *p++ = 2 << 3 | 5;  // field 2, fixed 32-bit
        p = put_le(p, bits, 4);
    }
    write_record(w, (size_t)(p - w->buf));
}

void tb_close(TbWriter *w) {
    if (fclose(w->f) != 0 && !w->failed) fprintf(stderr, "warning: closing the TensorBoard event file failed: %s\n", strerror(errno));
    free(w->buf);
    w->f = NULL, w->buf = NULL, w->cap = 0;
}
