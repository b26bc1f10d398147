// test_checkpoint.c: .safetensors round trips (UTF-8 headers), atomic writes that never destroy the previous
// file (also on a full disk), truncated or hostile files rejected with a clear error, weights checked against
// the config (shapes, dtypes, extra tensors; bf16/fp16), damaged state metadata, pruning and re-saving that
// never lose or mix checkpoints, and end to end with ./train_clip: N steps straight equal N/2 steps +
// checkpoint + resume + N/2 steps bit for bit; a corrupt newest checkpoint falls back to the previous one;
// resuming another model, or an older checkpoint into a newer run, is refused; SIGTERM saves and stops cleanly.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../model/checkpoint.h"
#include "../model/safetensors.h"
#include "../model/utils.h"
#include "test.h"

#define RUN_ARGS "./train_clip -c configs/tiny.conf --set batch_size=16 --set steps=12 --set warmup=3 --set log_every=100 --set checkpoint_every=0"

static void test_safetensors_round_trip(void) {
    mkdir_p(test_dir());
    float a[6] = {1.5f, -2, 3.25f, 1e-30f, -0.0f, 7};
    int32_t b[3] = {-1, 49407, 0};
    float s = 2.6592600f;
    int64_t sa[2] = {2, 3}, sb[1] = {3};
    StWriter *w = st_writer_new();
    st_writer_add(w, "visual.proj", "F32", 2, sa, a);
    st_writer_add(w, "input.tokens", "I32", 1, sb, b);
    st_writer_add(w, "logit_scale", "F32", 0, NULL, &s);
    st_writer_meta(w, "config", "lr = 2e-3\n# a \"quoted\" comment\twith tab, caf\xc3\xa9");
    char err[512];
    EXPECT(st_write(w, test_path("rt.safetensors"), err, sizeof(err)) == 0, "write: %s", err);
    StFile f;
    EXPECT(st_load(&f, test_path("rt.safetensors"), err, sizeof(err)) == 0, "load: %s", err);
    const StTensor *t = st_find(&f, "visual.proj");
    EXPECT(t && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3 && !strcmp(t->dtype, "F32"), "visual.proj header");
    float a2[6];
    int32_t b2[3];
    float s2;
    if (t) st_read_f32(&f, t, a2, 6);
    EXPECT(t && !memcmp(a, a2, sizeof(a)), "visual.proj data differs");
    st_read_i32(&f, st_find(&f, "input.tokens"), b2, 3);
    EXPECT(!memcmp(b, b2, sizeof(b)), "tokens differ");
    const StTensor *ls = st_find(&f, "logit_scale");
    EXPECT(ls && ls->ndim == 0 && ls->numel == 1, "scalar tensor shape");
    if (ls) st_read_f32(&f, ls, &s2, 1);
    EXPECT(ls && s2 == s, "scalar value");
    const char *meta = st_meta(&f, "config");
    EXPECT(meta && !strcmp(meta, "lr = 2e-3\n# a \"quoted\" comment\twith tab, caf\xc3\xa9"), "metadata '%s'", meta ? meta : "(none)");
    // the header is padded to a multiple of 8 bytes, as the format's writers do, so the data section starts aligned
    EXPECT((f.data - (const uint8_t *)f.map) % 8 == 0, "the data section starts at byte %td", f.data - (const uint8_t *)f.map);
    st_free(&f);
}

// The header must be valid UTF-8 (Python's safetensors rejects the whole file otherwise): a byte of metadata that
// is not UTF-8 (a Latin-1 path in the config) is written as U+FFFD, valid multi-byte characters as they are.
static void test_metadata_is_utf8(void) {
    mkdir_p(test_dir());
    float x = 1;
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", "F32", 0, NULL, &x);
    st_writer_meta(w, "config", "data = /d/caf\xe9.tar # caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xed\xa0\x80 \xc3");
    char err[512];
    EXPECT(st_write(w, test_path("utf8.safetensors"), err, sizeof(err)) == 0, "write: %s", err);
    StFile f;
    EXPECT(st_load(&f, test_path("utf8.safetensors"), err, sizeof(err)) == 0, "load: %s", err);
    const char *v = st_meta(&f, "config");
    const char *want = "data = /d/caf\xef\xbf\xbd.tar # caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd";
    EXPECT(v && !strcmp(v, want), "metadata read back as '%s'", v ? v : "(none)");
    if (f.num_tensors) st_free(&f);
}

