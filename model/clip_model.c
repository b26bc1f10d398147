// clip_model.c: dispatch of the training-step calls to the CPU reference or the GPU (see clip_model.h).
#include "clip_model.h"

#include <math.h>
#include <string.h>

#include "utils.h"
#ifdef HAVE_CUDA
#include "clip_gpu.h"
#endif

const char *clip_model_check(const Config *c, int *device) {
    static char why[512];
#ifdef HAVE_CUDA
    const char *gpu_why = clip_gpu_unavailable();
    // one process: the GPU it would use is the current one (several: each rank checks its own in clip_gpu_create)
    if (!*gpu_why && c->world_size == 1) {
        gpu_why = clip_gpu_unsupported();
        if (*gpu_why && c->device == DEVICE_AUTO) fprintf(stderr, "note: device = auto: not the GPU: %s\n", gpu_why);
    }
#else
    const char *gpu_why = "this build has no CUDA (nvcc was not found at build time)";
#endif
    *device = c->device == DEVICE_CUDA || (c->device == DEVICE_AUTO && !*gpu_why) ? DEVICE_CUDA : DEVICE_CPU;
    if (*device == DEVICE_CUDA && *gpu_why) {
        snprintf(why, sizeof(why), "device = cuda: %s; or run on the CPU with --set device=cpu", gpu_why);
        return why;
    }
    if (*device == DEVICE_CPU && c->precision != PRECISION_FP32) {
        snprintf(why, sizeof(why), "precision = %s needs the GPU (%s); the CPU path is fp32 (--set precision=fp32)",
                 c->precision == PRECISION_BF16 ? "bf16" : "int8_switchback", gpu_why);
        return why;
    }
    if (*device == DEVICE_CPU && c->micro_batch_size && c->micro_batch_size != c->batch_size)
        return "micro_batch_size (gradient accumulation) is a GPU-path feature; on the CPU set micro_batch_size = 0";
    return NULL;
}

void clip_model_print_memory_plan(const Config *c, const ClipLayout *L, int device) {
#ifdef HAVE_CUDA
    if (device == DEVICE_CUDA) {
        clip_gpu_print_memory_plan(c, L);
        return;
    }
#endif
    ClipCPU probe;
    probe.cfg = *c, probe.layout = *L;
    double param_gb = (double)L->buffer_elems * sizeof(float) * 4 / 1e9;  // params, grads, m, u
    double act_gb = (double)clip_cpu_activation_bytes(&probe, (int)c->batch_size) / 1e9;
    printf("memory plan (CPU, fp32): parameters+grads+optimizer %.3f GB, activations for batch %ld %.3f GB\n", param_gb,
           c->batch_size, act_gb);
}

void clip_model_init(ClipModel *m, const Config *c, int device) {
    memset(m, 0, sizeof(*m));
    m->device = device;
    int B = (int)c->batch_size;
    clip_cpu_init(&m->cpu, c, device == DEVICE_CPU ? B : 0);  // no host activations for the GPU path
#ifdef HAVE_CUDA
    if (device == DEVICE_CUDA) {
        m->gpu = clip_gpu_create(c, &m->cpu.layout, m->cpu.params);
        return;
    }
#endif
    m->images = mallocCheck((size_t)B * 3 * c->image_size * c->image_size * sizeof(float));
}

void clip_model_free(ClipModel *m) {
#ifdef HAVE_CUDA
    if (m->gpu) clip_gpu_free(m->gpu);
#endif
    free(m->images);
    clip_cpu_free(&m->cpu);
}

float clip_model_forward_backward(ClipModel *m, const Batch *b) {
#ifdef HAVE_CUDA
    if (m->gpu) return clip_gpu_forward_backward(m->gpu, b);
#endif
    images_normalize(b->images, m->images, b->size, m->cpu.cfg.image_size);
    float loss = clip_cpu_forward(&m->cpu, m->images, b->tokens, b->size);
    clip_cpu_backward(&m->cpu);
    return loss;
}

float clip_model_grad_norm(ClipModel *m, const Optimizer *o) {
#ifdef HAVE_CUDA
    if (m->gpu) return clip_gpu_grad_norm(m->gpu, o);
#endif
    return grad_global_norm(m->cpu.grads, m->cpu.layout.buffer_elems);
}

