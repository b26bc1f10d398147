// test_multigpu.cu: data parallelism over 2 GPUs (model/clip_dist.cu, the multi-GPU step of model/clip_gpu.cu,
// the trainer's ranks), with real processes that this binary starts as a launcher would (RANK, WORLD_SIZE,
// LOCAL_RANK and a file rendezvous; no mpirun needed). Skipped without 2 GPUs (test 5: 1) or without NCCL.
//  1. Equivalence: 2 ranks holding 8 pairs each of a global batch of 16 against 1 process holding all 16, from
//     the same initial weights, two optimizer steps: loss and gradient norm of both steps, the step-1 gradients
//     (all together and per tensor), and after the second update the parameters, both moments and the
//     per-tensor RMS. Variants: fp32; fp32 with ZeRO-1 and micro-batches of 4; bf16; bf16 with ZeRO-1; the
//     gradients summed in bf16 (grad_reduce = bf16) with fp32, and with bf16 + ZeRO-1 + micro-batches of 4. The
//     two ranks' parameters and moments must also be bit-identical (replicas in step). Bounds (relative L2):
//       fp32: loss, norm 1e-5; gradients 2e-5 all, 1e-4 per tensor; parameters 1e-5; m 2e-5, u 5e-5; RMS 1e-4
//         (fp32 sums in another order: the batch split over ranks and micro-batches, the loss rows);
//       fp32, bf16 sum: loss 1e-3, norm 1e-2; gradients 2e-2 all, 0.2 per tensor; parameters 2e-2; m 3e-2, u 6e-2;
//         RMS 3e-2. Each rank's gradient and the sum are rounded to bf16 (unit roundoff 2^-9 = 2e-3 of |g0| +
//         |g1| per element: about 1.6e-3 relative for uncorrelated halves, more where they cancel, which a single
//         element of a tiny tensor such as logit_scale can); a weight whose step-1 gradient changes sign moves
//         2 lr the other way in Adam's sign-like first steps.
//       bf16: loss 5e-3, norm 2e-2; gradients 5e-2 all, 0.3 per tensor; parameters 5e-2; m 5e-2, u 0.1; RMS 5e-2
//         (bf16 activations: a different GEMM split may round differently; the first Adam step moves each
//         weight by about +-lr whatever its gradient's size, so a sign that rounding flips shows in full).
//         A missing reduction (one rank's half of the batch) is off by about 0.7 per tensor, the loss of the
//         local batch alone by log(16) / log(8).
//     Measured on 2 H200s (two runs, identical): fp32 loss 7.7e-8, grads 8.4e-7 (worst tensor 1.1e-6), params
//     8.5e-7, m 2.8e-6, u 2.3e-6, RMS 4.7e-7; bf16 loss 7.7e-8, grads 4.6e-8, params 1.3e-5, m 1.4e-4, RMS 3.2e-4
//     (the bf16 forward of a sample did not depend on the batch split there; the bounds allow for GEMMs that do).
//     TEST_MULTIGPU_MPIRUN="mpirun --allow-run-as-root" (say) runs only this test, its ranks started by that
//     mpirun (an MPI build: model/distributed.h's MPI start) instead of the environment and a file rendezvous.
//  2. Training: ./train_clip, tiny config, 100 steps of batch 64 on the synthetic source, 1 GPU against 2 GPUs
//     (zero = 0 and 1, fp32; and bf16 with zero = 1). Both see the same 64 samples per step (the synthetic
//     source deals a global stream over the ranks), so every 10-step mean loss must be within 1% (fp32) / 2%
//     (bf16) of the 1-GPU run's. Measured: fp32 every step within 5.2e-6 (both ZeRO settings); bf16 windows
//     within 0.3% (single steps up to 9%: bf16 rounding amplified over 100 steps).
//  3. Resume: 2 GPUs, bf16, ZeRO-1: 12 steps straight against 6 + checkpoint + resume + 6: final weights and
//     moments bit-identical, and the checkpoint holds both ranks' data positions. All three runs set
//     gemm_tuning = 8, which times the GEMM algorithms: the split run starts from the straight run's gemm_choices
//     files (as its first half would have made them) and its resumed half must read its own (without them the
//     runs differ: measured).
//  4. Failure: rank 1 of a running 2-GPU job is killed (SIGKILL); rank 0 must exit non-zero with an error naming
//     itself and the cause within dist_timeout (8 s) + 30 s, not hang (measured: 8.1 s).
//  5. A rank that never starts (one GPU is enough): rank 0 of a world of 2, alone, must stop in NCCL's
//     initialisation with an error naming it within dist_timeout (5 s) + 30 s, not wait there forever.
#include <signal.h>
#include <sys/wait.h>

