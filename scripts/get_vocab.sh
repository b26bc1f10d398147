#!/usr/bin/env bash
# get_vocab.sh: fetches CLIP's BPE vocabulary (bpe_simple_vocab_16e6.txt.gz, 1.3 MB) from the
# open_clip_torch wheel on PyPI into data/bpe_simple_vocab_16e6.txt.gz, where tokenizer_load looks
# for it (git-ignored: the file is not ours to commit). Needs pip and unzip; PYTHON picks the python.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/bpe_simple_vocab_16e6.txt.gz
sha256=924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a
if [ -s "$dest" ]; then echo "$dest already present"; exit 0; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"${PYTHON:-python3}" -m pip download --quiet --no-deps --only-binary=:all: open_clip_torch==3.3.0 -d "$tmp"
wheel=$(ls "$tmp"/open_clip_torch-3.3.0-*.whl)
unzip -q -o "$wheel" open_clip/bpe_simple_vocab_16e6.txt.gz -d "$tmp"
# The checksum pins the exact file open_clip 3.3.0 ships (the one the parity fixture was made with).
echo "$sha256  $tmp/open_clip/bpe_simple_vocab_16e6.txt.gz" | sha256sum --check --quiet - \
    || { echo "error: bpe_simple_vocab_16e6.txt.gz from the wheel has an unexpected checksum" >&2; exit 1; }
mv "$tmp/open_clip/bpe_simple_vocab_16e6.txt.gz" "$dest"
echo "wrote $dest"
