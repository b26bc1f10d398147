// test_embed.cu: kernels/embed.cu against model/ops_cpu.c and data/loader.c: patch extraction with the
// normalisation fused, class token + positions (forward, backward through the column sums), token
// embedding forward and its deterministic scatter-add backward, pooling gather/scatter at the EOT.
// Bounds (relative L2): fp32 1e-6 (no arithmetic to speak of) for copies, 1e-5 for sums; bf16 outputs
// 1e-2 (one rounding). Widths that take each of the kernels' vector widths (16 bytes, 8 bytes, one element).
#include "../kernels/embed.cuh"
#include "../kernels/reduce.cuh"
#include "test_gpu.h"
extern "C" {
#include "../data/loader.h"
}

template <typename T> static void check_patches(int B, int S, int P) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    int G = S / P, K = 3 * P * P;
    size_t npix = (size_t)B * 3 * S * S, n = (size_t)B * G * G * K;
    uint8_t *img = (uint8_t *)mallocCheck(npix);
    for (size_t i = 0; i < npix; i++) img[i] = (uint8_t)rng_below(&test_rng, 256);
    float *norm = zeros_host(npix), *ref = zeros_host(n), *g = zeros_host(n);
    images_normalize(img, norm, B, S);
    patch_extract(ref, norm, B, S, P);
    uint8_t *d_img;
    cudaCheck(cudaMalloc(&d_img, npix));
    cudaCheck(cudaMemcpy(d_img, img, npix, cudaMemcpyHostToDevice));
    T *d_p = poisoned<T>(n);
    patch_im2col_gpu<T>(d_p, d_img, B, S, P);
    to_host<T>(g, d_p, n);
    double e = rel_err(g, ref, n);
    EXPECT(e < (sizeof(T) == 2 ? 1e-2 : 1e-6), "%s B=%d S=%d P=%d: patches rel err %.2e", tn, B, S, P, e);
    free(img), free(norm), free(ref), free(g);
    cudaCheck(cudaFree(d_img)), cudaCheck(cudaFree(d_p));
}

template <typename T> static void check_vision_embed(int B, int G2, int D) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    int Tn = G2 + 1;
    size_t np = (size_t)B * G2 * D, nx = (size_t)B * Tn * D;
    float *pe = rand_host(np, 1.0f), *cls = rand_host(D, 1.0f), *pos = rand_host((size_t)Tn * D, 1.0f), *dx = rand_host(nx, 1.0f);
    round_to<T>(pe, np), round_to<T>(dx, nx);
    float *x = zeros_host(nx), *dpe = zeros_host(np), *dcls = zeros_host(D), *dpos = zeros_host((size_t)Tn * D), *g = zeros_host(nx);
    vision_embed_forward(x, pe, cls, pos, B, G2, D);
    vision_embed_backward(dpe, dcls, dpos, dx, B, G2, D);
    T *d_pe = to_device<T>(pe, np), *d_x = poisoned<T>(nx), *d_dx = to_device<T>(dx, nx), *d_dpe = poisoned<T>(np);
    float *d_cls = to_device<float>(cls, D), *d_pos = to_device<float>(pos, (size_t)Tn * D);
    float *d_dcls = to_device<float>(zeros_host(D), D), *d_dpos = to_device<float>(zeros_host((size_t)Tn * D), (size_t)Tn * D);
    vision_embed_forward_gpu<T>(d_x, d_pe, d_cls, d_pos, B, G2, D);
    vision_embed_backward_gpu<T>(d_dpe, d_dx, B, G2, D);
    bias_grad_gpu<T>(d_dpos, d_dx, B, Tn * D, (long)Tn * D);
    bias_grad_gpu<T>(d_dcls, d_dx, B, D, (long)Tn * D);
    double bound = sizeof(T) == 2 ? 1e-2 : 1e-6;
    to_host<T>(g, d_x, nx);
    EXPECT(rel_err(g, x, nx) < bound, "%s: vision embed rel err %.2e", tn, rel_err(g, x, nx));
    to_host<T>(g, d_dpe, np);
    EXPECT(rel_err(g, dpe, np) < 1e-6, "%s: dpatch rel err %.2e", tn, rel_err(g, dpe, np));
    to_host<float>(g, d_dpos, (size_t)Tn * D);
    EXPECT(rel_err(g, dpos, (size_t)Tn * D) < 1e-5, "%s: dpos rel err %.2e", tn, rel_err(g, dpos, (size_t)Tn * D));
    to_host<float>(g, d_dcls, D);
    EXPECT(rel_err(g, dcls, D) < 1e-5, "%s: dclass rel err %.2e", tn, rel_err(g, dcls, D));
    free(pe), free(cls), free(pos), free(dx), free(x), free(dpe), free(dcls), free(dpos), free(g);
    cudaCheck(cudaFree(d_pe)), cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_dpe));
    cudaCheck(cudaFree(d_cls)), cudaCheck(cudaFree(d_pos)), cudaCheck(cudaFree(d_dcls)), cudaCheck(cudaFree(d_dpos));
}

