#!/usr/bin/env python3
"""OTA install: bytes fetched for a full and a delta update of a realistic
root filesystem image, and install throughput against a plain `dd` of the
same image to the same target, in one run (release build of nusactl).

The images are ext4 filesystems made with `mke2fs -d` (as image/build makes
root filesystems) from a copy of files under /usr of this machine: a real
mix of libraries, binaries and data. Version 2 changes the content of 1 %
of the files; once with every size kept (a rebuild that keeps the layout)
and once with sizes changed plus a new 8 MiB file (a rebuild that shifts
later files).

    .venv/bin/python bench/ota.py --nusactl target/release/nusactl [--mb 512]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKE_TIME = "1700000000"
UUID = "2f0f3b6e-7b2a-4c49-9a8e-6b1b5c6d7e80"
HASH_SEED = "6f1d8f39-1c0e-4b7a-8d50-0a5e2f3c4b61"


def sh(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def collect(src_roots: list[Path], dest: Path, budget: int) -> list[Path]:
    """Copies regular files until `budget` bytes; returns them (relative)."""
    files: list[Path] = []
    used = 0
    for root in src_roots:
        for dirpath, _dirs, names in sorted(os.walk(root)):
            for n in sorted(names):
                p = Path(dirpath) / n
                if p.is_symlink() or not p.is_file():
                    continue
                size = p.stat().st_size
                if size == 0 or used + size > budget:
                    continue
                rel = p.relative_to("/")
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(p, out)
                except OSError:
                    continue
                files.append(rel)
                used += size
                if used >= budget * 0.98:
                    return files
    return files


def mkfs(tree: Path, image: Path, mb: int) -> None:
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=FAKE_TIME)
    if image.exists():
        image.unlink()
    sh(["mke2fs", "-q", "-t", "ext4", "-b", "4096", "-U", UUID,
        "-E", f"hash_seed={HASH_SEED},root_owner=0:0", "-d", str(tree), str(image), f"{mb}M"], env=env)


def change(tree: Path, files: list[Path], keep_sizes: bool, rng: random.Random) -> int:
    """Rewrites 1 % of the files; returns bytes changed."""
    picked = rng.sample(files, max(1, len(files) // 100))
    changed = 0
    for rel in picked:
        p = tree / rel
        data = bytearray(p.read_bytes())
        if keep_sizes:
            for i in range(0, len(data), 512):
                data[i] = (data[i] + 1) % 256
        else:
            data += os.urandom(rng.randrange(100, 20000))
        p.write_bytes(bytes(data))
        changed += len(data)
    if not keep_sizes:
        extra = tree / "usr/share/nusa-bench/new.bin"
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_bytes(os.urandom(8 << 20))
        changed += 8 << 20
    return changed


def differing_bytes(a: Path, b: Path, block: int = 4096) -> int:
    n = 0
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(block << 8), fb.read(block << 8)
            if not x and not y:
                return n
            for i in range(0, max(len(x), len(y)), block):
                if x[i:i + block] != y[i:i + block]:
                    n += block
            if not x or not y:
                return n


class Appliance:
    """One appliance made of files: slots, file bootloader, update.toml."""

    def __init__(self, work: Path, nusactl: Path, repo: Path, slot_bytes: int, running: str,
                 slot_a: Path | None):
        self.dir = work
        work.mkdir(parents=True)
        self.nusactl = nusactl
        (work / "boot").mkdir()
        a, b = work / "slot-a", work / "slot-b"
        if slot_a:
            shutil.copyfile(slot_a, a)
            with a.open("r+b") as f:
                f.truncate(slot_bytes)
        else:
            with a.open("wb") as f:
                f.truncate(slot_bytes)
        with b.open("wb") as f:
            f.truncate(slot_bytes)
        (work / "version").write_text(running + "\n")
        (work / "machine-id").write_text("0" * 32 + "\n")
        self.config = work / "update.toml"
        self.config.write_text(f'''variant = "x86_64-rtx"
repository = "{repo}"
version_file = "{work}/version"
trusted_root = "{repo}/metadata/1.root.json"
state_dir = "{work}/state"
machine_id = "{work}/machine-id"
slots = ["{a}", "{b}"]
reboot_command = []

[bootloader]
kind = "file"
dir = "{work}/boot"
''')

    def apply(self) -> float:
        t0 = time.monotonic()
        sh([str(self.nusactl), "update", "--config", str(self.config), "apply", "--no-reboot"])
        return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nusactl", required=True, type=Path)
    ap.add_argument("--mb", type=int, default=512, help="image size")
    ap.add_argument("--chunk-sizes", type=lambda v: [int(x) for x in v.split(",")], default=[65536, 4096])
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "bench-ota")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "bench" / "results" / f"ota-{dt.date.today().isoformat()}.md")
    args = ap.parse_args()
    nusactl = args.nusactl.resolve()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    w = args.work
    rng = random.Random(7)

    print(f"collecting ~{args.mb * 0.8:.0f} MB of files from /usr", file=sys.stderr)
    v1 = w / "tree-v1"
    files = collect([Path("/usr/lib"), Path("/usr/share"), Path("/usr/bin")], v1, int(args.mb * 0.8) << 20)
    images = {}
    images["1.0.0"] = w / "v1.img"
    mkfs(v1, images["1.0.0"], args.mb)
    changed = {}
    for version, keep in (("1.1.0", True), ("1.2.0", False)):
        tree = w / f"tree-{version}"
        shutil.copytree(v1, tree, symlinks=True)
        changed[version] = change(tree, files, keep, rng)
        images[version] = w / f"{version}.img"
        mkfs(tree, images[version], args.mb)
        shutil.rmtree(tree)

    keys = w / "keys"
    sh([str(nusactl), "release", "keygen", "--keys", str(keys)])
    size = images["1.1.0"].stat().st_size
    slot_bytes = size + (64 << 20)
    results = []  # (chunk, name, appliance, version, seconds)
    for chunk in args.chunk_sizes:
        # One repository per release: each update below takes "the newest".
        for version in ("1.1.0", "1.2.0"):
            r = w / f"repo-{chunk}-{version}"
            sh([str(nusactl), "release", "init", "--repo", str(r), "--keys", str(keys)])
            sh([str(nusactl), "release", "add", "--repo", str(r), "--keys", str(keys), "--variant",
                "x86_64-rtx", "--version", version, "--image", str(images[version]),
                "--chunk-size", str(chunk)])
        full = Appliance(w / f"full-{chunk}", nusactl, w / f"repo-{chunk}-1.2.0", slot_bytes, "1.0.0", None)
        results.append((chunk, "full (empty active slot)", full, "1.2.0", full.apply()))
        for version in ("1.1.0", "1.2.0"):
            a = Appliance(w / f"delta-{chunk}-{version}", nusactl, w / f"repo-{chunk}-{version}",
                          slot_bytes, "1.0.0", images["1.0.0"])
            kind = "sizes kept" if version == "1.1.0" else "sizes changed, +8 MiB file"
            results.append((chunk, f"delta {version} over 1.0.0 ({kind})", a, version, a.apply()))

    # dd of the same image to the same kind of target, fsync'd.
    target = w / "dd-target"
    with target.open("wb") as f:
        f.truncate(slot_bytes)
    t0 = time.monotonic()
    sh(["dd", f"if={images['1.2.0']}", f"of={target}", "bs=4M", "conv=notrunc,fsync", "status=none"])
    t_dd = time.monotonic() - t0

    # The command as a reader would type it: no path of this machine.
    shown = os.path.relpath(nusactl, ROOT) if nusactl.is_relative_to(ROOT) else nusactl.name
    lines = [
        f"# OTA install benchmark, {dt.date.today().isoformat()}",
        "",
        f"Command: `.venv/bin/python bench/ota.py --nusactl {shown} --mb {args.mb}`",
        f"Image: ext4 from `mke2fs -d`, {size >> 20} MiB, {len(files)} files copied from /usr "
        f"({sum((v1 / f).stat().st_size for f in files) >> 20} MiB of file data). Folder repository "
        "(no network), slot files and the dd target on the same disk, release build.",
        "",
        "| chunk | update | changed in the tree | image bytes that differ (4 KiB blocks) | fetched | fetched / image | seconds | ratio to dd |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for chunk, name, a, v, t in results:
        s = json.loads((a.dir / "state" / "stats.json").read_text())
        diff = differing_bytes(images["1.0.0"], images[v]) if "delta" in name else size
        lines.append(f"| {chunk >> 10} KiB | {name} | {changed.get(v, 0) >> 10} KiB | {diff >> 10} KiB | "
                     f"{s['fetched'] >> 10} KiB | {s['fetched'] / size:.1%} | {t:.2f} | {t / t_dd:.2f} |")
    lines += [
        "",
        f"`dd if=<image> of=<target> bs=4M conv=notrunc,fsync`: {t_dd:.2f} s ({size / t_dd / 2**20:.0f} MiB/s), ratio 1.00.",
        "`nusactl update apply --no-reboot` does: TUF refresh and verify, chunk index, hash the active slot,",
        "fetch and verify the missing chunks into the download file (fsync per range), write the slot from",
        "local and downloaded chunks (each verified again), fsync, read the slot back and hash it, arm.",
    ]
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
