// ops_cpu.c: fp32 CPU forward/backward of every CLIP operation (see ops_cpu.h). Plain loops with OpenMP
// over independent outputs; `omp simd` lets inner dot products vectorise in a fixed order.
#include "ops_cpu.h"

#include <math.h>
#include <string.h>

#include "utils.h"

void matmul_forward(float *out, const float *inp, const float *w, const float *bias, int N, int C, int OC) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OC; o++) {
            const float *x = inp + (size_t)n * C, *wr = w + (size_t)o * C;
            float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
            for (int i = 0; i < C; i++) acc += x[i] * wr[i];
            out[(size_t)n * OC + o] = acc + (bias ? bias[o] : 0.0f);
        }
}

void matmul_backward(float *dinp, float *dw, float *dbias, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC) {
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *dx = dinp + (size_t)n * C;
            const float *g = dout + (size_t)n * OC;
            for (int o = 0; o < OC; o++) {
                const float *wr = w + (size_t)o * C;
                float go = g[o];
#pragma omp simd
                for (int i = 0; i < C; i++) dx[i] += go * wr[i];
            }
        }
    }
    if (dw || dbias) {
#pragma omp parallel for schedule(static)
        for (int o = 0; o < OC; o++) {
            float *dwr = dw ? dw + (size_t)o * C : NULL;
            float db = 0.0f;
            for (int n = 0; n < N; n++) {
                float go = dout[(size_t)n * OC + o];
                db += go;
                if (dwr) {
                    const float *x = inp + (size_t)n * C;
#pragma omp simd
                    for (int i = 0; i < C; i++) dwr[i] += go * x[i];
                }
            }
            if (dbias) dbias[o] += db;
        }
    }
}

void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float m = 0.0f, v = 0.0f;
        for (int i = 0; i < C; i++) m += x[i];
        m /= C;
        for (int i = 0; i < C; i++) v += (x[i] - m) * (x[i] - m);
        float s = 1.0f / sqrtf(v / C + 1e-5f);
        float *y = out + (size_t)n * C;
        for (int i = 0; i < C; i++) y[i] = (x[i] - m) * s * w[i] + b[i];
        mean[n] = m, rstd[n] = s;
    }
}

void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C, *g = dout + (size_t)n * C;
        float m = mean[n], s = rstd[n];
        // dx = s * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * w
        float sum_d = 0.0f, sum_dx = 0.0f;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - m) * s, dxhat = g[i] * w[i];
            sum_d += dxhat, sum_dx += dxhat * xhat;
        }
        sum_d /= C, sum_dx /= C;
        float *dx = dinp + (size_t)n * C;
        for (int i = 0; i < C; i++) {
            float xhat = (x[i] - m) * s;
            dx[i] += s * (g[i] * w[i] - sum_d - xhat * sum_dx);
        }
    }
#pragma omp parallel for schedule(static)
    for (int i = 0; i < C; i++) {
        float dwi = 0.0f, dbi = 0.0f;
        for (int n = 0; n < N; n++) {
            float g = dout[(size_t)n * C + i];
            dwi += g * (inp[(size_t)n * C + i] - mean[n]) * rstd[n];
            dbi += g;
        }
        dw[i] += dwi, db[i] += dbi;
    }
}

void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hd;
                float *a = att + (((size_t)b * NH + h) * T + t) * T;
                int nk = causal ? t + 1 : T;
                float mx = -INFINITY;
                for (int t2 = 0; t2 < nk; t2++) {
                    const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hd;
                    float dot = 0.0f;
                    for (int i = 0; i < hd; i++) dot += q[i] * k[i];
                    a[t2] = dot * scale;
                    if (a[t2] > mx) mx = a[t2];
                }
                float sum = 0.0f;
                for (int t2 = 0; t2 < nk; t2++) a[t2] = expf(a[t2] - mx), sum += a[t2];
                for (int t2 = 0; t2 < nk; t2++) a[t2] /= sum;
                for (int t2 = nk; t2 < T; t2++) a[t2] = 0.0f;
                float *y = out + ((size_t)b * T + t) * C + h * hd;
                for (int i = 0; i < hd; i++) y[i] = 0.0f;
                for (int t2 = 0; t2 < nk; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hd;
                    for (int i = 0; i < hd; i++) y[i] += a[t2] * v[i];
                }
            }
}

