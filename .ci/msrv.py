"""Fails when Cargo.toml's rust-version is below what a locked dependency
needs (`cargo metadata --format-version 1 --locked` on standard input)."""
import json
import sys


def version(text):
    return tuple(int(x) for x in text.split("."))[:2]


def main():
    meta = json.load(sys.stdin)
    ours = next(p for p in meta["packages"] if p["name"] == "switchyard")["rust_version"]
    need, who = max(
        (version(p["rust_version"]), p["name"])
        for p in meta["packages"]
        if p.get("rust_version") and p["name"] != "switchyard"
    )
    need_text = ".".join(map(str, need))
    if version(ours) < need:
        sys.exit(f"Cargo.toml says rust-version {ours}, but {who} needs {need_text}")
    print(f"rust-version {ours}; the highest any locked dependency needs: {need_text} ({who})")


main()
