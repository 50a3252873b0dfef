"""Speed benchmark: encoding throughput, roofline, memory and index build time, vs the official llm2vec.

    python -m benchmarks.speed                                  # SmolLM2-135M base, first 32 SciFact docs
    python -m benchmarks.speed --impls ours,official --dtypes float32 --repeats 5
    python -m benchmarks.speed --full                           # the whole SciFact corpus (5183 docs)
    python -m benchmarks.speed --official-venv /tmp/offvenv     # an existing venv with llm2vec 0.2.3

Implementations (--impls), each in its own persistent worker process (benchmarks/_workers/):
  ours                   llm2vec_retrieval LLM2Vec.from_pretrained(dtype=...).encode_documents
  official               llm2vec 0.2.3 in its own venv (transformers 4.44.2), same model folder,
                         LLM2Vec.from_pretrained(folder, torch_dtype=...).encode(docs, batch_size=...)
  sentence-transformers  Transformer(folder) + Pooling(mean) with config.is_causal = False (probed)
  hf-bare                bare transformers forward, length-sorted token-budget batches (a reference)

Model: the untrained SmolLM2-135M-Instruct base (`REFERENCE_MODEL`), not the shipped default
(Gemma 3 270M + adapter): the official llm2vec needs transformers 4.44.2, which has no Gemma 3.
A merged LoRA adapter does not change the compute, so the base is what speed depends on.

Method:
- Documents: the first N SciFact documents (title + " " + text), each cut to doc_max_length = 400
  tokens by our tokenizer *before* it is given to any implementation, so that all of them do
  the same work. tokens/s = (sum of the documents' token counts: our tokenizer, special tokens
  included) / encode time, for every implementation: it counts useful tokens, not padding.
- Each worker loads once, warms up on a few documents, then the measurements are interleaved
  (repeat 1: ours, official, ...; repeat 2: the order rotated; ...) so that the ratios hold on
  a noisy machine. Reported: the median and every repeat. Same torch thread count everywhere.
- Memory: ru_maxrss of the worker (peak RSS since its start) after loading and after encoding,
  and the RSS increase during an encode call, sampled by the parent with psutil every 10 ms.
- Roofline: the best FLOP/s of torch matmuls (a square one and the model's own linear shapes)
  per dtype, measured in a worker with the same settings; the model's FLOPs are counted from
  its config (2 x non-embedding linear parameters per token, + 4 x T x heads x head_dim per
  token per layer for QK^T and AV, real lengths, no lm_head); roofline % = achieved / peak.
- Agreement: cosine of each implementation's vectors with ours on the benchmark documents
  (fp32 must exceed 0.999).
- Index build: encode + add into a fresh vector store (ours: IndexStore flat, and the LangChain
  LLM2VecVectorStore; LangChain: HuggingFaceEmbeddings + community FAISS on the same folder).

The official venv is created when missing (--official-venv DIR, default
benchmarks/.cache/venv-official or $LLM2VEC_OFFICIAL_VENV): python -m venv, then torch pinned to
this venv's version, then llm2vec==0.2.3 transformers==4.44.2 peft. --no-install skips it instead.

Writes benchmarks/results/speed_<timestamp>.json and prints a table.
"""

from __future__ import annotations

import argparse
import base64
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
WORKERS_DIR = Path(__file__).resolve().parent / "_workers"
DEFAULT_OFFICIAL_VENV = PROJECT_ROOT / "benchmarks" / ".cache" / "venv-official"
OFFICIAL_VENV_ENV = "LLM2VEC_OFFICIAL_VENV"
OFFICIAL_PACKAGES = ("llm2vec==0.2.3", "transformers==4.44.2", "peft")

IMPLS = ("ours", "official", "sentence-transformers", "hf-bare")
INDEX_IMPLS = ("ours-indexstore", "ours-langchain", "langchain-hf-faiss")
DEFAULT_N_DOCS = 32
DOC_MAX_LENGTH = 400
MAX_LENGTH = 512
AGREEMENT_MIN_COS = 0.999

REFERENCE_MODEL = "smollm2-135m-instruct"  # the model official llm2vec 0.2.3 can also run


# ----------------------------------------------------------------------------------- FLOPs
def text_config(config: dict) -> dict:
    """The language-model part of a (possibly multimodal) config.json dict."""
    return config.get("text_config") or config


