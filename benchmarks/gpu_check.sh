#!/usr/bin/env bash
# The prepared GPU check: one command that, on a machine with one CUDA GPU, ends within 8 minutes
# and writes everything to one file, echoing it too. Parts, each under its own time limit (a part
# that fails or runs out of time is recorded, and the next one runs):
#   environment  torch, CUDA, cuDNN, NCCL, the GPU and its memory
#   tests        python -m pytest -m cuda -q tests/          (tests/test_cuda.py)
#   throughput   python benchmarks/gpu_throughput.py         (step vs bare, GPU idle, host syncs)
#   memory       python benchmarks/gpu_throughput.py --memory  (r152_3x_sk1, gradient caching)
# The package is installed (pip install -e ".[test]") only if it cannot be imported from src/.
# Without a GPU it says so in one line and exits 0.
#
#   bash benchmarks/gpu_check.sh [FILE]   # default: $OUT/gpu_check.txt when $OUT is set,
#                                         # else gpu_check.txt in the current directory
set -uo pipefail

file=$(realpath -m "${1:-${OUT:+$OUT/}gpu_check.txt}")  # relative to the caller's directory
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

has_gpu="import torch; raise SystemExit(0 if torch.cuda.is_available() else 1)"
if ! python -c "$has_gpu" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to torch on this machine; nothing checked"
    exit 0
fi

# Limits in seconds. A part gets at most what is left before the deadline, and `timeout` kills it
# 10 s after its limit: four parts of 10 s slack end within 8 minutes of the start.
deadline=$((SECONDS + 420))
summary=()
mkdir -p "$(dirname "$file")"
: >"$file"

part() { # part NAME LIMIT COMMAND...: COMMAND under timeout, its output echoed and appended
    local name=$1 limit=$2 started=$SECONDS status result
    shift 2
    ((limit > deadline - SECONDS)) && limit=$((deadline - SECONDS))
    if ((limit < 10)); then
        summary+=("$name: not run, no time left")
        return
    fi
    local shown="$*"
    [[ $shown == *$'\n'* ]] && shown="$1 -c <a script in benchmarks/gpu_check.sh>"
    printf '\n== %s (limit %d s): %s\n' "$name" "$limit" "$shown" | tee -a "$file"
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee -a "$file"
    status=${PIPESTATUS[0]}
    case $status in
    0) result=ok ;;
    124 | 137) result="TIMED OUT at its limit of $limit s" ;;
    *) result="FAILED with exit status $status" ;;
    esac
    summary+=("$name: $result ($((SECONDS - started)) s)")
}

environment='
import platform, sys
import torch, torch.distributed as dist
sys.path.insert(0, "benchmarks")
from machine import cpu_model
gpu = torch.cuda.get_device_properties(0)
nccl = torch.cuda.nccl.version() if dist.is_nccl_available() else "not available"
nccl = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else nccl
print(f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"cuDNN {torch.backends.cudnn.version()}, NCCL {nccl}")
print(f"GPU 0 of {torch.cuda.device_count()}: {gpu.name}, {gpu.total_memory / 2**30:.1f} GiB, "
      f"compute capability {gpu.major}.{gpu.minor}, bf16 {torch.cuda.is_bf16_supported()}")
print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads")
'
{
    commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
    echo "gpu_check: $(date '+%Y-%m-%d %H:%M:%S'), $(hostname), commit $commit"
    echo "results: $file"
} | tee -a "$file"
part environment 20 python -c "$environment"
if ! python -c "import simclrv2.cli, pytest" 2>/dev/null; then
    part install 90 pip install --retries 1 --timeout 15 -e ".[test]"
fi
part tests 150 python -m pytest -m cuda -q -p no:cacheprovider --durations=10 \
    --continue-on-collection-errors tests/
part throughput 110 python benchmarks/gpu_throughput.py
part memory 140 python benchmarks/gpu_throughput.py --memory

{
    printf '\n== summary (%d s in all; results in %s)\n' "$SECONDS" "$file"
    printf '%s\n' "${summary[@]}"
} | tee -a "$file"
