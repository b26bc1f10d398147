// test_diagnostics.c: the loss-spike detector and the RMS history it reports; the run's failure paths:
// an unwritable run_dir and a disk that fills up during a checkpoint give a clear error and leave the
// previous good checkpoint intact.
#include <sys/wait.h>

#include "../model/utils.h"
#include "../optim/diagnostics.h"
#include "test.h"

// ---------------------------------------------------------------- a strict JSON checker (RFC 8259: no nan, inf, NaN)

static const char *json_value(const char *p);

static const char *json_ws(const char *p) {
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') p++;
    return p;
}

static const char *json_string(const char *p) {
    if (*p++ != '"') return NULL;
    for (; *p != '"'; p++) {
        if ((unsigned char)*p < 0x20) return NULL;
        if (*p == '\\' && (!*++p || !strchr("\"\\/bfnrtu", *p))) return NULL;
    }
    return p + 1;
}

static const char *json_number(const char *p) {
    const char *s = p;
    if (*p == '-') p++;
    if (*p == '0') p++;
    else if (*p >= '1' && *p <= '9') while (*p >= '0' && *p <= '9') p++;
    else return NULL;
    if (*p == '.') {
        if (*++p < '0' || *p > '9') return NULL;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p == 'e' || *p == 'E') {
        if (*++p == '+' || *p == '-') p++;
        if (*p < '0' || *p > '9') return NULL;
        while (*p >= '0' && *p <= '9') p++;
    }
    return p > s ? p : NULL;
}

static const char *json_value(const char *p) {
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = json_ws(p + 1);
        if (*p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                if (!(p = json_string(json_ws(p)))) return NULL;
                if (*(p = json_ws(p)) != ':') return NULL;
                p++;
            }
            if (!(p = json_value(p))) return NULL;
            p = json_ws(p);
            if (*p == close) return p + 1;
            if (*p++ != ',') return NULL;
        }
    }
    if (*p == '"') return json_string(p);
    for (const char *lit[3] = {"true", "false", "null"}, **l = lit; l < lit + 3; l++)
        if (!strncmp(p, *l, strlen(*l))) return p + strlen(*l);
    return json_number(p);
}

// 1 if every line of buf is one complete JSON object; else 0 and the first bad line in bad
static int json_lines_valid(const char *buf, char *bad, size_t cap) {
    for (const char *line = buf; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        char *copy = strndup(line, len);
        const char *end = *json_ws(copy) == '{' ? json_value(copy) : NULL;
        int ok = nl && end && *json_ws(end) == '\0';
        if (!ok) snprintf(bad, cap, "%s", copy);
        free(copy);
        if (!ok) return 0;
        line += len + 1;
    }
    return 1;
}

static void test_json_checker(void) {
    char bad[256];
    EXPECT(json_lines_valid("{\"a\":1.5e-3,\"b\":[true,null,\"x\\\"y\"],\"c\":{}}\n", bad, sizeof(bad)), "valid line refused");
    const char *invalid[] = {"{\"a\":nan}\n", "{\"a\":-nan}\n", "{\"a\":inf}\n", "{\"a\":NaN}\n", "{\"a\":1}", "{\"a\":1,}\n", "{\"a\":1}}\n"};
    for (int i = 0; i < 7; i++) EXPECT(!json_lines_valid(invalid[i], bad, sizeof(bad)), "invalid line %d accepted", i);
}

// The tiny config's layout, fresh diagnostics over it and a zeroed per-tensor RMS array (fixture_free frees them).
typedef struct {
    Config c;
    ClipLayout L;
    Diagnostics d;
    float *rms;
} Fixture;

static Fixture *fixture_new(void) {
    Fixture *x = callocCheck(1, sizeof(Fixture));
    config_load(&x->c, "configs/tiny.conf");
    clip_layout_build(&x->L, &x->c);
    diag_init(&x->d, &x->c, &x->L);
    x->rms = callocCheck((size_t)x->L.num_tensors, sizeof(float));
    return x;
}

static void fixture_free(Fixture *x) {
    free(x->rms);
    clip_layout_free(&x->L);
    free(x);
}

