// embed.cuh: the model's inputs and pooling: patch extraction with the uint8 -> mean/std normalisation
// fused, class token + positional embedding, token + positional embedding, and the rows the towers are
// pooled at. Activations float or bf16; embedding parameters and their gradients fp32.
// Reference: images_normalize (data/loader.c), patch_extract, vision_embed_*, text_embed_*, gather_rows*
// in model/ops_cpu.c.
#pragma once
#include <stdint.h>

#include "common.cuh"

// patches (B*G*G, 3*P*P) in conv1.weight's (3, P, P) order from images (B, 3, S, S) uint8, normalised.
template <typename T> void patch_im2col_gpu(T *patches, const uint8_t *images, int B, int S, int P);
// x (B, 1 + G2, D): row 0 = class_emb + pos[0], row 1+i = patch_emb[i] + pos[1+i].
template <typename T> void vision_embed_forward_gpu(T *x, const T *patch_emb, const float *class_emb, const float *pos, int B, int G2, int D);
// dpatch_emb (B*G2, D) = rows 1.. of dx (overwrites). The class and positional gradients are column sums
// of dx (bias_grad_gpu in reduce.cuh).
template <typename T> void vision_embed_backward_gpu(T *dpatch_emb, const T *dx, int B, int G2, int D);
// x (rows, D): row r = tok_emb[ids[r]] + pos[positions[r]] (positions NULL: r % Tn, rows of B sequences of Tn).
template <typename T>
void text_embed_forward_gpu(T *x, const int32_t *ids, const int32_t *positions, const float *tok_emb, const float *pos, int rows, int Tn,
                            int D);

// The captions (B, Tt) packed for the text tower (host): under the causal mask a position after a caption's EOT
// changes nothing the pooled EOT row sees, so caption b keeps its first pooled[b] + 1 positions (pooled[b]: its EOT
// position on entry; all Tt when !causal), one caption after another, then padding sequences of id 0 (never pooled)
// up to a multiple of TEXT_PACK_ALIGN rows (a bounded number of GEMM shapes), at most B Tt. Writes ids and positions of
// the rows, seq: the first row of each sequence and the end (B + TEXT_PACK_ALIGN + 1 ints suffice), pooled[b]: the row
// of caption b's EOT.
#define TEXT_PACK_ALIGN 256
typedef struct {
    int rows, seqs, longest;  // rows (<= B Tt), sequences (captions, then padding), the longest sequence
} TextPack;
TextPack text_pack(int32_t *ids, int32_t *positions, int *seq, int *pooled, const int32_t *src, int B, int Tt, int causal);

// The positions of each distinct token of a batch, for a deterministic scatter-add without atomics. Built
// on the host (the ids are there) into one int buffer of token_index_ints(n) entries:
//   [0] num_unique, [1] num_chunks, then
//   token (n):           the distinct ids, increasing
//   first_chunk (n + 1): the chunks of token u are first_chunk[u] .. first_chunk[u+1]
//   chunk_start (n + 1): chunk c covers rows[chunk_start[c] .. chunk_start[c+1])
//   rows (n):            positions grouped by token, increasing within a token
// A chunk holds at most TOKEN_CHUNK positions, so a frequent token (padding) is summed by many blocks.
#define TOKEN_CHUNK 32
static inline size_t token_index_ints(size_t n) { return 4 * n + 4; }
// counts: scratch of vocab ints.
void token_index_build(int *buf, const int32_t *ids, int n, int vocab, int *counts);
// dtok_emb[token] (fp32) += sum of the dx (n, D) rows at its positions. index: the device copy of the built
// buffer (num_unique, num_chunks: its first two entries); scratch: num_chunks * D floats (n * D suffice).
template <typename T>
void text_embed_backward_gpu(float *dtok_emb, float *scratch, const T *dx, const int *index, int num_unique, int num_chunks,
                             int n, int D);

// out (B, D) = x[b, index[b]] of x (B, Tn, D) (index NULL: row 0, the class token; Tn 0: index[b] is a row of x).
// out is fp32, or T itself (a copy of the rows).
template <typename T, typename O> void gather_rows_gpu(O *out, const T *x, const int *index, int B, int Tn, int D);
// dx[b, index[b]] = dout[b] (other rows untouched: the caller zeroes dx); dout fp32 or T.
template <typename T, typename O> void scatter_rows_gpu(T *dx, const O *dout, const int *index, int B, int Tn, int D);
