// train_clip.c: trains a CLIP model (ViT image tower + text transformer, contrastive loss).
//   ./train_clip -c configs/tiny.conf [--set key=value ...] [--dry-run]
// A training step: next batch -> forward both towers -> contrastive loss -> backward -> gradient norm
// (and optional clipping) -> optimizer step (AdamW or the StableAdamW hybrid) -> clamp logit_scale ->
// log (loss, lr, per-tensor RMS) -> checkpoint every N steps. The step runs on the GPU (bf16 or fp32) when
// there is one, else on the fp32 CPU reference: model/clip_model.h dispatches, so the loop is the same.
// Multi-GPU: `mpirun -np N ./train_clip -c ...` (or RANK / WORLD_SIZE / LOCAL_RANK, model/distributed.h) runs one
// process per GPU, each on its batch_size / N share of every batch from its own shards; the step sums their
// gradients (model/clip_gpu.h). Rank 0 prints, logs and writes checkpoints, which hold every rank's data position.
#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "data/inspect.h"
#include "data/loader.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "model/checkpoint.h"
#include "model/clip.h"
#include "model/clip_model.h"
#include "model/distributed.h"
#include "model/eval.h"
#include "model/config.h"
#ifdef HAVE_CUDA
#include "model/clip_dist.h"
#endif
#include "model/utils.h"
#include "optim/diagnostics.h"
#include "optim/optim.h"
#include "optim/tensorboard.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: ./train_clip -c CONFIG [--set key=value]... [--dry-run]\n"
            "       ./train_clip --help-config       every config key with its default and meaning\n"
            "       ./train_clip [-c CONFIG] [--set key=value]... --tokenize < captions.txt   token ids (context_length per line) of each line\n"
            "       ./train_clip --inspect-data SPEC [--limit N] [-c CONFIG]   list a dataset's samples (the first N; 0 = all) and skips\n"
            "\n"
            "  -c FILE          config file (key = value lines; see configs/)\n"
            "  --set key=value  override a key (repeatable; applied after the file)\n"
            "  --dry-run        print the effective config, parameter counts and memory plan, then exit\n"
            "  --eval-only      evaluate the weights (resume / init_weights) on zeroshot_data and val_data, then exit\n"
            "  -h, --help       this text\n");
}

// ---------------------------------------------------------------- preemption: SIGTERM / SIGUSR1 save and stop
static volatile sig_atomic_t stop_signal = 0;
static void on_signal(int sig) { stop_signal = sig; }

// ---------------------------------------------------------------- ranks
// The trainer's exchanges between ranks go through the GPUs' communicator (the GPU path is the only
// multi-process one); in a single process they are copies.

#define LOADER_STATE_CAP 1024  // bytes of one rank's data position

static void ranks_allgather(const void *mine, void *all, size_t bytes) {
#ifdef HAVE_CUDA
    if (gpu_dist()) {
        gpu_dist_allgather_host(gpu_dist(), mine, all, bytes);
        return;
    }
#endif
    memcpy(all, mine, bytes);
}

static double ranks_sum(double x) {
#ifdef HAVE_CUDA
    if (gpu_dist()) gpu_dist_sum_host(gpu_dist(), &x, 1);
#endif
    return x;
}

static void ranks_finalize(Dist *d) {
#ifdef HAVE_CUDA
    gpu_dist_finalize();
#endif
    dist_finalize(d);
}

// ---------------------------------------------------------------- console output

static void format_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) snprintf(buf, n, "?");
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)s / 60, (int)s % 60);
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)s / 60 % 60);
}