static void test_spike_event_carries_rms_history(void) {
    Fixture *x = fixture_new();
    Diagnostics *d = &x->d;
    const ClipLayout *L = &x->L;
    float *rms = x->rms;
    EXPECT(d->num_watch == 9 && !strcmp(L->tensors[d->watch[0]].name, "visual.conv1.weight"), "default watch list: %d tensors", d->num_watch);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int spikes_at[3] = {0}, n = 0;
    double reference_before = 0;
    for (long step = 1; step <= 60; step++) {
        if (step == 50) reference_before = d->reference;
        // a loss slowly falling with +-2% noise, the patch-embedding RMS jumping 3 steps before a spike at 50
        float loss = 3.0f - 0.01f * step + 0.06f * (float)((step * 7) % 5 - 2) / 2;
        if (step == 50) loss = 5.0f;
        rms[d->watch[0]] = step >= 47 && step < 50 ? 4.0f + (step - 47) : 0.9f;
        StepRecord r = {step, step * 64, loss, 1e-3f, 14.f, 1.f, 0.1, 640, 0, 0};
        if (diag_step(d, f, &r, rms) && n < 3) spikes_at[n++] = (int)step;
        if (step == 50) {  // the console line: the same steps before (the oldest gone), not the spike step's own RMS
            char *line = NULL;
            size_t line_len = 0;
            FILE *out = open_memstream(&line, &line_len);
            diag_print_spike(d, out, &r);
            fclose(out);
            EXPECT(strstr(line, "visual.conv1.weight RMS over the steps before: 0.90 0.90 0.90 0.90 0.90 0.90 4.00 5.00 6.00 (see"),
                   "console line: %s", line);
            free(line);
            EXPECT(d->reference == reference_before, "the spike's loss joined the reference: %.9g, before it %.9g", d->reference, reference_before);
        }
    }
    fclose(f);
    EXPECT(n == 1 && spikes_at[0] == 50, "spikes detected %d (first at %d), want exactly one at step 50", n, spikes_at[0]);
    const char *ev = strstr(buf, "{\"event\":\"spike\",\"step\":50,");
    EXPECT(ev != NULL, "no spike event line for step 50");
    EXPECT(ev && strstr(ev, "\"steps_before\":[40,41,42,43,44,45,46,47,48,49]"), "event lacks the 10 steps before");
    EXPECT(ev && strstr(ev, "\"visual.conv1.weight\":[0.9,0.9,0.9,0.9,0.9,0.9,0.9,4,5,6]"), "event lacks the patch RMS history: %.300s", ev ? ev : "");
    free(buf);
    fixture_free(x);
}

// The reference builds over 20 steps first: a jump at step 10 is no spike (it joins the reference), one at step 21
// (20 steps observed) is.
static void test_spike_warm_in_is_20_steps(void) {
    Fixture *x = fixture_new();
    Diagnostics *d = &x->d;
    float *rms = x->rms;
    FILE *f = fopen("/dev/null", "w");
    int spikes_at[3] = {0}, n = 0;
    for (long step = 1; step <= 25; step++) {
        StepRecord r = {step, step * 8, step == 10 || step == 21 ? 9.0f : 2.0f, 1e-3f, 14.f, 1.f, 0.1, 80, 0, 0};
        if (diag_step(d, f, &r, rms) && n < 3) spikes_at[n++] = (int)step;
    }
    fclose(f);
    EXPECT(n == 1 && spikes_at[0] == 21, "%d spikes (first at %d, second at %d), want one at step 21", n, spikes_at[0], spikes_at[1]);
    fixture_free(x);
}

// A skipped step (non-finite loss or gradient norm) and a step timed at 0 s: every line stays JSON (null, not nan/inf),
// the skipped step reports no RMS (the optimizer did not run: opt.rms still holds the step before's) and stays out
// of the RMS history a later spike event shows.
static void test_non_finite_values_stay_json(void) {
    Fixture *x = fixture_new();
    Diagnostics *d = &x->d;
    float *rms = x->rms;
    char *buf = NULL, bad[4096];
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    for (long step = 1; step <= 30; step++) {
        rms[d->watch[0]] = (float)step;
        StepRecord r = {step, step * 8, 2.0f, 1e-3f, 14.f, 1.f, 0.1, 80, 0, 0};
        if (step == 25) r.loss = NAN, r.grad_norm = NAN, r.skipped = 1;
        if (step == 26) r.grad_norm = INFINITY, r.skipped = 1;
        if (step == 27) r.loss = -INFINITY, r.skipped = 1;
        if (step == 6) r.step_s = 0, r.img_per_s = INFINITY;
        if (step == 30) r.loss = 9.0f;  // a spike: its event lists the steps before
        diag_step(d, f, &r, rms);
    }
    fclose(f);
    EXPECT(json_lines_valid(buf, bad, sizeof(bad)), "a log line is not JSON: %.300s", bad);
    const char *s25 = strstr(buf, "{\"step\":25,");
    EXPECT(s25 && strstr(s25, "\"loss\":null,") && strstr(s25, "\"grad_norm\":null,"), "step 25: %.200s", s25 ? s25 : "(none)");
    EXPECT(s25 && strstr(s25, "\"rms_max\":null,\"rms_max_tensor\":null,") && strstr(s25, "\"visual.conv1.weight\":null"),
           "the skipped step 25 logs an RMS: %.400s", s25 ? s25 : "(none)");
    const char *ev = strstr(buf, "{\"event\":\"spike\",\"step\":30,");
    EXPECT(ev && strstr(ev, "\"steps_before\":[17,18,19,20,21,22,23,24,28,29]") &&
           strstr(ev, "\"visual.conv1.weight\":[17,18,19,20,21,22,23,24,28,29]"), "event: %.300s", ev ? ev : "(none)");
    free(buf);
    fixture_free(x);
}

