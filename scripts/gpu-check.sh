#!/usr/bin/env bash
# GPU check in two halves, because a GPU machine may have no Rust toolchain and no network.
#
#   scripts/gpu-check.sh build [DIR]   on a machine with the toolchain (and crates.io): builds
#                                      stripped binaries for each GPU backend into DIR
#                                      (default target/gpu-check): the backend-generic test suite
#                                      and the perf example, plus the reference vectors and this
#                                      script, packed into DIR.tar.xz (~10 MB per binary).
#   scripts/gpu-check.sh run [DIR]     on the GPU machine: runs, per backend found in DIR, the
#                                      suite, a 200-step ResNet-56 training run (batch 64,
#                                      CIFAR-shaped, plain and with the pruner, timed) and the
#                                      perf table; writes DIR/gpu-report.md.
#
# CUDA loads the driver at run time, so its binaries build without CUDA installed; but Burn's
# CUDA backend links cubecl-llvm (its default kernel compiler lowers to PTX through LLVM), whose
# build dependency tracel-llvm-bundler downloads an LLVM 23 bundle from GitHub. Offline, the
# CUDA build fails and the build half reports CUDA as not built and goes on with wgpu;
# Debian 12's newest LLVM (19) does not link either: docs/backends.md, "CUDA offline". The run
# half must finish within 8 minutes on one GPU.
set -uo pipefail
mode="${1:-}"
dir="${2:-target/gpu-check}"
backends="${GPU_CHECK_BACKENDS:-wgpu cuda}"

build() {
    cd "$(dirname "$0")/.."
    mkdir -p "$dir"
    rm -rf "$dir/reference"
    cp -r tests/data/reference "$dir/reference"
    for backend in $backends; do
        echo "== building $backend"
        local out="$dir/$backend"
        mkdir -p "$out"
        local json
        if ! json=$(CARGO_PROFILE_RELEASE_STRIP=symbols cargo test --release --features "$backend" \
                --test backends --no-run --message-format=json 2>"$out/build.log"); then
            echo "   $backend: build failed (see $out/build.log)"
            rm -f "$out/backends" "$out/perf"
            continue
        fi
        local suite
        suite=$(echo "$json" | grep '"executable":"[^"]*backends-[^"]*"' -o | tail -1 | cut -d'"' -f4)
        cp "$suite" "$out/backends"
        CARGO_PROFILE_RELEASE_STRIP=symbols cargo build --release --features "$backend" \
            --example perf 2>>"$out/build.log" && cp target/release/examples/perf "$out/perf"
        ls -la "$out"
    done
    cp scripts/gpu-check.sh "$dir/"
    # One archive to carry to the GPU machine (the binaries compress ~6×).
    tar -C "$(dirname "$dir")" -cJf "$dir.tar.xz" "$(basename "$dir")"
    ls -la "$dir.tar.xz"
    echo "on the GPU machine: tar -xJf $(basename "$dir").tar.xz && $(basename "$dir")/gpu-check.sh run $(basename "$dir")"
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
        if [ ! -x "$out/backends" ]; then
            echo "- $backend: not built" >>"$report"
            continue
        fi
        echo "== $backend: suite"
        local status=pass
        TEXPRUNE_REFERENCE="$dir/reference" timeout 240 "$out/backends" --test-threads 1 >"$out/suite.log" 2>"$out/suite.err" || status=FAIL
        echo "- $backend suite: $status ($(grep -E '^test result' "$out/suite.log" | tail -1))" >>"$report"
        grep -E '^test .* (ok|FAILED)$' "$out/suite.log" | sed 's/^/  - /' >>"$report"
        if [ -x "$out/perf" ]; then
            echo "== $backend: 200 training steps and the perf table"
            status=pass
            timeout 150 "$out/perf" --backend "$backend" --part train --steps 200 \
                --out "$out/train.json" >"$out/train.log" 2>&1 || status=FAIL
            echo "- $backend 200-step ResNet-56 run: $status; $(grep -E 'training step' "$out/train.log")" >>"$report"
            status=pass
            timeout 120 "$out/perf" --backend "$backend" --quick --part inference \
                --out "$out/perf.json" >"$out/perf.log" 2>&1 || status=FAIL
            echo "- $backend perf table: $status" >>"$report"
            echo >>"$report"
            sed -n '/^| model/,/^$/p' "$out/perf.log" >>"$report"
            grep -E '^targets' "$out/perf.log" >>"$report"
        fi
    done
    cat "$report"
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) echo "usage: $0 build|run [DIR]" >&2; exit 2 ;;
esac
