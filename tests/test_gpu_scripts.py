"""The GPU scripts of benchmarks/gpu run end to end on a CPU with --tiny (docs/gpu.md).

Real components: the scripts run as the subprocesses they are on a GPU machine, with tiny
random models (llm2vec_retrieval.testing), the real trainer and the real offline pip install.
The official llm2vec arm runs when its venv exists (benchmarks/.cache/venv-official or
$LLM2VEC_OFFICIAL_VENV, made by `python -m benchmarks.speed --impls official`), else the test
checks that the results say why it was skipped.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks.gpu import envs, flops, shapes
from benchmarks.speed import model_flops

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# ------------------------------------------------------------------------------ MFU
def test_peak_flops_by_device_name():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3") == 989.4e12  # how torch names the SXM card
    assert flops.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert flops.peak_flops("NVIDIA H200") == 989.4e12
    assert flops.peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert flops.peak_flops("Tesla T4") is None
    assert flops.peak_flops(None) is None


def test_throughput_counts_flops_and_mfu():
    cfg = json.loads((ROOT / "tests/fixtures/parity/mistral/config.json").read_text())
    lengths = [10, 30, 50]
    out = flops.throughput(cfg, lengths, seconds=2.0, peak=1e9)
    total = model_flops(cfg, lengths)["total"]
    assert out["tokens"] == 90 and out["tok_s"] == 45
    assert out["mfu"] == round(total / 2.0 / 1e9, 4)
    # 2 x non-embedding linear parameters per token, + attention: q,k,v,o + gated MLP
    d, heads, kv, head_dim, inter, layers = 32, 4, 2, 8, 64, 2
    linear = layers * (2 * d * heads * head_dim + 2 * d * kv * head_dim + 3 * d * inter)
    assert out["linear_params"] == linear
    assert out["flops_per_token"] > 2 * linear
    assert flops.throughput(cfg, lengths, 2.0, None)["mfu"] is None


# ------------------------------------------------------------------------------ shapes
def test_tiny_shape_tokenizer_loads_as_before(tmp_path):
    from transformers import AutoTokenizer

    from llm2vec_retrieval.testing import make_tiny_tokenizer

    folder = shapes.write_tiny_shape(tmp_path / "tiny", "mistral")
    tok_json = json.loads((folder / "tokenizer.json").read_text())
    assert all(isinstance(m, str) for m in tok_json["model"]["merges"])  # tokenizers < 0.20 form
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    loaded = AutoTokenizer.from_pretrained(folder)
    text = "Vaccines train the immune system; rivers flood in 2024."
    assert loaded(text)["input_ids"] == make_tiny_tokenizer()(text)["input_ids"]
    assert "token_type_ids" not in loaded(text)


# ------------------------------------------------------------------------------ envs
def _wheel(folder: Path, name: str, version: str = "1.0") -> Path:
    """A minimal pure-Python wheel holding module `name` (VALUE = 42)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return path


def _manifest(wheels: Path, python_version: str) -> None:
    (wheels / envs.MANIFEST).write_text(json.dumps({"python_version": python_version}))


def test_make_env_installs_carried_wheels_offline(tmp_path, monkeypatch):
    # the check imports what was installed (the real one imports torch & co., slow on a busy CPU)
    monkeypatch.setitem(envs.CHECKS, "ours", "import gpuprobe; assert gpuprobe.VALUE == 42")
    wheels = tmp_path / "wheels"
    (wheels / "ours").mkdir(parents=True)
    _wheel(wheels / "ours", "gpuprobe")
    _manifest(wheels, f"{sys.version_info.major}.{sys.version_info.minor}")
    env = envs.make_env("ours", wheels, tmp_path / "site", log=lambda _: None)
    assert env["python"] == sys.executable
    assert (tmp_path / "site" / "ours" / "gpuprobe.py").is_file()
    r = subprocess.run(
        [sys.executable, "-c", "import gpuprobe; print(gpuprobe.VALUE)"],
        env=envs.child_env(env["pythonpath"]),
        capture_output=True,
        text=True,
    )
    assert r.stdout.strip() == "42"
    # made once: the stamp says so, a second call reuses the folder
    stamp = json.loads((tmp_path / "site" / "ours" / ".made-from.json").read_text())
    assert stamp["files"] == ["gpuprobe-1.0-py3-none-any.whl"]
    assert envs.make_env("ours", wheels, tmp_path / "site", log=pytest.fail) == env


