#!/usr/bin/env bash
# demo.sh: the README's first command. Installs the build dependencies and Debian's openclipart-png,
# fetches the CLIP vocabulary, builds train_clip, makes the demo dataset (datasets/demo: 7,559 captioned
# clip-art images + a 543-image held-out split, 410 of them in 24 classes; a synthetic captioned-shapes set
# if the package cannot be had) and trains the tiny CLIP on it (configs/demo.conf): on the GPU when there is one,
# else on the CPU (about 5 minutes on 2 cores), with zero-shot classification and retrieval on the
# held-out split every 200 steps. Extra arguments go to train_clip (e.g. --set steps=1000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
if ! dpkg -s openclipart-png >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq openclipart-png >/dev/null ||
        echo "note: openclipart-png could not be installed; the demo uses synthetic captioned shapes"
fi
bash scripts/get_vocab.sh
make -j"$(nproc)"
python3 scripts/make_demo_data.py
# train_clip refuses a fresh start over an earlier run's checkpoints: a re-run of the demo moves the previous one aside
# (unless the arguments choose a run_dir or a resume)
case " $* " in
*run_dir=* | *resume=*) ;;
*)
    if compgen -G "runs/demo/checkpoints/step_*" >/dev/null; then
        old="runs/demo.$(date +%Y%m%d-%H%M%S)"
        mv runs/demo "$old"
        echo "note: the previous demo run is now in $old"
    fi
    ;;
esac
./train_clip -c configs/demo.conf "$@"
