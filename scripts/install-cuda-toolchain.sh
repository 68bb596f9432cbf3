#!/usr/bin/env bash
# Installs, from PyPI, what a CUDA build of texprune needs and cannot get from crates.io, into
# target/cuda-toolchain/ (never into your home), and prints the environment to build with:
#
#   eval "$(scripts/install-cuda-toolchain.sh)"
#   cargo build --release --features cuda --example perf
#
# - LLVM 23 for cubecl-llvm (Burn's CUDA backend lowers kernels to PTX through LLVM): PyPI's
#   `mlc-llvm-static` and `mlc-llvm-static-extra-targets` (static PIC LLVM 23.1.1 with the NVPTX
#   target and an `llvm-config`). tracel-llvm-bundler, cubecl-llvm's build dependency, downloads
#   its own LLVM 23 bundle from GitHub unless `$XDG_DATA_HOME/tracel/tracel-llvm-23.1.0-4/`
#   holds one with a `.tracel-llvm-installed` marker; it then links through that folder's
#   `bin/llvm-config --link-static`. So the folder is made a link to the PyPI LLVM, and
#   XDG_DATA_HOME points at target/cuda-toolchain/xdg-data for the build.
# - libdevice (`nvvm/libdevice/libdevice.10.bc`, NVIDIA's math library as LLVM bitcode), which
#   cubecl-llvm links into kernels that call exp, log, tanh, erf, … at run time, from
#   `CUDA_PATH`: PyPI's `nvidia-cuda-nvcc-cu12` holds it; the printed CUDA_PATH points there.
#
# Idempotent: a second run installs nothing. Needs python3 with venv (and PyPI).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CUDA_TOOLCHAIN_DIR:-$root/target/cuda-toolchain}"
llvm_version=23.1.1.post0
nvcc_version=12.9.86
bundle=tracel-llvm-23.1.0-4

mkdir -p "$dir"
pip() {
    if [ ! -x "$dir/venv/bin/pip" ]; then
        python3 -m venv "$dir/venv" >&2
    fi
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check --no-deps "$@" >&2
}
llvm="$dir/llvm/mlc_llvm_static/static"
if [ ! -x "$llvm/bin/llvm-config" ]; then
    echo "installing LLVM $llvm_version from PyPI into $dir/llvm" >&2
    pip --target "$dir/llvm" "mlc-llvm-static==$llvm_version" \
        "mlc-llvm-static-extra-targets==$llvm_version"
fi
if ! "$llvm/bin/llvm-config" --targets-built | grep -qw NVPTX; then
    echo "the LLVM in $llvm has no NVPTX target" >&2
    exit 1
fi
cuda="$dir/nvcc/nvidia/cuda_nvcc"
if [ ! -f "$cuda/nvvm/libdevice/libdevice.10.bc" ]; then
    echo "installing libdevice (nvidia-cuda-nvcc-cu12 $nvcc_version) from PyPI into $dir/nvcc" >&2
    pip --target "$dir/nvcc" "nvidia-cuda-nvcc-cu12==$nvcc_version"
fi
data="$dir/xdg-data"
mkdir -p "$data/tracel"
ln -sfn "$llvm" "$data/tracel/$bundle"
touch "$llvm/.tracel-llvm-installed"
echo "export XDG_DATA_HOME='$data'"
echo "export CUDA_PATH='$cuda'"
