#!/usr/bin/env bash
# run_fuzz.sh SECONDS: builds the libFuzzer targets (make fuzz) and runs each build/fuzz/fuzz_* for
# SECONDS, starting from the committed fixtures as seed corpus (copied: the fixtures stay as they are).
# Exits non-zero if any target finds a crash, a leak, a sanitizer error or a timeout; the reproducer is
# left in build/fuzz/artifacts/, the output in build/fuzz/logs/.
set -u
cd "$(dirname "$0")/.."
seconds=${1:-60}
make --no-print-directory fuzz || exit 1
mkdir -p build/fuzz/artifacts build/fuzz/logs
status=0
for fuzzer in build/fuzz/fuzz_*; do
    [ -f "$fuzzer" ] && [ -x "$fuzzer" ] || continue
    name=$(basename "$fuzzer")
    corpus=$(mktemp -d)
    options=""
    case "$name" in
        fuzz_tar) cp tests/fixtures/shards/*.tar "$corpus"/ ;;
        fuzz_image) for f in tests/fixtures/images/*; do case "$f" in *.rgb|*.tsv) ;; *) cp "$f" "$corpus"/ ;; esac; done ;;
        fuzz_tokenizer) options="-max_len=4096" ;;  # captions: its own seeds grow from nothing
        *) ;;
    esac
    echo "== $name for ${seconds}s"
    if ! "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 $options \
        -artifact_prefix=build/fuzz/artifacts/"$name"- "$corpus" 2>build/fuzz/logs/"$name".log; then
        echo "FAIL $name: see build/fuzz/logs/$name.log and build/fuzz/artifacts/"
        tail -30 build/fuzz/logs/"$name".log
        status=1
    else
        grep -E "stat::number_of_executed_units|cov:" build/fuzz/logs/"$name".log | tail -2
        echo "ok $name"
    fi
    rm -rf "$corpus"
done
exit $status
