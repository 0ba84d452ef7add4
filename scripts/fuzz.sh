#!/usr/bin/env bash
# Runs each fuzz target of the handler in turn for a number of minutes (default 5), one at a
# time. Not part of CI: `go test` there runs the seed corpora only. A failure stops the run;
# the failing input is written under handler/testdata/fuzz/<Target>/, where it stays as a seed
# once the bug is fixed.
#
#   scripts/fuzz.sh [minutes] [target...]
#
# FUZZ_PARALLEL sets -parallel (default 1: the machine is shared).
set -euo pipefail

minutes="${1:-5}"
shift || true
if ! [[ "$minutes" =~ ^[0-9]+$ ]] || [ "$minutes" -lt 1 ]; then
	echo "usage: $0 [minutes>=1] [target...]" >&2
	exit 2
fi
cd "$(dirname "$0")/.."
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	mapfile -t targets < <(grep -ho '^func Fuzz[A-Za-z0-9_]*' handler/*_test.go | sed 's/^func //' | sort)
fi
for t in "${targets[@]}"; do
	echo "== $t: ${minutes}m"
	go test -run '^$' -fuzz "^${t}\$" -fuzztime "${minutes}m" -parallel "${FUZZ_PARALLEL:-1}" ./handler
done
echo "== all ${#targets[@]} targets ran ${minutes}m each without a failure"
