// switchback.cuh: the SwitchBack linear layer (Wortsman, Dettmers et al. 2023), y = x W^T + b with int8 matmuls:
//   forward      y  = int8(x row-wise) . int8(W tensor-wise)^T + b              (int8_gemm, fused dequantize)
//   input grad   dx = int8(g row-wise) . int8(W^T tensor-wise)^T                (the same GEMM; W^T int8 copy)
//   weight grad  dW = g^T x in bf16 through cuBLASLt (fp32 accumulate, fp32 out)  ("switch back" to 16 bit)
//   bias grad    db = column sums of g (fp32, deterministic; from the same read of g as its quantization)
// Modes (SwitchBackMode):
//   SB_STANDARD          as above
//   SB_MEMORY_EFFICIENT  the backward pass takes the forward's int8 x + row scales instead of bf16 x (half the saved
//                        activation), dequantizing them into a bf16 scratch before the dW GEMM
//   SB_VECTORWISE        W scaled per output channel (forward: per row of W; backward: per column of W, i.e.
//                        per row of W^T, so the scale stays outside the int8 dot products)
//   SB_INT8_EVERYWHERE   baseline: dW also in int8 (g^T and x^T quantized per row, i.e. per column of g / x)
// Shapes: x (M, K), W (N, K), y (M, N), all row-major bf16; K and N multiples of 16; M any.
#pragma once
#include "int8_gemm.cuh"
#include "quantize.cuh"

typedef enum { SB_STANDARD = 0, SB_MEMORY_EFFICIENT = 1, SB_VECTORWISE = 2, SB_INT8_EVERYWHERE = 3 } SwitchBackMode;

// db (N) (+)= column sums of g (M, N), fp32, in a fixed order. partial: (SB_DB_CHUNKS, N) scratch.
#define SB_DB_CHUNKS 64
void column_sums(float *db, float *partial, const bf16 *g, int M, int N, int accumulate, cudaStream_t stream);

// The int8 copies of one weight W (N, K); switchback_quantize_weight() remakes them after every optimizer step.
typedef struct {
    int8_t *q;      // (N, K) for the forward GEMM
    int8_t *qt;     // (K, N) W^T, for the input-gradient GEMM
    float *absmax;  // (N + K + 1): row maxima of W (N), column maxima (K), tensor maximum
    int N, K;
} SbWeight;

void sb_weight_alloc(SbWeight *w, int N, int K);
void sb_weight_free(SbWeight *w);
void switchback_quantize_weight(SbWeight *w, const bf16 *W, SwitchBackMode mode, cudaStream_t stream);

// Many weights' int8 copies remade in one launch (tensor-wise modes: not SB_VECTORWISE), from tensor maxima already
// known, e.g. the optimizer's (adamw.cuh: tensor_absmax of the step that wrote W): no pass for the maxima, and the
// same int8 copies and maxima as switchback_quantize_weight. tensor_max[i]: device address of max |W[i]|.
typedef struct {
    Quant2wayJob *jobs;  // device
    int n, tiles;
} SbWeightBatch;
void sb_weight_batch_init(SbWeightBatch *b, SbWeight *const *w, const bf16 *const *W, const float *const *tensor_max, int n);
void sb_weight_batch_free(SbWeightBatch *b);
void switchback_quantize_weights(const SbWeightBatch *b, cudaStream_t stream);

// One per model (or per stream): the mode, cuBLASLt, and scratch sized for the largest layer.
typedef struct {
    SwitchBackMode mode;
    long max_M, max_C;  // C: the largest K or N of any layer
    int8_t *gq;         // (M, C) row-wise int8 of the output gradient
    float *gs;          // (M) its row scales
    float *db_partial;  // (SB_DB_CHUNKS, C): column_sums' partial sums
    bf16 *x_deq;        // (M, C) memory-efficient: dequantized x for dW
    int8_t *gqt, *xqt;  // (C, M16) int8 everywhere: g^T and x^T, per-row scales (M16 = M rounded up to 16)
    float *g_absmax, *x_absmax;  // (M + C + 1) each
} SwitchBack;

void switchback_init(SwitchBack *sb, SwitchBackMode mode, int max_M, int max_C);
void switchback_free(SwitchBack *sb);
// Device bytes switchback_init allocates (memory plans).
size_t switchback_scratch_bytes(SwitchBackMode mode, int max_M, int max_C);

// y (M, N) = x (M, K) . W^T + bias (bias may be NULL). Also writes xq (M, K) and xs (M), x quantized row-wise:
// the memory-efficient mode keeps them for the backward pass instead of x. x NULL: xq and xs already hold x
// quantized row-wise (written by x's producer, e.g. a fused LayerNorm or GELU) and are only read.
void switchback_forward(SwitchBack *sb, bf16 *y, int8_t *xq, float *xs, const bf16 *x, const SbWeight *w,
                        const bf16 *bias, int M, cudaStream_t stream);
// From g = dL/dy (M, N): dx (M, K) = g . W (overwritten); dw (N, K) and db (N) fp32, accumulated into when
// accumulate = 1 (micro-batches), db may be NULL. x: the forward's input; xq, xs: the forward's int8 copy, used
// in the memory-efficient mode when x is NULL (a caller that keeps x anyway, e.g. for another op's backward,
// passes it and dW uses it as in the standard mode). g_quantized = 1: sb->gq, sb->gs already hold g quantized
// row-wise (written by g's producer, e.g. a fused LayerNorm or GELU backward); g (bf16) is still read for dW (and db).
void switchback_backward(SwitchBack *sb, bf16 *dx, float *dw, float *db, const bf16 *g, const bf16 *x,
                         const int8_t *xq, const float *xs, const SbWeight *w, int M, int accumulate, int g_quantized,
                         cudaStream_t stream);
// switchback_backward in its two halves, for a caller that runs something between them (the model's c_proj: the
// GELU backward, which also recomputes x, and quantizes c_fc's output gradient into sb->gq, gs). The input half:
// dx and db (g quantized here unless g_quantized; the only half that reads sb->gq, gs). The weight half: dw from g
// (bf16) and x (or xq, xs), through its own scratch (x_deq, or the int8-everywhere buffers).
void switchback_backward_input(SwitchBack *sb, bf16 *dx, float *db, const bf16 *g, const SbWeight *w, int M, int accumulate,
                               int g_quantized, cudaStream_t stream);
void switchback_backward_weight(SwitchBack *sb, float *dw, const bf16 *g, const bf16 *x, const int8_t *xq, const float *xs,
                                const SbWeight *w, int M, int accumulate, cudaStream_t stream);