// A step-log write that fails (here /dev/full: a full disk) does not stop the run, whose progress is in its checkpoints:
// diag_step warns, and the log takes records again once writes succeed.
static void test_failed_log_write_goes_on(void) {
    FILE *full = fopen("/dev/full", "w");
    if (!full) SKIP("no /dev/full");
    Fixture *x = fixture_new();
    Diagnostics *d = &x->d;
    float *rms = x->rms;
    StepRecord r = {1, 8, 2.0f, 1e-3f, 14.f, 1.f, 0.1, 80, 0, 0};
    diag_step(d, full, &r, rms);
    r.step = 2;
    diag_step(d, full, &r, rms);
    EXPECT(d->log_failed_at == 1, "failed writes at steps 1 and 2: log_failed_at %ld, want 1", d->log_failed_at);
    fclose(full);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    r.step = 3;
    diag_step(d, f, &r, rms);
    fclose(f);
    EXPECT(d->log_failed_at == 0 && buf && !strncmp(buf, "{\"step\":3,", 10), "after the failure: log_failed_at %ld, log '%.60s'",
           d->log_failed_at, buf ? buf : "");
    free(buf);
    fixture_free(x);
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    for (int ch; (ch = fgetc(f)) != EOF;) fputc(ch, m);
    fclose(m), fclose(f);
    return buf;
}

// steps first..last of a made-up run into f: losses and RMS with few digits (they read back exactly from the log),
// spikes at 34 and 37, a skipped step at 29, an evaluation record after step 30
static void fake_steps(Diagnostics *d, FILE *f, long first, long last) {
    float *rms = callocCheck((size_t)d->layout->num_tensors, sizeof(float));
    for (long step = first; step <= last; step++) {
        for (int w = 0; w < d->num_watch; w++) rms[d->watch[w]] = 0.25f * (float)(step % 9) + 0.5f * (float)w;
        StepRecord r = {step, step * 8, 3.0f - 0.125f * (float)(step % 8), 1e-3f, 14.f, 1.f, 0.1, 80, 0, 0};
        if (step == 34 || step == 37) r.loss = 7.5f;
        if (step == 29) r.loss = NAN, r.skipped = 1;
        diag_step(d, f, &r, rms);
        if (step == 30) fprintf(f, "{\"eval\":true,\"step\":30,\"val_loss\":2.5}\n");
    }
    free(rms);
}