static void test_failed_write_keeps_previous_file(void) {
    mkdir_p(test_dir());
    float x = 1;
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", "F32", 0, NULL, &x);
    char err[512];
    EXPECT(st_write(w, test_path("keep.safetensors"), err, sizeof(err)) == 0, "first write: %s", err);
    // make the temporary path unusable (a directory), so the second write fails before the rename
    mkdir_p(test_path("keep.safetensors.tmp"));
    x = 2;
    w = st_writer_new();
    st_writer_add(w, "x", "F32", 0, NULL, &x);
    int rc = st_write(w, test_path("keep.safetensors"), err, sizeof(err));
    EXPECT(rc != 0 && strstr(err, "keep.safetensors.tmp"), "failed write: rc %d, err '%s'", rc, err);
    rmdir(test_path("keep.safetensors.tmp"));
    StFile f;
    EXPECT(st_load(&f, test_path("keep.safetensors"), err, sizeof(err)) == 0, "previous file damaged: %s", err);
    float y = 0;
    st_read_f32(&f, st_find(&f, "x"), &y, 1);
    EXPECT(y == 1, "previous value %g, want 1", y);
    st_free(&f);
}

// Writes a 64 KiB tensor over full.safetensors with the file size limited to 4 KiB (as a full disk: the write fails
// part way); exits 0 if st_write reports it naming the file and leaves no temporary file.
static void write_on_full_disk(void *arg) {
    static float big[16384];
    int64_t shape[1] = {16384};
    struct rlimit lim = {4096, 4096};
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(4);
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", "F32", 1, shape, big);
    char err[512] = "";
    int rc = st_write(w, test_path("full.safetensors"), err, sizeof(err));
    fprintf(stderr, "%s", err);
    _exit(rc == -1 && strstr(err, "full.safetensors") && access(test_path("full.safetensors.tmp"), F_OK) != 0 ? 0 : 3);
}

static void test_full_disk_keeps_previous_file(void) {
    mkdir_p(test_dir());
    float x = 1;
    StWriter *w = st_writer_new();
    st_writer_add(w, "x", "F32", 0, NULL, &x);
    char err[512], msg[1024];
    EXPECT(st_write(w, test_path("full.safetensors"), err, sizeof(err)) == 0, "first write: %s", err);
    int code = test_in_child(write_on_full_disk, NULL, msg, sizeof(msg));
    EXPECT(code == 0, "write on a full disk: exit %d, '%s'", code, msg);
    StFile f;
    EXPECT(st_load(&f, test_path("full.safetensors"), err, sizeof(err)) == 0, "previous file damaged: %s", err);
    float y = 0;
    if (f.num_tensors == 1) st_read_f32(&f, st_find(&f, "x"), &y, 1), st_free(&f);
    EXPECT(y == 1, "previous value %g, want 1", y);
}

static void test_truncated_file_is_rejected(void) {
    float data[100] = {0};
    int64_t shape[1] = {100};
    StWriter *w = st_writer_new();
    st_writer_add(w, "t", "F32", 1, shape, data);
    char err[512];
    st_write(w, test_path("trunc.safetensors"), err, sizeof(err));
    EXPECT(truncate(test_path("trunc.safetensors"), 200) == 0, "truncate failed");
    StFile f;
    int rc = st_load(&f, test_path("trunc.safetensors"), err, sizeof(err));
    EXPECT(rc != 0 && strstr(err, "trunc.safetensors") && strstr(err, "truncated"), "truncated load: rc %d '%s'", rc, err);
}

// A .safetensors file made by hand: the 8-byte header length (hlen, or the header's length when 0), the header
// text, then data_bytes zero bytes. Returns its path.
static const char *write_raw(const char *name, const char *header, uint64_t hlen, size_t data_bytes) {
    const char *path = test_path(name);
    FILE *fp = fopen(path, "wb");
    if (!fp) return path;
    uint8_t len[8];
    if (!hlen) hlen = strlen(header);
    for (int i = 0; i < 8; i++) len[i] = (uint8_t)(hlen >> (8 * i));
    fwrite(len, 1, 8, fp), fwrite(header, 1, strlen(header), fp);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, fp);
    fclose(fp);
    return path;
}

