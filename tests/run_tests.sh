#!/usr/bin/env bash
# run_tests.sh: runs every test binary given, echoes its lines, and ends with the totals line
# "N passed, N failed, N skipped". A binary that exits non-zero without a FAIL line (a crash, an abort)
# counts as one failure under its own name. Exits non-zero if anything failed.
passed=0 failed=0 skipped=0
for bin in "$@"; do
    name=$(basename "$bin")
    out=$("$bin" 2>&1)
    rc=$?
    echo "$out" | grep -E '^(ok|FAIL|skip) ' | sed "s/^/[$name] /"
    p=$(echo "$out" | grep -c '^ok ')
    f=$(echo "$out" | grep -c '^FAIL ')
    s=$(echo "$out" | grep -c '^skip ')
    if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "[$name] FAIL $name: exited with code $rc; last output:"
        echo "$out" | tail -5 | sed 's/^/    /'
        f=1
    elif [ "$f" -gt 0 ]; then
        echo "$out" | grep -vE '^(ok|FAIL|skip) ' | tail -5 | sed 's/^/    /'
    fi
    passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
done
echo "$passed passed, $failed failed, $skipped skipped"
[ $failed -eq 0 ]