// One line per log interval; on a terminal, a progress bar redrawn in place between them.
// img_per_s: the whole run's (all ranks); mfu: 0 when not known (CPU); gpu_gib: this rank's GPU memory.
static void print_progress(const Config *c, const StepRecord *r, float loss_avg, double img_per_s, double wait_share,
                           double eta_s, float rms_patch, double mfu, double gpu_gib, int newline) {
    char eta[32], per_gpu[48] = "", device[64] = "";
    format_duration(eta, sizeof(eta), eta_s);
    if (c->world_size > 1) snprintf(per_gpu, sizeof(per_gpu), " (%.0f per GPU)", img_per_s / c->world_size);
    if (mfu > 0) snprintf(device, sizeof(device), " | MFU %.1f%% | GPU %.1f GiB", 100 * mfu, gpu_gib);
    if (newline) {
        printf("step %6ld/%ld | %ld samples | loss %.4f (avg %.4f) | lr %.2e | logit scale %.2f | grad norm %.3f | "
               "rms patch %.2f | %.0f img/s%s%s | data wait %.0f%% | eta %s\n",
               r->step, c->steps, r->samples, r->loss, loss_avg, r->lr, r->logit_scale, r->grad_norm, rms_patch, img_per_s,
               per_gpu, device, 100 * wait_share, eta);
    } else {
        int width = 30, done = (int)(width * r->step / c->steps);
        printf("\r[%.*s%*s] %ld/%ld loss %.4f %.0f img/s eta %s   ", done, "##############################", width - done, "",
               r->step, c->steps, loss_avg, img_per_s, eta);
    }
    fflush(stdout);
}

// ---------------------------------------------------------------- evaluation

// The evaluation's inputs, checked before training: a missing shard or class-names file stops the run now, naming
// the file, not at the first evaluation hours later.
static void eval_check(const Config *c) {
    const char *specs[2] = {c->zeroshot_data, c->val_data};
    for (int k = 0; k < 2; k++)
        if (specs[k][0] && strcmp(specs[k], "synthetic") != 0) {
            ShardList shards;
            shards_parse(specs[k], &shards);
            shards_free(&shards);
        }
    int n;
    if (c->zeroshot_data[0]) free_lines(read_classnames(c->zeroshot_classnames, &n), n);
    if (c->zeroshot_data[0] && c->zeroshot_templates[0]) free_lines(read_lines(c->zeroshot_templates, &n), n);
}