void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C, int NH,
                        int causal) {
    int hd = C / NH;
    float scale = 1.0f / sqrtf((float)hd);
    // one (b, h) per task: dk and dv of a key gather contributions from every query of that head
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            float *datt = mallocCheck((size_t)T * sizeof(float));
            for (int t = 0; t < T; t++) {
                const float *a = att + (((size_t)b * NH + h) * T + t) * T;
                const float *dy = dout + ((size_t)b * T + t) * C + h * hd;
                const float *q = qkv + ((size_t)b * T + t) * 3 * C + h * hd;
                float *dq = dqkv + ((size_t)b * T + t) * 3 * C + h * hd;
                int nk = causal ? t + 1 : T;
                // through y = att @ v
                float dsum = 0.0f;
                for (int t2 = 0; t2 < nk; t2++) {
                    const float *v = qkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hd;
                    float *dv = dqkv + ((size_t)b * T + t2) * 3 * C + 2 * C + h * hd;
                    float d = 0.0f;
                    for (int i = 0; i < hd; i++) d += dy[i] * v[i], dv[i] += a[t2] * dy[i];
                    datt[t2] = d;
                    dsum += d * a[t2];
                }
                // through softmax, then the scaled dot products
                for (int t2 = 0; t2 < nk; t2++) {
                    float dpre = a[t2] * (datt[t2] - dsum) * scale;
                    const float *k = qkv + ((size_t)b * T + t2) * 3 * C + C + h * hd;
                    float *dk = dqkv + ((size_t)b * T + t2) * 3 * C + C + h * hd;
                    for (int i = 0; i < hd; i++) dq[i] += dpre * k[i], dk[i] += dpre * q[i];
                }
            }
            free(datt);
        }
}

static inline float gelu_exact(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void gelu_forward(float *out, const float *inp, size_t n, int quick) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = quick ? inp[i] * sigmoidf(1.702f * inp[i]) : gelu_exact(inp[i]);
}

void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n, int quick) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i], d;
        if (quick) {
            float s = sigmoidf(1.702f * x);
            d = s + 1.702f * x * s * (1.0f - s);
        } else {
            d = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2)) + x * expf(-0.5f * x * x) * 0.3989422804014327f;
        }
        dinp[i] += dout[i] * d;
    }
}

void residual_forward(float *out, const float *x, const float *f, const float *ls, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) {
            size_t j = (size_t)n * C + i;
            out[j] = x[j] + (ls ? ls[i] : 1.0f) * f[j];
        }
}

void residual_backward(float *dx, float *df, float *dls, const float *dout, const float *f, const float *ls, int N, int C) {
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++)
        for (int i = 0; i < C; i++) {
            size_t j = (size_t)n * C + i;
            dx[j] += dout[j];
            df[j] += dout[j] * (ls ? ls[i] : 1.0f);
        }
    if (dls) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < C; i++) {
            float s = 0.0f;
            for (int n = 0; n < N; n++) s += dout[(size_t)n * C + i] * f[(size_t)n * C + i];
            dls[i] += s;
        }
    }
}

void patch_extract(float *patches, const float *images, int B, int S, int P) {
    int G = S / P, K = 3 * P * P;
#pragma omp parallel for collapse(3) schedule(static)
    for (int b = 0; b < B; b++)
        for (int gy = 0; gy < G; gy++)
            for (int gx = 0; gx < G; gx++) {
                float *row = patches + (((size_t)b * G + gy) * G + gx) * K;
                for (int c = 0; c < 3; c++)
                    for (int ky = 0; ky < P; ky++)
                        for (int kx = 0; kx < P; kx++)
                            row[(c * P + ky) * P + kx] = images[(((size_t)b * 3 + c) * S + gy * P + ky) * S + gx * P + kx];
            }
}

void vision_embed_forward(float *x, const float *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D) {
    int T = G2 + 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            float *xr = x + ((size_t)b * T + t) * D;
            const float *src = t == 0 ? class_emb : patch_emb + ((size_t)b * G2 + t - 1) * D;
            for (int i = 0; i < D; i++) xr[i] = src[i] + pos[(size_t)t * D + i];
        }
}

