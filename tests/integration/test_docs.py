"""Every repository path, script and unit that README.md names exists, and
README.md lists every script in scripts/.

The README is the first thing a new user reads; a path in it that went away
(a renamed script, a moved README, a unit that was split) sends them
nowhere. This reads the README as text and checks the names that look like
paths in this repository: under one of its top-level folders
(`scripts/run-demo`, `gateway/ota/README.md`, `systemd/`), a top-level file
(`ARCHITECTURE.md`), and the project's own systemd units (`nusad.service`,
looked up in systemd/). Whether in backticks, a link or plain text, the
same: a path is a path.

Left out: paths on the appliance (`/etc/...`, `/var/...`, `/usr/...`: the
leading slash keeps them from matching), paths of things the tools make
(`.cache/`, `.venv/`, `nusa-data/`, `data_dir/...`), and placeholders
(anything with `<`, `{`, `*` or `...`, e.g. `bench/results/<date>.md`).
No nusad is started; this takes well under a second.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"

# Top-level folders and files of this repository that the README may name.
TOP_DIRS = ("scripts", "gateway", "systemd", "image", "tests", "bench", "ops", "fuzz",
            "trt-sys", ".ci")
TOP_FILES = ("ARCHITECTURE.md", "README.md", "Cargo.toml", "Cargo.lock", "clippy.toml")

# A path starts after something that is not part of a path (so the
# `systemd/` in `/etc/systemd/system` or `lib/systemd/` does not count) and
# runs until whitespace or markdown/punctuation that never occurs in our
# paths.
_PATH = re.compile(
    r"(?<![\w./-])((?:" + "|".join(re.escape(d) for d in TOP_DIRS) + r")/[^\s`()\[\],;:\"'|]*)")
_FILE = re.compile(
    r"(?<![\w./-])(" + "|".join(re.escape(f) for f in TOP_FILES) + r")(?![\w/-])")
# Our own units: systemd's (boot-complete.target, systemd-bless-boot.service)
# are not in this repository.
_UNIT = re.compile(r"(?<![\w./@-])(nusa[\w-]*\.(?:service|socket|timer))(?![\w-])")
_PLACEHOLDER = ("<", ">", "{", "}", "*", "...", "$")


def named_paths(text: str) -> dict[str, list[int]]:
    """Repository paths named in text, each with the lines that name it."""
    found: dict[str, list[int]] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        names = [m.group(1) for m in _PATH.finditer(line)] + [m.group(1) for m in _FILE.finditer(line)]
        names += [f"systemd/{m.group(1)}" for m in _UNIT.finditer(line)]
        for name in names:
            if any(p in name for p in _PLACEHOLDER):
                continue
            # A sentence's full stop after a path is not part of it.
            name = name.rstrip(".")
            found.setdefault(name, []).append(lineno)
    return found


def missing(text: str) -> list[str]:
    return [f"{name} (README.md line {', '.join(map(str, lines))})"
            for name, lines in sorted(named_paths(text).items())
            if not (REPO_ROOT / name).exists()]


def test_every_path_the_readme_names_exists():
    text = README.read_text()
    named = named_paths(text)
    # Not vacuous: the README names its scripts, units and the other docs.
    for must in ("scripts/test", "scripts/run-demo", "systemd/nusad.service", "ARCHITECTURE.md"):
        assert must in named, f"{must} not found among the README's paths: the extraction is broken"
    gone = missing(text)
    assert not gone, "README.md names paths that do not exist:\n  " + "\n  ".join(gone)


def test_every_script_is_in_the_readme():
    """The Layout section lists each script in scripts/ with a line of its own."""
    named = named_paths(README.read_text())
    scripts = sorted(f"scripts/{f.name}" for f in (REPO_ROOT / "scripts").iterdir() if f.is_file())
    unnamed = [s for s in scripts if s not in named]
    assert not unnamed, f"README.md's Layout does not list {unnamed}"


@pytest.mark.parametrize("text, want", [
    ("run `scripts/test` now", ["scripts/test"]),
    ("see [the units](systemd/README.md).", ["systemd/README.md"]),
    ("How it works: gateway/ota/README.md.", ["gateway/ota/README.md"]),
    ("`sudo image/deps && sudo image/build --version 1.0.0`", ["image/deps", "image/build"]),
    ("`nusad.service` and nusa-update.timer", ["systemd/nusad.service", "systemd/nusa-update.timer"]),
    ("See [ARCHITECTURE.md](ARCHITECTURE.md)", ["ARCHITECTURE.md"]),
    # On the appliance, made by tools, placeholders, systemd's own units.
    ("`/etc/nusa/update.toml`, `/usr/lib/systemd/system/`, `/var/lib/nusa/admin.sock`", []),
    ("`.cache/oha`, `nusa-data/tls/ca.pem`, `data_dir/plans`, `models/<m>/<v>/`", []),
    ("`bench/results/<date>.md`, `tests/*.json`, `fuzz/corpus/<target>/seed-*`, `{m}`", []),
    ("`boot-complete.target`, `systemd-bless-boot.service`", []),
])
def test_the_extraction(text, want):
    assert list(named_paths(text)) == want