// Zero-shot classification on zeroshot_data and retrieval + loss on val_data (whichever is configured),
// printed and logged as one {"eval": true, ...} record (and one TensorBoard event when tb is given).
static void run_eval(const Config *c, ClipModel *m, FILE *log, TbWriter *tb, long step) {
    if (!c->zeroshot_data[0] && !c->val_data[0]) return;
    double t0 = now_seconds();
    TbScalar scalars[10];
    int n = 0;
    fprintf(log, "{\"eval\":true,\"step\":%ld", step);
    if (c->zeroshot_data[0]) {
        int C, T = 1;
        char **classes = read_classnames(c->zeroshot_classnames, &C), *plain = "{}", **templates = &plain;
        if (c->zeroshot_templates[0]) templates = read_lines(c->zeroshot_templates, &T);
        Tokenizer *tok = tokenizer_load(NULL);
        float *classifier = zeroshot_classifier(m, tok, classes, C, templates, T);
        Loader *l = loader_open(c, c->zeroshot_data, 0, (int)c->batch_size, 0, 1);
        ZeroShotResult r = eval_zeroshot(m, classifier, C, l);
        loader_close(l);
        if (r.n == 0) {  // nothing classified: no accuracy to report (0.0% would read as a score)
            printf("eval step %ld: zero-shot: no images with a class index in zeroshot_data '%s' (%ld without `cls` or with one "
                   "that is not a class index; skipped samples: ./train_clip --inspect-data)\n", step, c->zeroshot_data, r.unlabelled);
            fprintf(log, ",\"zeroshot_n\":0,\"zeroshot_unlabelled\":%ld", r.unlabelled);
        } else {
            printf("eval step %ld: zero-shot top-1 %.1f%% top-5 %.1f%% mean per-class %.1f%% on %ld images of %d classes "
                   "(chance: %.1f%% per class; always the most frequent class: %.1f%% top-1)", step, 100 * r.top1, 100 * r.top5,
                   100 * r.per_class, r.n, C, 100.0 / C, 100 * r.majority);
            if (r.unlabelled) printf("; %ld images without a class index in `cls` not classified", r.unlabelled);
            printf("\n");
            fprintf(log, ",\"zeroshot_top1\":%.5g,\"zeroshot_top5\":%.5g,\"zeroshot_per_class\":%.5g,\"zeroshot_majority\":%.5g,\"zeroshot_n\":%ld"
                    ",\"zeroshot_unlabelled\":%ld", r.top1, r.top5, r.per_class, r.majority, r.n, r.unlabelled);
            scalars[n++] = (TbScalar){"eval/zeroshot_top1", (float)r.top1};
            scalars[n++] = (TbScalar){"eval/zeroshot_top5", (float)r.top5};
            scalars[n++] = (TbScalar){"eval/zeroshot_per_class", (float)r.per_class};
        }
        free(classifier);
        tokenizer_free(tok);
        free_lines(classes, C);
        if (templates != &plain) free_lines(templates, T);
    }
    if (c->val_data[0]) {
        Loader *l = loader_open(c, c->val_data, 0, (int)c->batch_size, 0, 1);
        RetrievalResult r = eval_retrieval(m, l, c->val_max_pairs);
        loader_close(l);
        if (r.n == 0) {  // every sample skipped: no loss to report (0.0000 would read as a perfect score)
            printf("eval step %ld: no validation pairs: every sample of val_data '%s' was skipped (its skips: ./train_clip "
                   "--inspect-data)\n", step, c->val_data);
            fprintf(log, ",\"val_n\":0");
        } else {
            printf("eval step %ld: val loss %.4f | image->text R@1/5/10 %.1f/%.1f/%.1f%% | text->image %.1f/%.1f/%.1f%% (%ld pairs)\n", step,
                   r.loss, 100 * r.image_to_text[0], 100 * r.image_to_text[1], 100 * r.image_to_text[2], 100 * r.text_to_image[0],
                   100 * r.text_to_image[1], 100 * r.text_to_image[2], r.n);
            json_num(log, ",\"val_loss\":", "%.6g", r.loss);
            fprintf(log, ",\"i2t_r1\":%.5g,\"i2t_r5\":%.5g,\"i2t_r10\":%.5g,\"t2i_r1\":%.5g,\"t2i_r5\":%.5g,\"t2i_r10\":%.5g,\"val_n\":%ld",
                    r.image_to_text[0], r.image_to_text[1], r.image_to_text[2], r.text_to_image[0], r.text_to_image[1],
                    r.text_to_image[2], r.n);
            static const char *tags[6] = {"eval/i2t_r1", "eval/i2t_r5", "eval/i2t_r10", "eval/t2i_r1", "eval/t2i_r5", "eval/t2i_r10"};
            scalars[n++] = (TbScalar){"eval/val_loss", (float)r.loss};
            for (int k = 0; k < 3; k++) scalars[n++] = (TbScalar){tags[k], (float)r.image_to_text[k]};
            for (int k = 0; k < 3; k++) scalars[n++] = (TbScalar){tags[3 + k], (float)r.text_to_image[k]};
        }
    }
    fprintf(log, ",\"eval_s\":%.4g}\n", now_seconds() - t0);
    fflush(log);
    if (tb) tb_scalars(tb, step, scalars, n);
}