// Damaged or hostile headers: each is rejected with an error naming the file and the problem, and nothing crashes.
static void test_bad_headers_rejected(void) {
    mkdir_p(test_dir());
    static const struct {
        const char *header;
        uint64_t hlen;
        size_t data;
        const char *want;  // in the error
    } cases[] = {
        {"{}", 1ull << 63, 0, "header length"},
        {"{\"t\":{\"dtype\":\"F32", 0, 0, "unterminated string"},
        {"{    x}", 0, 0, "expected a string at byte 5"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[-1,-1],\"data_offsets\":[0,4]}}", 0, 4, "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,0]}}", 0, 0, "shape"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[4611686018427387905,4],\"data_offsets\":[0,16]}}", 0, 16, "shape"},  // 2^64 + 4 elements
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999]}}", 0, 4, "integer"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 0, 8, "duplicate"},
        {"{\"__metadata__\":{\"step\":\"1\",\"step\":\"2\"}}", 0, 0, "duplicate"},
        {"{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"a\":\"2\"}}", 0, 0, "duplicate"},
        {"{\"__metadata__\":{\"a\":1}}", 0, 0, "expected a string"},
        {"{\"__metadata__\":{\"a\" \"1\"}}", 0, 0, "expected ':'"},
        {"{\"t\" {}}", 0, 0, "expected ':'"},
        {"{\"t\":{\"dtype\" \"F32\"}}", 0, 0, "expected ':'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 0, 12, "overlap"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 0, 4, "data_offsets"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 0, 4, "does not match"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} {\"u\":1}", 0, 4, "after the header"},
        {"{\"t\\u0000x\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4, "\\u0000"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 3, "does not match"},  // one byte past the file
        {"{}", 3, 0, "header length"},                                                           // one byte more than the file holds
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 0, "lacks"},
        {"{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":\"y\"}}", 0, 4, "unknown tensor field"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[1,3]}}", 0, 3, "overlap"},
    };
    char err[512], name[64];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(name, sizeof(name), "bad%zu.safetensors", i);
        const char *path = write_raw(name, cases[i].header, cases[i].hlen, cases[i].data);
        StFile f;
        err[0] = '\0';
        int rc = st_load(&f, path, err, sizeof(err));
        EXPECT(rc == -1 && strstr(err, name) && strstr(err, cases[i].want), "header %s: rc %d, err '%s', want '%s'", cases[i].header, rc, err, cases[i].want);
        if (rc == 0) st_free(&f);
    }
    StFile f;
    mkdir_p(test_path("dir.safetensors"));
    int rc = st_load(&f, test_path("dir.safetensors"), err, sizeof(err));
    EXPECT(rc == -1 && strstr(err, "dir.safetensors") && strstr(err, "not a regular file"), "a directory: rc %d '%s'", rc, err);
    // a FIFO (opening one for reading waits for a writer): refused at once; the alarm turns a hang into a failure
    EXPECT(mkfifo(test_path("fifo.safetensors"), 0600) == 0, "mkfifo: %s", strerror(errno));
    alarm(20);
    rc = st_load(&f, test_path("fifo.safetensors"), err, sizeof(err));
    alarm(0);
    EXPECT(rc == -1 && strstr(err, "fifo.safetensors") && strstr(err, "not a regular file"), "a FIFO: rc %d '%s'", rc, err);
    // what the format allows: padding after the header, an empty one, tensors in any order, empty tensors
    const char *ok = write_raw("ok_raw.safetensors", "{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                                                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                                                     "\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]}}   ", 0, 8);
    rc = st_load(&f, ok, err, sizeof(err));
    EXPECT(rc == 0 && f.num_tensors == 3, "a valid hand-made file: rc %d '%s'", rc, err);
    if (rc == 0) st_free(&f);
    rc = st_load(&f, write_raw("empty.safetensors", "{}", 0, 0), err, sizeof(err));
    EXPECT(rc == 0 && f.num_tensors == 0, "an empty file: rc %d '%s'", rc, err);
    if (rc == 0) st_free(&f);
}

// A two-tensor layout, "a" (2, 3) and the scalar "b", for load_weights_by_name without a whole model.
static ParamTensor fake_tensors[2] = {{.name = "a", .ndim = 2, .shape = {2, 3}, .offset = 0, .numel = 6}, {.name = "b", .ndim = 0, .offset = 8, .numel = 1}};
static const ClipLayout fake_layout = {.tensors = fake_tensors, .num_tensors = 2, .buffer_elems = 16};

// Writes name with tensor a (dtype, shape a_shape of a_ndim dims, data from a_data), b (F32 scalar 5) and, if extra,
// a tensor "c"; then loads it into params with load_weights_by_name and the extra-tensor check. Returns their rc.
static int load_fake(const char *name, const char *dtype, int a_ndim, const int64_t *a_shape, const void *a_data, int extra, float *params,
                     char *err, size_t errlen) {
    float b = 5, c = 6;
    StWriter *w = st_writer_new();
    st_writer_add(w, "a", dtype, a_ndim, a_shape, a_data);
    st_writer_add(w, "b", "F32", 0, NULL, &b);
    if (extra) st_writer_add(w, "visual.transformer.resblocks.0.ls_1.gamma", "F32", 0, NULL, &c);
    if (st_write(w, test_path(name), err, errlen) != 0) return -2;
    StFile f;
    if (st_load(&f, test_path(name), err, errlen) != 0) return -3;
    int rc = load_weights_by_name(&fake_layout, params, &f, "", err, errlen);
    if (rc == 0) rc = check_no_extra_tensors(&fake_layout, &f, "", err, errlen);
    st_free(&f);
    return rc;
}

