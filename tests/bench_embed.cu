// bench_embed.cu: the embedding kernels (kernels/embed.cu) and the column sums of the positional and class-token
// gradients, as a ViT-B/16 (batch 256) and a ViT-H/14 (batch 64) step calls them once each: patch extraction from
// uint8 images, the class token + positions forward and its backward (the patch rows), the token + positions
// forward and the token-embedding backward on the packed text (captions of random length up to their EOT, text_pack, as
// the step packs them), the image tower's positional and class gradients (bias_grad_gpu) and the text's positional
// gradient (through a position index, as the step sums it). Calls back to back between CUDA events (batches of reps, the
// median of 7 batches' means); before timing, checksums of each output from fixed inputs, so two builds of the
// kernels can be compared bit for bit.
//   ./build/tests/bench_embed [reps]      (default 20)
#include "../kernels/embed.cuh"
#include "../kernels/reduce.cuh"
#include "bench_gpu.h"
extern "C" {
#include "../model/rng.h"
}

struct Model {
    const char *name;
    int B, S, P, Dv, Tt, Dt, vocab;
};
static const Model MODELS[] = {{"ViT-B/16", 256, 224, 16, 768, 77, 512, 49408}, {"ViT-H/14", 64, 224, 14, 1280, 77, 1024, 49408}};

enum { IM2COL, VIS_FWD, VIS_BWD, VIS_POS_GRADS, TXT_FWD, TXT_BWD, TXT_POS_GRAD, CASES };
static const char *CASE_NAMES[CASES] = {"patches (im2col)",      "class + positions fwd", "patch rows bwd", "positions + class grads",
                                        "tokens + positions fwd", "token embedding bwd",   "text positions grad"};

struct Bufs {
    uint8_t *images;
    bf16 *patches, *patch_emb, *vx, *dvx, *dpatch, *tx, *dtx;
    float *cls, *vpos, *tok, *tpos, *dcls, *dvpos, *dtok, *dtpos, *scratch;
    int32_t *ids, *positions;
    int rows, *index, num_unique, num_chunks, *pos_index, pos_unique, pos_chunks;  // the packed text's rows, indexes
};

template <typename T> static T *alloc(size_t n) {
    T *p;
    cudaCheck(cudaMalloc(&p, n * sizeof(T)));
    return p;
}

static void run_case(int k, const Model *m, Bufs *b) {
    int G2 = (m->S / m->P) * (m->S / m->P), Tv = G2 + 1;
    switch (k) {
        case IM2COL: patch_im2col_gpu<bf16>(b->patches, b->images, m->B, m->S, m->P); break;
        case VIS_FWD: vision_embed_forward_gpu<bf16>(b->vx, b->patch_emb, b->cls, b->vpos, m->B, G2, m->Dv); break;
        case VIS_BWD: vision_embed_backward_gpu<bf16>(b->dpatch, b->dvx, m->B, G2, m->Dv); break;
        case VIS_POS_GRADS:
            bias_grad_gpu<bf16>(b->dvpos, b->dvx, m->B, Tv * m->Dv, (long)Tv * m->Dv);
            bias_grad_gpu<bf16>(b->dcls, b->dvx, m->B, m->Dv, (long)Tv * m->Dv);
            break;
        case TXT_FWD: text_embed_forward_gpu<bf16>(b->tx, b->ids, b->positions, b->tok, b->tpos, b->rows, m->Tt, m->Dt); break;
        case TXT_BWD:
            text_embed_backward_gpu<bf16>(b->dtok, b->scratch, b->dtx, b->index, b->num_unique, b->num_chunks, b->rows, m->Dt);
            break;
        default:
            text_embed_backward_gpu<bf16>(b->dtpos, b->scratch, b->dtx, b->pos_index, b->pos_unique, b->pos_chunks, b->rows, m->Dt);
    }
}