void vision_embed_backward(float *dpatch_emb, float *dclass_emb, float *dpos, const float *dx, int B, int G2, int D) {
    int T = G2 + 1;
#pragma omp parallel for schedule(static)
    for (int t = 0; t < T; t++)
        for (int b = 0; b < B; b++) {
            const float *g = dx + ((size_t)b * T + t) * D;
            float *dst = t == 0 ? NULL : dpatch_emb + ((size_t)b * G2 + t - 1) * D;
            for (int i = 0; i < D; i++) {
                dpos[(size_t)t * D + i] += g[i];
                if (dst) dst[i] += g[i];
            }
        }
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) dclass_emb[i] += dx[(size_t)b * T * D + i];
}

void text_embed_forward(float *x, const int32_t *ids, const float *tok_emb, const float *pos, int B, int T, int D) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const float *e = tok_emb + (size_t)ids[(size_t)b * T + t] * D;
            float *xr = x + ((size_t)b * T + t) * D;
            for (int i = 0; i < D; i++) xr[i] = e[i] + pos[(size_t)t * D + i];
        }
}

void text_embed_backward(float *dtok_emb, float *dpos, const float *dx, const int32_t *ids, int B, int T, int D, int V) {
    // parallel over channels: each channel's scatter-add runs over tokens in order
#pragma omp parallel for schedule(static)
    for (int i = 0; i < D; i++)
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                float g = dx[((size_t)b * T + t) * D + i];
                dtok_emb[(size_t)ids[(size_t)b * T + t] * D + i] += g;
                dpos[(size_t)t * D + i] += g;
            }
}

void gather_rows(float *out, const float *x, const int *index, int B, int T, int D) {
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * D, x + ((size_t)b * T + index[b]) * D, (size_t)D * sizeof(float));
}

void gather_rows_backward(float *dx, const float *dout, const int *index, int B, int T, int D) {
    for (int b = 0; b < B; b++)
        for (int i = 0; i < D; i++) dx[((size_t)b * T + index[b]) * D + i] += dout[(size_t)b * D + i];
}

void eot_positions(int *index, const int32_t *ids, int B, int T) {
    for (int b = 0; b < B; b++) {
        int best = 0;
        for (int t = 1; t < T; t++)
            if (ids[(size_t)b * T + t] > ids[(size_t)b * T + best]) best = t;
        index[b] = best;
    }
}

void l2_normalize_forward(float *out, float *inv_norm, const float *x, int B, int E) {
    for (int b = 0; b < B; b++) {
        double ss = 0;
        for (int i = 0; i < E; i++) ss += (double)x[(size_t)b * E + i] * x[(size_t)b * E + i];
        // F.normalize divides by max(||x||, 1e-12)
        double n = sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12;
        if (inv_norm) inv_norm[b] = (float)(1.0 / n);
        for (int i = 0; i < E; i++) out[(size_t)b * E + i] = (float)(x[(size_t)b * E + i] / n);
    }
}

void l2_normalize_backward(float *dx, const float *dy, const float *y, const float *inv_norm, int B, int E) {
    for (int b = 0; b < B; b++) {
        double dot = 0;
        for (int i = 0; i < E; i++) dot += (double)y[(size_t)b * E + i] * dy[(size_t)b * E + i];
        for (int i = 0; i < E; i++) {
            size_t j = (size_t)b * E + i;
            dx[j] = (float)((dy[j] - y[j] * dot) * inv_norm[b]);
        }
    }
}

// One cross-entropy row: l_j = s <q, keys_j> over N keys, target t. Returns the CE; dl (N) = softmax - onehot, / (2N).
static double ce_row(double *dl, const float *q, const float *keys, double s, int N, int E, int t) {
    double mx = -INFINITY, sum = 0, lt = 0;
    for (int j = 0; j < N; j++) {
        double d = 0;
        for (int k = 0; k < E; k++) d += (double)q[k] * keys[(size_t)j * E + k];
        dl[j] = s * d;
        mx = fmax(mx, dl[j]);
    }
    lt = dl[t];
    for (int j = 0; j < N; j++) sum += exp(dl[j] - mx);
    for (int j = 0; j < N; j++) dl[j] = (exp(dl[j] - mx) / sum - (j == t)) / (2.0 * N);
    return (log(sum) + mx - lt) / (2.0 * N);
}