static void load_i32_weights(void *arg) {
    int32_t ints[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    float params[16];
    char err[512];
    int rc = load_fake("i32.safetensors", "I32", 2, shape, ints, 0, params, err, sizeof(err));
    fprintf(stderr, "%s", err);
    _exit(rc == -1 ? 0 : 3);
}

// Weights are checked against the config's shapes (not just element counts), dtypes and tensor names, and
// read from F32, BF16 and F16; each problem is an error that names the file and the tensor.
static void test_load_weights_checks_tensors(void) {
    mkdir_p(test_dir());
    float params[16], a[6] = {1, -2, 0.5f, 3, 1e-7f, -0.0f};
    int64_t shape[2] = {2, 3}, transposed[2] = {3, 2};
    char err[512] = "";
    int rc = load_fake("ok.safetensors", "F32", 2, shape, a, 0, params, err, sizeof(err));
    EXPECT(rc == 0 && !memcmp(params, a, sizeof(a)) && params[8] == 5, "F32 weights: rc %d %s", rc, err);
    rc = load_fake("transposed.safetensors", "F32", 2, transposed, a, 0, params, err, sizeof(err));
    EXPECT(rc == -1 && strstr(err, "transposed.safetensors") && strstr(err, "tensor a") && strstr(err, "shape"), "(3, 2) loaded as (2, 3): rc %d '%s'", rc, err);
    int64_t flat[1] = {6};
    rc = load_fake("flat.safetensors", "F32", 1, flat, a, 0, params, err, sizeof(err));
    EXPECT(rc == -1 && strstr(err, "flat.safetensors") && strstr(err, "shape"), "(6) loaded as (2, 3): rc %d '%s'", rc, err);
    rc = load_fake("extra.safetensors", "F32", 2, shape, a, 1, params, err, sizeof(err));
    EXPECT(rc == -1 && strstr(err, "extra.safetensors") && strstr(err, "ls_1.gamma"), "a tensor the config lacks was ignored: rc %d '%s'", rc, err);
    // open_clip's bf16 / fp16 exports: the exact conversions of these values
    uint16_t bf16[6] = {0x3F80, 0xC000, 0x3F00, 0x4040, 0x0001, 0x8000}, f16[6] = {0x3C00, 0xC000, 0x3800, 0x4200, 0x0001, 0x8000};
    float want_bf16[6] = {1, -2, 0.5f, 3, 9.18354962e-41f, -0.0f}, want_f16[6] = {1, -2, 0.5f, 3, 5.96046448e-08f, -0.0f};
    rc = load_fake("bf16.safetensors", "BF16", 2, shape, bf16, 0, params, err, sizeof(err));
    EXPECT(rc == 0 && !memcmp(params, want_bf16, sizeof(want_bf16)), "BF16 weights: rc %d %s", rc, err);
    rc = load_fake("f16.safetensors", "F16", 2, shape, f16, 0, params, err, sizeof(err));
    EXPECT(rc == 0 && !memcmp(params, want_f16, sizeof(want_f16)), "F16 weights: rc %d %s", rc, err);
    // f16's edges: infinities, a NaN, the largest finite, the largest subnormal, the smallest normal (float bits, from
    // Python's struct '<e')
    uint16_t f16_edges[6] = {0x7C00, 0xFC00, 0x7E00, 0x7BFF, 0x03FF, 0x0400};
    uint32_t want_edges[6] = {0x7F800000, 0xFF800000, 0x7FC00000, 0x477FE000, 0x387FC000, 0x38800000};
    rc = load_fake("f16_edges.safetensors", "F16", 2, shape, f16_edges, 0, params, err, sizeof(err));
    EXPECT(rc == 0 && !memcmp(params, want_edges, sizeof(want_edges)), "F16 edges: rc %d %s", rc, err);
    double f64[6] = {1, -2, 0.5, 3, 1e-7, -0.0};
    rc = load_fake("f64.safetensors", "F64", 2, shape, f64, 0, params, err, sizeof(err));
    EXPECT(rc == 0 && !memcmp(params, a, sizeof(a)), "F64 weights: rc %d %s", rc, err);
    char msg[1024];
    int code = test_in_child(load_i32_weights, NULL, msg, sizeof(msg));
    EXPECT(code == 0 && strstr(msg, "i32.safetensors") && strstr(msg, "tensor a") && strstr(msg, "I32"),
           "I32 weights: exit %d '%s' (an error return, not a stop, lets resume = latest fall back)", code, msg);
}

// A state file for fake_layout at path with the given step, optimizer_t and config metadata; with extra, also the
// moments of a tensor fake_layout lacks.
static int write_fake_state(const char *path, const char *step, const char *t, const char *config, int extra, char *err, size_t errlen) {
    static float zeros[16];
    int64_t shape[2] = {2, 3};
    StWriter *w = st_writer_new();
    st_writer_add(w, "exp_avg.a", "F32", 2, shape, zeros), st_writer_add(w, "exp_avg.b", "F32", 0, NULL, zeros);
    st_writer_add(w, "exp_avg_sq.a", "F32", 2, shape, zeros), st_writer_add(w, "exp_avg_sq.b", "F32", 0, NULL, zeros);
    if (extra) st_writer_add(w, "exp_avg_sq.visual.transformer.resblocks.0.ls_1.gamma", "F32", 0, NULL, zeros);
    st_writer_meta(w, "format", "train_clip-state-1");
    st_writer_meta(w, "step", step), st_writer_meta(w, "optimizer_t", t);
    st_writer_meta(w, "loader", "synthetic position=64"), st_writer_meta(w, "config", config);
    return st_write(w, path, err, errlen);
}

// A state file whose step or optimizer_t is not a number is damaged: resuming from it fails (it used to start
// at step 0, or from whatever number led the text), and resume = latest falls back past it.
static void test_resume_checks_state_metadata(void) {
    float params[16] = {0}, m[16] = {0}, u[16] = {0};
    Optimizer opt = {.m = m, .u = u, .t = 4};
    char err[512] = "", loader[256];
    EXPECT(checkpoint_save(test_path("meta"), 4, &fake_layout, params, &opt, "", "synthetic position=64", err, sizeof(err)) == 0, "save: %s", err);
    opt.t = 7;  // a skipped step: the optimizer's count trails the step's
    EXPECT(checkpoint_save(test_path("meta"), 8, &fake_layout, params, &opt, "", "synthetic position=128", err, sizeof(err)) == 0, "save: %s", err);
    char state8[512];
    snprintf(state8, sizeof(state8), "%s", test_path("meta/checkpoints/step_00000008.state.safetensors"));
    opt.t = 0;
    long step = checkpoint_resume(test_path("meta"), state8, NULL, &fake_layout, params, &opt, loader, sizeof(loader), err, sizeof(err));
    EXPECT(step == 8 && !strcmp(loader, "synthetic position=128") && opt.t == 7, "good state file: step %ld, optimizer_t %ld (saved 7) '%s'",
           step, opt.t, err);
    step = checkpoint_resume(test_path("meta"), "/x/step_00000008.model.safetensors.bak", NULL, &fake_layout, params, &opt, loader, sizeof(loader), err, sizeof(err));
    EXPECT(step == -1 && strstr(err, "expected latest or"), "resume = *.model.safetensors.bak: step %ld '%s'", step, err);
    static const char *bad[][2] = {{"", "8"}, {"8x", "8"}, {"-8", "8"}, {"0", "8"}, {"8", ""}, {"8", "eight"}, {"8", "-1"}};
    for (int i = 0; i < 7; i++) {
        write_fake_state(state8, bad[i][0], bad[i][1], "", 0, err, sizeof(err));
        err[0] = '\0';
        step = checkpoint_resume(test_path("meta"), state8, NULL, &fake_layout, params, &opt, loader, sizeof(loader), err, sizeof(err));
        EXPECT(step == -1 && strstr(err, "step_00000008.state.safetensors") && (strstr(err, "step") || strstr(err, "optimizer_t")),
               "step '%s', optimizer_t '%s': resumed at step %ld ('%s')", bad[i][0], bad[i][1], step, err);
        step = checkpoint_resume(test_path("meta"), "latest", NULL, &fake_layout, params, &opt, loader, sizeof(loader), err, sizeof(err));
        EXPECT(step == 4 && !strcmp(loader, "synthetic position=64"), "latest with a damaged step 8: step %ld ('%s')", step, err);
    }
    // moments of a tensor this config lacks (another model's, or layer-scale's): not this run's state file
    write_fake_state(state8, "8", "8", "", 1, err, sizeof(err));
    err[0] = '\0';
    step = checkpoint_resume(test_path("meta"), state8, NULL, &fake_layout, params, &opt, loader, sizeof(loader), err, sizeof(err));
    EXPECT(step == -1 && strstr(err, "exp_avg_sq.visual.transformer.resblocks.0.ls_1.gamma"), "a state file with an extra tensor: step %ld '%s'", step, err);
}

// Saving a step that already has a checkpoint (a run re-running steps after resume = latest fell back past a
// damaged one) removes the old state file first: if writing the new state then fails, the new weights must not
// pair with the old moments and data position as a "complete" checkpoint.
static void test_resave_never_mixes_halves(void) {
    float p1[16] = {1}, p2[16] = {2}, got[16] = {0}, m[16] = {0}, u[16] = {0};
    Optimizer opt = {.m = m, .u = u, .t = 4};
    char err[512] = "", loader[256] = "", tmp[512];
    EXPECT(checkpoint_save(test_path("resave"), 4, &fake_layout, p1, &opt, "", "synthetic position=64", err, sizeof(err)) == 0, "save: %s", err);
    snprintf(tmp, sizeof(tmp), "%s", test_path("resave/checkpoints/step_00000004.state.safetensors.tmp"));
    mkdir_p(tmp);  // the state file's write fails, after the weights' succeeded
    int rc = checkpoint_save(test_path("resave"), 4, &fake_layout, p2, &opt, "", "synthetic position=99", err, sizeof(err));
    rmdir(tmp);
    EXPECT(rc == -1, "the second save should have failed");
    long step = checkpoint_resume(test_path("resave"), "latest", NULL, &fake_layout, got, &opt, loader, sizeof(loader), err, sizeof(err));
    EXPECT(step == -1 || (got[0] == 1 && !strcmp(loader, "synthetic position=64")),
           "step %ld resumed with weights %g (new) and data position '%s' (old)", step, got[0], loader);
}

// More checkpoints than the directory listing's 4096 slots (keep_checkpoints is up to 1000000): the newest is still
// found (the listing kept whichever the directory returned first) and pruning deletes the oldest.
static void test_many_checkpoints_newest_found(void) {
    char path[512];
    mkdir_p(test_path("many/checkpoints"));
    for (int s = 1; s <= 5000; s++) {
        snprintf(path, sizeof(path), "%s/step_%08d.state.safetensors", test_path("many/checkpoints"), s);
        FILE *fp = fopen(path, "w");
        if (fp) fclose(fp);
    }
    long newest = checkpoint_newest_step(test_path("many"));
    EXPECT(newest == 5000, "newest of 5000 checkpoints: %ld", newest);
    checkpoint_prune(test_path("many"), 10, 5000);
    EXPECT(access(test_path("many/checkpoints/step_00004991.state.safetensors"), F_OK) == 0 &&
               access(test_path("many/checkpoints/step_00004990.state.safetensors"), F_OK) != 0,
           "pruning 5000 checkpoints to 10 did not keep exactly steps 4991-5000");
}

// Pruning also deletes what interrupted saves left (weights without a state file, temporary files) older than the
// checkpoints it keeps: each is a model's size, and a run preempted often would otherwise fill its disk.
static void test_prune_deletes_leftovers(void) {
    static const char *files[] = {"step_00000002.model.safetensors", "step_00000003.state.safetensors.tmp", "step_00000003.model.safetensors.tmp",
                                  "step_00000004.model.safetensors", "step_00000004.state.safetensors", "step_00000006.model.safetensors",
                                  "step_00000006.state.safetensors", "step_00000007.model.safetensors", "notes.txt"};
    char path[512];
    mkdir_p(test_path("leftovers/checkpoints"));
    for (int i = 0; i < 9; i++) {
        snprintf(path, sizeof(path), "%s/%s", test_path("leftovers/checkpoints"), files[i]);
        FILE *fp = fopen(path, "w");
        if (fp) fclose(fp);
    }
    checkpoint_prune(test_path("leftovers"), 1, 6);
    for (int i = 0; i < 9; i++) {
        snprintf(path, sizeof(path), "%s/%s", test_path("leftovers/checkpoints"), files[i]);
        int want = i >= 5;  // step 6 (kept), step 7's weights (being written, or newer), other files
        EXPECT((access(path, F_OK) == 0) == want, "%s: %s", files[i], want ? "deleted" : "left");
    }
}

// A shell command with every {D} replaced by this test's scratch directory; returns the exit code.
static const char *expand(const char *tmpl) {
    static char cmd[4096];
    size_t n = 0;
    for (const char *p = tmpl; *p && n < sizeof(cmd) - 80; p++) {
        if (!strncmp(p, "{D}", 3)) n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "%s", test_dir()), p += 2;
        else cmd[n++] = *p;
    }
    cmd[n] = '\0';
    return cmd;
}

