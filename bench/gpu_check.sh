#!/usr/bin/env bash
# The GPU checks in one go, for a machine with an NVIDIA GPU and PyTorch but possibly no
# network and no `make setup`: uses .venv if present, else python3 with this tree on
# PYTHONPATH. Each step has its own time limit, so one hung step cannot eat the others.
#
# Usage: bash bench/gpu_check.sh OUT_DIR [options]
#   --suite NAME         suite to run per precision, eagerly (default: workshop)
#   --precisions "A B"   precisions, one suite run each (default: "auto": bf16 where the
#                        GPU has it, else fp16)
#   --device DEV         (default: cuda)
#   --duration S         measured seconds per run (default: 20: steady clocks and power)
#   --backend NAME       only this backend (default: every installed one)
#   --skip-fast          skip the fast suite (compiled, graph-captured, pipelined; profiled)
#   --profile-steps N    steps profiled after each fast run's window (default 5)
#   --skip-overhead      skip the harness/telemetry overhead benchmark (eager and fast modes)
# It also runs BERT training as one data-parallel rank (torchrun, NCCL) on the GPU.
#   --skip-tests         skip the gpu-marked tests
#
# Eager against fast for the workshop rows alone (about 8 minutes on an H100):
#   bash bench/gpu_check.sh OUT --skip-overhead --skip-tests
#
# Writes under OUT_DIR (at most 8 files, for machines that return only that many):
#   log.txt        every step and what it printed
#   env.json       `bench env`
#   smi.txt        raw nvidia-smi device and sampling lines (parser test data)
#   runs.tar.gz    every result record and telemetry CSV (runs/)
#   table.md       all runs as one table
#   compare.md     eager and fast side by side (`bench compare`), one-off costs below
#   overhead.json  harness and telemetry overhead against a bare loop
set -uo pipefail
out=${1:?usage: bash bench/gpu_check.sh OUT_DIR [options]}
shift
suite=workshop precisions=auto device=cuda duration=20 backend=() overhead=1 tests=1 fast=1
profile_steps=5
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) suite=$2; shift 2 ;;
    --precisions) precisions=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --backend) backend=(--backend "$2"); shift 2 ;;
    --skip-fast) fast=0; shift ;;
    --profile-steps) profile_steps=$2; shift 2 ;;
    --skip-overhead) overhead=0; shift ;;
    --skip-tests) tests=0; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
py=python3
[ -x .venv/bin/python ] && py=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out/runs"
log="$out/log.txt"
status=0
step() {  # step SECONDS COMMAND...
  local limit=$1
  shift
  echo "=== $* ($(date -u +%H:%M:%S))" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { echo "=== exit $rc: $*" | tee -a "$log"; status=1; }
}

smi_fields=$("$py" -c 'from bench.telemetry.sampling import SMI_FIELDS; print(",".join(SMI_FIELDS))')
if command -v nvidia-smi >/dev/null; then
  step 30 nvidia-smi
  {
    nvidia-smi --query-gpu=index,name,uuid,pci.bus_id,memory.total,driver_version,compute_cap \
      --format=csv,noheader,nounits
    timeout 2 nvidia-smi --query-gpu="$smi_fields" --format=csv,noheader,nounits --loop-ms=200
  } >"$out/smi.txt" 2>&1
fi
"$py" -m bench env >"$out/env.json" 2>>"$log" || status=1
step 30 "$py" -m bench monitor --count 1
for precision in $precisions; do
  step 240 "$py" -m bench suite "$suite" --device "$device" --precision "$precision" \
    --duration "$duration" --out "$out/runs" --no-progress "${backend[@]}"
done
if [ "$fast" = 1 ]; then
  step 420 "$py" -m bench suite fast --device "$device" --duration "$duration" \
    --profile-steps "$profile_steps" --out "$out/runs" --no-progress
fi
# the data-parallel path on one GPU: torchrun, NCCL, DistributedDataParallel, world size 1
if [ "$device" != cpu ]; then
  step 180 "$py" -m bench run --workload bert --mode train --batch 32 --gpus 1 \
    --precision auto --device "$device" --duration 10 --out "$out/runs" --no-progress
fi
# fp16 training captured in a CUDA graph (the grad scaler stays on the device with the fused
# optimizer); its record's execution.host_syncs counts the step's host synchronizations
if [ "$device" != cpu ]; then
  step 180 "$py" -m bench run --workload bert --mode train --batch 32 --precision fp16 \
    --cuda-graphs --device "$device" --duration 10 --out "$out/runs" --no-progress
fi
if [ "$overhead" = 1 ]; then
  step 240 "$py" -m bench.run.overhead --device "$device" --workload bert --batch 32 \
    --seq-len 128 --iters 50 --fast --json "$out/overhead.json"
fi
if [ "$tests" = 1 ]; then
  step 360 "$py" -m pytest -q -m gpu tests -p no:cacheprovider
fi
"$py" -m bench show --wide "$out/runs" >"$out/table.md" 2>>"$log" || status=1
if [ "$fast" = 1 ]; then
  "$py" -m bench compare --wide "$out/runs" >"$out/compare.md" 2>>"$log" || status=1
fi
tar -czf "$out/runs.tar.gz" -C "$out" runs && rm -rf "$out/runs"
echo "=== done, status $status" | tee -a "$log"
cat "$out/table.md"
exit $status
