#!/usr/bin/env python3
"""Check that the `peershare` package's dependencies are built with the same features
whichever way a person builds it.

Cargo resolves features for the packages a command selects: `cargo build --release` (the
README's main job) resolves the package alone, `cargo test` adds its dev-dependencies,
`cargo build --workspace` adds the other members and `cargo test --workspace` (the
README's test command) all of theirs. A shared dependency that one of them
compiles with an extra feature is a different artifact, and so is everything built on it:
the first switch between the commands in a target directory rebuilt most of the tree. The root manifest asks
for those features itself (`Cargo.toml`, the comment above `smallvec`); this script fails
when a new dependency brings another one.

It compares `cargo tree`'s feature lists (normal and build edges, this machine's target)
of every package that the package alone and a wider selection both build. Exit status 0
when they agree, 1 with the differences otherwise.

    python3 tools/check_features.py
"""

import collections
import os
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def features(*selection):
    """Package id -> the set of feature lists it is built with (a package compiled both
    for the build machine and for the target can have two)."""
    run = subprocess.run(
        ["cargo", "tree", "--locked", "--prefix", "none", "--format", "{p} [{f}]"]
        + list(selection),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if run.returncode != 0:
        sys.exit(f"cargo tree {' '.join(selection)} failed:\n{run.stderr}")
    built = collections.defaultdict(set)
    for line in run.stdout.splitlines():
        line = line.removesuffix(" (*)").strip()
        if not line or "[" not in line:
            continue
        package, _, rest = line.partition(" [")
        built[package].add(rest.rsplit("]", 1)[0])
    return built


def main():
    alone = features("-p", "peershare", "-e", "normal,build")
    wider = {
        "cargo test (dev-dependencies)": features("-p", "peershare", "-e", "normal,build,dev"),
        "cargo build --workspace": features("--workspace", "-e", "normal,build"),
        "cargo test --workspace": features("--workspace", "-e", "normal,build,dev"),
    }
    differences = []
    for what, tree in wider.items():
        for package, lists in sorted(alone.items()):
            if package in tree and tree[package] != lists:
                differences.append(
                    f"{package}: `cargo build` {sorted(lists)}, {what} {sorted(tree[package])}"
                )
    if differences:
        print(
            "peershare's dependencies are built with other features by a wider build; "
            "ask for them in the root Cargo.toml:",
            file=sys.stderr,
        )
        for d in differences:
            print("  " + d, file=sys.stderr)
        return 1
    print(f"features agree for {len(alone)} packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
