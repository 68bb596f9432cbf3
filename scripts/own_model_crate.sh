#!/usr/bin/env bash
# Builds examples/own_model as a crate of its own whose only dependency is texprune (by path,
# with its `onnx` feature), as a user's crate would be: it fails where the example leans on
# something the repository's own dev-dependencies provide. `cargo check` shares the repository's target folder.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
crate="$repo/target/own_model_crate"
rm -rf "$crate"
mkdir -p "$crate/src"
cat > "$crate/Cargo.toml" <<TOML
[package]
name = "own-model"
version = "0.1.0"
edition = "2024"

[dependencies]
texprune = { path = "$repo", features = ["onnx"] }

[workspace]
TOML
cp "$repo/examples/own_model/main.rs" "$repo/examples/own_model/net.rs" "$crate/src/"
CARGO_TARGET_DIR="$repo/target" cargo check --release --manifest-path "$crate/Cargo.toml"
echo "examples/own_model builds as a crate with texprune as its only dependency"