template <typename T> static void check_text(int B, int Tn, int D, int V) {
    const char *tn = sizeof(T) == 2 ? "bf16" : "fp32";
    size_t nx = (size_t)B * Tn * D, nt = (size_t)V * D;
    int32_t *ids = (int32_t *)mallocCheck((size_t)B * Tn * sizeof(int32_t));
    // half padding (id 0: more than TOKEN_CHUNK positions), a few frequent ids, the rest anywhere in the vocabulary
    for (int i = 0; i < B * Tn; i++) ids[i] = i % 2 ? 0 : (int32_t)rng_below(&test_rng, i % 3 ? V : 4);
    float *tok = rand_host(nt, 1.0f), *pos = rand_host((size_t)Tn * D, 1.0f), *dx = rand_host(nx, 1.0f), *dtok = rand_host(nt, 1.0f);
    round_to<T>(dx, nx);
    float *x = zeros_host(nx), *dpos = zeros_host((size_t)Tn * D), *g = zeros_host(nx > nt ? nx : nt);
    T *d_x = poisoned<T>(nx), *d_dx = to_device<T>(dx, nx);
    float *d_tok = to_device<float>(tok, nt), *d_pos = to_device<float>(pos, (size_t)Tn * D), *d_dtok = to_device<float>(dtok, nt);
    int32_t *d_ids;
    cudaCheck(cudaMalloc(&d_ids, (size_t)B * Tn * sizeof(int32_t)));
    cudaCheck(cudaMemcpy(d_ids, ids, (size_t)B * Tn * sizeof(int32_t), cudaMemcpyHostToDevice));
    text_embed_forward(x, ids, tok, pos, B, Tn, D);
    text_embed_backward(dtok, dpos, dx, ids, B, Tn, D, V);  // dtok accumulates onto its random start
    text_embed_forward_gpu<T>(d_x, d_ids, NULL, d_tok, d_pos, B * Tn, Tn, D);
    size_t ni = token_index_ints((size_t)B * Tn);
    int *index = (int *)mallocCheck(ni * sizeof(int)), *counts = (int *)mallocCheck((size_t)V * sizeof(int)), *d_index;
    token_index_build(index, ids, B * Tn, V, counts);
    cudaCheck(cudaMalloc(&d_index, ni * sizeof(int)));
    cudaCheck(cudaMemcpy(d_index, index, ni * sizeof(int), cudaMemcpyHostToDevice));
    float *d_scratch = poisoned<float>((size_t)B * Tn * D);
    text_embed_backward_gpu<T>(d_dtok, d_scratch, d_dx, d_index, index[0], index[1], B * Tn, D);
    to_host<T>(g, d_x, nx);
    EXPECT(rel_err(g, x, nx) < (sizeof(T) == 2 ? 1e-2 : 1e-6), "%s: text embed rel err %.2e", tn, rel_err(g, x, nx));
    // positions given per row (the packed text tower's): each sequence's reversed
    int32_t *positions = (int32_t *)mallocCheck((size_t)B * Tn * sizeof(int32_t)), *d_positions;
    for (int r = 0; r < B * Tn; r++) positions[r] = Tn - 1 - r % Tn;
    for (size_t r = 0; r < (size_t)B * Tn; r++)
        for (int i = 0; i < D; i++) x[r * D + i] = tok[(size_t)ids[r] * D + i] + pos[(size_t)positions[r] * D + i];
    cudaCheck(cudaMalloc(&d_positions, (size_t)B * Tn * sizeof(int32_t)));
    cudaCheck(cudaMemcpy(d_positions, positions, (size_t)B * Tn * sizeof(int32_t), cudaMemcpyHostToDevice));
    text_embed_forward_gpu<T>(d_x, d_ids, d_positions, d_tok, d_pos, B * Tn, Tn, D);
    to_host<T>(g, d_x, nx);
    EXPECT(rel_err(g, x, nx) < (sizeof(T) == 2 ? 1e-2 : 1e-6), "%s: text embed at given positions rel err %.2e", tn, rel_err(g, x, nx));
    free(positions), cudaCheck(cudaFree(d_positions));
    to_host<float>(g, d_dtok, nt);
    EXPECT(rel_err(g, dtok, nt) < 1e-5, "%s: dtoken_embedding rel err %.2e", tn, rel_err(g, dtok, nt));
    // pooling at the EOT (the largest id of each row)
    int *eot = (int *)mallocCheck(B * sizeof(int)), *d_eot;
    eot_positions(eot, ids, B, Tn);
    cudaCheck(cudaMalloc(&d_eot, B * sizeof(int)));
    cudaCheck(cudaMemcpy(d_eot, eot, B * sizeof(int), cudaMemcpyHostToDevice));
    float *pooled = zeros_host((size_t)B * D), *d_pooled = poisoned<float>((size_t)B * D);
    gather_rows(pooled, dx, eot, B, Tn, D);
    gather_rows_gpu<T>(d_pooled, d_dx, d_eot, B, Tn, D);
    to_host<float>(g, d_pooled, (size_t)B * D);
    EXPECT(rel_err(g, pooled, (size_t)B * D) == 0, "%s: gather at EOT differs", tn);
    float *back = zeros_host(nx);
    gather_rows_backward(back, pooled, eot, B, Tn, D);
    cudaCheck(cudaMemset(d_x, 0, nx * sizeof(T)));
    scatter_rows_gpu<T>(d_x, d_pooled, d_eot, B, Tn, D);
    to_host<T>(g, d_x, nx);
    EXPECT(rel_err(g, back, nx) == 0, "%s: scatter at EOT differs", tn);
    free(ids), free(tok), free(pos), free(dx), free(dtok), free(x), free(dpos), free(g), free(index), free(counts), free(eot);
    free(pooled), free(back);
    cudaCheck(cudaFree(d_x)), cudaCheck(cudaFree(d_dx)), cudaCheck(cudaFree(d_tok)), cudaCheck(cudaFree(d_pos));
    cudaCheck(cudaFree(d_dtok)), cudaCheck(cudaFree(d_ids)), cudaCheck(cudaFree(d_index)), cudaCheck(cudaFree(d_eot));
    cudaCheck(cudaFree(d_pooled)), cudaCheck(cudaFree(d_scratch));
}

