#!/usr/bin/env python3
"""convert_open_clip.py: move CLIP weights between open_clip and train_clip (needs torch + safetensors).

  python3 scripts/convert_open_clip.py to-train-clip IN.pt|IN.safetensors OUT.safetensors
      open_clip checkpoint (a LAION release, or open_clip's own training checkpoint {"state_dict": ...}
      with or without DDP's "module." prefix) -> weights train_clip loads with
      `--set init_weights=OUT.safetensors` (fresh optimizer) -- all tensors as float32.
  python3 scripts/convert_open_clip.py to-open-clip IN.model.safetensors OUT.pt
      a train_clip checkpoint's weights -> an open_clip checkpoint {"epoch", "name", "state_dict"} that
      open_clip.create_model(name, pretrained=OUT.pt) or model.load_state_dict(...) takes.
Names are open_clip's state_dict keys on both sides; buffers that are not weights (attn_mask; OpenAI's input_resolution, context_length, vocab_size) are
dropped.
"""
import sys

import torch
from safetensors.torch import load_file, save_file


def read_state_dict(path):
    if path.endswith(".safetensors"):
        return load_file(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else ckpt.state_dict()
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in sd.items()}


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("to-train-clip", "to-open-clip"):
        sys.exit(__doc__)
    mode, src, dst = sys.argv[1:]
    sd = read_state_dict(src)
    # not weights: the causal mask buffer, and the hyperparameters OpenAI's checkpoints store as tensors (open_clip's
    # load_openai_model drops the same three); train_clip refuses tensors its config has no parameter for
    not_weights = ("attn_mask", "input_resolution", "context_length", "vocab_size")
    sd = {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items() if k not in not_weights and torch.is_tensor(v)}
    if mode == "to-train-clip":
        save_file(sd, dst, metadata={"format": "pt", "converted_from": src})
    else:
        torch.save({"epoch": 0, "name": "train_clip", "state_dict": sd}, dst)
    print(f"{dst}: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} parameters")


if __name__ == "__main__":
    main()
