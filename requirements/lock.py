#!/usr/bin/env python3
"""Regenerates the hash-pinned lock files (*.txt) in this folder from their inputs (*.in).

Every pip install of the project (`cargo xtask setup`: torch, numpy, the CUDA headers, the
digits wheel; `bench-samplers`: k-diffusion, diffusers and what they need; `bench-conditional
--with-diffuse`: diffuse and jax) reads one of these
locks with `pip install --require-hashes --no-deps --only-binary=:all:`, so each lock must list
every package that install adds, transitive ones included, at an exact version, with the
sha256 of every wheel PyPI publishes for that version (several Python versions and platforms:
pip accepts any of them and checks the file it downloads).

How a lock is made:
1. pip resolves the lock's input together with the inputs of the locks it is installed on top
   of (`ON`), constrained to the versions of those locks and of the locks it must agree with
   (`AGREE`), with `pip install --dry-run --ignore-installed --report` (nothing is installed);
2. the packages the lock adds (resolved, minus those of the `ON` locks) are pinned to the
   resolved versions; lines marked `# no-deps` are pinned as written and not resolved;
3. each pinned release's wheel hashes are read from PyPI's simple index (JSON form), and the
   hash of the file pip resolved is checked to be among them.

The dependency set is resolved for the interpreter running this script (markers such as
`platform_system == "Linux"` are evaluated there): run it with CPython >= 3.11 on Linux x86_64,
the platform CI and the set-up's hash-checked install target.

Usage: python3 requirements/lock.py            rewrite every lock
       python3 requirements/lock.py --check    exit 1 if a lock differs from a fresh resolve
Needs network access to PyPI; takes about a minute (resolution downloads metadata only).
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX = "https://pypi.org/simple"

# name -> (locks it is installed on top of, locks whose versions it must agree with).
# Order matters: a lock is made after the locks it names.
LOCKS: dict[str, tuple[list[str], list[str]]] = {
    "setup": ([], []),
    "cuda-headers": (["setup"], []),
    "digits": ([], []),
    "bench-kdiffusion": (["setup"], []),
    # Installed independently of k-diffusion (either may fail alone), so it lists the packages
    # they share too, at the same versions.
    "bench-diffusers": (["setup"], ["bench-kdiffusion"]),
    # bench-conditional's diffuse harness: a virtualenv of its own (jax, not torch).
    "bench-diffuse": ([], []),
}

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)$")


def canonical(name: str) -> str:
    """PEP 503 name normalisation."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_input(name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The resolvable requirement lines of `<name>.in`, and its `# no-deps` pins."""
    resolvable, no_deps = [], []
    for raw in (HERE / f"{name}.in").read_text().splitlines():
        line, _, comment = raw.partition("#")
        line = line.strip()
        if not line:
            continue
        if comment.strip() == "no-deps":
            m = PIN.match(line)
            if not m:
                sys.exit(f"{name}.in: a `# no-deps` line must be `name==version`: {raw!r}")
            no_deps.append((m.group(1), m.group(2)))
        else:
            resolvable.append(line)
    return resolvable, no_deps


def read_lock(name: str) -> dict[str, str]:
    """canonical name -> version of an existing lock file."""
    pins = {}
    for line in (HERE / f"{name}.txt").read_text().splitlines():
        m = PIN.match(line.split(" ")[0].strip()) if line and not line.startswith((" ", "#")) else None
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def resolve(requirements: list[str], constraints: dict[str, str]) -> dict[str, tuple[str, str, str]]:
    """canonical name -> (name, version, sha256 of the resolved file), from pip's report."""
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "req.txt"
        req.write_text("\n".join(requirements) + "\n")
        con = Path(tmp) / "constraints.txt"
        con.write_text("".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())))
        report = Path(tmp) / "report.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_FIND_LINKS")}
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
             "--quiet", "--disable-pip-version-check", "--no-input", "--only-binary=:all:",
             "--index-url", INDEX, "--report", str(report), "-r", str(req), "-c", str(con)],
            check=True, env=env,
        )
        data = json.loads(report.read_text())
    resolved = {}
    for item in data["install"]:
        meta, info = item["metadata"], item["download_info"]
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        if not sha:
            sys.exit(f"pip resolved {meta['name']} from {info.get('url')} without a sha256")
        resolved[canonical(meta["name"])] = (meta["name"], meta["version"], sha)
    return resolved


def wheel_hashes(name: str, version: str) -> list[str]:
    """The sha256 of every non-yanked wheel of `name==version` on PyPI, sorted."""
    request = urllib.request.Request(
        f"{INDEX}/{canonical(name)}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    hashes = set()
    for f in files:
        parts = f["filename"].removesuffix(".whl").split("-")
        if not f["filename"].endswith(".whl") or f.get("yanked") or len(parts) < 5:
            continue
        if parts[1] == version and "sha256" in f.get("hashes", {}):
            hashes.add(f["hashes"]["sha256"])
    if not hashes:
        sys.exit(f"PyPI lists no wheel of {name}=={version}")
    return sorted(hashes)


def render(name: str, pins: list[tuple[str, str, list[str], str]]) -> str:
    on, agree = LOCKS[name]
    lines = [
        f"# Generated by requirements/lock.py from {name}.in; do not edit, regenerate with",
        "#   python3 requirements/lock.py",
        f"# Resolved on {platform.system()} {platform.machine()}, CPython "
        f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]}; "
        "every wheel of each release is hashed.",
    ]
    if on:
        lines.append(f"# Installed on top of: {', '.join(f'{o}.txt' for o in on)} (not repeated here).")
    if agree:
        lines.append(f"# Same versions as: {', '.join(f'{a}.txt' for a in agree)}.")
    lines.append(f"# Use: pip install (or download) --require-hashes --no-deps --only-binary=:all: -r {name}.txt")
    for pkg, version, hashes, note in pins:
        lines.append(f"{pkg}=={version} \\")
        hash_lines = [f"    --hash=sha256:{h}" for h in hashes]
        lines.extend(h + " \\" for h in hash_lines[:-1])
        lines.append(hash_lines[-1])
        if note:
            lines.append(f"    # {note}")
    return "\n".join(lines) + "\n"


def make(name: str) -> str:
    on, agree = LOCKS[name]
    resolvable, no_deps = read_input(name)
    requirements = list(resolvable)
    for base in on:
        requirements += read_input(base)[0]
    constraints = {}
    for other in on + agree:
        constraints.update(read_lock(other))
    below = set()
    for base in on:
        below |= set(read_lock(base))
    pins = []
    if requirements:
        for key, (pkg, version, sha) in sorted(resolve(requirements, constraints).items()):
            if key in below:
                continue
            hashes = wheel_hashes(pkg, version)
            if sha not in hashes:
                sys.exit(f"{pkg}=={version}: the file pip resolved ({sha}) is not among PyPI's wheels")
            pins.append((canonical(pkg), version, hashes, ""))
    for pkg, version in no_deps:
        pins.append((canonical(pkg), version, wheel_hashes(pkg, version), "installed without its dependencies"))
    pins.sort(key=lambda p: p[0])
    return render(name, pins)


def main() -> int:
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] and not check:
        print(__doc__, file=sys.stderr)
        return 2
    if sys.version_info < (3, 11):
        sys.exit("run lock.py with CPython >= 3.11 (numpy 2.4 and the set-up need it)")
    stale = []
    for name in LOCKS:
        text = make(name)
        path = HERE / f"{name}.txt"
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(HERE.parent)} ({text.count('==')} packages)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python3 requirements/lock.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