// text_pack on the host (no GPU): captions of 3, 8 and 1 positions up to their EOT (context 8) fill 12 rows, padded to
// min(TEXT_PACK_ALIGN, 24) = 24 with sequences of 8 and 4 rows of id 0; without the causal mask every caption keeps
// its 8 positions and no padding is needed.
static void test_text_pack(void) {
    enum { B = 3, Tt = 8 };
    int32_t src[B * Tt], ids[B * Tt], pos[B * Tt];
    for (int i = 0; i < B * Tt; i++) src[i] = 100 + i;
    int pooled[B] = {2, 7, 0}, seq[B + TEXT_PACK_ALIGN + 1];
    TextPack p = text_pack(ids, pos, seq, pooled, src, B, Tt, 1);
    const int want_seq[] = {0, 3, 11, 12, 20, 24}, want_pooled[] = {2, 10, 11};
    EXPECT(p.rows == 24 && p.seqs == 5 && p.longest == 8, "causal: rows %d seqs %d longest %d, want 24 5 8", p.rows, p.seqs, p.longest);
    for (int s = 0; s <= 5 && s <= p.seqs; s++) EXPECT(seq[s] == want_seq[s], "causal: seq[%d] = %d, want %d", s, seq[s], want_seq[s]);
    for (int b = 0; b < B; b++) EXPECT(pooled[b] == want_pooled[b], "causal: pooled[%d] = %d, want %d", b, pooled[b], want_pooled[b]);
    // rows: caption 0's positions 0-2, caption 1's 0-7, caption 2's 0, then padding 0-7 and 0-3
    const int src_row[12] = {0, 1, 2, 8, 9, 10, 11, 12, 13, 14, 15, 16}, want_pos[12] = {0, 1, 2, 0, 1, 2, 3, 4, 5, 6, 7, 0};
    for (int r = 0; r < 24; r++) {
        int id = r < 12 ? src[src_row[r]] : 0, ps = r < 12 ? want_pos[r] : r < 20 ? r - 12 : r - 20;
        EXPECT(ids[r] == id && pos[r] == ps, "causal: row %d id %d position %d, want %d %d", r, ids[r], pos[r], id, ps);
    }
    int pooled2[B] = {2, 7, 0};
    p = text_pack(ids, pos, seq, pooled2, src, B, Tt, 0);
    EXPECT(p.rows == 24 && p.seqs == 3 && p.longest == 8, "not causal: rows %d seqs %d longest %d, want 24 3 8", p.rows, p.seqs, p.longest);
    for (int r = 0; r < 24; r++) EXPECT(ids[r] == src[r] && pos[r] == r % 8, "not causal: row %d id %d position %d", r, ids[r], pos[r]);
    for (int b = 0; b < B; b++) EXPECT(pooled2[b] == 8 * b + (b == 0 ? 2 : b == 1 ? 7 : 0), "not causal: pooled[%d] = %d", b, pooled2[b]);
}