int main(int argc, char **argv) {
    int reps = bench_reps(argc, argv, 1, 20, 1000);
    if (bench_no_gpu("bench_embed")) return 0;
    cudaDeviceProp prop = bench_device();
    cudaEvent_t e0, e1;
    cudaCheck(cudaEventCreate(&e0)), cudaCheck(cudaEventCreate(&e1));
    printf("GPU: %s (%d SMs); batches of %d calls, median of %d; us per call\n", prop.name, prop.multiProcessorCount, reps, BENCH_TRIALS);
    printf("| model |");
    for (int k = 0; k < CASES; k++) printf(" %s |", CASE_NAMES[k]);
    printf(" total |\n");
    for (const Model &m : MODELS) {
        int G2 = (m.S / m.P) * (m.S / m.P), Tv = G2 + 1, K = 3 * m.P * m.P, n = m.B * m.Tt;
        size_t npix = (size_t)m.B * 3 * m.S * m.S, nv = (size_t)m.B * Tv * m.Dv, np = (size_t)m.B * G2 * m.Dv, nt = (size_t)n * m.Dt;
        Bufs b;
        b.images = alloc<uint8_t>(npix), b.patches = alloc<bf16>((size_t)m.B * G2 * K), b.patch_emb = alloc<bf16>(np);
        b.vx = alloc<bf16>(nv), b.dvx = alloc<bf16>(nv), b.dpatch = alloc<bf16>(np), b.tx = alloc<bf16>(nt), b.dtx = alloc<bf16>(nt);
        b.cls = alloc<float>(m.Dv), b.vpos = alloc<float>((size_t)Tv * m.Dv), b.tok = alloc<float>((size_t)m.vocab * m.Dt);
        b.tpos = alloc<float>((size_t)m.Tt * m.Dt), b.dcls = alloc<float>(m.Dv), b.dvpos = alloc<float>((size_t)Tv * m.Dv);
        b.dtok = alloc<float>((size_t)m.vocab * m.Dt), b.dtpos = alloc<float>((size_t)m.Tt * m.Dt), b.scratch = alloc<float>(nt);
        fill_normal(b.patch_emb, np, 1, 1.0f), fill_normal(b.dvx, nv, 2, 1.0f), fill_normal(b.dtx, nt, 3, 1.0f);
        fill_normal(b.cls, m.Dv, 4, 1.0f), fill_normal(b.vpos, (size_t)Tv * m.Dv, 5, 1.0f), fill_normal(b.tok, (size_t)m.vocab * m.Dt, 6, 1.0f);
        fill_normal(b.tpos, (size_t)m.Tt * m.Dt, 7, 1.0f);
        Rng rng;
        rng_init(&rng, 1234, 0, 0);  // fixed inputs: the checksums compare builds
        uint8_t *img = (uint8_t *)mallocCheck(npix);
        for (size_t i = 0; i < npix; i++) img[i] = (uint8_t)rng_below(&rng, 256);
        cudaCheck(cudaMemcpy(b.images, img, npix, cudaMemcpyHostToDevice));
        // captions: 5..77 tokens (start, words, EOT), then id 0; packed up to their EOTs
        int32_t *caps = (int32_t *)mallocCheck(n * sizeof(int32_t)), *ids = (int32_t *)mallocCheck(n * sizeof(int32_t));
        int32_t *pos = (int32_t *)mallocCheck(n * sizeof(int32_t));
        int *eot = (int *)mallocCheck(m.B * sizeof(int)), *seq = (int *)mallocCheck((m.B + TEXT_PACK_ALIGN + 1) * sizeof(int));
        for (int s = 0; s < m.B; s++) {
            int len = 5 + (int)rng_below(&rng, m.Tt - 4);
            eot[s] = len - 1;
            for (int t = 0; t < m.Tt; t++)
                caps[s * m.Tt + t] = t == 0 ? 49406 : t == len - 1 ? 49407 : t < len ? 256 + (int)rng_below(&rng, 40000) : 0;
        }
        b.rows = text_pack(ids, pos, seq, eot, caps, m.B, m.Tt, 1).rows;
        size_t ni = token_index_ints(b.rows);
        int *index = (int *)mallocCheck(ni * sizeof(int)), *pos_index = (int *)mallocCheck(ni * sizeof(int));
        int *counts = (int *)mallocCheck(m.vocab * sizeof(int));
        token_index_build(index, ids, b.rows, m.vocab, counts), token_index_build(pos_index, pos, b.rows, m.Tt, counts);
        b.num_unique = index[0], b.num_chunks = index[1], b.pos_unique = pos_index[0], b.pos_chunks = pos_index[1];
        b.ids = alloc<int32_t>(b.rows), b.positions = alloc<int32_t>(b.rows), b.index = alloc<int>(ni), b.pos_index = alloc<int>(ni);
        cudaCheck(cudaMemcpy(b.ids, ids, b.rows * sizeof(int32_t), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(b.positions, pos, b.rows * sizeof(int32_t), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(b.index, index, ni * sizeof(int), cudaMemcpyHostToDevice));
        cudaCheck(cudaMemcpy(b.pos_index, pos_index, ni * sizeof(int), cudaMemcpyHostToDevice));
        // checksums from fixed inputs (the gradient sums from zero)
        cudaCheck(cudaMemset(b.dcls, 0, m.Dv * 4)), cudaCheck(cudaMemset(b.dvpos, 0, (size_t)Tv * m.Dv * 4));
        cudaCheck(cudaMemset(b.dtok, 0, (size_t)m.vocab * m.Dt * 4)), cudaCheck(cudaMemset(b.dtpos, 0, (size_t)m.Tt * m.Dt * 4));
        for (int k = 0; k < CASES; k++) run_case(k, &m, &b);
        printf("%s: checksums patches %016llx, vision x %016llx, dpatch %016llx, dpos,dclass %016llx, text x %016llx, dtok %016llx, "
               "dtpos %016llx (%d packed rows of %d, %d distinct tokens, %d chunks)\n",
               m.name, checksum(b.patches, (size_t)m.B * G2 * K * 2), checksum(b.vx, nv * 2), checksum(b.dpatch, np * 2),
               checksum(b.dvpos, (size_t)Tv * m.Dv * 4) ^ checksum(b.dcls, m.Dv * 4), checksum(b.tx, (size_t)b.rows * m.Dt * 2),
               checksum(b.dtok, (size_t)m.vocab * m.Dt * 4), checksum(b.dtpos, (size_t)m.Tt * m.Dt * 4), b.rows, n, b.num_unique,
               b.num_chunks);
        float total = 0;
        printf("| %s, batch %d |", m.name, m.B);
        for (int k = 0; k < CASES; k++) {
            float ms = bench_call_ms([&](int) { run_case(k, &m, &b); }, reps, e0, e1);
            total += ms;
            printf(" %.1f |", ms * 1e3);
        }
        printf(" %.1f |\n", total * 1e3);
        free(img), free(caps), free(ids), free(pos), free(eot), free(seq), free(index), free(pos_index), free(counts);
        void *d[] = {b.images, b.patches, b.patch_emb, b.vx, b.dvx, b.dpatch, b.tx, b.dtx, b.cls, b.vpos, b.tok, b.tpos,
                     b.dcls, b.dvpos, b.dtok, b.dtpos, b.scratch, b.ids, b.positions, b.index, b.pos_index};
        for (void *p : d) cudaCheck(cudaFree(p));
    }
    cudaCheck(cudaEventDestroy(e0)), cudaCheck(cudaEventDestroy(e1));
    return 0;
}
