#!/bin/sh
# fuzz.sh [TIME]: run every fuzz target in the module for TIME each (20s by
# default), one after the other, inside scripts/isolated.sh. Seeds live in
# each package's testdata/fuzz; a failing input is written there too, and
# the script stops at the first failure. Used by `make fuzz`.
set -eu
t=${1:-20s}
cd "$(dirname "$0")/.."
n=0
for dir in $(go list -f '{{.Dir}}' ./...); do
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u)
	for fz in $targets; do
		echo "== ${dir#$PWD/} $fz ($t)"
		scripts/isolated.sh go test -run '^$' -fuzz "^$fz\$" -fuzztime "$t" "./${dir#$PWD/}"
		n=$((n + 1))
	done
done
echo "fuzz.sh: $n targets, $t each, no failure"