static int sh(const char *tmpl) {
    int status = system(expand(tmpl));
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The data section of a safetensors file (all tensors), for bit-exact comparison without metadata.
static int same_tensors(const char *p1, const char *p2) {
    StFile a, b;
    char err[512];
    if (st_load(&a, p1, err, sizeof(err)) || st_load(&b, p2, err, sizeof(err))) return 0;
    int same = a.data_bytes == b.data_bytes && !memcmp(a.data, b.data, a.data_bytes) && a.num_tensors == b.num_tensors;
    st_free(&a), st_free(&b);
    return same;
}

static void test_resume_is_bit_exact(void) {
    sh("rm -rf {D}/straight {D}/split");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/straight > /dev/null") == 0, "straight run failed");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/split --set stop_after=6 > /dev/null") == 0, "first half failed");
    EXPECT(access(test_path("split/checkpoints/step_00000006.state.safetensors"), F_OK) == 0, "no checkpoint at step 6");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/split --set resume=latest > /dev/null") == 0, "resumed half failed");
    EXPECT(same_tensors(test_path("straight/checkpoints/step_00000012.model.safetensors"), test_path("split/checkpoints/step_00000012.model.safetensors")),
           "weights after 12 steps differ between straight and resumed runs");
    EXPECT(same_tensors(test_path("straight/checkpoints/step_00000012.state.safetensors"), test_path("split/checkpoints/step_00000012.state.safetensors")),
           "optimizer state after 12 steps differs between straight and resumed runs");
}

