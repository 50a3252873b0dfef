"""The two Python environments of the GPU scripts, made from carried wheels only.

`ours`: the machine's own python3 (it must hold a CUDA torch) with the wheels the machine
lacks (`benchmarks.gpu.wheels` lists them) in a folder first on PYTHONPATH; llm2vec_retrieval
itself is imported from the repository (the scripts run from its root).
`official`: the same interpreter with llm2vec 0.2.3, transformers 4.44.2 and the versions it
pins in another folder, which shadow the machine's newer ones for that arm only.

Nothing is downloaded: ``pip install --no-index --no-deps --target``. A missing package, a
wrong Python version or a torch without CUDA stops with one line naming what is missing.
Standard library only: the GPU machine starts this with a bare python3.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OFFICIAL_VENV = ROOT / "benchmarks" / ".cache" / "venv-official"
OFFICIAL_VENV_ENV = "LLM2VEC_OFFICIAL_VENV"
MANIFEST = "manifest.json"

# What each environment must import, and the version check (python code run in that env).
CHECKS = {
    "ours": (
        "import torch, transformers, peft, accelerate, safetensors, numpy;"
        "v = tuple(int(x) for x in transformers.__version__.split('.')[:2]);"
        "assert v >= (5, 2), 'transformers>=5.2 needed, found ' + transformers.__version__"
    ),
    "official": (
        "import torch, llm2vec, transformers;"
        "assert transformers.__version__ == '4.44.2', "
        "'transformers==4.44.2 needed, found ' + transformers.__version__"
    ),
}


class EnvError(RuntimeError):
    """An environment cannot be made or used; the message says what is missing."""


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def child_env(pythonpath: list[str] | None = None) -> dict:
    """os.environ for a child: offline, `pythonpath` first, then the repository root."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    env["PYTHONPATH"] = os.pathsep.join([*(pythonpath or []), str(ROOT)])
    return env


def check(python: str | os.PathLike, kind: str, pythonpath: list[str] | None = None) -> str | None:
    """None when `python` imports what `kind` needs, else the last line of the failure."""
    r = subprocess.run(
        [str(python), "-c", CHECKS[kind]], capture_output=True, text=True, env=child_env(pythonpath)
    )
    if r.returncode == 0:
        return None
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {r.returncode}"


def read_manifest(wheels: Path) -> dict:
    path = wheels / MANIFEST
    if not path.is_file():
        raise EnvError(
            f"no {MANIFEST} in {wheels}: make the folder with `python -m benchmarks.gpu.wheels "
            f"--out {wheels}` on a machine with registry access"
        )
    return json.loads(path.read_text())


def check_python_version(manifest: dict) -> None:
    want = manifest["python_version"]
    have = f"{sys.version_info.major}.{sys.version_info.minor}"
    if want != have:
        raise EnvError(
            f"the wheels are for Python {want}, this python is {have}: rerun "
            f"`python -m benchmarks.gpu.wheels --python-version {have}`"
        )


def make_env(kind: str, wheels: Path, site_root: Path, log=print) -> dict:
    """{"python", "pythonpath"} for `kind`: every wheel of WHEELS/<kind> installed (no index, no
    dependency resolution) into SITE_ROOT/<kind>, which goes first on PYTHONPATH, so its
    packages shadow the machine's (transformers 4.44.2 over 5.x for the official arm).

    A folder beside the interpreter's own site-packages rather than a venv: the lent image's
    python3 is itself a venv, and a venv made from it would not see its torch. What the
    wheels need from the machine is checked by importing it (`CHECKS`)."""
    manifest = read_manifest(wheels)
    check_python_version(manifest)
    folder = wheels / kind
    site = site_root / kind
    stamp = site / ".made-from.json"
    want = {"wheels": str(wheels.resolve()), "files": sorted(p.name for p in folder.glob("*.whl"))}
    env = {"python": sys.executable, "pythonpath": [str(site)]}
    made = stamp.is_file() and json.loads(stamp.read_text()) == want
    if not made:
        # --upgrade replaces what an earlier install put there and keeps the rest (packages
        # staged by earlier calls: docs/gpu.md)
        log(f"installing {len(want['files'])} wheels of {folder} into {site}")
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--upgrade"]
        cmd += ["--no-cache-dir", "--disable-pip-version-check", "--target", str(site)]
        r = subprocess.run(
            cmd + [str(folder / f) for f in want["files"]], capture_output=True, text=True
        )
        if r.returncode != 0:
            raise EnvError(_pip_problem(r.stderr or r.stdout, folder))
    problem = check(sys.executable, kind, env["pythonpath"])
    if problem is not None:
        raise EnvError(
            f"the {kind} packages in {site} cannot run here: {problem} (carry its wheel: "
            f"python -m benchmarks.gpu.wheels --extra NAME)"
        )
    stamp.write_text(json.dumps(want))
    return env


def _pip_problem(output: str, folder: Path) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    return f"pip could not install from {folder}: {lines[-1] if lines else 'no output'}"


def official_python(explicit: str | None = None) -> tuple[Path | None, str | None]:
    """(python, None) of an existing official venv, else (None, why it is skipped)."""
    venv = Path(explicit or os.environ.get(OFFICIAL_VENV_ENV) or DEFAULT_OFFICIAL_VENV)
    py = venv_python(venv) if venv.is_dir() else venv
    if not py.exists():
        return None, (
            f"no official llm2vec venv at {venv} (make one with python -m benchmarks.speed "
            f"--impls official, or pass --wheels)"
        )
    problem = check(py, "official")
    return (py, None) if problem is None else (None, f"{py}: {problem}")


def environments(
    wheels: Path | None, site_root: Path, official: str | None, log=print
) -> dict[str, dict]:
    """{kind: {"python", "pythonpath", "skipped": reason or None}} for ours and official.

    With `wheels`: both made from the carried wheels (an error stops the run: on the GPU
    machine a missing arm is a failed measurement). Without: ours is this interpreter (checked),
    official an existing venv or skipped with the reason.
    """
    if wheels is not None:
        return {
            kind: {**make_env(kind, wheels, site_root, log), "skipped": None}
            for kind in ("ours", "official")
        }
    problem = check(sys.executable, "ours")
    if problem is not None:
        raise EnvError(f"{sys.executable} cannot run our encoder: {problem} (or pass --wheels)")
    py, why = official_python(official)
    return {
        "ours": {"python": sys.executable, "pythonpath": [], "skipped": None},
        "official": {"python": str(py) if py else None, "pythonpath": [], "skipped": why},
    }
