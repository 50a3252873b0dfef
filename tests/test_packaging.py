"""The distributions as a user gets them (issue 25.5): the wheels are built here from a copy of
the checkout (`pip wheel --no-deps --no-build-isolation --no-index`, offline) and read back.

- every package ships `py.typed`, so mypy type-checks code that imports it (a user snippet,
  checked against the built wheel unpacked into a bare environment);
- LICENSE (MIT) and, for the core, NOTICE (the default adapter is a Gemma 3 derivative under
  the Gemma Terms of Use) are in the wheels, with an SPDX license expression;
- extras are real (none empty) and pin nothing exactly;
- the source distribution holds every file README.md links to.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import llm2vec_retrieval
from llm2vec_retrieval import sources

ROOT = Path(__file__).resolve().parents[1]
INTEGRATIONS = {
    "integrations/langchain-llm2vec": "langchain_llm2vec",
    "integrations/llama-index-embeddings-llm2vec": "llama_index/embeddings/llm2vec",
    "integrations/llama-index-vector-stores-llm2vec": "llama_index/vector_stores/llm2vec",
}
PROJECTS = ["", *INTEGRATIONS]  # "" is the core

if not (ROOT / "pyproject.toml").is_file():  # an installed package, not a checkout
    pytest.skip("needs a source checkout", allow_module_level=True)


def pyproject(project: str) -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / project / "pyproject.toml").read_text())


def needs_setuptools() -> None:
    from packaging.version import Version

    have = Version(importlib.metadata.version("setuptools"))
    if have < Version("77"):
        pytest.skip(f"building offline needs setuptools >= 77 installed, not {have}")


IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "*.egg-info", "tests")


def pip_wheel(src: Path, tmp: Path) -> zipfile.ZipFile:
    """The wheel of the project copied to `src` (a copy: a build writes build/, *.egg-info)."""
    needs_setuptools()
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    cmd += ["--no-index", "-q", str(src), "-w", str(tmp / "dist")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("*.whl")
    return zipfile.ZipFile(wheel)


def metadata(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return wheel.read(name).decode()


@pytest.fixture(scope="module")
def core_wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The core's wheel, from a copy of the package (not the 40 MB of benchmarks and tests)."""
    tmp = tmp_path_factory.mktemp("core-wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "llm2vec_retrieval", src / "llm2vec_retrieval", ignore=IGNORE)
    return pip_wheel(src, tmp)


def test_core_wheel_ships_py_typed_license_and_notice(core_wheel):
    names = core_wheel.namelist()
    assert "llm2vec_retrieval/py.typed" in names
    assert "llm2vec_retrieval/adapters/gemma3-270m-llm2vec/adapter_model.safetensors" in names
    licenses = {n.split("/", 1)[1] for n in names if ".dist-info/licenses/" in n}
    assert licenses == {"licenses/LICENSE", "licenses/NOTICE"}
    meta = metadata(core_wheel)
    assert f"\nVersion: {llm2vec_retrieval.__version__}\n" in meta  # one version, the module's
    assert "\nLicense-Expression: MIT AND LicenseRef-Gemma-Terms-of-Use\n" in meta
    assert "\nLicense-File: LICENSE\n" in meta and "\nLicense-File: NOTICE\n" in meta
    assert "License :: " not in meta  # no license classifier beside the expression (PEP 639)
    default = sources.EMBEDDED_MODELS[sources.DEFAULT_BASE].distribution
    assert re.search(rf'Requires-Dist: {default}>=[\d.]+; extra == "default-model"', meta)


def test_notice_names_the_gemma_terms():
    notice = (ROOT / "NOTICE").read_text()
    for needed in (
        "Gemma 3 270M",
        "Gemma Terms of Use",
        "https://ai.google.dev/gemma/terms",
        "https://ai.google.dev/gemma/prohibited_use_policy",
        # the notice text the Gemma Terms of Use (section 3.1) ask every distribution to carry
        "Gemma is provided under and subject to the Gemma Terms of Use found at "
        "ai.google.dev/gemma/terms.",
    ):
        assert needed in " ".join(notice.split()), needed
    adapter = sources.shipped_adapter_dir(sources.DEFAULT_MODEL) / "README.md"
    for text in ((ROOT / "README.md").read_text(), adapter.read_text()):
        assert "https://ai.google.dev/gemma/terms" in text
        assert "https://ai.google.dev/gemma/prohibited_use_policy" in text
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    assert "Copyright (c) 2026 llm2vec-retrieval developers" in (ROOT / "LICENSE").read_text()


def test_mypy_type_checks_a_user_snippet_against_the_wheel(core_wheel, tmp_path):
    """mypy on code that imports the installed package: no "missing library stubs or
    py.typed marker", and the package's annotations are used (a wrong one is an error)."""
    pytest.importorskip("mypy")
    env = tmp_path / "env"  # a bare environment holding only the wheel's files
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    core_wheel.extractall(site)
    (tmp_path / "user.py").write_text(
        "from llm2vec_retrieval import cache_dir\n\nwrong: int = cache_dir()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python), "--no-incremental"]
        + ["user.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "missing library stubs or py.typed marker" not in proc.stdout, proc.stdout
    assert 'user.py:3: error: Incompatible types in assignment (expression has type "Path"' in (
        proc.stdout
    ), proc.stdout
    assert "Found 1 error in 1 file" in proc.stdout, proc.stdout


@pytest.mark.parametrize("project", list(INTEGRATIONS))
def test_integration_wheels_ship_py_typed_and_license(project, tmp_path):
    wheel = pip_wheel(shutil.copytree(ROOT / project, tmp_path / "src", ignore=IGNORE), tmp_path)
    names = wheel.namelist()
    assert f"{INTEGRATIONS[project]}/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "\nLicense-Expression: MIT\n" in metadata(wheel)
    assert (ROOT / project / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


# The lint tools are pinned in the dev extra (pyproject says why): their findings and format
# change between releases, and `make lint` must give the same verdict on every machine.
LINT_TOOLS = ("ruff", "mypy")


@pytest.mark.parametrize("project", PROJECTS)
def test_extras_are_real_and_pin_nothing_exactly(project):
    meta = pyproject(project)["project"]
    assert isinstance(meta["license"], str) and meta["license-files"]  # SPDX, not a table
    for name, requirements in meta.get("optional-dependencies", {}).items():
        assert requirements, f"extra {name!r} installs nothing"
        for req in requirements:
            # a pin needs its reason in a comment, and this test told about it
            if name == "dev" and req.split("==")[0] in LINT_TOOLS:
                continue
            assert "==" not in req, f"extra {name!r} pins {req!r} exactly"


def test_no_invented_project_urls():
    """Only addresses the project already cites (it has no public repository yet)."""
    urls = pyproject("")["project"].get("urls", {})
    cited = (ROOT / "README.md").read_text() + (ROOT / "NOTICE").read_text()
    assert all(url in cited for url in urls.values()), urls


def test_sdist_holds_what_readme_links_to(tmp_path):
    """README.md's relative links resolve in the unpacked source distribution."""
    needs_setuptools()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to list the project's files")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    src = tmp_path / "src"
    for name in listed:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, src / name)
    code = "from setuptools import build_meta; print(build_meta.build_sdist(r'%s'))" % (
        tmp_path / "dist"
    )
    subprocess.run([sys.executable, "-c", code], cwd=src, check=True, capture_output=True)
    (sdist,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(sdist) as tar:
        members = {m.split("/", 1)[1] for m in tar.getnames() if "/" in m}
    links = re.findall(r"\]\(([^)#\s]+)", (ROOT / "README.md").read_text())
    relative = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert "docs/cli.md" in relative and "LICENSE" in relative and "NOTICE" in relative
    for link in relative:
        target = link.rstrip("/")
        assert target in members or any(m.startswith(target + "/") for m in members), link
