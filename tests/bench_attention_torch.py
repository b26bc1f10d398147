#!/usr/bin/env python3
"""bench_attention_torch.py: the yardstick for tests/bench_attention.cu (a benchmark, not a test).

Times PyTorch's F.scaled_dot_product_attention with each backend (flash, cudnn, efficient, forced through
torch.nn.attention.sdpa_kernel) at the same shapes, bf16: forward alone and forward + backward (backward =
their difference), CUDA events, 3 warm-ups, median of the repetitions. q, k, v are contiguous (B, NH, T, hd)
random normal tensors (the backends' favourite layout; ours reads them out of the fused qkv instead).
FLOPs as in bench_attention.cu: 4 B NH T^2 hd forward (half when causal), 2.5x that backward.
Usage: python3 tests/bench_attention_torch.py [reps]
"""
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [("ViT-H/14 vision", 64, 16, 257, 80, False), ("ViT-H/14 text", 64, 16, 77, 64, True),
          ("ViT-L/14 vision", 128, 16, 257, 64, False), ("ViT-B/16 vision", 256, 12, 197, 64, False),
          ("ViT-B/16 text", 256, 8, 77, 64, True)]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def median_ms(fn, reps):
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[reps // 2]


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, cuDNN {torch.backends.cudnn.version()}, {reps} reps, median")
    rows = []
    for name, B, NH, T, hd, causal in SHAPES:
        flop = 4.0 * B * NH * T * T * hd * (0.5 if causal else 1.0)
        sets = [[torch.randn(B, NH, T, hd, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3)]
                for _ in range(2)]
        dout = torch.randn(B, NH, T, hd, device="cuda", dtype=torch.bfloat16)
        for bname, backend in BACKENDS:
            it = [0]

            def fwd():
                q, k, v = sets[it[0] & 1]
                it[0] += 1
                with torch.no_grad():
                    F.scaled_dot_product_attention(q, k, v, is_causal=causal)

            def fwd_bwd():
                q, k, v = sets[it[0] & 1]
                it[0] += 1
                F.scaled_dot_product_attention(q, k, v, is_causal=causal).backward(dout)

            try:
                with sdpa_kernel(backend):
                    f = median_ms(fwd, reps)
                    fb = median_ms(fwd_bwd, reps)
            except RuntimeError as e:
                rows.append(f"| {name} | {bname} | unsupported: {str(e).splitlines()[0][:60]} | | | | |")
                continue
            b = fb - f
            rows.append(f"| {name} | {bname} | {f:.3f} | {flop / f * 1e-9:.0f} | {b:.3f} | {2.5 * flop / b * 1e-9:.0f} | {fb:.3f} |")
        del sets, dout
    print("\n| shape | torch backend | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | fwd+bwd ms |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
