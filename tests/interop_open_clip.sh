#!/usr/bin/env bash
# interop_open_clip.sh: the train_clip <-> open_clip round trip. Needs a python3 with torch, open_clip_torch
# and safetensors (the GPU machine has torch; set PYTHON=... to pick an interpreter). Not part of
# `make test` (CI has no torch). Offline, with torch already there: `pip download --no-deps open_clip_torch ftfy
# wcwidth` where PyPI is reachable, then `pip install --no-deps --no-index --target DIR *.whl` and PYTHONPATH=DIR. Steps:
#   1. train the tiny config for 20 steps -> a checkpoint's weights (open_clip names);
#   2. convert them to an open_clip .pt and back: identical tensors;
#   3. open_clip loads the checkpoint (strict), computes embeddings, loss and gradients on a batch, and
#      build/tests/test_parity checks that train_clip reproduces them from the same weights.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
D=$(mktemp -d /tmp/train_clip_interop.XXXX)
make -s train_clip build/tests/test_parity
./train_clip -c configs/tiny.conf --set steps=20 --set batch_size=16 --set warmup=5 --set run_dir="$D/run" >/dev/null
W="$D/run/checkpoints/step_00000020.model.safetensors"
$PY scripts/convert_open_clip.py to-open-clip "$W" "$D/model.pt"
$PY scripts/convert_open_clip.py to-train-clip "$D/model.pt" "$D/back.safetensors"
$PY - "$W" "$D/back.safetensors" <<'PYEOF'
import sys, torch
from safetensors.torch import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "round trip changed the weights"
print(f"round trip: {len(a)} tensors identical")
PYEOF
$PY scripts/make_reference.py --from-checkpoint "$W" "$D/fixture.safetensors"
./build/tests/test_parity "$D/fixture.safetensors"
rm -rf "$D"
