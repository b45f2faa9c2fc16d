#!/usr/bin/env bash
# GPU checks in one go, for a machine with an NVIDIA GPU and PyTorch but possibly no
# network and no `make setup`: it uses .venv if present, else python3 with this tree on
# PYTHONPATH. Writes everything under OUT_DIR (at most 8 files):
#   log.txt         what ran and what it printed
#   env.json        `bench env`
#   runs.tar.gz     every result record (runs/*.json)
#   overhead.json   harness overhead against a bare loop, on the GPU
#   table.md        all runs as one table
# Usage: bash bench/gpu_check.sh OUT_DIR [PRECISION...]   (default precisions: fp32 bf16)
set -uo pipefail
out=${1:?usage: bash bench/gpu_check.sh OUT_DIR [PRECISION...]}
shift
if [ $# -gt 0 ]; then precisions=("$@"); else precisions=(fp32 bf16); fi
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out/runs"
log="$out/log.txt"
status=0
step() {
  echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$log"
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== exit $rc: $*" | tee -a "$log"; status=1; }
}

step nvidia-smi
"$py" -m bench env >"$out/env.json" 2>>"$log" || status=1
for precision in "${precisions[@]}"; do
  step "$py" -m bench suite workshop --device cuda --precision "$precision" \
    --out "$out/runs" --no-progress
done
step "$py" -m bench.overhead --device cuda --json "$out/overhead.json"
step "$py" -m pytest -q -m gpu tests -p no:cacheprovider
"$py" -m bench show "$out/runs" >"$out/table.md" 2>>"$log" || status=1
tar -czf "$out/runs.tar.gz" -C "$out" runs && rm -rf "$out/runs"
echo "=== done, status $status" | tee -a "$log"
cat "$out/table.md"
exit $status
