// loss.cu: CLIP contrastive loss forward and backward on the GPU (see loss.cuh).
#include "loss.cuh"
#include "matmul.cuh"

// One block per row: y = x / max(||x||, 1e-12) (as F.normalize), inv_norm kept for backward.
__global__ void l2_normalize_kernel(float *y, float *inv_norm, const float *x, int E) {
    const float *xr = x + (size_t)blockIdx.x * E;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < E; i += blockDim.x) ss += xr[i] * xr[i];
    float inv = 1.0f / fmaxf(sqrtf(block_sum(ss)), 1e-12f);
    for (int i = threadIdx.x; i < E; i += blockDim.x) y[(size_t)blockIdx.x * E + i] = xr[i] * inv;
    if (threadIdx.x == 0) inv_norm[blockIdx.x] = inv;
}

// dx = (dy - y (y . dy)) * inv_norm, one block per row.
__global__ void l2_normalize_backward_kernel(float *dx, const float *dy, const float *y, const float *inv_norm, int E) {
    size_t off = (size_t)blockIdx.x * E;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < E; i += blockDim.x) dot += y[off + i] * dy[off + i];
    dot = block_sum(dot);
    for (int i = threadIdx.x; i < E; i += blockDim.x) dx[off + i] = (dy[off + i] - y[off + i] * dot) * inv_norm[blockIdx.x];
}

// One block per row i of cos (B, B) (cosine similarities; the target is column i): z = s cos with
// s = exp(logit_scale); loss_part[i] = logsumexp(z) - z_ii; dz = (softmax(z) - onehot) / (2B);
// dscale_part[i] = sum_j dz_j z_j (d z / d logit_scale = z); cos is overwritten with s dz (= d loss / d cos).
__global__ void cross_entropy_rows_kernel(float *cos, float *loss_part, float *dscale_part, const float *logit_scale, int B) {
    int i = blockIdx.x;
    float *row = cos + (size_t)i * B;
    float s = expf(*logit_scale), z_ii = s * row[i], mx = -INFINITY;
    for (int j = threadIdx.x; j < B; j += blockDim.x) mx = fmaxf(mx, s * row[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < B; j += blockDim.x) sum += expf(s * row[j] - mx);
    float lse = logf(block_sum(sum)) + mx;  // the barriers inside also order the reads of row[] above before the writes
    float ds = 0.0f;
    for (int j = threadIdx.x; j < B; j += blockDim.x) {
        float z = s * row[j], dz = (expf(z - lse) - (j == i ? 1.0f : 0.0f)) / (2.0f * B);
        ds += dz * z;
        row[j] = s * dz;
    }
    ds = block_sum(ds);
    if (threadIdx.x == 0) loss_part[i] = lse - z_ii, dscale_part[i] = ds;
}

// loss = sum(loss_part) / (2B) over both directions; dlogit_scale += sum(dscale_part). One block.
__global__ void loss_finish_kernel(float *loss, float *dlogit_scale, const float *loss_part, const float *dscale_part, int n, int B) {
    float l = 0.0f, d = 0.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) l += loss_part[k], d += dscale_part[k];
    l = block_sum(l), d = block_sum(d);
    if (threadIdx.x == 0) *loss = l / (2.0f * B), *dlogit_scale += d;
}

size_t contrastive_loss_scratch_elems(int B, int E) { return 2 * (size_t)B * E + 2 * (size_t)B * B + 6 * (size_t)B; }

void contrastive_loss_gpu(float *loss, float *dimg, float *dtxt, float *dlogit_scale, const float *img, const float *txt,
                      const float *logit_scale, int B, int E, float *scratch) {
    float *img_n = scratch, *txt_n = img_n + (size_t)B * E, *cos = txt_n + (size_t)B * E, *cos_t = cos + (size_t)B * B;
    float *inv_i = cos_t + (size_t)B * B, *inv_t = inv_i + B, *loss_part = inv_t + B, *dscale_part = loss_part + 2 * B;
    int threads = 256;
    l2_normalize_kernel<<<B, threads>>>(img_n, inv_i, img, E);
    cudaCheckLaunch();
    l2_normalize_kernel<<<B, threads>>>(txt_n, inv_t, txt, E);
    cudaCheckLaunch();
    // row-major cos[i][j] = img_n[i] . txt_n[j] is column-major (B, B) = txt_n^T-view @ img_n; cos_t the transpose
    matmul_cm(cos, CUDA_R_32F, B, txt_n, E, 1, img_n, E, 0, CUDA_R_32F, NULL, B, B, E, 1.0f, 0.0f);
    matmul_cm(cos_t, CUDA_R_32F, B, img_n, E, 1, txt_n, E, 0, CUDA_R_32F, NULL, B, B, E, 1.0f, 0.0f);
    cross_entropy_rows_kernel<<<B, threads>>>(cos, loss_part, dscale_part, logit_scale, B);      // image -> texts
    cudaCheckLaunch();
    cross_entropy_rows_kernel<<<B, threads>>>(cos_t, loss_part + B, dscale_part + B, logit_scale, B);  // text -> images
    cudaCheckLaunch();
    loss_finish_kernel<<<1, 1024>>>(loss, dlogit_scale, loss_part, dscale_part, 2 * B, B);
    cudaCheckLaunch();
    // d img_n[i] = sum_j G[i][j] txt_n[j] + sum_j Gt[j][i] txt_n[j], G, Gt the overwritten cos, cos_t (row-major);
    // d txt_n[j] = sum_i G[i][j] img_n[i] + sum_i Gt[j][i] img_n[i]; then through the normalisation in place.
    matmul_cm(dimg, CUDA_R_32F, E, txt_n, E, 0, cos, B, 0, CUDA_R_32F, NULL, E, B, B, 1.0f, 0.0f);
    matmul_cm(dimg, CUDA_R_32F, E, txt_n, E, 0, cos_t, B, 1, CUDA_R_32F, NULL, E, B, B, 1.0f, 1.0f);
    matmul_cm(dtxt, CUDA_R_32F, E, img_n, E, 0, cos, B, 1, CUDA_R_32F, NULL, E, B, B, 1.0f, 0.0f);
    matmul_cm(dtxt, CUDA_R_32F, E, img_n, E, 0, cos_t, B, 0, CUDA_R_32F, NULL, E, B, B, 1.0f, 1.0f);
    l2_normalize_backward_kernel<<<B, threads>>>(dimg, dimg, img_n, inv_i, E);
    cudaCheckLaunch();
    l2_normalize_backward_kernel<<<B, threads>>>(dtxt, dtxt, txt_n, inv_t, E);
    cudaCheckLaunch();
}
