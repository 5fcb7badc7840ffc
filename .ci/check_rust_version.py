"""Fails when a dependency declares a rust-version newer than par-store's own.

Reads `cargo metadata --format-version 1` on standard input. Our own code is checked against
rust-version by clippy's `incompatible_msrv` lint.
"""
import json
import sys


def version(text):
    parts = [int(part) for part in (text or "0").split(".")[:3]]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
root = next(p for p in meta["packages"] if p["name"] == "par-store")
msrv = version(root["rust_version"])
too_new = [
    f"{p['name']} {p['version']} needs {p['rust_version']}"
    for p in meta["packages"]
    if p["rust_version"] and version(p["rust_version"]) > msrv
]
print(f"rust-version {root['rust_version']}: {len(meta['packages'])} packages checked")
if too_new:
    sys.exit("dependencies need a newer Rust than rust-version: " + ", ".join(too_new))