#include "test_gpu.h"
extern "C" {
#include "../data/loader.h"
#include "../data/synthetic.h"
#include "../model/checkpoint.h"
#include "../model/clip.h"
#include "../model/clip_dist.h"
#include "../model/clip_gpu.h"
#include "../model/config.h"
#include "../optim/optim.h"
}

#define NEED_GPUS(k)                                                    \
    do {                                                                \
        int n_ = cuda_device_count();                                   \
        if (n_ == 0) SKIP("no GPU");                                    \
        if (n_ < (k)) SKIP("fewer than %d GPUs (%d)", (k), n_);         \
        if (!have_nccl) SKIP("this build has no NCCL");                 \
    } while (0)

#ifdef HAVE_NCCL
static const int have_nccl = 1;
#else
static const int have_nccl = 0;
#endif

// ---------------------------------------------------------------- processes

// Starts ranks 0 .. started - 1 of a world of `world` ranks of argv (started < world: the others never come) with
// the launcher's environment and a fresh file rendezvous; rank r's stdout and stderr go to <test dir>/<tag>.<r>.log.
static void launch(const char *tag, int world, int started, const char *const *argv, pid_t *pids) {
    static int launches;
    char rdv[600];
    snprintf(rdv, sizeof(rdv), "file:%s/rdv.%s.%d", test_dir(), tag, launches++);
    fflush(stdout), fflush(stderr);
    for (int r = 0; r < started; r++) {
        pids[r] = fork();
        if (pids[r] < 0) perror("fork"), exit(1);
        if (pids[r]) continue;
        char v[16], log[600];
        snprintf(v, sizeof(v), "%d", r), setenv("RANK", v, 1), setenv("LOCAL_RANK", v, 1);
        snprintf(v, sizeof(v), "%d", world), setenv("WORLD_SIZE", v, 1);
        setenv("TRAIN_CLIP_RENDEZVOUS", rdv, 1), setenv("NCCL_NVLS_ENABLE", "0", 1);
        snprintf(log, sizeof(log), "%s/%s.%d.log", test_dir(), tag, r);
        if (!freopen(log, "w", stdout) || dup2(fileno(stdout), 2) < 0) _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
}

// Waits for the ranks up to `seconds`; kills those still running then. rc[r]: exit code, or -signal.
// Returns 1 if all exited 0.
static int wait_ranks(int world, pid_t *pids, double seconds, int *rc) {
    double t0 = now_seconds();
    int left = world, ok = 1;
    for (int r = 0; r < world; r++) rc[r] = -1000;
    while (left > 0) {
        for (int r = 0; r < world; r++) {
            int st;
            if (rc[r] != -1000 || waitpid(pids[r], &st, WNOHANG) != pids[r]) continue;
            rc[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st), left--;
        }
        if (left > 0 && now_seconds() - t0 > seconds) {
            for (int r = 0; r < world; r++)
                if (rc[r] == -1000) kill(pids[r], SIGKILL), waitpid(pids[r], NULL, 0), rc[r] = -SIGKILL, left--;
        }
        usleep(20000);
    }
    for (int r = 0; r < world; r++) ok &= rc[r] == 0;
    return ok;
}

// Rank r's log of a launch (the first cap - 1 bytes; "" if there is none).
static void read_log(const char *tag, int r, char *text, size_t cap) {
    char path[800];
    snprintf(path, sizeof(path), "%s/%s.%d.log", test_dir(), tag, r);
    FILE *f = fopen(path, "r");
    size_t got = f ? fread(text, 1, cap - 1, f) : 0;
    text[got] = '\0';
    if (f) fclose(f);
}

// The last lines of rank r's log of a launch, for failure messages.
static void print_log_tail(const char *tag, int r) {
    char cmd[700];
    snprintf(cmd, sizeof(cmd), "tail -5 %s/%s.%d.log | sed 's/^/    %s.%d: /'", test_dir(), tag, r, tag, r);
    if (system(cmd) != 0) printf("    (no log for %s.%d)\n", tag, r);
}

// ---------------------------------------------------------------- 1. equivalence (the worker runs in each rank)

enum { GLOBAL_B = 16, STEPS = 2 };
typedef struct {
    const char *name, *precision;
    int zero, micro;
    const char *reduce;  // grad_reduce
} Variant;
static const Variant VARIANTS[] = {{"fp32", "fp32", 0, 0, "fp32"},
                                   {"fp32 ZeRO-1 micro-batch 4", "fp32", 1, 4, "fp32"},
                                   {"bf16", "bf16", 0, 0, "fp32"},
                                   {"bf16 ZeRO-1", "bf16", 1, 0, "fp32"},
                                   {"fp32 grad_reduce bf16", "fp32", 0, 0, "bf16"},
                                   {"bf16 ZeRO-1 micro-batch 4 grad_reduce bf16", "bf16", 1, 4, "bf16"}};
#define NVARIANTS 6

// The tiny config with a small vocabulary (the synthetic captions use ids below 20).
static void make_config(Config *c, const Variant *v, int world) {
    config_defaults(c);
    config_load_file(c, "configs/tiny.conf");
    char sets[6][64];
    snprintf(sets[0], 64, "batch_size=%d", GLOBAL_B), snprintf(sets[1], 64, "precision=%s", v->precision);
    snprintf(sets[2], 64, "zero=%d", v->zero), snprintf(sets[3], 64, "micro_batch_size=%d", v->micro), snprintf(sets[4], 64, "vocab_size=512");
    snprintf(sets[5], 64, "grad_reduce=%s", v->reduce);
    for (int i = 0; i < 6; i++) config_set(c, sets[i], i + 1);
    c->world_size = world;
    config_finalize(c);
}

// What a run leaves for the comparison: per step loss and gradient norm; the step-1 gradients; after the last
// update the parameters, moments and per-tensor RMS.
typedef struct {
    float loss[STEPS], norm[STEPS], *grads, *params, *m, *u, *rms;
} Result;

static void result_io(Result *r, const ClipLayout *L, const char *path, int writing) {
    FILE *f = fopenCheck(path, writing ? "wb" : "rb");
    size_t n = L->buffer_elems;
    float *parts[5] = {r->grads, r->params, r->m, r->u, r->rms};
    size_t sizes[5] = {n, n, n, n, (size_t)L->num_tensors};
    if (writing) fwriteCheck(r->loss, sizeof(float), STEPS, f), fwriteCheck(r->norm, sizeof(float), STEPS, f);
    else freadCheck(r->loss, sizeof(float), STEPS, f), freadCheck(r->norm, sizeof(float), STEPS, f);
    for (int i = 0; i < 5; i++) writing ? fwriteCheck(parts[i], sizeof(float), sizes[i], f) : freadCheck(parts[i], sizeof(float), sizes[i], f);
    fcloseCheck(f);
}

static void result_alloc(Result *r, const ClipLayout *L) {
    size_t n = L->buffer_elems;
    r->grads = zeros_host(n), r->params = zeros_host(n), r->m = zeros_host(n), r->u = zeros_host(n), r->rms = zeros_host(L->num_tensors);
}
static void result_free(Result *r) { free(r->grads), free(r->params), free(r->m), free(r->u), free(r->rms); }

// STEPS steps on rows [rank b, (rank + 1) b) of each global batch (samples s GLOBAL_B ... of the synthetic pool).
static void run_steps(const Config *c, int rank, const char *path) {
    ClipLayout L;
    clip_layout_build(&L, c);
    float *params = (float *)mallocCheck(L.buffer_elems * sizeof(float));
    clip_init_params(&L, params, c->seed);
    ClipGPU *g = clip_gpu_create(c, &L, params);
    Optimizer o;
    optim_init(&o, c, &L);
    int b = (int)(c->batch_size / c->world_size), S = c->image_size, T = c->context_length;
    Batch batch = {b, S, T, (uint8_t *)mallocCheck((size_t)b * 3 * S * S), (int32_t *)mallocCheck((size_t)b * T * sizeof(int32_t)), NULL};
    Result r;
    result_alloc(&r, &L);
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < b; i++)
            synthetic_sample(7, (uint64_t)(s * GLOBAL_B + rank * b + i), S, T, c->vocab_size, batch.images + (size_t)i * 3 * S * S,
                             batch.tokens + (size_t)i * T);
        r.loss[s] = clip_gpu_forward_backward(g, &batch);
        r.norm[s] = clip_gpu_grad_norm(g, &o);
        if (s == 0) clip_gpu_download(g, params, NULL, r.grads);
        clip_gpu_update(g, &o, 1e-3f, 1.0f);
    }
    clip_gpu_download(g, r.params, &o, NULL);
    memcpy(r.m, o.m, L.buffer_elems * sizeof(float)), memcpy(r.u, o.u, L.buffer_elems * sizeof(float));
    memcpy(r.rms, o.rms, L.num_tensors * sizeof(float));
    result_io(&r, &L, path, 1);
    result_free(&r), free(params), free(batch.images), free(batch.tokens);
    optim_free(&o);
    clip_gpu_free(g);
    clip_layout_free(&L);
}

