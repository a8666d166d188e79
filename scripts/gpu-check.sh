#!/usr/bin/env bash
# GPU checks of the CUDA backend: the device tests (`#[ignore = "needs a CUDA device"]`) and the CUDA
# benchmark table. Ends in about a minute on one H200 once built.
#
#   scripts/gpu-check.sh                 build here with `--features cuda` and run (needs cargo and a GPU)
#   scripts/gpu-check.sh --build DIR     only build: copy the stripped test and benchmark programs to DIR
#   scripts/gpu-check.sh --run DIR       only run the programs in DIR (a GPU machine without Rust)
#
# Run from anywhere; it works in the repository root (the tests read data/). For a GPU machine without
# Rust: `scripts/gpu-check.sh --build target/gpu-check` here (about 8 MB of programs), bring the
# repository and that folder there, and run `scripts/gpu-check.sh --run target/gpu-check`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Where the CUDA libraries are: the toolkit, or the nvidia-* Python wheels (cuBLAS and NVRTC 13).
find_cuda_libraries() {
    local dirs=()
    for lib in libnvrtc.so.13 libcublas.so.13; do
        local found
        found=$(find /usr/local/cuda*/lib64 /usr/lib/x86_64-linux-gnu /opt /usr/local/lib \
            -name "$lib" 2>/dev/null | head -n 1 || true)
        if [ -z "$found" ]; then
            found=$(python3 -c "import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))" 2>/dev/null \
                | xargs -I{} find {} -name "$lib" 2>/dev/null | head -n 1 || true)
        fi
        [ -n "$found" ] && dirs+=("$(dirname "$found")")
    done
    local joined=""
    if [ ${#dirs[@]} -gt 0 ]; then
        joined="$(IFS=:; echo "${dirs[*]}"):"
    fi
    export LD_LIBRARY_PATH="${joined}${LD_LIBRARY_PATH:-}"
}

build() {
    local out=$1
    mkdir -p "$out"
    cargo build --release -p amp-kernels --features cuda --example cuda_bench
    cp target/release/examples/cuda_bench "$out/"
    # The device tests: the runtime's (tests/cuda.rs) and the 8-bit kernels' (kernels/tests/cuda_optim8.rs).
    cargo test --release --workspace --features cuda --test cuda --test cuda_optim8 --no-run \
        --message-format=json \
        | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])' \
        | while read -r name executable; do cp "$executable" "$out/${name}_tests"; done
    strip "$out/cuda_tests" "$out/cuda_optim8_tests" "$out/cuda_bench"
    ls -la "$out"
}

run() {
    local dir=$1
    find_cuda_libraries
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    "$dir/cuda_tests" --ignored --test-threads=1
    "$dir/cuda_optim8_tests" --ignored --test-threads=1
    "$dir/cuda_tests" --test-threads=1
    "$dir/cuda_bench"
}

case "${1:-}" in
    --build) build "${2:?--build needs a directory}" ;;
    --run) run "${2:?--run needs a directory}" ;;
    "") build target/gpu-check && run target/gpu-check ;;
    *) echo "usage: $0 [--build DIR | --run DIR]" >&2; exit 2 ;;
esac
