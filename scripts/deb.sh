#!/usr/bin/env bash
# Builds the Debian package target/debian/malog_<version>-1_<arch>.deb: the
# release binary, both systemd units, the example config as the conffile
# /etc/malog/malog.toml, shell completions and man pages (generated here by the
# binary from its own command-line definitions). Needs cargo-deb:
#   cargo install cargo-deb --version 3.8.0 --locked
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions" "$assets/man"
bin=target/release/malog
"$bin" completions bash > "$assets/completions/malog.bash"
"$bin" completions zsh > "$assets/completions/_malog"
"$bin" completions fish > "$assets/completions/malog.fish"
"$bin" man "$assets/man"
cargo deb --no-build --locked "$@"
