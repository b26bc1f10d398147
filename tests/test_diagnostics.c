// test_diagnostics.c: the loss-spike detector and the RMS history it reports; the run's failure paths:
// an unwritable run_dir and a disk that fills up during a checkpoint give a clear error and leave the
// previous good checkpoint intact.
#include <sys/wait.h>

#include "../model/utils.h"
#include "../optim/diagnostics.h"
#include "test.h"

static void test_spike_event_carries_rms_history(void) {
    Config c;
    config_load(&c, "configs/tiny.conf");
    ClipLayout L;
    clip_layout_build(&L, &c);
    Diagnostics d;
    diag_init(&d, &c, &L);
    EXPECT(d.num_watch == 9 && !strcmp(L.tensors[d.watch[0]].name, "visual.conv1.weight"), "default watch list: %d tensors", d.num_watch);
    float *rms = callocCheck((size_t)L.num_tensors, sizeof(float));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    int spikes_at[3] = {0}, n = 0;
    for (long step = 1; step <= 60; step++) {
        // a loss slowly falling with +-2% noise, the patch-embedding RMS jumping 3 steps before a spike at 50
        float loss = 3.0f - 0.01f * step + 0.06f * (float)((step * 7) % 5 - 2) / 2;
        if (step == 50) loss = 5.0f;
        rms[d.watch[0]] = step >= 47 && step < 50 ? 4.0f + (step - 47) : 0.9f;
        StepRecord r = {step, step * 64, loss, 1e-3f, 14.f, 1.f, 0.1, 640, 0, 0};
        if (diag_step(&d, f, &r, rms) && n < 3) spikes_at[n++] = (int)step;
    }
    fclose(f);
    EXPECT(n == 1 && spikes_at[0] == 50, "spikes detected %d (first at %d), want exactly one at step 50", n, spikes_at[0]);
    const char *ev = strstr(buf, "{\"event\":\"spike\",\"step\":50,");
    EXPECT(ev != NULL, "no spike event line for step 50");
    EXPECT(ev && strstr(ev, "\"steps_before\":[40,41,42,43,44,45,46,47,48,49]"), "event lacks the 10 steps before");
    EXPECT(ev && strstr(ev, "\"visual.conv1.weight\":[0.9,0.9,0.9,0.9,0.9,0.9,0.9,4,5,6]"), "event lacks the patch RMS history: %.300s", ev ? ev : "");
    free(buf), free(rms);
    clip_layout_free(&L);
}

static int run(const char *cmd, char *out, size_t cap) {
    FILE *p = popen(cmd, "r");
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define ARGS "./train_clip -c configs/tiny.conf --set batch_size=8 --set steps=4 --set log_every=100 "

static void test_unwritable_run_dir_is_a_clear_error(void) {
    char out[4096];
    int rc = run(ARGS "--set run_dir=/dev/null/run 2>&1", out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "cannot create run_dir /dev/null/run"), "rc %d, output: %s", rc, out);
}

// A file-size limit makes the next checkpoint's write fail like a full disk would.
static void test_full_disk_keeps_previous_checkpoint(void) {
    char out[8192], cmd[1024];
    const char *dir = test_path("full");
    snprintf(cmd, sizeof(cmd), ARGS "--set run_dir=%s --set stop_after=2 >/dev/null 2>&1", dir);
    int rc = run(cmd, out, sizeof(out));
    EXPECT(rc == 0, "first run failed");
    snprintf(cmd, sizeof(cmd), "sh -c 'ulimit -f 64; exec " ARGS "--set run_dir=%s --set resume=latest 2>&1'", dir);
    rc = run(cmd, out, sizeof(out));
    EXPECT(rc == 1 && strstr(out, "checkpoint at step 4 failed") && strstr(out, "earlier checkpoints are untouched"), "rc %d: %s", rc, out);
    snprintf(cmd, sizeof(cmd), ARGS "--set run_dir=%s --set resume=latest 2>&1", dir);
    rc = run(cmd, out, sizeof(out));
    EXPECT(rc == 0 && strstr(out, "resumed from step 2"), "previous checkpoint not usable after the failed write: %s", out);
}

int main(void) {
    RUN(test_spike_event_carries_rms_history);
    RUN(test_unwritable_run_dir_is_a_clear_error);
    RUN(test_full_disk_keeps_previous_checkpoint);
    TEST_EXIT();
}