static void test_corrupt_latest_falls_back(void) {
    // the split run holds complete checkpoints at 6 and 12; damage 12
    EXPECT(truncate(test_path("split/checkpoints/step_00000012.state.safetensors"), 100) == 0, "truncate failed");
    char out[8192];
    EXPECT(run_command(expand(RUN_ARGS " --set run_dir={D}/split --set resume=latest 2>&1"), out, sizeof(out)) == 0,
           "resume after corruption failed: %s", out);
    EXPECT(strstr(out, "skipping checkpoint step 12") && strstr(out, "resumed from step 6"), "did not fall back to step 6: %s", out);
    EXPECT(same_tensors(test_path("straight/checkpoints/step_00000012.model.safetensors"), test_path("split/checkpoints/step_00000012.model.safetensors")),
           "re-run from step 6 differs from the straight run");
}

// A newer checkpoint that cannot be loaded (here: truncated) is skipped by resume = latest; pruning must not
// then count it among the newest and delete the checkpoints the resumed run writes (and the one it came from).
static void test_prune_keeps_checkpoints_after_fallback(void) {
    sh("rm -rf {D}/prune");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/prune --set checkpoint_every=6 > /dev/null") == 0, "first run failed");
    EXPECT(truncate(test_path("prune/checkpoints/step_00000012.state.safetensors"), 100) == 0, "truncate failed");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/prune --set resume=latest --set checkpoint_every=2 --set keep_checkpoints=1 --set stop_after=2 > /dev/null 2>&1") == 0,
           "resumed run failed");
    EXPECT(access(test_path("prune/checkpoints/step_00000008.state.safetensors"), F_OK) == 0 &&
               access(test_path("prune/checkpoints/step_00000008.model.safetensors"), F_OK) == 0,
           "the checkpoint at step 8, just written, was pruned because of the damaged one at step 12");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/prune --set resume=latest --set stop_after=1 2>&1 | grep -q 'resumed from step 8'") == 0,
           "resume = latest did not continue from step 8");
}