// Every rank takes part (the data positions and, with ZeRO-1, the moments are gathered); rank 0 writes. The
// state file's loader metadata holds one line per rank, in rank order.
static void save_checkpoint(const Config *c, int rank, long step, ClipModel *m, Optimizer *opt, const Loader *loader,
                            const char *config_text) {
    int W = c->world_size;
    char mine[LOADER_STATE_CAP] = "", err[1024], *all = mallocCheck((size_t)W * LOADER_STATE_CAP), *states = mallocCheck((size_t)W * LOADER_STATE_CAP);
    loader_get_state(loader, mine, sizeof(mine));
    ranks_allgather(mine, all, LOADER_STATE_CAP);
    states[0] = '\0';
    for (int r = 0, len = 0; r < W; r++) len += snprintf(states + len, (size_t)(W * LOADER_STATE_CAP - len), "%s%s", r ? "\n" : "", all + (size_t)r * LOADER_STATE_CAP);
    double t0 = now_seconds();
    clip_model_to_host(m, opt);
    if (rank == 0) {
        if (checkpoint_save(c->run_dir, step, &m->cpu.layout, m->cpu.params, opt, config_text, states, err, sizeof(err)) != 0)
            fatal("checkpoint at step %ld failed: %s (earlier checkpoints are untouched)", step, err);
        checkpoint_prune(c->run_dir, c->keep_checkpoints, step);
    }
    clip_model_gemm_choices(m, c, rank, 1);
    printf("checkpoint: step %ld saved to %s/checkpoints (%.1f s)\n", step, c->run_dir, now_seconds() - t0);
    free(all), free(states);
}

// This rank's line of a checkpoint's loader metadata (one line per rank that saved it).
static void loader_state_of_rank(const char *states, int rank, int world, char *out, size_t cap) {
    int lines = 1;
    for (const char *p = states; *p; p++) lines += *p == '\n';
    if (lines != world)
        fatal("the checkpoint holds the data positions of %d rank(s), this run has %d: resume with the same number of processes",
              lines, world);
    const char *p = states;
    for (int r = 0; r < rank; r++) p = strchr(p, '\n') + 1;
    snprintf(out, cap, "%.*s", (int)strcspn(p, "\n"), p);
}

// A fresh start (no resume) into a run_dir that holds an earlier run's checkpoints would overwrite them one by one (and
// its config and log), so it is refused: the step of the newest one, or -1 where the run writes nothing over them.
static long checkpoints_overwritten(const Config *c, int eval_only) {
    return eval_only || c->resume[0] ? -1 : checkpoint_newest_step(c->run_dir);
}

