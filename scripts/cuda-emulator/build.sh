#!/usr/bin/env bash
# Builds the emulated CUDA driver and cuBLAS into DIR (default target/cuda-emulator): `libcuda.so` and
# `libcublas.so`, which the CUDA backend loads instead of NVIDIA's when DIR comes first on
# LD_LIBRARY_PATH. NVRTC stays the real one. Needs a C++17 compiler (g++ or clang++).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/../../target/cuda-emulator}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cxx=${CXX:-$(command -v g++ || command -v clang++ || true)}
[ -n "$cxx" ] || { echo "no C++ compiler (g++ or clang++) found" >&2; exit 1; }
kernels=$here/../../kernels/src/cuda/kernels.cu
# No contraction of a·b + c into one rounding: the device kernels are compiled with --fmad=false too, and
# the tests compare with the CPU bit for bit.
flags=(-std=c++17 -O1 -g -fPIC -ffp-contract=off -Wall -Wno-unused-function -I "$here" -I "$(dirname "$kernels")")

# The kernels' names, from the preprocessed source (one KERNEL(name) line each).
"$cxx" "${flags[@]}" -E -x c++ -include "$here/host_prelude.h" "$kernels" \
    | grep -oE 'extern "C" +void +[A-Za-z_0-9]+ *\(' \
    | sed -E 's/extern "C" +void +([A-Za-z_0-9]+).*/KERNEL(\1)/' | sort -u > "$out/kernel_names.inc"

"$cxx" "${flags[@]}" -I "$out" -shared "$here/kernels_host.cpp" "$here/driver.cpp" -o "$out/libcuda.so"
"$cxx" "${flags[@]}" -shared "$here/cublas.cpp" -o "$out/libcublas.so"
echo "$out: $(wc -l < "$out/kernel_names.inc") kernels"