// Resuming training from an explicit checkpoint older than the run directory's newest would later make
// resume = latest (or pruning) pick the abandoned newer checkpoints over the new ones: refused, with the reason.
static void test_resume_older_than_newest_is_refused(void) {
    sh("rm -rf {D}/rollback {D}/rollback2");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/rollback --set checkpoint_every=6 > /dev/null") == 0, "first run failed");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/rollback --set resume={D}/rollback/checkpoints/step_00000006.model.safetensors "
              "--set checkpoint_every=2 2>&1 | grep -q 'newer checkpoint (step 12)'") == 0,
           "resuming step 6 into a run directory holding step 12 did not stop naming step 12");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/rollback --set resume={D}/rollback/checkpoints/step_00000006.model.safetensors > /dev/null 2>&1") == 1,
           "resuming step 6 into a run directory holding step 12 must fail");
    EXPECT(access(test_path("rollback/checkpoints/step_00000012.state.safetensors"), F_OK) == 0, "step 12 was touched");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/rollback2 --set resume={D}/rollback/checkpoints/step_00000006.model.safetensors > /dev/null 2>&1") == 0,
           "resuming step 6 into a new run directory failed");
}

// A fresh start (no resume) into a run_dir holding checkpoints is refused with a message naming the run_dir and
// resume = latest (--dry-run says so too), and leaves the earlier run's checkpoints, config and log as they were;
// resume = auto starts fresh where there is no checkpoint and continues where there is.
static void test_fresh_start_over_checkpoints_is_refused(void) {
    sh("rm -rf {D}/again");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/again --set steps=4 --set checkpoint_every=2 > /dev/null") == 0, "first run failed");
    EXPECT(sh("cat {D}/again/checkpoints/* {D}/again/config.conf {D}/again/log.jsonl | md5sum > {D}/again.md5") == 0, "md5sum failed");
    char out[4096];
    int rc = run_command(expand(RUN_ARGS " --set run_dir={D}/again --set steps=6 2>&1"), out, sizeof(out));
    EXPECT(rc != 0 && strstr(out, "holds an earlier run's checkpoints (newest: step 4)") && strstr(out, "resume=latest") &&
               strstr(out, "/again"),
           "a fresh start over step 4's checkpoint: rc %d, output: %s", rc, out);
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/again --dry-run 2>&1 | grep -q 'holds checkpoints (newest: step 4)'") == 0,
           "--dry-run does not say that a real run would stop");
    EXPECT(sh("cat {D}/again/checkpoints/* {D}/again/config.conf {D}/again/log.jsonl | md5sum | cmp -s - {D}/again.md5") == 0,
           "the refused start changed the earlier run's files");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/again --set steps=6 --set resume=latest > /dev/null") == 0, "resume = latest after it failed");
    // resume = auto: a fresh start in an empty run_dir, then a resume of its checkpoint
    sh("rm -rf {D}/auto");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/auto --set steps=4 --set resume=auto 2>&1 | grep -q 'resumed from'") == 1,
           "resume = auto in an empty run_dir did not start fresh");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/auto --set steps=6 --set resume=auto 2>&1 | grep -q 'resumed from step 4'") == 0,
           "resume = auto did not continue from step 4");
}

