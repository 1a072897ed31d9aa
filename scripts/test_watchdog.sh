#!/usr/bin/env bash
# cargo's runner for the test binaries of `make test`: each runs under a time limit, so a
# test that hangs fails the suite with its binary's name instead of eating CI's whole
# budget in silence (a deadlock once did: CI was stopped at 90 minutes, mid-test, with no
# word of where). The limit is per binary; the slowest take a few minutes here.
#
#   SAM2_TUI_TEST_BINARY_LIMIT  seconds per test binary (default 1500)
set -u
limit="${SAM2_TUI_TEST_BINARY_LIMIT:-1500}"
timeout --kill-after=30 "$limit" "$@"
status=$?
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
  echo "test watchdog: $(basename "$1") ran past ${limit} s and was stopped (a hang?); SAM2_TUI_TEST_BINARY_LIMIT sets the limit" >&2
fi
exit "$status"