void clip_model_update(ClipModel *m, Optimizer *o, float lr, float grad_norm) {
    float max_norm = m->cpu.cfg.grad_clip;
#ifdef HAVE_CUDA
    if (m->gpu) {
        float coef = max_norm > 0 ? max_norm / (grad_norm + 1e-6f) : 1.0f;  // as grad_clip_
        clip_gpu_update(m->gpu, o, lr, coef < 1.0f ? coef : 1.0f);
        return;
    }
#endif
    const ClipLayout *L = &m->cpu.layout;
    if (max_norm > 0) grad_clip_(m->cpu.grads, L->buffer_elems, grad_norm, max_norm);
    optim_step(o, m->cpu.params, m->cpu.grads, lr);
    float *ls = &m->cpu.params[L->logit_scale];  // as open_clip: clamp to [0, ln 100] after every step
    *ls = fminf(fmaxf(*ls, 0.0f), logf(100.0f));
}

float clip_model_logit_scale(const ClipModel *m) {
#ifdef HAVE_CUDA
    if (m->gpu) return clip_gpu_logit_scale(m->gpu);
#endif
    return m->cpu.params[m->cpu.layout.logit_scale];
}

void clip_model_to_host(ClipModel *m, Optimizer *o) {
#ifdef HAVE_CUDA
    if (m->gpu) clip_gpu_download(m->gpu, m->cpu.params, o, NULL);
#endif
    (void)m, (void)o;
}

void clip_model_gemm_choices(const ClipModel *m, const Config *c, int rank, int save) {
#ifdef HAVE_CUDA
    if (!m->gpu || c->gemm_tuning < 2) return;
    char path[CONFIG_STR + 64];
    snprintf(path, sizeof(path), "%s/gemm_choices.rank%d.txt", c->run_dir, rank);
    int n = clip_gpu_gemm_choices(path, save);
    if (n > 0) printf("gemm_tuning: %d GEMM choices from %s\n", n, path);
    if (n == -1) printf("gemm_tuning: %s was made on another GPU or cuBLASLt; timing the GEMMs again\n", path);
#else
    (void)m, (void)c, (void)rank, (void)save;
#endif
}

void clip_model_to_device(ClipModel *m, const Optimizer *o) {
#ifdef HAVE_CUDA
    if (m->gpu) clip_gpu_upload(m->gpu, m->cpu.params, o);
#endif
    (void)m, (void)o;
}

void clip_model_encode_images(ClipModel *m, const uint8_t *images, int n, float *features) {
    const Config *c = &m->cpu.cfg;
#ifdef HAVE_CUDA
    if (m->gpu) {
        Batch b = {n, c->image_size, c->context_length, (uint8_t *)images, NULL, NULL};
        clip_gpu_encode(m->gpu, &b, features, NULL);
        return;
    }
#endif
    images_normalize(images, m->images, n, c->image_size);
    clip_cpu_encode_image(&m->cpu, m->images, n);
    memcpy(features, m->cpu.acts.image_features, (size_t)n * c->embed_dim * sizeof(float));
}

void clip_model_encode_texts(ClipModel *m, const int32_t *tokens, int n, float *features) {
    const Config *c = &m->cpu.cfg;
#ifdef HAVE_CUDA
    if (m->gpu) {
        Batch b = {n, c->image_size, c->context_length, NULL, (int32_t *)tokens, NULL};
        clip_gpu_encode(m->gpu, &b, NULL, features);
        return;
    }
#endif
    clip_cpu_encode_text(&m->cpu, tokens, n);
    memcpy(features, m->cpu.acts.text_features, (size_t)n * c->embed_dim * sizeof(float));
}

double clip_model_peak_flops(const ClipModel *m) {
#ifdef HAVE_CUDA
    if (m->gpu) return clip_gpu_peak_flops();
#endif
    return 0;
}

size_t clip_model_memory_used(const ClipModel *m) {
#ifdef HAVE_CUDA
    if (m->gpu) return clip_gpu_memory_used();
#endif
    return 0;
}
