"""Fast tests of the speed harness and the report generator (benchmarks/speed.py, benchmarks/report.py)."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import report, speed

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "model_type": "llama",
}


def test_flops_by_hand():
    # one layer: q 32*32 + k 32*16 + v 32*16 + o 32*32 + gate/up/down 3*32*64 = 9216 weights
    assert speed.linear_params_per_layer(TINY) == 9216
    f = speed.model_flops(TINY, [10, 3])
    assert f["tokens"] == 13
    assert f["linear"] == 2 * 9216 * 2 * 13  # 2 FLOPs per weight per token, 2 layers
    assert (
        f["attention"] == 4 * (10 * 10 + 3 * 3) * 4 * 8 * 2
    )  # QK^T + AV: 4 T^2 heads head_dim per layer
    assert f["total"] == 479232 + 27904
    # head_dim derived from hidden / heads when absent; nested text_config is read
    no_hd = {k: v for k, v in TINY.items() if k != "head_dim"}
    assert speed.model_flops({"text_config": no_hd}, [10, 3])["total"] == f["total"]


def test_flops_default_model_config():
    smol = {
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "head_dim": 64,
    }
    assert (
        speed.linear_params_per_layer(smol) * 30 == 106_168_320
    )  # SmolLM2-135M without embeddings
    shapes = speed.matmul_shapes(smol, tokens=128, square=256)
    assert [256, 256, 256] in shapes and [128, 576, 1536] in shapes and [128, 576, 192] in shapes


def _write(path, obj):
    path.write_text(json.dumps(obj))


def _synthetic_results(d):
    machine = {"cpu_model": "Test CPU", "cpu_count": 2, "platform": "Linux", "python": "3.11"}
    _write(
        d / "quality_20260101-000000.json",
        {
            "benchmark": "quality",
            "started": "2026-01-01T00:00:00",
            "command": "python -m benchmarks.quality",
            "machine": machine,
            "options": {"dtype": None},
            "data": {
                "scifact": {"n_docs": 5183, "subset": None},
                "stsb": {"n_pairs": 1379, "subset": None},
            },
            "results": {
                "bm25": {
                    "scifact": {
                        "metrics": {"ndcg@10": 0.6863, "recall@100": 0.9127, "mrr@10": 0.6492},
                        "reference_ok": {"ndcg@10": True},
                    }
                },
                "ours-bidirectional": {
                    "scifact": {"metrics": {"ndcg@10": 0.15, "recall@100": 0.4, "mrr@10": 0.12}},
                    "stsb": {"metrics": {"spearman": 14.0}},
                },
                "minilm": {"stsb": {"error": "ModuleNotFoundError: x"}},
            },
        },
    )
    ok = {
        "status": "ok",
        "repeats_s": [2.0, 2.2, 1.9],
        "median_s": 2.0,
        "tokens_per_s": 500.0,
        "docs_per_s": 8.0,
        "roofline_pct": 12.5,
        "memory": {"maxrss_after_encode_mb": 800.0, "encode_rss_delta_mb": 50.0},
        "load_s": 3.0,
    }
    _write(
        d / "speed_20260101-000100.json",
        {
            "benchmark": "speed",
            "started": "2026-01-01T00:01:00",
            "command": "python -m benchmarks.speed --n-docs 16",
            "machine": machine,
            "data": {"n_docs": 16, "tokens": 1000, "tokens_mean": 62.5, "doc_max_length": 400},
            "model": {"name": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            "flops": {"total": 2e11},
            "roofline": {
                "float32": {
                    "peak_flops_per_s": 8e10,
                    "square_flops_per_s": 7e10,
                    "rows": [{"shape": [2048, 2048, 2048], "flops_per_s": 8e10}],
                }
            },
            "results": [
                {**ok, "impl": "ours", "dtype": "float32", "ratio_vs_official": 2.5},
                {
                    **ok,
                    "impl": "official",
                    "dtype": "float32",
                    "median_s": 5.0,
                    "tokens_per_s": 200.0,
                    "ratio_vs_official": 1.0,
                    "repeats_s": [5.0, 5.1, 4.9],
                },
                {
                    "impl": "sentence-transformers",
                    "dtype": "float32",
                    "status": "error",
                    "error": "boom\ntrace",
                },
            ],
            "agreement": {
                "float32": {
                    "official": {"min_cos": 0.99999, "mean_cos": 0.999995, "ok": True, "n": 16}
                }
            },
            "agreement_threshold": 0.999,
            "index_build": {
                "dtype": "float32",
                "n_docs": 16,
                "note": "n",
                "results": [
                    {**ok, "impl": "ours-indexstore", "speedup_vs_langchain": 1.8},
                    {**ok, "impl": "langchain-hf-faiss", "median_s": 3.6},
                ],
            },
        },
    )
    _write(
        d / "index_2026-01-01.json",
        {
            "benchmark": "index",
            "date": "2026-01-01T00:02:00",
            "command": "python -m benchmarks.bench_index",
            "machine": machine,
            "config": {"n": 1000, "dim": 576, "k": 10},
            "results": [
                {
                    "kind": "flat",
                    "build_s": 0.1,
                    "batch_qps": 900.0,
                    "single_qps": 30.0,
                    "recall_at_k": 1.0,
                    "filtered_recall_at_k": 1.0,
                    "filtered_batch_qps": 100.0,
                    "total_bytes_per_vector": 2312.0,
                    "save_s": 0.1,
                    "load_s": 0.1,
                }
            ],
        },
    )
    _write(
        d / "server_20260101-000300.json",
        {
            "benchmark": "server",
            "started": "2026-01-01T00:03:00",
            "command": "python -m benchmarks.bench_server",
            "machine": machine,
            "server": {"model": "smollm2-135m-instruct"},
            "options": {"duration_s": 5},
            "results": [
                {
                    "concurrency": 16,
                    "requests_per_s": 3.4,
                    "inputs_per_s": 3.4,
                    "prompt_tokens_per_s": 87.0,
                    "latency_ms": {"p50": 4600.0, "p90": 6300.0, "p99": 6400.0},
                    "errors": 0,
                    "requests_per_batch": 9.0,
                }
            ],
        },
    )
    _write(
        d / "train_20260101-000400.json",
        {
            "stage": "mntp",
            "final_loss": 3.21,
            "steps": 20,
            "command": "llm2vec-retrieval train mntp",
        },
    )
    _write(
        d / "train_evidence_20260101-000500.json",
        {
            "rows": {
                "bidirectional": {"stsb_dev_spearman": 14.0, "scifact_ndcg@10_subset": 0.2},
                "mntp": {"stsb_dev_spearman": 30.5, "scifact_ndcg@10_subset": 0.25},
            },
            "timings_s": {"train:mntp": 120.0, "total": 300.0},
            "settings": {
                "argv": ["--smoke"],
                "smoke": True,
                "sts": {"split": "dev", "pairs": 200},
                "mntp": {"batch_size": 4},
                "eval_bf16": True,
                "doc_max_length": 256,
            },
            "loss_curves": {
                "mntp": [
                    {"step": 1, "loss": 9.5, "tokens_per_s": 100.0},
                    {"step": 2, "loss": 8.25, "tokens_per_s": 120.0},
                ],
                "simcse": [],
            },
            "environment": {"python": "3.11", "torch": "2.13.0", "threads": 2, "cpu_count": 2},
        },
    )
    _write(d / "mystery.json", {"hello": 1})
    (d / "broken.json").write_text("{not json")


def test_report_on_synthetic_results(tmp_path):
    _synthetic_results(tmp_path)
    out = tmp_path / "RESULTS.md"
    text = report.build_report(tmp_path, out, tmp_path / "plots")
    assert out.read_text() == text
    assert "Generated by benchmarks/report.py" in text
    assert "| bm25 | scifact | 0.6863 | 0.9127 | 0.6492 | - | full | ok |" in text
    assert "| ours-bidirectional | stsb | - | - | - | 14.00 |" in text
    assert "| minilm | stsb | error: ModuleNotFoundError: x" in text
    assert (
        "| ours | float32 | 500 | 8.00 | 2.50 | 12.5 | 2.00 (2.00, 2.20, 1.90) | 800 | 50 | 3.0 |"
        in text
    )
    assert "| sentence-transformers | float32 | error: boom |" in text
    assert "ours vs official: min cosine 0.999990" in text
    assert (
        "| ours-indexstore |" in text and "| flat | 0.1 | 900 |" in text and "| 16 | 3.40 |" in text
    )
    assert "train_20260101-000400.json" in text and "final_loss" in text
    assert (
        "| mntp | 30.50 | 0.2500 |" in text
        and "| mntp | 2 | 9.5000 | 8.2500 | 4 | 110 | 120 |" in text
    )
    assert "command `python -m benchmarks.train_evidence --smoke`" in text and "Smoke run" in text
    assert (tmp_path / "plots" / "train_loss_train_evidence_20260101-000500.png").is_file()
    assert "`mystery.json`: unknown kind" in text and "`broken.json`: not readable JSON" in text
    assert "command `python -m benchmarks.speed --n-docs 16`" in text and "Test CPU" in text
    for name in ("quality.png", "throughput.png", "index_build.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"plots/{name}" in text


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_speed_end_to_end_tiny(tmp_path, tiny_llama):
    corpus = tmp_path / "corpus.jsonl"
    docs = [
        {
            "_id": f"d{i}",
            "title": f"Title {i}",
            "text": "Cells and proteins are studied in biology. " * (i + 1),
        }
        for i in range(6)
    ]
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = tmp_path / "speed.json"
    rc = speed.main(
        [
            "--model",
            tiny_llama,
            "--corpus",
            str(corpus),
            "--n-docs",
            "4",
            "--impls",
            "ours",
            "--dtypes",
            "float32",
            "--repeats",
            "2",
            "--warmup-docs",
            "1",
            "--pause",
            "0",
            "--peak-square",
            "64",
            "--peak-tokens",
            "64",
            "--index-impls",
            "",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "speed" and data["data"]["n_docs"] == 4
    (row,) = data["results"]
    assert row["impl"] == "ours" and row["status"] == "ok" and len(row["repeats_s"]) == 2
    assert row["tokens_per_s"] > 0 and row["docs_per_s"] > 0 and row["roofline_pct"] > 0
    assert row["info"]["bidirectional"] is True and row["info"]["torch_threads"] >= 1
    assert row["memory"]["maxrss_after_encode_mb"] >= row["memory"]["maxrss_after_load_mb"] > 0
    assert data["token_count_check"]["equal"] is True
    assert data["flops"]["tokens"] == data["token_count_check"]["counted_tokens"]
    assert data["roofline"]["float32"]["peak_flops_per_s"] > 0
    assert "benchmarks.speed" in data["command"] and data["machine"]["cpu_count"]


def test_prepare_texts_cuts_like_the_encoder(tiny_encoder):
    long = "word " * 600
    texts, counts, cut = speed.prepare_texts(
        tiny_encoder.tokenizer, ["short text", long], doc_max_length=50
    )
    assert cut == 1 and texts[0] == "short text"
    assert counts[1] <= 51  # 50 text tokens + BOS
    tiny_encoder.config.doc_max_length, old = 50, tiny_encoder.config.doc_max_length
    try:
        ours = tiny_encoder.tokenize([["", t] for t in texts])["attention_mask"].sum(-1).tolist()
    finally:
        tiny_encoder.config.doc_max_length = old
    assert ours == counts


@pytest.mark.parametrize("argv", [["--impls", "nope"], ["--dtypes", "float64"]])
def test_speed_rejects_unknown_choices(argv):
    with pytest.raises(SystemExit):
        speed.parse_args(argv)


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_encode_worker_queries_carry_the_instruction(tmp_path, tiny_llama, tiny_encoder):
    """The worker the quality benchmark's `official` model talks to: documents plain, queries with
    the instruction, both equal to the encoder's own vectors (here with impl ours, in this venv)."""
    import numpy as np

    threads = 1
    args = [
        "--impl",
        "ours",
        "--model",
        tiny_llama,
        "--dtype",
        "float32",
        "--threads",
        str(threads),
        "--project-root",
        str(speed.PROJECT_ROOT),
    ]
    worker = speed.Worker(
        "ours",
        sys.executable,
        speed.WORKERS_DIR / "encode_worker.py",
        args,
        speed.worker_env(threads),
        tmp_path,
    )
    try:
        texts = ["cells divide", "a much longer sentence about proteins folding in cells"]
        worker.request({"op": "set_texts", "texts": texts})
        docs = speed.decode_array(
            worker.request({"op": "encode", "return_vectors": True})["vectors"]
        )
        queries = speed.decode_array(
            worker.request(
                {"op": "encode", "return_vectors": True, "instruction": "Find the claim:"}
            )["vectors"]
        )
    finally:
        worker.close()
    np.testing.assert_allclose(docs, tiny_encoder.encode_documents(texts), atol=1e-5)
    np.testing.assert_allclose(
        queries, tiny_encoder.encode_queries(texts, instruction="Find the claim:"), atol=1e-5
    )
    assert not np.allclose(docs, queries, atol=1e-3)


def test_committed_results_md_is_what_the_report_makes(tmp_path):
    """benchmarks/RESULTS.md is regenerated, never edited: built again from the committed
    result files (plots into a scratch folder, so the links are rewritten to the committed
    ones) it is byte-identical, and two builds give the same bytes."""
    root = report.Path(report.__file__).resolve().parents[1]
    results = root / "benchmarks" / "results"
    out = root / "benchmarks" / ".RESULTS-check.md"  # beside RESULTS.md: the same links
    try:
        text = report.build_report(results, out, tmp_path / "plots")
        again = report.build_report(results, out, tmp_path / "plots2")
    finally:
        out.unlink(missing_ok=True)
    rel = lambda d: report.os.path.relpath(d, out.parent)  # noqa: E731
    text = text.replace(rel(tmp_path / "plots"), "results/plots")
    again = again.replace(rel(tmp_path / "plots2"), "results/plots")
    assert text == again
    committed = (root / "benchmarks" / "RESULTS.md").read_text()
    assert text == committed, "benchmarks/RESULTS.md is stale: run python -m benchmarks.report"