// Resuming with a config whose model differs from the checkpoint's in what the tensors' shapes do not show
// (attention heads, QuickGELU) stops with an error naming the key; other settings (lr) may change.
static void test_resume_with_other_model_is_refused(void) {
    sh("rm -rf {D}/arch");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set steps=4 > /dev/null") == 0, "first run failed");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set resume=latest --set vision_heads=2 2>&1 | grep -q 'vision_heads'") == 0,
           "resuming 4 vision heads with 2 did not name vision_heads");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set resume=latest --set text_heads=8 > /dev/null 2>&1") == 1, "resuming 4 text heads with 8 must fail");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set resume=latest --set quick_gelu=true > /dev/null 2>&1") == 1, "resuming GELU with QuickGELU must fail");
    // a changed batch_size (precision, optimizer) resumes, with a warning naming both values
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set resume=latest --set steps=5 --set batch_size=8 > {D}/arch_bs.out 2>&1") == 0 &&
               sh("grep -q 'warning: resuming with batch_size = 8; the checkpoint was trained with 16' {D}/arch_bs.out") == 0,
           "resuming with batch_size 8 after 16 did not go on with a warning naming both");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/arch --set resume=latest --set lr=0.002 > /dev/null 2>&1") == 0, "resuming with another lr failed");
}

// init_weights loads every tensor: with lr = 0 the run's final weights are exactly the initial ones.
static void test_init_weights_loads_all_tensors(void) {
    sh("rm -rf {D}/init");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/init --set lr=0 --set steps=2 --set init_weights={D}/straight/checkpoints/step_00000012.model.safetensors > /dev/null") == 0,
           "run with init_weights failed");
    EXPECT(same_tensors(test_path("straight/checkpoints/step_00000012.model.safetensors"), test_path("init/checkpoints/step_00000002.model.safetensors")),
           "weights after 2 steps at lr 0 differ from init_weights");
    EXPECT(sh(RUN_ARGS " --set run_dir={D}/init --set init_weights=/nonexistent.safetensors > /dev/null 2>&1") == 1, "a missing init_weights file must fail");
}

static void test_sigterm_saves_and_stops(void) {
    sh("rm -rf {D}/sig");
    pid_t pid = fork();
    if (pid == 0) {
        freopen("/dev/null", "w", stdout);
        execl("/bin/sh", "sh", "-c", expand("exec ./train_clip -c configs/tiny.conf --set batch_size=16 --set steps=100000 --set checkpoint_every=0 --set run_dir={D}/sig"), (char *)NULL);
        _exit(127);
    }
    sleep(2);
    kill(pid, SIGTERM);
    int status;
    waitpid(pid, &status, 0);
    EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "train_clip did not exit cleanly on SIGTERM (status %d)", status);
    EXPECT(sh("ls {D}/sig/checkpoints/*.state.safetensors > /dev/null 2>&1") == 0, "no checkpoint after SIGTERM");
}

int main(void) {
    RUN(test_safetensors_round_trip);
    RUN(test_metadata_is_utf8);
    RUN(test_failed_write_keeps_previous_file);
    RUN(test_full_disk_keeps_previous_file);
    RUN(test_truncated_file_is_rejected);
    RUN(test_bad_headers_rejected);
    RUN(test_load_weights_checks_tensors);
    RUN(test_resume_checks_state_metadata);
    RUN(test_resave_never_mixes_halves);
    RUN(test_many_checkpoints_newest_found);
    RUN(test_prune_deletes_leftovers);
    RUN(test_resume_is_bit_exact);
    RUN(test_corrupt_latest_falls_back);
    RUN(test_prune_keeps_checkpoints_after_fallback);
    RUN(test_resume_older_than_newest_is_refused);
    RUN(test_fresh_start_over_checkpoints_is_refused);
    RUN(test_resume_with_other_model_is_refused);
    RUN(test_init_weights_loads_all_tensors);
    RUN(test_sigterm_saves_and_stops);
    TEST_EXIT();
}
