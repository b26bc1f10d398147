#!/usr/bin/env bash
# get_zeroshot_imagenet.sh: writes OpenAI's ImageNet zero-shot class names and 80 prompt templates (as
# open_clip_torch 3.3.0 ships them in open_clip/zero_shot_metadata.py) into
#   data/imagenet_classnames.txt      1000 lines, in class-index order
#   data/openai_imagenet_templates.txt 80 lines, "{}" where the class name goes
# for zeroshot_classnames / zeroshot_templates. Fetched from PyPI, not committed. Needs pip and unzip.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -s data/imagenet_classnames.txt ] && [ -s data/openai_imagenet_templates.txt ] && { echo "already present"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: open_clip_torch==3.3.0 -d "$tmp"
unzip -q -o "$tmp"/open_clip_torch-3.3.0-*.whl open_clip/zero_shot_metadata.py -d "$tmp"
"${PYTHON:-python3}" - "$tmp/open_clip/zero_shot_metadata.py" <<'PYEOF'
import runpy, sys
meta = runpy.run_path(sys.argv[1])
names, templates = meta["IMAGENET_CLASSNAMES"], meta["OPENAI_IMAGENET_TEMPLATES"]
assert len(names) == 1000 and len(templates) == 80
with open("data/imagenet_classnames.txt", "w") as f:
    f.write("\n".join(names) + "\n")
with open("data/openai_imagenet_templates.txt", "w") as f:
    f.write("\n".join(t("{}") for t in templates) + "\n")
print("wrote data/imagenet_classnames.txt (1000) and data/openai_imagenet_templates.txt (80)")
PYEOF