// One rank of the equivalence run: every variant on 2 ranks; rank 0 also the 1-process references.
static int equivalence_worker(const char *dir) {
    Dist d;
    dist_init(&d);
    gpu_dist_init(&d, 60);
    char path[700];
    for (int v = 0; v < NVARIANTS; v++) {
        Config c;
        make_config(&c, &VARIANTS[v], d.world);
        snprintf(path, sizeof(path), "%s/v%d.rank%d", dir, v, d.rank);
        run_steps(&c, d.rank, path);
        if (d.rank == 0 && !VARIANTS[v].zero && !strcmp(VARIANTS[v].reduce, "fp32")) {  // one reference per precision
            make_config(&c, &VARIANTS[v], 1);
            snprintf(path, sizeof(path), "%s/ref.%s", dir, VARIANTS[v].precision);
            run_steps(&c, 0, path);
        }
    }
    gpu_dist_finalize();
    dist_finalize(&d);
    return 0;
}

typedef struct {
    double loss, norm, grads, tensor, params, m, u, rms;
} Bounds;

static double rel1(float a, float b) { return fabs((double)a - b) / fmax(fabs((double)b), 1e-30); }

static void compare(const char *what, const Result *got, const Result *ref, const ClipLayout *L, const Bounds *bd) {
    size_t n = L->buffer_elems;
    double el = fmax(rel1(got->loss[0], ref->loss[0]), rel1(got->loss[1], ref->loss[1]));
    double en = fmax(rel1(got->norm[0], ref->norm[0]), rel1(got->norm[1], ref->norm[1]));
    double eg = rel_err(got->grads, ref->grads, n), ep = rel_err(got->params, ref->params, n);
    double em = rel_err(got->m, ref->m, n), eu = rel_err(got->u, ref->u, n), er = rel_err(got->rms, ref->rms, L->num_tensors), worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < L->num_tensors; i++) {
        const ParamTensor *t = &L->tensors[i];
        double e = rel_err(got->grads + t->offset, ref->grads + t->offset, t->numel);
        if (e > worst) worst = e, worst_name = t->name;
    }
    EXPECT(el < bd->loss, "%s: loss %.7f / %.7f vs %.7f / %.7f (rel %.2e)", what, got->loss[0], got->loss[1], ref->loss[0], ref->loss[1], el);
    EXPECT(en < bd->norm, "%s: grad norm rel err %.2e", what, en);
    EXPECT(eg < bd->grads && worst < bd->tensor, "%s: gradients rel err %.2e, worst tensor %s %.2e", what, eg, worst_name, worst);
    EXPECT(ep < bd->params && em < bd->m && eu < bd->u, "%s: after 2 updates params %.2e m %.2e u %.2e", what, ep, em, eu);
    EXPECT(er < bd->rms, "%s: RMS rel err %.2e", what, er);
    printf("  2 ranks vs 1, %s: loss %.6f (%.1e), norm %.1e, grads %.1e (worst tensor %.1e %s), params %.1e, m %.1e, u %.1e, RMS %.1e\n",
           what, got->loss[0], el, en, eg, worst, worst_name, ep, em, eu, er);
}