int main(int argc, char **argv) {
    // ---- command line and config
    Config cfg;
    config_defaults(&cfg);
    const char *config_path = NULL;
    int dry_run = 0, tokenize = 0, eval_only = 0;
    const char *inspect_spec = NULL;
    long inspect_limit = 0;
    int limit_given = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return usage(stdout), 0;
        if (!strcmp(argv[i], "--help-config")) return config_print_reference(stdout), 0;
        if (!strcmp(argv[i], "--dry-run")) dry_run = 1;
        else if (!strcmp(argv[i], "--tokenize")) tokenize = 1;
        else if (!strcmp(argv[i], "--eval-only")) eval_only = 1;
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            if (config_path) {
                fprintf(stderr, "error: -c given twice ('%s' and '%s'): one config file (include = FILE inside it reads another)\n",
                        config_path, argv[i + 1]);
                return 2;
            }
            config_path = argv[++i];
        } else if (!strcmp(argv[i], "--set") && i + 1 < argc) i++;  // applied after the file, below
        else if (!strcmp(argv[i], "--inspect-data") && i + 1 < argc) inspect_spec = argv[++i];
        else if (!strcmp(argv[i], "--limit") && i + 1 < argc) {
            char *end;
            errno = 0;
            inspect_limit = strtol(argv[++i], &end, 10);
            if (!isdigit((unsigned char)argv[i][0]) || *end != '\0' || errno == ERANGE) {
                fprintf(stderr, "error: --limit: expected a whole number >= 0, got '%s' (0 = all samples)\n", argv[i]);
                return 2;
            }
            limit_given = 1;
        } else {
            fprintf(stderr, "error: unknown or incomplete argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (limit_given && !inspect_spec) {
        fprintf(stderr, "error: --limit goes with --inspect-data\n");
        return 2;
    }
    // One mode a run: each returns before the others would act, so a second one would be silently dropped.
    const char *modes[4] = {0};
    int n_modes = 0;
    if (dry_run) modes[n_modes++] = "--dry-run";
    if (eval_only) modes[n_modes++] = "--eval-only";
    if (inspect_spec) modes[n_modes++] = "--inspect-data";
    if (tokenize) modes[n_modes++] = "--tokenize";
    if (n_modes > 1) {
        fprintf(stderr, "error: %s does not go with %s\n", modes[0], modes[1]);
        return 2;
    }
    if (!config_path && !inspect_spec && !tokenize) {
        fprintf(stderr, "error: no config file (-c FILE); configs/tiny.conf is a small one to start with\n");
        usage(stderr);
        return 2;
    }
    if (config_path) config_load_file(&cfg, config_path);
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--set")) config_set(&cfg, argv[i + 1], i + 1), i++;
    if (tokenize && !config_path) return tokenize_main(&cfg);  // the defaults (context_length 77) and any --set
    if (inspect_spec) return inspect_data_main(&cfg, inspect_spec, inspect_limit);  // data keys only: no finalize
    if (tokenize) {
        config_finalize(&cfg);
        return tokenize_main(&cfg);
    }
    // ---- processes: this one's rank; only rank 0 prints (errors and warnings go to stderr from every rank)
    Dist dist;
    dist_init(&dist);
    int rank = dist.rank, world = dist.world;
    if (rank != 0 && !freopen("/dev/null", "w", stdout)) fatal("freopen(/dev/null) failed: %s", strerror(errno));
    cfg.world_size = world;
    config_finalize(&cfg);
    if (cfg.warmup > cfg.steps && !eval_only && rank == 0)  // e.g. a short run of a ViT config (warmup 5000)
        fprintf(stderr, "warning: warmup %ld is longer than the run's %ld steps: the learning rate rises to only %.3g of lr = %g "
                "(--set warmup=N)\n", cfg.warmup, cfg.steps, (double)cfg.steps / cfg.warmup, cfg.lr);
    if (cfg.threads > 0) omp_set_num_threads(cfg.threads);

    // ---- model
    ClipLayout layout;
    clip_layout_build(&layout, &cfg);
    printf("model: %s  image %d/%d/%d patch %d  text %d/%d/%d  embed %d\n", cfg.model, cfg.vision_width, cfg.vision_layers,
           cfg.vision_heads, cfg.patch_size, cfg.text_width, cfg.text_layers, cfg.text_heads, cfg.embed_dim);
    printf("params: total %zu image %zu text %zu\n", layout.num_params, layout.num_image_params, layout.num_text_params);
    long B = cfg.batch_size;
    // what this build and machine can run: the GPU step when there is a GPU (device = auto|cuda), else the fp32 CPU path
    int device;
    const char *unsupported = clip_model_check(&cfg, &device);
    const char *precisions[] = {"fp32", "bf16", "int8_switchback"};
    if (world > 1 && device != DEVICE_CUDA)
        dist_fail(&dist, "%d processes: multi-process training is the GPU path's (NCCL); the CPU path runs in one process "
                  "(start it without mpirun)%s%s", world, unsupported ? ": " : "", unsupported ? unsupported : "");
#ifdef HAVE_CUDA
    if (world > 1 && cfg.bind_cpus) dist_place_threads(&dist, cfg.threads);  // before NCCL's and the loader's threads start
    if (world > 1) gpu_dist_init(&dist, cfg.dist_timeout);  // selects this rank's GPU before any other CUDA work
#endif
    printf("device: %s, precision %s", device == DEVICE_CUDA ? "cuda" : "cpu", precisions[cfg.precision]);
    if (world > 1) printf(", %d ranks (GPUs) x batch %ld%s", world, B / world, cfg.zero ? ", ZeRO-1" : "");
    printf("\n");
    if (!unsupported) clip_model_print_memory_plan(&cfg, &layout, device);
    printf("training: %ld steps x batch %ld, optimizer %s, lr %g (warmup %ld, %s), wd %g, threads %d\n", cfg.steps, cfg.batch_size,
           cfg.optimizer == OPTIMIZER_STABLE_ADAMW ? "stable_adamw" : "adamw", cfg.lr, cfg.warmup,
           cfg.schedule == SCHEDULE_COSINE ? "cosine" : "const", cfg.wd, omp_get_max_threads());
    if (dry_run) {
        if (unsupported) printf("note: a real run would stop here: %s\n", unsupported);
        long earlier = checkpoints_overwritten(&cfg, eval_only);
        if (earlier >= 0) printf("note: a real run would stop here: run_dir %s holds checkpoints (newest: step %ld); resume = latest or auto continues them\n",
                                 cfg.run_dir, earlier);
        printf("\n# effective config\n");
        config_print(&cfg, stdout);
        ranks_finalize(&dist);
        return 0;
    }
    if (unsupported) fatal("%s", unsupported);
    clip_layout_free(&layout);
    // resume = auto: latest where run_dir holds a checkpoint, else a fresh start (one command for a job's first start
    // and its restarts)
    if (!strcmp(cfg.resume, "auto")) snprintf(cfg.resume, sizeof(cfg.resume), "%s", checkpoint_newest_step(cfg.run_dir) >= 0 ? "latest" : "");
    if (eval_only && !cfg.zeroshot_data[0] && !cfg.val_data[0]) fatal("--eval-only: neither zeroshot_data nor val_data is set: nothing to evaluate");
    if (eval_only && !cfg.resume[0] && !cfg.init_weights[0] && rank == 0)
        fprintf(stderr, "warning: --eval-only without resume or init_weights evaluates freshly initialised weights (seed %llu)\n", (unsigned long long)cfg.seed);
    eval_check(&cfg);
    long earlier = checkpoints_overwritten(&cfg, eval_only);
    if (earlier >= 0)
        fatal("run_dir %s holds an earlier run's checkpoints (newest: step %ld), which a fresh start would overwrite: "
              "--set resume=latest (or auto) continues that run; for a new one set another run_dir, or move %s/checkpoints away",
              cfg.run_dir, earlier, cfg.run_dir);

    ClipModel model;
    clip_model_init(&model, &cfg, device);
    const ClipLayout *L = &model.cpu.layout;
    Optimizer opt;
    optim_init(&opt, &cfg, L);

    // ---- run directory: the effective config and the step log (rank 0's; the other ranks log to /dev/null)
    if (mkdir_p(cfg.run_dir) != 0) fatal("cannot create run_dir %s: %s", cfg.run_dir, strerror(errno));
    char path[CONFIG_STR + 64];
    size_t cap = 1 << 16;
    char *config_text = mallocCheck(cap);
    FILE *mem = fmemopen(config_text, cap, "w");
    if (!mem) fatal("fmemopen failed: %s", strerror(errno));
    config_print(&cfg, mem);
    fclose(mem);
    snprintf(path, sizeof(path), "%s/config.conf", cfg.run_dir);
    if (!eval_only && rank == 0) {
        FILE *cf = fopenCheck(path, "w");
        fputs(config_text, cf);
        fcloseCheck(cf);
    }

    clip_model_gemm_choices(&model, &cfg, rank, 0);

    // ---- data: this rank's share of the shards, batch_size / world samples per step
    Loader *loader = loader_open(&cfg, cfg.data, 1, (int)(B / world), rank, world);

    // ---- initial weights: a resumed checkpoint, or init_weights, or open_clip's initialisation
    long start = 0;
    if (cfg.init_weights[0] && !cfg.resume[0]) {
        StFile f;
        char err[1024];
        if (st_load(&f, cfg.init_weights, err, sizeof(err)) != 0 || load_weights_by_name(L, model.cpu.params, &f, "", err, sizeof(err)) != 0 ||
            check_no_extra_tensors(L, &f, "", err, sizeof(err)) != 0)
            fatal("init_weights: %s", err);
        st_free(&f);
        clip_model_to_device(&model, &opt);
        printf("initialised from %s\n", cfg.init_weights);
    }
    if (cfg.resume[0]) {
        // every rank reads the checkpoint (for its data position); the weights and moments are rank 0's
        char *states = mallocCheck((size_t)world * LOADER_STATE_CAP), mine[LOADER_STATE_CAP], err[1024];
        start = checkpoint_resume(cfg.run_dir, cfg.resume, config_text, L, model.cpu.params, &opt, states, (size_t)world * LOADER_STATE_CAP, err, sizeof(err));
        if (start < 0) fatal("%s", err);
        // continuing from an older checkpoint than run_dir's newest: a later resume = latest would take the newer one
        long newest = strcmp(cfg.resume, "latest") != 0 && !eval_only ? checkpoint_newest_step(cfg.run_dir) : -1;
        if (newest > start)
            fatal("resume = %s: run_dir %s holds a newer checkpoint (step %ld) than the one resumed (step %ld), which this run's "
                  "checkpoints would be mixed with (resume = latest would take it): use another run_dir, or move the newer "
                  "checkpoints out of %s/checkpoints", cfg.resume, cfg.run_dir, newest, start, cfg.run_dir);
        long *steps = mallocCheck((size_t)world * sizeof(long));
        ranks_allgather(&start, steps, sizeof(long));
        for (int r = 0; r < world; r++)
            if (steps[r] != start) dist_fail(&dist, "resumed step %ld here, %ld on rank %d: the ranks read different checkpoints", start, steps[r], r);
        free(steps);
        clip_model_to_device(&model, &opt);
        loader_state_of_rank(states, rank, world, mine, sizeof(mine));
        loader_restore(loader, mine);
        free(states);
        printf("resumed from step %ld (%s)\n", start, cfg.resume);
    }
    snprintf(path, sizeof(path), "%s/log.jsonl", cfg.run_dir);
    TbWriter tb_writer, *tb = NULL;  // rank 0's; a resumed run adds a file, TensorBoard merges them
    if (cfg.tensorboard && rank == 0) tb_open(&tb_writer, cfg.run_dir), tb = &tb_writer;
    if (eval_only) {
        FILE *eval_log = fopenCheck(rank == 0 ? path : "/dev/null", "a");
        run_eval(&cfg, &model, eval_log, tb, start);
        if (tb) tb_close(tb);
        fcloseCheck(eval_log);
        clip_model_free(&model);
        ranks_finalize(&dist);
        return 0;
    }
    Diagnostics diag;
    diag_init(&diag, &cfg, L);
    // a resumed run drops the records logged after its checkpoint and continues the spike detector from the log
    FILE *step_log = rank == 0 ? diag_open_log(&diag, path, start) : fopenCheck("/dev/null", "w");
    int tty = isatty(fileno(stdout));

    signal(SIGTERM, on_signal);
    signal(SIGUSR1, on_signal);
    signal(SIGXFSZ, SIG_IGN);  // a file-size limit then fails the write (a clear error) instead of killing the run
    double flops_per_image = 3 * clip_forward_flops(L, &cfg);  // training = 3 x forward, for MFU
    printf("training FLOPs: %.3g per step (3 x forward)\n", flops_per_image * B);

    // ---- the training loop
    long end = cfg.steps, ran = 0, ran_in_log = 0;
    if (cfg.stop_after > 0 && start + cfg.stop_after < end) end = start + cfg.stop_after;
    int nonfinite = 0;
    float loss_avg = NAN;
    double t_log = now_seconds(), t_run = t_log, wait_in_log = 0;
    for (long step = start; step < end; step++) {
        double t0 = now_seconds();
        Batch batch;
        loader_next(loader, &batch);
        double t_data = now_seconds() - t0;
        float loss = clip_model_forward_backward(&model, &batch);
        float norm = clip_model_grad_norm(&model, &opt);
        float lr = lr_at(&cfg, step);
        int skipped = !isfinite(loss) || !isfinite(norm);
        if (skipped) {
            // a non-finite step is skipped, not applied; too many in a row ends the run with a checkpoint
            fprintf(stderr, "warning: step %ld: non-finite %s, update skipped\n", step + 1, isfinite(loss) ? "gradient" : "loss");
            if (++nonfinite >= cfg.max_nonfinite_steps) {
                save_checkpoint(&cfg, rank, step, &model, &opt, loader, config_text);
                fatal("%d consecutive non-finite steps at step %ld: stopping (last good state checkpointed). Lower lr or check the data.",
                      nonfinite, step + 1);
            }
        } else {
            nonfinite = 0;
            clip_model_update(&model, &opt, lr, norm);  // clipping, optimizer, logit_scale clamp
            loss_avg = isnan(loss_avg) ? loss : 0.9f * loss_avg + 0.1f * loss;
        }
        double now = now_seconds(), dt = now - t0;
        ran++, ran_in_log++, wait_in_log += t_data;
        StepRecord rec = {step + 1, (step + 1) * cfg.batch_size, loss, lr, expf(clip_model_logit_scale(&model)), norm,
                          dt, B / dt, t_data, skipped};
        if (diag_step(&diag, step_log, &rec, opt.rms)) {
            if (tty) printf("\n");
            diag_print_spike(&diag, stdout, &rec);
        }
        int log_now = (step + 1) % cfg.log_every == 0 || step + 1 == end;
        if (log_now || tty) {
            double rate = ran_in_log * B / (now - t_log), eta = (end - step - 1) * (now - t_run) / ran;
            if (log_now && tty) printf("\r");
            double peak = clip_model_peak_flops(&model), mfu = peak > 0 ? flops_per_image * rate / cfg.world_size / peak : 0;
            print_progress(&cfg, &rec, loss_avg, rate, wait_in_log / (now - t_log), eta, opt.rms[diag.watch[0]], mfu,
                           (double)clip_model_memory_used(&model) / (1u << 30), log_now);
            if (log_now && tb) {
                TbScalar s[9] = {{"train/loss", rec.loss}, {"train/loss_avg", loss_avg}, {"train/lr", rec.lr},
                                 {"train/logit_scale", rec.logit_scale}, {"train/grad_norm", rec.grad_norm},
                                 {"train/rms_patch", opt.rms[diag.watch[0]]}, {"train/img_per_s", (float)rate},
                                 {"train/data_wait", (float)(wait_in_log / (now - t_log))}, {"train/mfu", (float)mfu}};
                tb_scalars(tb, rec.step, s, mfu > 0 ? 9 : 8);  // MFU only where the peak is known (GPU)
            }
            if (log_now) t_log = now, ran_in_log = 0, wait_in_log = 0;
        }
        int last = step + 1 == end;
        int stop = world > 1 ? ranks_sum(stop_signal != 0) > 0 : stop_signal != 0;  // all ranks stop at the same step
        if (last || (cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0) || stop)
            save_checkpoint(&cfg, rank, step + 1, &model, &opt, loader, config_text);
        // after the step's checkpoint, so that an evaluation that stops the run (a class index beyond the class names)
        // loses no training; every rank evaluates (the whole eval set: no rank waits for another), rank 0 reports
        if ((cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || step + 1 == cfg.steps) run_eval(&cfg, &model, step_log, tb, step + 1);
        if (stop) {
            printf("received a stop signal: checkpoint saved at step %ld, stopping; resume with --set resume=latest\n", step + 1);
            break;
        }
    }
    if (diag.spikes) printf("loss spikes: %ld (events in %s/log.jsonl)\n", diag.spikes, cfg.run_dir);
    printf("done: %ld steps this run, final step %ld of %ld\n", ran, start + ran, cfg.steps);
    if (tb) tb_close(tb);
    fcloseCheck(step_log);
    loader_close(loader);
    free(config_text);
    optim_free(&opt);
    clip_model_free(&model);
    ranks_finalize(&dist);
    return 0;
}
