// attention.cuh: multi-head self-attention on the fused projection qkv (B, T, 3C) laid out [q | k | v],
// head h at columns h*hd .. (h+1)*hd of each part; out (B, T, C); causal masks key t2 > query t (text).
//   fp32: the reference algorithm (softmax probabilities kept, (B, NH, T, T)), for parity runs.
//   bf16: flash attention (tensor cores, online softmax, only the log-sum-exp (B, NH, T) kept); head dims that
//         are multiples of 8 up to 128 (CLIP: 64, 80, 88; tiny: 16). wgmma kernels on sm_90 at head dims 64 and
//         80, mma.sync kernels otherwise.
// Backward overwrites dqkv (the reference accumulates). Reference: attention_forward/backward in
// model/ops_cpu.c.
#pragma once
#include "common.cuh"

// The query rows a caller reads (the last block of a pooled tower, whose other rows reach nothing the loss reads):
// on = 0: every row; on = 1: one row of each sequence b < count, row stride b + (rows ? rows[b] : 0) of qkv and out
// (rows: device, count ints), and none of the sequences after (the text tower's padding). The bf16 kernels then compute
// only the 64-row query tile that holds it: the forward leaves the other tiles' rows of out and their statistics
// unwritten; the backward, whose dout must be zero on every row but the pooled ones, writes zeros for their dq and
// skips their contributions to dk and dv (exact zeros): the same results as with every row. The fp32 kernels compute
// every row.
typedef struct {
    int on, stride;
    const int *rows;
    int count;
} AttnQueries;
#define ATTN_ALL_QUERIES AttnQueries{0, 0, NULL, 0}

// seq (device, B + 1 ints, or NULL): a packed batch of B sequences, sequence b being rows seq[b] .. seq[b + 1] - 1 of
// qkv, out and dqkv, of at most T rows each (T then sizes the grid and the statistics' regions); NULL: B sequences
// of T rows, sequence b at rows b T.., as with seq[b] = b T. The statistics of a packed batch of N rows fit in those
// of N / T sequences of T rows.
// att: (B, NH, T, T) probabilities.
void attention_forward_gpu(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal, const int *seq = NULL,
                           AttnQueries queries = ATTN_ALL_QUERIES);
// out: unused (the bf16 path needs it); scratch: (B, NH, T, T).
void attention_backward_gpu(float *dqkv, float *scratch, const float *dout, const float *qkv, const float *out, const float *att,
                        int B, int T, int C, int NH, int causal, const int *seq = NULL, AttnQueries queries = ATTN_ALL_QUERIES);

// lse: (B, NH, T) log2-domain log-sum-exp of each query's scaled scores.
void attention_forward_gpu(bf16 *out, float *lse, const bf16 *qkv, int B, int T, int C, int NH, int causal, const int *seq = NULL,
                           AttnQueries queries = ATTN_ALL_QUERIES);
// out: the forward output; scratch: (B, NH, T) floats.
void attention_backward_gpu(bf16 *dqkv, float *scratch, const bf16 *dout, const bf16 *qkv, const bf16 *out, const float *lse,
                        int B, int T, int C, int NH, int causal, const int *seq = NULL, AttnQueries queries = ATTN_ALL_QUERIES);

// Which kernels the bf16 path runs (tests, benchmarks): AUTO as described above (ATTENTION_KERNELS=mma in the
// environment forces mma.sync), MMA always mma.sync.
typedef enum { ATTN_KERNELS_AUTO, ATTN_KERNELS_MMA } AttnKernels;
void attention_set_kernels(AttnKernels k);

// Floats of the statistics the forward keeps per call, which is also the backward scratch's size.
size_t attention_stats_elems(int bf16_path, int B, int T, int NH);