double contrastive_loss_rows(const float *img_n, const float *txt_n, float logit_scale, int N, int E, int row0, int b,
                             float *dimg_n, float *dtxt_n, float *dlogit_scale) {
    double s = exp((double)logit_scale), loss = 0, dls = 0;
    double *dl_img = mallocCheck((size_t)b * N * sizeof(double)), *dl_txt = mallocCheck((size_t)b * N * sizeof(double));
    double *row_loss = mallocCheck((size_t)b * sizeof(double));
    // row g of the logits (image g vs all texts) and column g (text g vs all images), for the b rows here
#pragma omp parallel for schedule(static)
    for (int i = 0; i < b; i++) {
        int g = row0 + i;
        row_loss[i] = ce_row(dl_img + (size_t)i * N, img_n + (size_t)g * E, txt_n, s, N, E, g) +
                      ce_row(dl_txt + (size_t)i * N, txt_n + (size_t)g * E, img_n, s, N, E, g);
    }
    for (int i = 0; i < b; i++) loss += row_loss[i];  // in order: the same bits every run
    free(row_loss);
    if (dlogit_scale) {
        // d logits / d logit_scale = logits; sum over this rank's rows in a fixed order
        for (int i = 0; i < b; i++)
            for (int j = 0; j < N; j++) {
                int g = row0 + i;
                double li = 0, lt = 0;
                for (int k = 0; k < E; k++)
                    li += (double)img_n[(size_t)g * E + k] * txt_n[(size_t)j * E + k], lt += (double)txt_n[(size_t)g * E + k] * img_n[(size_t)j * E + k];
                dls += dl_img[(size_t)i * N + j] * s * li + dl_txt[(size_t)i * N + j] * s * lt;
            }
        *dlogit_scale += (float)dls;
    }
    if (dimg_n && dtxt_n) {
        // the rows' own features: d q_g = s * dl_g @ keys
#pragma omp parallel for schedule(static)
        for (int i = 0; i < b; i++)
            for (int k = 0; k < E; k++) {
                double gi = 0, gt = 0;
                for (int j = 0; j < N; j++)
                    gi += dl_img[(size_t)i * N + j] * txt_n[(size_t)j * E + k], gt += dl_txt[(size_t)i * N + j] * img_n[(size_t)j * E + k];
                dimg_n[(size_t)(row0 + i) * E + k] += (float)(s * gi);
                dtxt_n[(size_t)(row0 + i) * E + k] += (float)(s * gt);
            }
        // every key j: d key_j = s * sum over these rows of dl_g[j] q_g
#pragma omp parallel for schedule(static)
        for (int j = 0; j < N; j++)
            for (int k = 0; k < E; k++) {
                double gt = 0, gi = 0;
                for (int i = 0; i < b; i++)
                    gt += dl_img[(size_t)i * N + j] * img_n[(size_t)(row0 + i) * E + k], gi += dl_txt[(size_t)i * N + j] * txt_n[(size_t)(row0 + i) * E + k];
                dtxt_n[(size_t)j * E + k] += (float)(s * gt);
                dimg_n[(size_t)j * E + k] += (float)(s * gi);
            }
    }
    free(dl_img), free(dl_txt);
    return loss;
}

float contrastive_loss(const float *img, const float *txt, float logit_scale, int B, int E, float *dimg, float *dtxt,
                       float *dlogit_scale) {
    size_t n = (size_t)B * E;
    float *in = mallocCheck(n * sizeof(float)), *tn = mallocCheck(n * sizeof(float));
    float *inv_i = mallocCheck((size_t)B * sizeof(float)), *inv_t = mallocCheck((size_t)B * sizeof(float));
    float *din = callocCheck(n, sizeof(float)), *dtn = callocCheck(n, sizeof(float));
    l2_normalize_forward(in, inv_i, img, B, E);
    l2_normalize_forward(tn, inv_t, txt, B, E);
    if (dlogit_scale) *dlogit_scale = 0;
    int grads = dimg && dtxt;
    double loss = contrastive_loss_rows(in, tn, logit_scale, B, E, 0, B, grads ? din : NULL, grads ? dtn : NULL, dlogit_scale);
    if (grads) {
        l2_normalize_backward(dimg, din, in, inv_i, B, E);
        l2_normalize_backward(dtxt, dtn, tn, inv_t, B, E);
    }
    free(in), free(tn), free(inv_i), free(inv_t), free(din), free(dtn);
    return (float)loss;
}