static void test_patches(void) {
    SKIP_WITHOUT_GPU();
    check_patches<float>(3, 32, 8), check_patches<bf16>(3, 32, 8);
    check_patches<float>(2, 42, 14), check_patches<bf16>(2, 224, 16);
    // the kernels' vector widths: 8 bytes of bf16 (K = 588), one element (K = 75)
    check_patches<bf16>(2, 42, 14), check_patches<bf16>(2, 15, 5), check_patches<float>(2, 15, 5);
}

static void test_vision_embed(void) {
    SKIP_WITHOUT_GPU();
    check_vision_embed<float>(3, 16, 64), check_vision_embed<bf16>(3, 16, 64);
    check_vision_embed<float>(4, 196, 77), check_vision_embed<bf16>(2, 256, 1280);
    check_vision_embed<bf16>(3, 9, 77), check_vision_embed<bf16>(2, 49, 36), check_vision_embed<float>(2, 49, 30);
}

static void test_text_embed(void) {
    SKIP_WITHOUT_GPU();
    check_text<float>(5, 32, 64, 300), check_text<bf16>(5, 32, 64, 300);
    check_text<float>(3, 77, 520, 49408), check_text<bf16>(3, 77, 512, 49408);
    check_text<bf16>(3, 13, 100, 500), check_text<bf16>(2, 7, 77, 50), check_text<float>(3, 13, 30, 500);
}

int main(void) {
    test_seed();
    RUN(test_text_pack);
    RUN(test_patches);
    RUN(test_vision_embed);
    RUN(test_text_embed);
    TEST_EXIT();
}