def _dims(config: dict) -> tuple[int, int, int, int, int]:
    """hidden size, attention heads, key/value heads, head dim, MLP size of the text model."""
    c = text_config(config)
    d = int(c["hidden_size"])
    heads = int(c["num_attention_heads"])
    kv = int(c.get("num_key_value_heads") or heads)
    return d, heads, kv, int(c.get("head_dim") or d // heads), int(c["intermediate_size"])


def linear_params_per_layer(config: dict) -> int:
    """Weights of q, k, v, o, gate, up, down in one decoder layer (biases left out)."""
    d, heads, kv, head_dim, inter = _dims(config)
    q = d * heads * head_dim
    k = v = d * kv * head_dim
    o = heads * head_dim * d
    mlp = 3 * d * inter  # gated MLP (llama, mistral, qwen, gemma): gate, up, down
    return q + k + v + o + mlp


def model_flops(config: dict, lengths: Sequence[int]) -> dict:
    """Forward FLOPs of encoding sequences of the given lengths (multiply-add = 2 FLOPs).

    Per token: 2 x non-embedding linear parameters; per layer and sequence of length T:
    4 x T^2 x heads x head_dim for QK^T and AV. No lm_head (encoders stop at the last
    hidden state); norms, activations, softmax and RoPE are left out.
    """
    layers = int(text_config(config)["num_hidden_layers"])
    _, heads, _, head_dim, _ = _dims(config)
    per_layer = linear_params_per_layer(config)
    tokens = int(sum(lengths))
    linear = 2 * per_layer * layers * tokens
    attention = sum(4 * t * t * heads * head_dim * layers for t in lengths)
    return {
        "tokens": tokens,
        "linear_params": per_layer * layers,
        "linear": linear,
        "attention": attention,
        "total": linear + attention,
        "per_token": (linear + attention) / tokens if tokens else 0.0,
    }


def matmul_shapes(config: dict, tokens: int = 4096, square: int = 2048) -> list[list[int]]:
    """(m, k, n) shapes for the peak: one square matmul and the model's linear layers on `tokens` rows."""
    d, heads, kv, head_dim, inter = _dims(config)
    shapes = [[square, square, square]] if square else []
    shapes += [
        [tokens, d, heads * head_dim],
        [tokens, d, kv * head_dim],
        [tokens, heads * head_dim, d],
        [tokens, d, inter],
        [tokens, inter, d],
    ]
    seen, out = set(), []
    for s in shapes:
        if tuple(s) not in seen:
            seen.add(tuple(s))
            out.append(s)
    return out


# ------------------------------------------------------------------------------------ data
def load_documents(corpus: Path, n: int | None) -> tuple[list[str], list[str]]:
    """The first `n` documents of a BEIR corpus.jsonl (all if None): ids and title + " " + text."""
    from llm2vec_retrieval.evaluation.data import doc_text

    ids, texts = [], []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            ids.append(str(doc["_id"]))
            texts.append(doc_text(doc))
            if n is not None and len(texts) >= n:
                break
    return ids, texts


def prepare_texts(
    tokenizer,
    texts: Sequence[str],
    doc_max_length: int = DOC_MAX_LENGTH,
    max_length: int = MAX_LENGTH,
) -> tuple[list[str], list[int], int]:
    """Cut each text to `doc_max_length` tokens (at a token boundary, as our encoder does) and count
    its tokens with special tokens (capped at `max_length`). Returns (texts, counts, number cut)."""
    out = list(texts)
    raw = tokenizer(out, add_special_tokens=False, return_offsets_mapping=True)
    cut = 0
    for i, ids in enumerate(raw["input_ids"]):
        if len(ids) > doc_max_length:
            out[i] = out[i][: raw["offset_mapping"][i][doc_max_length - 1][1]]
            cut += 1
    counts = [
        min(len(ids), max_length) for ids in tokenizer(out, add_special_tokens=True)["input_ids"]
    ]
    return out, counts, cut


# --------------------------------------------------------------------------------- workers
class WorkerError(RuntimeError):
    pass


class Worker:
    """A persistent worker subprocess speaking JSON lines (see _workers/protocol.py)."""

    def __init__(
        self,
        name: str,
        python: str,
        script: Path,
        args: list[str],
        env: dict,
        log_dir: Path,
        ready_timeout: float = 1800.0,
    ):
        self.name = name
        self.log_path = log_dir / f"{name.replace('/', '_')}.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [python, str(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
            cwd=str(PROJECT_ROOT),
        )
        self.ready = self._read(timeout=ready_timeout)
        if not self.ready.get("ok"):
            self.close()
            raise WorkerError(
                f"{name}: {self.ready.get('error')}\n{self.ready.get('traceback', '')}{self.log_tail()}"
            )

    def log_tail(self, n: int = 30) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n--- worker log (tail) ---\n" + "\n".join(lines) if lines else ""

    def _read(self, timeout: float | None = None) -> dict:
        result: dict = {}

        def reader():
            result["line"] = self.proc.stdout.readline()

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        t.join(timeout)
        if t.is_alive():
            self.proc.kill()
            raise WorkerError(f"{self.name}: no answer within {timeout:.0f} s{self.log_tail()}")
        line = result.get("line") or ""
        if not line:
            raise WorkerError(
                f"{self.name}: worker exited (code {self.proc.poll()}){self.log_tail()}"
            )
        return json.loads(line)

    def request(self, obj: dict, sample_memory: bool = False, timeout: float | None = None) -> dict:
        stop = threading.Event()
        samples: list[float] = []
        sampler = None
        if sample_memory:
            try:
                import psutil

                proc = psutil.Process(self.proc.pid)

                def sample():
                    while not stop.is_set():
                        try:
                            samples.append(proc.memory_info().rss / 2**20)
                        except psutil.Error:
                            return
                        stop.wait(0.01)

                sampler = threading.Thread(target=sample, daemon=True)
            except ImportError:
                sampler = None
        if sampler:
            sampler.start()
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()
        try:
            reply = self._read(timeout)
        finally:
            stop.set()
            if sampler:
                sampler.join()
        if not reply.get("ok"):
            raise WorkerError(f"{self.name}: {reply.get('error')}\n{reply.get('traceback', '')}")
        if samples:
            reply["rss_sampled_peak_mb"] = max(samples)
            reply["rss_sampled_start_mb"] = samples[0]
            reply["rss_samples"] = len(samples)
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def worker_env(threads: int, extra_pythonpath: list[str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env.update(
        {
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "OPENBLAS_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TRANSFORMERS_VERBOSITY": "error",
            "PYTHONWARNINGS": "ignore",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(extra_pythonpath)
    return env


def decode_array(obj: dict):
    import numpy as np

    return np.frombuffer(base64.b64decode(obj["b64"]), dtype=np.float32).reshape(obj["shape"])


# ---------------------------------------------------------------------------- official venv
def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def official_venv_ok(venv: Path) -> bool:
    py = _venv_python(venv)
    if not py.exists():
        return False
    r = subprocess.run(
        [str(py), "-c", "import llm2vec, transformers, torch"], capture_output=True, text=True
    )
    return r.returncode == 0


def ensure_official_venv(venv: Path, install: bool = True, torch_spec: str | None = None) -> Path:
    """The official llm2vec 0.2.3 venv's python, created when missing (torch first, pinned)."""
    if official_venv_ok(venv):
        return _venv_python(venv)
    if not install:
        raise FileNotFoundError(
            f"official llm2vec venv not found at {venv} (run without --no-install to create it)"
        )
    if torch_spec is None:
        torch_spec = f"torch=={_md.version('torch').split('+')[0]}"
    print(
        f"creating the official llm2vec venv at {venv} ({torch_spec}, {' '.join(OFFICIAL_PACKAGES)}) ...",
        flush=True,
    )
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    steps = [
        [base, "-m", "venv", str(venv)],
        [
            str(_venv_python(venv)),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            torch_spec,
        ],
        [
            str(_venv_python(venv)),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *OFFICIAL_PACKAGES,
        ],
    ]
    for cmd in steps:
        print("  $ " + shlex.join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    if not official_venv_ok(venv):
        raise RuntimeError(f"the official venv at {venv} was created but cannot import llm2vec")
    return _venv_python(venv)


# ----------------------------------------------------------------------------------- machine
def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def default_threads() -> int:
    """All cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def result_header(benchmark: str, argv, started) -> dict:
    """The first keys of a benchmark's result file: its name, the command that ran it
    (``python -m benchmarks.<benchmark>`` + ``argv``, else ``sys.argv[1:]``), the start time
    and the machine."""
    args = argv if argv is not None else sys.argv[1:]
    return {
        "benchmark": benchmark,
        "command": shlex.join(["python", "-m", f"benchmarks.{benchmark}", *args]),
        "started": started.isoformat(timespec="seconds"),
        "machine": machine_info(),
    }


def machine_info() -> dict:
    info: dict = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            cpuinfo = f.read()
        models = [
            ln.split(":", 1)[1].strip()
            for ln in cpuinfo.splitlines()
            if ln.startswith("model name")
        ]
        info["cpu_model"] = models[0] if models else None
        flags = next(
            (ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")),
            [],
        )
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        info["cpu_model"] = platform.processor() or None
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:
        pass
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        info["physical_cores"] = psutil.cpu_count(logical=False)
    except ImportError:
        pass
    if hasattr(os, "getloadavg"):
        info["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    for dist in (
        "torch",
        "transformers",
        "sentence-transformers",
        "numpy",
        "faiss-cpu",
        "langchain-core",
        "langchain-community",
        "langchain-huggingface",
        "llm2vec",
    ):
        info[dist] = _version(dist)
    return info


# ------------------------------------------------------------------------------------ CLI
def _split(value: str, valid: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad}; valid: {', '.join(valid)}")
    return items


def parse_args(argv=None):
    doc = __doc__ or ""
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.speed",
        description=doc.split("\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated, from {', '.join(IMPLS)}"
    )
    p.add_argument(
        "--dtypes", default="float32,bfloat16", help="comma-separated (default float32,bfloat16)"
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"checkpoint folder (default: the cached {REFERENCE_MODEL} base)",
    )
    p.add_argument(
        "--n-docs",
        type=int,
        default=DEFAULT_N_DOCS,
        help=f"first N SciFact documents (default {DEFAULT_N_DOCS})",
    )
    p.add_argument("--full", action="store_true", help="the whole corpus")
    p.add_argument(
        "--corpus",
        default=None,
        help="a BEIR corpus.jsonl (default: <data dir>/scifact/corpus.jsonl)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="data folder (default: $LLM2VEC_DATA_DIR or ../shared/data)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in every worker (default: all cores)",
    )
    p.add_argument(
        "--repeats", type=int, default=3, help="timed repeats per implementation (default 3)"
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=32,
        help="rows per batch for every implementation (default 32)",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="our encoder's token budget per forward pass (default: the encoder's, 4096)",
    )
    p.add_argument(
        "--warmup-docs",
        type=int,
        default=4,
        help="documents encoded once before timing (default 4)",
    )
    p.add_argument(
        "--pause", type=float, default=0.5, help="seconds between measurements (default 0.5)"
    )
    p.add_argument(
        "--official-venv",
        default=None,
        help=f"venv with llm2vec 0.2.3 (default ${OFFICIAL_VENV_ENV} or {DEFAULT_OFFICIAL_VENV.relative_to(PROJECT_ROOT)})",
    )
    p.add_argument(
        "--no-install",
        action="store_true",
        help="skip `official` if its venv is missing instead of creating it",
    )
    p.add_argument(
        "--official-torch",
        default=None,
        help="torch requirement for a new official venv (default: torch==<ours>)",
    )
    p.add_argument("--no-roofline", action="store_true", help="skip the matmul peak measurement")
    p.add_argument(
        "--peak-square", type=int, default=2048, help="square matmul size for the peak (0: none)"
    )
    p.add_argument(
        "--peak-tokens",
        type=int,
        default=4096,
        help="rows of the model-shaped matmuls for the peak",
    )
    p.add_argument(
        "--index-impls",
        default=",".join(INDEX_IMPLS),
        help=f"index build: comma-separated from {', '.join(INDEX_IMPLS)}; '' to skip",
    )
    p.add_argument(
        "--index-dtype", default="float32", help="dtype of the index-build runs (default float32)"
    )
    p.add_argument(
        "--output",
        default=None,
        help="JSON path (default benchmarks/results/speed_<timestamp>.json)",
    )
    p.add_argument(
        "--keep-logs", action="store_true", help="keep the workers' logs (their folder is printed)"
    )
    args = p.parse_args(argv)
    dtypes = float_dtypes()
    try:
        args.impls = _split(args.impls, IMPLS, "implementation")
        args.dtypes = _split(args.dtypes, dtypes, "dtype")
        args.index_impls = _split(args.index_impls, INDEX_IMPLS, "index implementation")
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    if args.index_dtype not in dtypes:
        p.error(f"--index-dtype must be one of {', '.join(dtypes)}")
    return args


def float_dtypes() -> tuple[str, ...]:
    """The dtypes this benchmark runs: the float ones of the one dtype table
    (`llm2vec_retrieval.hardware.DTYPES`). int8 quantizes our encoder only (the other
    implementations have no int8 path): benchmarks/int8.py measures it. Imported here, not
    at the top: the GPU scripts import this module without the package (tests/test_gpu_scripts.py)."""
    from llm2vec_retrieval.hardware import DTYPES

    return tuple(name for name in DTYPES if name != "int8")


def _median(xs):
    return statistics.median(xs) if xs else None


def _fmt(x, spec):
    return format(x, spec) if isinstance(x, (int, float)) else "-"


def run_group(
    specs: list[tuple[str, str, Path, list[str], dict]],
    args,
    texts,
    log_dir: Path,
    op: str,
    want_vectors: bool = False,
    setup=None,
) -> dict:
    """Start one worker per spec, warm each up, then run `args.repeats` interleaved timed `op` requests.

    `setup(name, worker, row)`, if given, runs once per loaded worker after its warm-up (untimed).
    """
    rows: dict[str, dict] = {}
    workers: dict[str, Worker] = {}
    try:
        for name, python, script, wargs, env in specs:
            print(f"  loading {name} ...", flush=True)
            try:
                w = Worker(name, python, script, wargs, env, log_dir)
            except (WorkerError, OSError) as e:
                print(f"  {name}: FAILED to load: {str(e).splitlines()[0]}", flush=True)
                rows[name] = {"status": "error", "error": str(e)[-4000:]}
                continue
            workers[name] = w
            rows[name] = {
                "status": "ok",
                "load_s": w.ready["load_s"],
                "info": w.ready.get("info", {}),
                "memory": {
                    "rss_after_load_mb": w.ready.get("rss_mb"),
                    "maxrss_after_load_mb": w.ready.get("maxrss_mb"),
                },
                "repeats_s": [],
                "order": [],
            }
            try:
                st = w.request({"op": "set_texts", "texts": texts})
                if "tokens_seen" in st:
                    rows[name]["tokens_seen"] = st["tokens_seen"]
                warm = w.request(
                    {
                        "op": op,
                        "limit": min(args.warmup_docs, len(texts)),
                        "batch_size": args.batch_size,
                    }
                )
                rows[name]["warmup_s"] = warm["seconds"]
                if setup is not None:
                    setup(name, w, rows[name])
            except WorkerError as e:
                rows[name] = {"status": "error", "error": str(e)[-4000:]}
                workers.pop(name).close()
        names = list(workers)
        for rep in range(args.repeats):
            order = names[rep % len(names) :] + names[: rep % len(names)] if names else []
            for pos, name in enumerate(order):
                if rows[name]["status"] != "ok":
                    continue
                time.sleep(args.pause)
                req = {"op": op, "batch_size": args.batch_size}
                if want_vectors and rep == 0:
                    req["return_vectors"] = True
                try:
                    r = workers[name].request(req, sample_memory=True)
                except WorkerError as e:
                    rows[name].update({"status": "error", "error": str(e)[-4000:]})
                    continue
                if "vectors" in r:
                    rows[name]["_vectors"] = decode_array(r.pop("vectors"))
                rows[name]["repeats_s"].append(r["seconds"])
                rows[name]["order"].append(pos)
                for key in ("encode_s", "add_s"):
                    if key in r:
                        rows[name].setdefault(key + "_repeats", []).append(r[key])
                mem = rows[name]["memory"]
                mem["maxrss_after_encode_mb"] = r.get("maxrss_after_mb")
                if r.get("rss_sampled_peak_mb") is not None:
                    delta = r["rss_sampled_peak_mb"] - (
                        r.get("rss_before_mb") or r["rss_sampled_start_mb"]
                    )
                    mem["encode_rss_delta_mb"] = max(mem.get("encode_rss_delta_mb", 0.0), delta)
                    mem["rss_sampled_peak_mb"] = max(
                        mem.get("rss_sampled_peak_mb", 0.0), r["rss_sampled_peak_mb"]
                    )
                print(f"  rep {rep + 1}/{args.repeats} {name}: {r['seconds']:.2f} s", flush=True)
    finally:
        for w in workers.values():
            w.close()
    return rows


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    started = _dt.datetime.now()
    machine = machine_info()
    threads = args.threads or default_threads()

    from transformers import AutoTokenizer

    from llm2vec_retrieval import sources
    from llm2vec_retrieval.evaluation.data import default_data_dir

    model_path = (
        str(Path(args.model).resolve())
        if args.model
        else sources.resolve_model_path(REFERENCE_MODEL)
    )
    config = json.loads((Path(model_path) / "config.json").read_text())
    corpus = (
        Path(args.corpus)
        if args.corpus
        else Path(args.data_dir or default_data_dir()) / "scifact" / "corpus.jsonl"
    )
    n_docs = None if args.full else args.n_docs
    doc_ids, raw_texts = load_documents(corpus, n_docs)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts, counts, n_cut = prepare_texts(tokenizer, raw_texts)
    flops = model_flops(config, counts)
    tokens = flops["tokens"]
    print(
        f"model {model_path}\n{len(texts)} documents from {corpus}: {tokens} tokens "
        f"(mean {tokens / max(len(texts), 1):.0f}, max {max(counts, default=0)}; {n_cut} cut to {DOC_MAX_LENGTH}); "
        f"{flops['total'] / 1e9:.1f} GFLOP; {threads} threads",
        flush=True,
    )

    main_py = sys.executable
    main_env = worker_env(threads, [str(PROJECT_ROOT)])
    encode_script = WORKERS_DIR / "encode_worker.py"
    index_script = WORKERS_DIR / "index_worker.py"
    common = [
        "--model",
        model_path,
        "--threads",
        str(threads),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.max_batch_tokens:
        common += ["--max-batch-tokens", str(args.max_batch_tokens)]

    official_python, official_error = None, None
    if "official" in args.impls:
        venv = Path(
            args.official_venv or os.environ.get(OFFICIAL_VENV_ENV) or DEFAULT_OFFICIAL_VENV
        )
        try:
            official_python = str(
                ensure_official_venv(
                    venv, install=not args.no_install, torch_spec=args.official_torch
                )
            )
        except Exception as e:  # noqa: BLE001 - record and go on without it
            official_error = f"{type(e).__name__}: {e}"
            print(f"official: skipped ({official_error})", flush=True)

    log_dir = Path(tempfile.mkdtemp(prefix="bench_speed_logs_"))
    roofline: dict = {}
    results: list[dict] = []
    agreement: dict = {}
    token_check = None
    for dtype in args.dtypes:
        print(f"\n== {dtype} ==", flush=True)
        specs = []
        for impl in args.impls:
            if impl == "official":
                if official_python is None:
                    results.append(
                        {"impl": impl, "dtype": dtype, "status": "skipped", "error": official_error}
                    )
                    continue
                specs.append(
                    (
                        impl,
                        official_python,
                        encode_script,
                        ["--impl", impl, "--dtype", dtype, *common],
                        worker_env(threads),
                    )
                )
            else:
                specs.append(
                    (
                        impl,
                        main_py,
                        encode_script,
                        [
                            "--impl",
                            impl,
                            "--dtype",
                            dtype,
                            "--project-root",
                            str(PROJECT_ROOT),
                            *common,
                        ],
                        main_env,
                    )
                )

        def setup(name, worker, row, dtype=dtype):
            nonlocal token_check
            lengths = None
            if name == "ours" and token_check is None:
                try:
                    lengths = worker.request({"op": "tokenize"})["lengths"]
                except WorkerError as e:
                    lengths, token_check = None, {"error": str(e)[-2000:]}
            if name == "ours" and token_check is None and lengths is not None:
                token_check = {
                    "ours_tokens": sum(lengths),
                    "counted_tokens": sum(counts),
                    "equal": lengths == list(counts),
                    "n_different": sum(a != b for a, b in zip(lengths, counts, strict=False)),
                }
            if not args.no_roofline and dtype not in roofline:  # in the first worker that loads
                shapes = matmul_shapes(config, args.peak_tokens, args.peak_square)
                try:
                    rows_ = worker.request({"op": "peak", "shapes": shapes}, timeout=1800)["rows"]
                except WorkerError as e:
                    roofline[dtype] = {"error": str(e)[-2000:], "measured_in": name}
                    return
                peak = max(r["flops_per_s"] for r in rows_)
                roofline[dtype] = {
                    "peak_flops_per_s": peak,
                    "measured_in": name,
                    "rows": rows_,
                    "square_flops_per_s": rows_[0]["flops_per_s"] if args.peak_square else None,
                }
                print(
                    f"  matmul peak {dtype} (in the {name} worker): {peak / 1e9:.1f} GFLOP/s",
                    flush=True,
                )

        rows = run_group(specs, args, texts, log_dir, "encode", want_vectors=True, setup=setup)
        agreement[dtype] = _agreement(rows)
        for impl, row in rows.items():
            row.pop("_vectors", None)
            results.append(
                _summarize(
                    impl, dtype, row, len(texts), tokens, flops["total"], roofline.get(dtype)
                )
            )
    _ratios(results, "official", "ratio_vs_official")

    index_build = None
    if args.index_impls:
        print(f"\n== index build ({args.index_dtype}) ==", flush=True)
        specs = [
            (
                impl,
                main_py,
                index_script,
                [
                    "--impl",
                    impl,
                    "--dtype",
                    args.index_dtype,
                    "--project-root",
                    str(PROJECT_ROOT),
                    *common,
                ],
                main_env,
            )
            for impl in args.index_impls
        ]
        rows = run_group(specs, args, texts, log_dir, "build")
        index_rows = []
        for impl, row in rows.items():
            s = _summarize(impl, args.index_dtype, row, len(texts), tokens, None, None)
            for key in ("encode_s", "add_s"):
                if row.get(key + "_repeats"):
                    s[key + "_median"] = _median(row[key + "_repeats"])
            if "tokens_seen" in row:
                s["tokens_seen_by_model"] = row["tokens_seen"]
            index_rows.append(s)
        _ratios(index_rows, "langchain-hf-faiss", "speedup_vs_langchain", by_dtype=False)
        index_build = {
            "dtype": args.index_dtype,
            "n_docs": len(texts),
            "results": index_rows,
            "note": (
                "ours: bidirectional LLM2Vec, mean pooling over the text; langchain-hf-faiss: HuggingFaceEmbeddings "
                "on the same folder, i.e. sentence-transformers' own wrapping (causal attention, mean pooling; "
                "sentence-transformers >= 6 also applies the model's chat template, so it processes "
                "tokens_seen_by_model tokens, not the documents' token count). Bidirectional attention is not "
                "needed for this timing: it costs the same FLOPs."
            ),
        }

    finished = _dt.datetime.now()
    if hasattr(os, "getloadavg"):
        machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    machine["torch_threads_per_worker"] = threads
    report = {
        "benchmark": "speed",
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "wall_s": (finished - started).total_seconds(),
        "command": shlex.join(
            [
                Path(sys.executable).name,
                "-m",
                "benchmarks.speed",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "cwd": os.getcwd(),
        "machine": machine,
        "options": {k: v for k, v in vars(args).items()},
        "model": {
            "path": model_path,
            "name": config.get("_name_or_path"),
            "model_type": text_config(config).get("model_type"),
            "hidden_size": text_config(config).get("hidden_size"),
            "num_hidden_layers": text_config(config).get("num_hidden_layers"),
            "linear_params": flops["linear_params"],
        },
        "data": {
            "corpus": str(corpus.resolve()),
            "n_docs": len(texts),
            "first_id": doc_ids[0] if doc_ids else None,
            "last_id": doc_ids[-1] if doc_ids else None,
            "tokens": tokens,
            "tokens_mean": tokens / max(len(texts), 1),
            "tokens_max": max(counts, default=0),
            "n_cut_to_doc_max_length": n_cut,
            "doc_max_length": DOC_MAX_LENGTH,
            "token_counts": "our tokenizer, special tokens included",
        },
        "flops": {k: v for k, v in flops.items()},
        "roofline": roofline,
        "results": results,
        "agreement": agreement,
        "agreement_threshold": AGREEMENT_MIN_COS,
        "token_count_check": token_check,
        "index_build": index_build,
        "official_venv": {"python": official_python, "error": official_error},
    }
    out = (
        Path(args.output)
        if args.output
        else RESULTS_DIR / f"speed_{started.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(report)
    if args.keep_logs:
        print(f"worker logs: {log_dir}")
    else:
        import shutil

        shutil.rmtree(log_dir, ignore_errors=True)
    print(f"\nwrote {out}")
    failed = any(r["status"] == "error" for r in results)
    bad_agreement = any(
        v.get("ok") is False for d, a in agreement.items() if d == "float32" for v in a.values()
    )
    return 1 if failed or bad_agreement else 0


def _agreement(rows: dict) -> dict:
    import numpy as np

    ref = rows.get("ours", {}).get("_vectors")
    if ref is None:
        return {}
    out = {}
    a = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-12)
    for impl, row in rows.items():
        v = row.get("_vectors")
        if impl == "ours" or v is None or v.shape != ref.shape:
            continue
        b = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        cos = (a * b).sum(axis=1)
        out[impl] = {
            "min_cos": float(cos.min()),
            "mean_cos": float(cos.mean()),
            "ok": bool(cos.min() > AGREEMENT_MIN_COS),
            "n": int(len(cos)),
        }
    return out


def _summarize(impl, dtype, row, n_docs, tokens, total_flops, roof) -> dict:
    s = {"impl": impl, "dtype": dtype, "status": row.get("status", "error")}
    if s["status"] != "ok" or not row.get("repeats_s"):
        s["status"] = "error" if s["status"] == "ok" else s["status"]
        s["error"] = row.get("error") or "no successful repeat"
        return s
    med = _median(row["repeats_s"])
    s.update(
        {
            "load_s": row.get("load_s"),
            "warmup_s": row.get("warmup_s"),
            "repeats_s": row["repeats_s"],
            "order": row.get("order"),
            "median_s": med,
            "min_s": min(row["repeats_s"]),
            "docs_per_s": n_docs / med,
            "tokens_per_s": tokens / med,
            "memory": row.get("memory"),
            "info": row.get("info"),
        }
    )
    if total_flops:
        s["achieved_flops_per_s"] = total_flops / med
        peak = (roof or {}).get("peak_flops_per_s")
        if peak:
            s["roofline_pct"] = 100.0 * s["achieved_flops_per_s"] / peak
    if row.get("status") == "error":
        s["error"] = row.get("error")
    return s


def _ratios(rows: list[dict], baseline: str, key: str, by_dtype: bool = True) -> None:
    base = {
        r["dtype"] if by_dtype else None: r["median_s"]
        for r in rows
        if r["impl"] == baseline and r.get("median_s")
    }
    for r in rows:
        b = base.get(r["dtype"] if by_dtype else None)
        if r.get("median_s") and b:
            r[key] = b / r["median_s"]  # > 1: faster than the baseline


def print_table(report: dict) -> None:
    print(
        "\n| impl | dtype | tokens/s | docs/s | vs official | roofline % | median s | repeats s | peak RSS MiB | encode ΔRSS MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in report["results"]:
        if r.get("status") != "ok":
            print(
                f"| {r['impl']} | {r['dtype']} | {r['status']}: {str(r.get('error', '')).splitlines()[0][:80] if r.get('error') else ''} |||||||"
            )
            continue
        mem = r.get("memory") or {}
        print(
            f"| {r['impl']} | {r['dtype']} | {r['tokens_per_s']:.0f} | {r['docs_per_s']:.2f} | "
            f"{_fmt(r.get('ratio_vs_official'), '.2f')} | {_fmt(r.get('roofline_pct'), '.1f')} | {r['median_s']:.2f} | "
            f"{', '.join(f'{x:.2f}' for x in r['repeats_s'])} | {_fmt(mem.get('maxrss_after_encode_mb'), '.0f')} | "
            f"{_fmt(mem.get('encode_rss_delta_mb'), '.0f')} |"
        )
    for dtype, agr in report.get("agreement", {}).items():
        for impl, a in agr.items():
            print(
                f"agreement {dtype} ours vs {impl}: min cos {a['min_cos']:.6f}, mean {a['mean_cos']:.6f} "
                f"({'ok' if a['ok'] else 'BELOW ' + str(AGREEMENT_MIN_COS)})"
            )
    ib = report.get("index_build")
    if ib:
        print(f"\nindex build ({ib['dtype']}, {ib['n_docs']} docs):")
        for r in ib["results"]:
            if r.get("status") != "ok":
                print(
                    f"  {r['impl']}: {r['status']}: {str(r.get('error', '')).splitlines()[0][:100] if r.get('error') else ''}"
                )
                continue
            print(
                f"  {r['impl']}: median {r['median_s']:.2f} s ({r['docs_per_s']:.2f} docs/s), "
                f"x{_fmt(r.get('speedup_vs_langchain'), '.2f')} vs langchain-hf-faiss"
            )


if __name__ == "__main__":
    sys.exit(main())