// A run killed after its checkpoint at step 30 had logged steps 31-33 and part of 34; resumed from 30, its
// log.jsonl must read exactly as the uninterrupted run's: no step twice, no cut line, and the spike detector's
// reference, count and RMS history continued (the spikes at 34 and 37 are found, with the same events).
static void test_resumed_log_continues_the_run(void) {
    Config c;
    config_load(&c, "configs/tiny.conf");
    ClipLayout L;
    clip_layout_build(&L, &c);
    char whole[600], resumed[600], fresh[600];
    snprintf(whole, sizeof(whole), "%s", test_path("whole.jsonl"));
    snprintf(resumed, sizeof(resumed), "%s", test_path("resumed.jsonl"));
    snprintf(fresh, sizeof(fresh), "%s", test_path("fresh.jsonl"));
    Diagnostics d;
    diag_init(&d, &c, &L);
    FILE *f = diag_open_log(&d, whole, 0);
    fake_steps(&d, f, 1, 40);
    fclose(f);
    long spikes = d.spikes;
    double reference = d.reference;

    diag_init(&d, &c, &L);
    f = diag_open_log(&d, resumed, 0);
    fake_steps(&d, f, 1, 33);
    fprintf(f, "{\"step\":34,\"samples\":27");  // cut by the kill
    fclose(f);
    diag_init(&d, &c, &L);
    f = diag_open_log(&d, resumed, 30);
    fake_steps(&d, f, 31, 40);
    fclose(f);
    char *a = read_all(whole), *b = read_all(resumed), bad[4096];
    EXPECT(strstr(a, "{\"event\":\"spike\",\"step\":34,") && strstr(a, "{\"event\":\"spike\",\"step\":37,"), "the made-up run has no spikes");
    EXPECT(json_lines_valid(b, bad, sizeof(bad)), "a line of the resumed log is not JSON: %.200s", bad);
    EXPECT(strcmp(a, b) == 0, "the resumed log differs from the uninterrupted run's:\n%.3000s\nvs\n%.3000s", b, a);
    EXPECT(d.spikes == spikes && d.reference == reference, "resumed detector: %ld spikes, reference %.9g; uninterrupted %ld, %.9g",
           d.spikes, d.reference, spikes, reference);
    free(a), free(b);

    // resumed from 35, after the spike at 34: its record is replayed as a spike (counted, not in the reference); the
    // cut line holds no whole step number
    char after[600];
    snprintf(after, sizeof(after), "%s", test_path("after_spike.jsonl"));
    diag_init(&d, &c, &L);
    f = diag_open_log(&d, after, 0);
    fake_steps(&d, f, 1, 35);
    fprintf(f, "{\"step\":3");  // step 36's line, cut by the kill
    fclose(f);
    diag_init(&d, &c, &L);
    f = diag_open_log(&d, after, 35);
    fake_steps(&d, f, 36, 40);
    fclose(f);
    a = read_all(whole), b = read_all(after);
    EXPECT(strcmp(a, b) == 0, "the log resumed after a spike differs from the uninterrupted run's:\n%.3000s\nvs\n%.3000s", b, a);
    EXPECT(d.spikes == spikes && d.reference == reference, "resumed after a spike: %ld spikes, reference %.9g; uninterrupted %ld, %.9g",
           d.spikes, d.reference, spikes, reference);
    free(a), free(b);

    // a fresh run (start 0) in a run_dir with an old log starts the log anew
    f = fopen(fresh, "w");
    EXPECT(f && fputs("{\"step\":1,\"loss\":9}\n", f) >= 0 && fclose(f) == 0, "writing %s", fresh);
    diag_init(&d, &c, &L);
    f = diag_open_log(&d, fresh, 0);
    fclose(f);
    a = read_all(fresh);
    EXPECT(a[0] == '\0' && d.observed == 0, "a fresh run kept the old log: %s", a);
    free(a);
    clip_layout_free(&L);
}

#define ARGS "./train_clip -c configs/tiny.conf --set batch_size=8 --set steps=4 --set log_every=100 "

static void test_unwritable_run_dir_is_a_clear_error(void) {
    char out[4096];
    int rc = run_command(ARGS "--set run_dir=/dev/null/run 2>&1", out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "cannot create run_dir /dev/null/run"), "rc %d, output: %s", rc, out);
}

// A file-size limit makes the next checkpoint's write fail like a full disk would.
static void test_full_disk_keeps_previous_checkpoint(void) {
    char out[8192], cmd[1024];
    const char *dir = test_path("full");
    snprintf(cmd, sizeof(cmd), ARGS "--set run_dir=%s --set stop_after=2 >/dev/null 2>&1", dir);
    int rc = run_command(cmd, out, sizeof(out));
    EXPECT(rc == 0, "first run failed");
    snprintf(cmd, sizeof(cmd), "sh -c 'ulimit -f 64; exec " ARGS "--set run_dir=%s --set resume=latest 2>&1'", dir);
    rc = run_command(cmd, out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "checkpoint at step 4 failed") && strstr(out, "earlier checkpoints are untouched"), "rc %d: %s", rc, out);
    snprintf(cmd, sizeof(cmd), ARGS "--set run_dir=%s --set resume=latest 2>&1", dir);
    rc = run_command(cmd, out, sizeof(out));
    EXPECT(rc == 0 && strstr(out, "resumed from step 2"), "previous checkpoint not usable after the failed write: %s", out);
}

int main(void) {
    RUN(test_json_checker);
    RUN(test_spike_event_carries_rms_history);
    RUN(test_spike_warm_in_is_20_steps);
    RUN(test_non_finite_values_stay_json);
    RUN(test_failed_log_write_goes_on);
    RUN(test_resumed_log_continues_the_run);
    RUN(test_unwritable_run_dir_is_a_clear_error);
    RUN(test_full_disk_keeps_previous_checkpoint);
    TEST_EXIT();
}