def test_make_env_names_a_module_the_machine_lacks(tmp_path, monkeypatch):
    monkeypatch.setitem(envs.CHECKS, "ours", "import gpuprobe, gpu_absent_dependency")
    wheels = tmp_path / "wheels"
    (wheels / "ours").mkdir(parents=True)
    _wheel(wheels / "ours", "gpuprobe")
    _manifest(wheels, f"{sys.version_info.major}.{sys.version_info.minor}")
    with pytest.raises(envs.EnvError) as err:
        envs.make_env("ours", wheels, tmp_path / "site", log=lambda _: None)
    assert "No module named 'gpu_absent_dependency'" in str(err.value)
    assert "--extra NAME" in str(err.value) and "\n" not in str(err.value)


def test_make_env_refuses_missing_or_mismatched_wheels(tmp_path):
    with pytest.raises(envs.EnvError, match="no manifest.json in .*benchmarks.gpu.wheels"):
        envs.make_env("ours", tmp_path, tmp_path / "site")
    _manifest(tmp_path, "2.7")
    with pytest.raises(envs.EnvError, match=r"wheels are for Python 2.7, this python is 3\."):
        envs.make_env("ours", tmp_path, tmp_path / "site")


def test_official_python_says_why_it_is_skipped(tmp_path):
    py, why = envs.official_python(str(tmp_path / "nowhere"))
    assert py is None and "no official llm2vec venv at" in why


def test_entry_points_import_without_third_party_packages():
    # the GPU machine starts them with a bare python3: the packages come with the wheels later
    blocked = ["torch", "transformers", "numpy", "peft", "llm2vec_retrieval", "llm2vec"]
    code = (
        "import sys\n"
        f"for m in {blocked!r}: sys.modules[m] = None\n"
        "import benchmarks.gpu.measure, benchmarks.gpu.recipe, benchmarks.gpu.wheels\n"
        "print('ok')"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


# ------------------------------------------------------------------------------ errors
def test_measure_names_what_is_missing(tmp_path):
    r = _run(["benchmarks.gpu.measure", "--out", str(tmp_path), "--shapes", str(tmp_path / "x")])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("error: missing shape folders")


def test_recipe_names_missing_data(tmp_path):
    r = _run(["benchmarks.gpu.recipe", "--out", str(tmp_path), "--data-dir", str(tmp_path / "d")])
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "missing data files under" in r.stderr
    assert "supervised-pairs/medquad.tsv" in r.stderr


# ------------------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_measure_tiny_end_to_end(tmp_path):
    r = _run(["benchmarks.gpu.measure", "--tiny", "--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_measure_*.json")
    result = json.loads(path.read_text())
    assert result["command"].startswith("python3 -m benchmarks.gpu.measure --tiny")
    assert "cpu_flags" in result["machine"]
    rows = result["rows"]
    for model in ("tiny-gemma3", "tiny-llama"):
        impls = {r["impl"] for r in rows if r["model"] == model}
        assert impls == {"ours", "bare"}
    mistral = [r for r in rows if r["model"] == "tiny-mistral"]
    for row in rows:
        assert row["tok_s"] > 0 and row["s_best"] > 0
        assert row["mfu"] is None  # no known peak on a CPU
        assert row["x_best_reference"] is None or row["x_best_reference"] > 0
    # the token counts behind tokens/s: every text's tokens, the same for both arms
    for name, m in result["models"].items():
        assert m["docs"] == (12 if name == "tiny-mistral" else 24) and m["tokens"] > m["docs"]
    if result["arms"]["official"].get("skipped"):
        assert "official llm2vec venv" in result["arms"]["official"]["skipped"]
        assert {r["impl"] for r in mistral} == {"ours"}
    else:
        assert {r["impl"] for r in mistral} == {"ours", "official"}
        assert result["official"]["transformers"] == "4.44.2"
        assert result["official"]["model_class"] == "MistralBiModel"
    assert (path.with_suffix(".md")).read_text().count("| tiny-") == len(rows)


@pytest.mark.slow
def test_recipe_tiny_end_to_end(tmp_path):
    r = _run(["benchmarks.gpu.recipe", "--tiny", "--out", str(tmp_path)])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (path,) = tmp_path.glob("gpu_recipe_*.json")
    result = json.loads(path.read_text())
    phases = result["phases"]
    assert list(phases) == ["prepare_data", "score_start", "probe", "train", "score_trained"]
    assert phases["prepare_data"]["shippable"] is True
    counts = phases["prepare_data"]["counts"]
    assert counts["medquad"]["dev"] == 300 and counts["medquad"]["train"] == 30
    assert phases["probe"]["step_s"] > 0 and phases["probe"]["one_pass_steps"] == 39
    assert phases["train"]["steps"] == 3 == result["settings"]["max_steps"]
    keys = {"stsb_dev", "retrieval_dev_mean", "dev_score", "medquad_ndcg@10"}
    assert keys <= set(result["dev_before"]) and keys <= set(result["dev_after"])
    # the trained adapter was applied: the scores moved
    assert result["dev_after"] != result["dev_before"]
    assert set(result["dev_delta"]) == set(result["dev_after"])
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
