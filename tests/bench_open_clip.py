#!/usr/bin/env python3
"""bench_open_clip.py: open_clip's training step on this GPU, the yardstick of bench_clip_gpu (a benchmark, not a test).

DESIGN.md's anchors (open_clip + torch.compile: ViT-B-16 2,752 img/s at batch 256, ViT-H-14 334 at 64) were measured
on one H100; lent H100s differ by a few percent under their 700 W power cap. This script measures open_clip on the
machine at hand, so that bench_clip_gpu's images/s can be compared on the same GPU in the same call.

The step is open_clip's train_one_epoch with `--precision amp_bf16 --dataset-type synthetic` (and `--torchcompile`
unless --eager): fp32 weights under torch.autocast(bfloat16), ClipLoss, AdamW(fused=True) with open_clip's two
parameter groups (no weight decay for ndim < 2, biases, norms, logit_scale; lr 5e-4, betas (0.9, 0.98), eps 1e-6,
wd 0.2), logit_scale clamped to [0, ln 100] after the step. Input: random normal images on the GPU and open_clip's
synthetic caption "Dummy caption" (4 ids with SOT and EOT; bench_clip_gpu's BENCH_CAPTION_TOKENS=4). No data loading,
as in bench_clip_gpu. Warm-up steps first (the compile happens there), then CUDA events around `steps` steps.
Prints per model: step ms, images/s, peak memory (torch.cuda.max_memory_allocated / max_memory_reserved, GiB) and the
GPU memory in use at the end (total - free from cudaMemGetInfo: the caching allocator's pool, the CUDA context and the
libraries' workspaces; bench_clip_gpu's "GPU mem used" column is the same measure).

Needs torch with CUDA and open_clip_torch (offline: tests/interop_open_clip.sh's header says how to install wheels).
Usage: python3 tests/bench_open_clip.py [--eager] [--steps N] [--warmup N] [MODEL:BATCH ...]
       (default ViT-B-16:256 ViT-H-14:64)
"""
import argparse
import math
import sys

import torch


def param_groups(model, wd):
    # open_clip/training/main.py: exclude = ndim < 2 or "bn", "ln", "bias", "logit_scale" in the name
    def exclude(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
            {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": wd}]


def bench(open_clip, name, batch, args):
    dev = torch.device("cuda")
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    try:
        model = open_clip.create_model(name, output_dict=True).to(dev)
    except RuntimeError as e:  # an unknown name (open_clip's message lists the known ones): one line, not a traceback
        sys.exit(f"bench_open_clip: {name}: {e}")
    model.train()
    tokenizer = open_clip.get_tokenizer(name)
    texts = tokenizer(["Dummy caption"] * batch).to(dev)
    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    gen = torch.Generator(device=dev).manual_seed(0)
    images = torch.randn(batch, 3, size[0], size[1], device=dev, generator=gen)
    opt = torch.optim.AdamW(param_groups(model, 0.2), lr=5e-4, betas=(0.9, 0.98), eps=1e-6, fused=True)
    loss_fn = open_clip.ClipLoss()
    step_model = model if args.eager else torch.compile(model)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = step_model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss

    for _ in range(args.warmup):
        loss = step()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(args.steps):
        loss = step()
    b.record()
    b.synchronize()
    ms = a.elapsed_time(b) / args.steps
    free, total = torch.cuda.mem_get_info()
    gib = 2.0 ** 30
    print(f"| {name} | {'eager' if args.eager else 'compiled'} | {batch} | {ms:.1f} | {batch * 1000.0 / ms:.0f} | "
          f"{torch.cuda.max_memory_allocated() / gib:.2f} | {torch.cuda.max_memory_reserved() / gib:.2f} | "
          f"{(total - free) / gib:.2f} | {loss.item():.3f} |", flush=True)
    del step_model, model, opt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eager", action="store_true", help="no torch.compile")
    ap.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps first (default 10)")
    ap.add_argument("models", nargs="*", default=["ViT-B-16:256", "ViT-H-14:64"], help="MODEL:BATCH")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_open_clip: needs a CUDA GPU")
    try:
        import open_clip
    except ImportError as e:
        sys.exit(f"bench_open_clip: cannot import open_clip ({e}); see tests/interop_open_clip.sh for an offline install")
    runs = []
    for m in args.models:
        name, _, b = m.partition(":")
        if not b.isdigit() or int(b) < 1:
            sys.exit(f"bench_open_clip: '{m}' is not MODEL:BATCH (e.g. ViT-H-14:64)")
        runs.append((name, int(b)))
    print(f"open_clip {open_clip.__version__}, torch {torch.__version__}, {torch.cuda.get_device_name()}, "
          f"{args.warmup} warm-up + {args.steps} timed steps")
    print("| model | mode | batch | step ms | img/s | peak allocated GiB | peak reserved GiB | GPU mem used GiB | loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, batch in runs:
        bench(open_clip, name, batch, args)


if __name__ == "__main__":
    main()
