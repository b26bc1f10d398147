#!/usr/bin/env python3
"""make_reference.py: builds the open_clip parity fixtures under tests/fixtures/.

For each tiny config it builds open_clip's CLIP (open_clip_torch + torch, pip), perturbs every 1-d
parameter so that no bias is zero and no norm weight is one (zeros hide bugs), runs a batch through it
in float64, and writes one .safetensors file with:
  <open_clip state_dict names>     the weights (F32; the float64 run uses exactly these values)
  input.images (B,3,S,S) F32       normalised images
  input.tokens (B,T) I32           SOT ... EOT, 0 padding, EOT at varied positions (one caption full length)
  output.loss () F32               (CE(logits) + CE(logits^T)) / 2, open_clip's ClipLoss
  output.image_features (B,E), output.text_features (B,E)   before normalisation
  grad.<name>                      d loss / d parameter for every parameter
and the config in the metadata (key "config", train_clip `key = value` lines).

Usage: python3 scripts/make_reference.py   (pip install open_clip_torch torch safetensors first)
       python3 scripts/make_reference.py --from-checkpoint W.safetensors OUT.safetensors
           a fixture from given weights (e.g. a train_clip checkpoint, whose metadata holds its config):
           open_clip loads them, runs a batch and writes the same fixture format; build/tests/test_parity
           OUT.safetensors then checks train_clip against it (the interop round trip).
"""
import sys
import os

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")

FIXTURES = {
    # GELU, no layer-scale, batch 5
    "ref_gelu": dict(batch=5, quick_gelu=False, ls=None, seed=1),
    # QuickGELU with layer-scale, batch 4
    "ref_quickgelu_ls": dict(batch=4, quick_gelu=True, ls=0.5, seed=2),
}
ARCH = dict(embed_dim=16, image_size=16, patch_size=4, vision_width=32, vision_layers=2, vision_heads=2,
            vision_mlp_ratio=4, context_length=12, vocab_size=500, text_width=32, text_layers=2, text_heads=4,
            text_mlp_ratio=4)
MODEL_KEYS = list(ARCH) + ["quick_gelu", "layer_scale_init"]


def open_clip_model(a, quick_gelu, ls):
    """open_clip's CLIP for a train_clip architecture (dict with train_clip's key names)."""
    vision_cfg = dict(layers=a["vision_layers"], width=a["vision_width"],
                      head_width=a["vision_width"] // a["vision_heads"], mlp_ratio=a["vision_mlp_ratio"],
                      patch_size=a["patch_size"], image_size=a["image_size"], ls_init_value=ls)
    text_cfg = dict(context_length=a["context_length"], vocab_size=a["vocab_size"], width=a["text_width"],
                    heads=a["text_heads"], layers=a["text_layers"], mlp_ratio=a["text_mlp_ratio"], ls_init_value=ls)
    return open_clip.model.CLIP(a["embed_dim"], vision_cfg, text_cfg, quick_gelu=quick_gelu)


def build(fx):
    torch.manual_seed(fx["seed"])
    model = open_clip_model(ARCH, fx["quick_gelu"], fx["ls"])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim <= 1 and name != "logit_scale":
                p.add_(0.1 * torch.randn_like(p))
        model.logit_scale.fill_(np.log(10.0))
    return model


def make_tokens(B, T, V, gen):
    sot, eot = V - 2, V - 1
    lengths = ([2, T, 5, T - 3, 7, 3] * B)[:B]  # number of text tokens incl. SOT and EOT; T = no padding
    lengths = [min(max(n, 2), T) for n in lengths]
    tokens = torch.zeros(B, T, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, 0] = sot
        tokens[b, 1:n - 1] = torch.randint(1, V - 2, (n - 2,), generator=gen)
        tokens[b, n - 1] = eot
    return tokens


def config_text(a, quick_gelu, ls, batch):
    lines = [f"{k} = {a[k]}" for k in ARCH]
    lines += [f"quick_gelu = {'true' if quick_gelu else 'false'}",
              f"layer_scale_init = {ls if ls is not None else 'none'}", f"batch_size = {batch}", "steps = 1"]
    return "\n".join(lines) + "\n"


def write_fixture(model, a, quick_gelu, ls, batch, seed, path):
    weights = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    model = model.double()
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, a["image_size"], a["image_size"], generator=gen, dtype=torch.float32)
    tokens = make_tokens(batch, a["context_length"], a["vocab_size"], gen)
    img = model.encode_image(images.double())
    txt = model.encode_text(tokens)
    loss = ClipLoss()(F.normalize(img, dim=-1), F.normalize(txt, dim=-1), model.logit_scale.exp())
    loss.backward()
    tensors = dict(weights)
    tensors["input.images"] = images.numpy()
    tensors["input.tokens"] = tokens.numpy().astype(np.int32)
    tensors["output.loss"] = np.array(loss.item(), dtype=np.float32)
    tensors["output.image_features"] = img.detach().float().numpy()
    tensors["output.text_features"] = txt.detach().float().numpy()
    for pname, p in model.named_parameters():
        tensors["grad." + pname] = p.grad.float().numpy()
    save_file(tensors, path, metadata={"config": config_text(a, quick_gelu, ls, batch), "open_clip": open_clip.__version__,
                                       "torch": torch.__version__})
    print(f"{path}: loss {loss.item():.6f}, {len(weights)} tensors, {os.path.getsize(path)} bytes")


def from_checkpoint(weights_path, out):
    """A fixture from a train_clip checkpoint: its config comes from the file's metadata."""
    with safe_open(weights_path, "np") as f:
        meta = f.metadata() or {}
    cfg = {}
    for line in meta.get("train_clip_config", "").splitlines():
        key, _, rest = line.partition("=")
        cfg[key.strip()] = rest.split("#")[0].strip()
    if not cfg:
        sys.exit(f"{weights_path}: no train_clip_config in the metadata; is this a train_clip checkpoint?")
    a = {k: (float(cfg[k]) if "ratio" in k else int(cfg[k])) for k in ARCH}
    quick_gelu = cfg["quick_gelu"] == "true"
    ls = None if cfg["layer_scale_init"] == "none" else float(cfg["layer_scale_init"])
    model = open_clip_model(a, quick_gelu, ls)
    sd = load_file(weights_path)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    write_fixture(model, a, quick_gelu, ls, 6, 7, out)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "--from-checkpoint":
        return from_checkpoint(sys.argv[2], sys.argv[3])
    os.makedirs(OUT_DIR, exist_ok=True)
    for name, fx in FIXTURES.items():
        model = build(fx)
        write_fixture(model, ARCH, fx["quick_gelu"], fx["ls"], fx["batch"], 100 + fx["seed"], os.path.join(OUT_DIR, name + ".safetensors"))


if __name__ == "__main__":
    main()