static void test_two_ranks_equal_one(void) {
    NEED_GPUS(2);
    char self[512] = "", dir[600];
    ssize_t k = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (k <= 0) SKIP("cannot find this binary (/proc/self/exe)");
    snprintf(dir, sizeof(dir), "%s", test_dir());
    const char *argv[] = {self, "--equivalence-worker", dir, NULL}, *mpirun = getenv("TEST_MULTIGPU_MPIRUN");
    pid_t pids[2];
    int rc[2] = {0, 0}, ok;
    if (mpirun && *mpirun) {  // one mpirun process starts both ranks; its output goes to equiv.0.log
        char cmd[1600], log[700];
        snprintf(cmd, sizeof(cmd), "%s -np 2 -x NCCL_NVLS_ENABLE=0 %s --equivalence-worker %s", mpirun, self, dir);
        snprintf(log, sizeof(log), "%s/equiv.0.log", test_dir());
        printf("  ranks started by: %s\n", cmd);
        fflush(stdout);
        pids[0] = fork();
        if (pids[0] < 0) perror("fork"), exit(1);
        if (!pids[0]) {
            if (!freopen(log, "w", stdout) || dup2(fileno(stdout), 2) < 0) _exit(127);
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        ok = wait_ranks(1, pids, 240, rc);
    } else {
        launch("equiv", 2, 2, argv, pids);
        ok = wait_ranks(2, pids, 240, rc);
    }
    EXPECT(ok, "equivalence ranks exited %d / %d", rc[0], rc[1]);
    if (!ok) {
        print_log_tail("equiv", 0), print_log_tail("equiv", 1);
        return;
    }
    const Bounds fp32 = {1e-5, 1e-5, 2e-5, 1e-4, 1e-5, 2e-5, 5e-5, 1e-4}, bf16 = {5e-3, 2e-2, 5e-2, 0.3, 5e-2, 5e-2, 0.1, 5e-2},
                 fp32_bf16_sum = {1e-3, 1e-2, 2e-2, 0.2, 2e-2, 3e-2, 6e-2, 3e-2};
    for (int v = 0; v < NVARIANTS; v++) {
        Config c;
        make_config(&c, &VARIANTS[v], 1);
        ClipLayout L;
        clip_layout_build(&L, &c);
        Result r0, r1, ref;
        result_alloc(&r0, &L), result_alloc(&r1, &L), result_alloc(&ref, &L);
        char path[700];
        snprintf(path, sizeof(path), "%s/v%d.rank0", dir, v), result_io(&r0, &L, path, 0);
        snprintf(path, sizeof(path), "%s/v%d.rank1", dir, v), result_io(&r1, &L, path, 0);
        snprintf(path, sizeof(path), "%s/ref.%s", dir, VARIANTS[v].precision), result_io(&ref, &L, path, 0);
        size_t bytes = L.buffer_elems * sizeof(float);
        EXPECT(!memcmp(r0.params, r1.params, bytes) && !memcmp(r0.m, r1.m, bytes) && !memcmp(r0.u, r1.u, bytes) &&
                   !memcmp(r0.loss, r1.loss, sizeof(r0.loss)),
               "%s: the two ranks' parameters, moments or losses differ", VARIANTS[v].name);
        int fp32_model = !strcmp(VARIANTS[v].precision, "fp32"), bf16_sum = !strcmp(VARIANTS[v].reduce, "bf16");
        compare(VARIANTS[v].name, &r0, &ref, &L, !fp32_model ? &bf16 : bf16_sum ? &fp32_bf16_sum : &fp32);
        result_free(&r0), result_free(&r1), result_free(&ref);
        clip_layout_free(&L);
    }
}

// ---------------------------------------------------------------- 2-4. the trainer on 2 GPUs

// Runs ./train_clip (tiny config) on `world` ranks with the given --set overrides (NULL-terminated); returns 1
// if every rank exited 0.
static int train(const char *tag, int world, const char *run_dir, const char *const *sets) {
    const char *argv[64] = {"./train_clip", "-c", "configs/tiny.conf"};
    static char run_set[700];
    int n = 3;
    snprintf(run_set, sizeof(run_set), "run_dir=%s", run_dir);
    argv[n++] = "--set", argv[n++] = run_set;
    for (int i = 0; sets[i]; i++) argv[n++] = "--set", argv[n++] = sets[i];
    argv[n] = NULL;
    pid_t pids[2];
    int rc[2];
    launch(tag, world, world, argv, pids);
    int ok = wait_ranks(world, pids, 120, rc);
    if (!ok) {
        printf("  %s: ranks exited", tag);
        for (int r = 0; r < world; r++) printf(" %d", rc[r]);
        printf("\n");
        for (int r = 0; r < world; r++) print_log_tail(tag, r);
    }
    return ok;
}

// The loss of each step record of a run's log.jsonl; returns the count.
static int read_losses(const char *run_dir, double *loss, int cap) {
    char path[700], line[8192];
    snprintf(path, sizeof(path), "%s/log.jsonl", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    int n = 0;
    while (fgets(line, sizeof(line), f) && n < cap) {
        char *p = strstr(line, "\"loss\":");
        if (p && !strstr(line, "\"event\"")) loss[n++] = atof(p + 7);
    }
    fclose(f);
    return n;
}

static void test_training_curve(void) {
    NEED_GPUS(2);
    enum { STEPS_RUN = 100, WIN = 10 };
    typedef struct {
        const char *tag, *precision;
        int world, zero;
    } Run;
    const Run runs[] = {{"fp32_1gpu", "fp32", 1, 0}, {"fp32_2gpu", "fp32", 2, 0}, {"fp32_2gpu_zero", "fp32", 2, 1},
                        {"bf16_1gpu", "bf16", 1, 0}, {"bf16_2gpu_zero", "bf16", 2, 1}};
    double loss[5][STEPS_RUN];
    for (int k = 0; k < 5; k++) {
        char prec[64], zero[32], dir[700];
        snprintf(prec, sizeof(prec), "precision=%s", runs[k].precision), snprintf(zero, sizeof(zero), "zero=%d", runs[k].zero);
        snprintf(dir, sizeof(dir), "%s/%s", test_dir(), runs[k].tag);
        const char *sets[] = {prec, zero, "batch_size=64", "steps=100", "warmup=10", "lr=2e-3", "log_every=1000", "checkpoint_every=0",
                              "device=cuda", "dist_timeout=60", NULL};
        int ok = train(runs[k].tag, runs[k].world, dir, sets), n = ok ? read_losses(dir, loss[k], STEPS_RUN) : 0;
        EXPECT(ok && n == STEPS_RUN, "%s: train_clip failed or logged %d of %d steps", runs[k].tag, n, STEPS_RUN);
        if (!ok || n != STEPS_RUN) return;
    }
    for (int k = 1; k < 5; k++) {
        if (k == 3) continue;  // the bf16 reference
        int ref = k < 3 ? 0 : 3;
        double bound = k < 3 ? 0.01 : 0.02, worst = 0, worst_step = 0;
        printf("  %s vs %s, 10-step mean loss:", runs[k].tag, runs[ref].tag);
        for (int w = 0; w < STEPS_RUN / WIN; w++) {
            double a = 0, b = 0;
            for (int i = w * WIN; i < (w + 1) * WIN; i++) a += loss[k][i] / WIN, b += loss[ref][i] / WIN;
            EXPECT(fabs(a - b) < bound * b, "%s: steps %d-%d mean loss %.4f vs %.4f on 1 GPU", runs[k].tag, w * WIN + 1, (w + 1) * WIN, a, b);
            if (w % 3 == 0) printf(" %.3f/%.3f", a, b);
        }
        for (int i = 0; i < STEPS_RUN; i++) worst_step = fmax(worst_step, fabs(loss[k][i] - loss[ref][i]) / loss[ref][i]);
        for (int i = 0; i < 5; i++) worst = fmax(worst, fabs(loss[k][i] - loss[ref][i]) / loss[ref][i]);
        printf("; largest per-step relative gap %.1e (first 5 steps %.1e)\n", worst_step, worst);
    }
}

// Tensors (prefix + layout name) of two checkpoint files equal bit for bit.
static int same_tensors(const ClipLayout *L, const char *a, const char *b, const char *prefix) {
    StFile fa, fb;
    char err[1024];
    if (st_load(&fa, a, err, sizeof(err)) != 0) return printf("  %s\n", err), 0;
    if (st_load(&fb, b, err, sizeof(err)) != 0) return st_free(&fa), printf("  %s\n", err), 0;
    float *x = zeros_host(L->buffer_elems), *y = zeros_host(L->buffer_elems);
    int ok = load_weights_by_name(L, x, &fa, prefix, err, sizeof(err)) == 0 && load_weights_by_name(L, y, &fb, prefix, err, sizeof(err)) == 0 &&
             !memcmp(x, y, L->buffer_elems * sizeof(float));
    free(x), free(y), st_free(&fa), st_free(&fb);
    return ok;
}

static void test_resume_exact(void) {
    NEED_GPUS(2);
    char straight[700], split[700], a[800], b[800];
    snprintf(straight, sizeof(straight), "%s/straight", test_dir()), snprintf(split, sizeof(split), "%s/split", test_dir());
    const char *common[] = {"precision=bf16", "zero=1", "batch_size=16", "steps=12", "warmup=3", "log_every=100", "checkpoint_every=0",
                            "device=cuda", "dist_timeout=60", "gemm_tuning=8", NULL};
    const char *first[] = {"precision=bf16", "zero=1", "batch_size=16", "steps=12", "warmup=3", "log_every=100", "checkpoint_every=0",
                           "device=cuda", "dist_timeout=60", "gemm_tuning=8", "stop_after=6", NULL};
    const char *second[] = {"precision=bf16", "zero=1", "batch_size=16", "steps=12", "warmup=3", "log_every=100", "checkpoint_every=0",
                            "device=cuda", "dist_timeout=60", "gemm_tuning=8", "resume=latest", NULL};
    int ok = train("straight", 2, straight, common);
    EXPECT(mkdir_p(split) == 0, "cannot create %s", split);
    for (int r = 0; ok && r < 2; r++) {  // the straight run's GEMM choices, or the two would time their own
        snprintf(a, sizeof(a), "%s/gemm_choices.rank%d.txt", straight, r), snprintf(b, sizeof(b), "%s/gemm_choices.rank%d.txt", split, r);
        FILE *in = fopen(a, "rb"), *out = fopen(b, "wb");
        EXPECT(in && out, "cannot copy %s to %s", a, b);
        for (int ch; in && out && (ch = fgetc(in)) != EOF;) fputc(ch, out);
        if (in) fclose(in);
        if (out) fcloseCheck(out);
    }
    ok = ok && train("split_a", 2, split, first) && train("split_b", 2, split, second);
    EXPECT(ok, "train_clip failed");
    if (!ok) return;
    Config c;
    config_load(&c, "configs/tiny.conf");
    ClipLayout L;
    clip_layout_build(&L, &c);
    snprintf(a, sizeof(a), "%s/checkpoints/step_00000012.model.safetensors", straight);
    snprintf(b, sizeof(b), "%s/checkpoints/step_00000012.model.safetensors", split);
    EXPECT(same_tensors(&L, a, b, ""), "weights after 12 steps differ between the straight and the resumed run");
    snprintf(a, sizeof(a), "%s/checkpoints/step_00000012.state.safetensors", straight);
    snprintf(b, sizeof(b), "%s/checkpoints/step_00000012.state.safetensors", split);
    EXPECT(same_tensors(&L, a, b, "exp_avg.") && same_tensors(&L, a, b, "exp_avg_sq."), "moments after 12 steps differ");
    StFile f;
    char err[1024];
    if (st_load(&f, b, err, sizeof(err)) == 0) {
        const char *states = st_meta(&f, "loader");
        int lines = 0;
        for (const char *q = states; q && *q; q++) lines += *q == '\n';
        EXPECT(states && lines == 1, "loader metadata is not one line per rank: '%s'", states ? states : "(none)");
        printf("  resumed run equals the straight one bit for bit; loader positions: %s\n", states ? states : "");
        st_free(&f);
    } else EXPECT(0, "%s", err);
    clip_layout_free(&L);
}

static void test_killed_rank_stops_the_other(void) {
    NEED_GPUS(2);
    char dir[700], path[800];
    snprintf(dir, sizeof(dir), "%s/killed", test_dir());
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    const char *argv[] = {"./train_clip", "-c", "configs/tiny.conf", "--set", "steps=100000", "--set", "precision=bf16", "--set", "log_every=1000",
                          "--set", "checkpoint_every=0", "--set", "device=cuda", "--set", "dist_timeout=8", "--set", NULL, NULL};
    char run_set[800];
    snprintf(run_set, sizeof(run_set), "run_dir=%s", dir), argv[16] = run_set;
    pid_t pids[2];
    int rc[2];
    launch("killed", 2, 2, argv, pids);
    double t0 = now_seconds();
    int steps = 0;
    while (steps < 5 && now_seconds() - t0 < 60) {  // until both train (rank 0 logs steps that need rank 1)
        usleep(100000);
        double l[8];
        steps = read_losses(dir, l, 8);
    }
    EXPECT(steps >= 5, "the 2-GPU run did not start training within 60 s");
    kill(pids[1], SIGKILL);
    double t_kill = now_seconds();
    wait_ranks(2, pids, 8 + 30, rc);
    double took = now_seconds() - t_kill;
    static char text[1 << 16];
    read_log("killed", 0, text, sizeof(text));
    const char *err = strstr(text, "error: rank 0 of 2:");
    EXPECT(rc[0] > 0, "rank 0 did not exit with an error after rank 1 was killed (exit %d after %.1f s)", rc[0], took);
    EXPECT(err != NULL, "rank 0's output has no 'error: rank 0 of 2:' line");
    if (err) printf("  rank 0 stopped %.1f s after rank 1 was killed: %.*s\n", took, (int)strcspn(err, "\n"), err);
    else print_log_tail("killed", 0);
}

static void test_missing_rank_stops_the_start(void) {
    NEED_GPUS(1);
    char dir[700], set_dir[800];
    snprintf(dir, sizeof(dir), "%s/missing", test_dir());
    snprintf(set_dir, sizeof(set_dir), "run_dir=%s", dir);
    const char *argv[] = {"./train_clip", "-c", "configs/tiny.conf", "--set", "device=cuda", "--set", "dist_timeout=5",
                          "--set", set_dir, NULL};
    pid_t pid;
    int rc;
    launch("missing", 2, 1, argv, &pid);
    double t0 = now_seconds();
    wait_ranks(1, &pid, 5 + 30, &rc);
    double took = now_seconds() - t0;
    static char text[1 << 16];
    read_log("missing", 0, text, sizeof(text));
    const char *err = strstr(text, "error: rank 0 of 2: NCCL's initialisation did not complete");
    EXPECT(rc > 0, "rank 0 of 2, alone, did not stop with an error (exit %d after %.1f s)", rc, took);
    EXPECT(err != NULL, "rank 0's output has no 'NCCL's initialisation did not complete' error");
    if (err) printf("  rank 0 alone stopped after %.1f s: %.*s\n", took, (int)strcspn(err, "\n"), err);
    else print_log_tail("missing", 0);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--equivalence-worker")) return equivalence_worker(argv[2]);
    RUN(test_two_ranks_equal_one);
    if (getenv("TEST_MULTIGPU_MPIRUN") && *getenv("TEST_MULTIGPU_MPIRUN")) TEST_EXIT();
    RUN(test_training_curve);
    RUN(test_resume_exact);
    RUN(test_killed_rank_stops_the_other);
    RUN(test_missing_rank_stops_the_start);
    TEST_EXIT();
}
