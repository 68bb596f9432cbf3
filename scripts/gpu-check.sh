#!/usr/bin/env bash
# GPU check in two halves, because a GPU machine may have no Rust toolchain and no network.
#
#   scripts/gpu-check.sh build [DIR]   on a machine with the toolchain (and the registries):
#                                      builds, for each GPU backend, one stripped binary — the
#                                      perf example, which also runs the backend-generic suite
#                                      (`--part suite`) — into DIR (default target/gpu-check),
#                                      with the reference vectors, CUDA's libdevice and this
#                                      script, packed into DIR.tar.xz (under 64 MiB).
#   scripts/gpu-check.sh run [DIR]     on the GPU machine (no network): per backend found in DIR,
#                                      opens the device (one line and the next backend where the
#                                      driver or the device is missing), runs the suite, a
#                                      200-step ResNet-56 training run (batch 64, CIFAR-shaped,
#                                      plain and with the pruner, timed) and the perf table;
#                                      writes DIR/gpu-report.md. Within 8 minutes on one GPU.
#
# CUDA loads the driver at run time, so its binary builds without CUDA installed; Burn's CUDA
# backend links cubecl-llvm (kernels lowered to PTX through LLVM 23), which
# scripts/install-cuda-toolchain.sh installs from PyPI into target/cuda-toolchain, with the
# libdevice the kernels' math functions link at run time (docs/backends.md, "CUDA offline").
set -uo pipefail
mode="${1:-}"
dir="${2:-target/gpu-check}"
backends="${GPU_CHECK_BACKENDS:-wgpu cuda}"

build() {
    cd "$(dirname "$0")/.."
    mkdir -p "$dir"
    rm -rf "$dir/reference" "$dir/cuda-path"
    cp -r tests/data/reference "$dir/reference"
    for backend in $backends; do
        echo "== building $backend"
        local out="$dir/$backend"
        mkdir -p "$out"
        if [ "$backend" = cuda ]; then
            # LLVM 23 and libdevice from PyPI (scripts/install-cuda-toolchain.sh): the build
            # links offline, and the kernels' math library travels with the binaries.
            local env
            if ! env=$(scripts/install-cuda-toolchain.sh 2>"$out/build.log"); then
                echo "   cuda: toolchain not installed (see $out/build.log)"
                continue
            fi
            eval "$env"
            mkdir -p "$dir/cuda-path/nvvm/libdevice"
            cp "$CUDA_PATH/nvvm/libdevice/libdevice.10.bc" "$dir/cuda-path/nvvm/libdevice/"
        fi
        if CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --features "$backend" \
                --example perf 2>>"$out/build.log"; then
            cp target/release/examples/perf "$out/perf"
        else
            echo "   $backend: build failed (see $out/build.log)"
            rm -f "$out/perf"
            continue
        fi
        ls -la "$out"
    done
    cp scripts/gpu-check.sh "$dir/"
    # One archive to carry to the GPU machine (the binaries compress ~6×).
    tar -C "$(dirname "$dir")" --exclude='*.log' -cf - "$(basename "$dir")" | xz -9 -T0 >"$dir.tar.xz"
    ls -la "$dir.tar.xz"
    echo "on the GPU machine: tar -xJf $(basename "$dir").tar.xz && $(basename "$dir")/gpu-check.sh run $(basename "$dir")"
}

# "pass", or why not in a few words: `outcome RC SECONDS LOG`.
outcome() {
    case "$1" in
        0) echo pass ;;
        124) echo "FAIL (timed out after $2 s; last line: $(tail -1 "$3" | cut -c1-120))" ;;
        *) echo "FAIL ($(tail -1 "$3" | cut -c1-160))" ;;
    esac
}

run() {
    local report="$dir/gpu-report.md"
    local card
    card=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "unknown (no nvidia-smi)")
    {
        echo "# texprune GPU check"
        echo
        echo "- date: $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "- device: $card"
    } >"$report"
    for backend in $backends; do
        local out="$dir/$backend"
        if [ ! -x "$out/perf" ]; then
            echo "- $backend: not built" | tee -a "$report"
            continue
        fi
        if [ "$backend" = cuda ] && [ -z "${CUDA_PATH:-}" ] && [ -d "$dir/cuda-path" ]; then
            export CUDA_PATH="$dir/cuda-path"
        fi
        # One line where the driver or the device is missing, then the next backend.
        local opened
        if ! opened=$(timeout 60 "$out/perf" --backend "$backend" --part device 2>&1); then
            echo "- $backend: no usable device: $(echo "$opened" | tail -1)" | tee -a "$report"
            continue
        fi
        echo "== $backend: suite"
        local status=pass
        TEXPRUNE_REFERENCE="$dir/reference" timeout 240 "$out/perf" --backend "$backend" \
            --part suite >"$out/suite.log" 2>"$out/suite.err" || status=FAIL
        echo "- $backend suite: $status ($(grep -E '^test result' "$out/suite.log" | tail -1))" >>"$report"
        grep -E '^test .* (ok|FAILED)$' "$out/suite.log" | sed 's/^/  - /' >>"$report"
        {
            echo "== $backend: 200 training steps and the perf table"
            timeout 150 "$out/perf" --backend "$backend" --part train --steps 200 \
                --out "$out/train.json" >"$out/train.log" 2>&1
            status=$(outcome $? 150 "$out/train.log")
            echo "- $backend 200-step ResNet-56 run: $status; $(grep -E 'training step' "$out/train.log")" >>"$report"
            timeout 120 "$out/perf" --backend "$backend" --quick --part inference \
                --out "$out/perf.json" >"$out/perf.log" 2>&1
            echo "- $backend perf table: $(outcome $? 120 "$out/perf.log")" >>"$report"
            echo >>"$report"
            sed -n '/^| model/,/^$/p' "$out/perf.log" >>"$report"
            grep -E '^targets' "$out/perf.log" >>"$report"
        }
    done
    cat "$report"
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) echo "usage: $0 build|run [DIR]" >&2; exit 2 ;;
esac
