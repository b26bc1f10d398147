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

// One block per local row i of cos (b, N) (cosine similarities of global row row0 + i, whose target is column
// row0 + i): z = s cos with s = exp(logit_scale); loss_part[i] = logsumexp(z) - z_target; dz = (softmax(z) -
// onehot) / (2N); dscale_part[i] = sum_j dz_j z_j (d z / d logit_scale = z); cos is overwritten with s dz
// (= d loss / d cos).
__global__ void cross_entropy_rows_kernel(float *cos, float *loss_part, float *dscale_part, const float *logit_scale, int N, int row0) {
    int i = blockIdx.x, target = row0 + i;
    float *row = cos + (size_t)i * N;
    float s = expf(*logit_scale), z_t = s * row[target], mx = -INFINITY;
    for (int j = threadIdx.x; j < N; j += blockDim.x) mx = fmaxf(mx, s * row[j]);
    mx = block_max(mx);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < N; j += blockDim.x) sum += expf(s * row[j] - mx);
    float lse = logf(block_sum(sum)) + mx;  // the barriers inside also order the reads of row[] above before the writes
    float ds = 0.0f;
    for (int j = threadIdx.x; j < N; j += blockDim.x) {
        float z = s * row[j], dz = (expf(z - lse) - (j == target ? 1.0f : 0.0f)) / (2.0f * N);
        ds += dz * z;
        row[j] = s * dz;
    }
    ds = block_sum(ds);
    if (threadIdx.x == 0) loss_part[i] = lse - z_t, dscale_part[i] = ds;
}

// loss = sum(loss_part) / (2N) over both directions; dlogit_scale += sum(dscale_part). One block.
__global__ void loss_finish_kernel(float *loss, float *dlogit_scale, const float *loss_part, const float *dscale_part, int n, int N) {
    float l = 0.0f, d = 0.0f;
    for (int k = threadIdx.x; k < n; k += blockDim.x) l += loss_part[k], d += dscale_part[k];
    l = block_sum(l), d = block_sum(d);
    if (threadIdx.x == 0) *loss = l / (2.0f * N), *dlogit_scale += d;
}

// scratch: [inverse norms of the local images (b) | texts (b) | what the rows phase uses]
size_t contrastive_loss_scratch_elems(int b, int N) { return 2 * (size_t)b + 2 * (size_t)b * N + 4 * (size_t)b; }

void contrastive_normalize_gpu(float *img_n, float *txt_n, const float *img, const float *txt, int b, int E, float *scratch) {
    l2_normalize_kernel<<<b, 256>>>(img_n, scratch, img, E);
    cudaCheckLaunch();
    l2_normalize_kernel<<<b, 256>>>(txt_n, scratch + b, txt, E);
    cudaCheckLaunch();
}

void contrastive_loss_rows_gpu(float *loss, float *dimg_n, float *dtxt_n, float *dlogit_scale, const float *img_n,
                               const float *txt_n, const float *logit_scale, int N, int E, int row0, int b, float *scratch) {
    float *cos = scratch + 2 * (size_t)b, *cos_t = cos + (size_t)b * N, *loss_part = cos_t + (size_t)b * N, *dscale_part = loss_part + 2 * b;
    const float *img_r = img_n + (size_t)row0 * E, *txt_r = txt_n + (size_t)row0 * E;  // this process's rows
    // row-major cos[i][j] = img_r[i] . txt_n[j] is column-major (N, b) = txt_n^T-view @ img_r; cos_t[i][j] = txt_r[i] . img_n[j]
    matmul_cm(cos, CUDA_R_32F, N, txt_n, E, 1, img_r, E, 0, CUDA_R_32F, NULL, N, b, E, 1.0f, 0.0f, 0);
    matmul_cm(cos_t, CUDA_R_32F, N, img_n, E, 1, txt_r, E, 0, CUDA_R_32F, NULL, N, b, E, 1.0f, 0.0f, 0);
    cross_entropy_rows_kernel<<<b, 256>>>(cos, loss_part, dscale_part, logit_scale, N, row0);      // image -> texts
    cudaCheckLaunch();
    cross_entropy_rows_kernel<<<b, 256>>>(cos_t, loss_part + b, dscale_part + b, logit_scale, N, row0);  // text -> images
    cudaCheckLaunch();
    loss_finish_kernel<<<1, 1024>>>(loss, dlogit_scale, loss_part, dscale_part, 2 * b, N);
    cudaCheckLaunch();
    // With G, Gt the overwritten cos, cos_t (b, N), row-major:
    //   d img_n[j] = sum_i Gt[i][j] txt_r[i] for every j, and + sum_j G[i][j] txt_n[j] for the own rows row0 + i;
    //   d txt_n[j] = sum_i G[i][j] img_r[i] for every j, and + sum_j Gt[i][j] img_n[j] for the own rows.
    matmul_cm(dimg_n, CUDA_R_32F, E, txt_r, E, 0, cos_t, N, 1, CUDA_R_32F, NULL, E, N, b, 1.0f, 0.0f, 0);
    matmul_cm(dimg_n + (size_t)row0 * E, CUDA_R_32F, E, txt_n, E, 0, cos, N, 0, CUDA_R_32F, NULL, E, b, N, 1.0f, 1.0f, 0);
    matmul_cm(dtxt_n, CUDA_R_32F, E, img_r, E, 0, cos, N, 1, CUDA_R_32F, NULL, E, N, b, 1.0f, 0.0f, 0);
    matmul_cm(dtxt_n + (size_t)row0 * E, CUDA_R_32F, E, img_n, E, 0, cos_t, N, 0, CUDA_R_32F, NULL, E, b, N, 1.0f, 1.0f, 0);
}

void contrastive_normalize_backward_gpu(float *dimg, float *dtxt, const float *dimg_n, const float *dtxt_n, const float *img_n,
                                        const float *txt_n, int b, int E, const float *scratch) {
    l2_normalize_backward_kernel<<<b, 256>>>(dimg, dimg_n, img_n, scratch, E);
    cudaCheckLaunch();
    l2_normalize_backward_kernel<<<b, 256>>>(dtxt, dtxt_n, txt_n, scratch + b, E);
    cudaCheckLaunch();
}

size_t contrastive_loss_gpu_scratch_elems(int B, int E) { return contrastive_loss_scratch_elems(B, B) + 2 * (size_t)B * E; }

void contrastive_loss_gpu(float *loss, float *dimg, float *dtxt, float *dlogit_scale, const float *img, const float *txt,
                          const float *logit_scale, int B, int E, float *scratch) {
    float *img_n = scratch + contrastive_loss_scratch_elems(B, B), *txt_n = img_n + (size_t)B * E;
    contrastive_normalize_gpu(img_n, txt_n, img, txt, B, E, scratch);
    contrastive_loss_rows_gpu(loss, dimg, dtxt, dlogit_scale, img_n, txt_n, logit_scale, B, E, 0, B, scratch);
    contrastive_normalize_backward_gpu(dimg, dtxt, dimg, dtxt, img_n, txt_n, B, E, scratch);
}
