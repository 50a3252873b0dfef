"""`llm2vec-retrieval serve` over real HTTP on 127.0.0.1 (a subprocess on a tiny random model)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llm2vec_retrieval import cli

ROOT = Path(__file__).resolve().parents[1]
QUERY_INSTRUCTION = (
    "Find passages about:"  # recorded in the served index, used for input_type=query
)
pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama):
    """(host, port, encoder used in-process, subprocess) for a server on a tiny model with an index."""
    from llm2vec_retrieval.ingest.folder import embedder_spec, load_encoder

    work = tmp_path_factory.mktemp("serve")
    model = tiny_llama
    corpus = work / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text(
        "Vaccines train the immune system. Cells and proteins are studied in biology."
    )
    (corpus / "b.txt").write_text(
        "Heavy rain raises river levels until the water spills over the banks."
    )
    assert (
        cli.main(
            [
                "index",
                str(corpus),
                "--index",
                str(work / "idx"),
                "--model",
                model,
                "--root",
                str(work),
                "--chunk-tokens",
                "12",
                "--overlap",
                "2",
                "--query-instruction",
                QUERY_INSTRUCTION,
            ]
        )
        == 0
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llm2vec_retrieval",
            "serve",
            "--index",
            str(work / "idx"),
            "--port",
            "0",
            "--max-body-bytes",
            "20000",
            "--max-inputs",
            "32",
            "--max-input-tokens",
            "64",
        ],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving "), line + proc.stderr.read()
        url = line.rsplit(" on ", 1)[1].strip()
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port), load_encoder(embedder_spec(model, None)), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def request(
    served, method: str, path: str, body=None, raw: bytes | None = None, headers: dict | None = None
):
    host, port = served[0], served[1]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(
            method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})}
        )
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, json.loads(payload) if payload else None, dict(resp.getheaders())
    finally:
        conn.close()


def embed(served, **body) -> np.ndarray:
    status, out, _ = request(served, "POST", "/v1/embeddings", body)
    assert status == 200, out
    return np.array([d["embedding"] for d in out["data"]], dtype=np.float32)


def test_health_and_models(served):
    status, out, _ = request(served, "GET", "/health")
    assert status == 200 and out["status"] == "ok" and out["dim"] == 32
    assert out["index"]["chunks"] > 0
    status, out, _ = request(served, "GET", "/v1/models")
    assert status == 200 and out["data"][0]["id"] == served[2].source["model"]


def test_embeddings_match_the_encoder(served):
    encoder = served[2]
    status, out, _ = request(
        served, "POST", "/v1/embeddings", {"input": "hello world", "model": "my-name"}
    )
    assert status == 200
    assert out["object"] == "list" and out["model"] == "my-name"
    assert out["data"][0]["object"] == "embedding" and out["data"][0]["index"] == 0
    assert (
        out["usage"]["prompt_tokens"]
        == out["usage"]["total_tokens"]
        == encoder.count_tokens(["hello world"])[0]
    )
    texts = ["rivers flood", "the immune system", "fox"]
    docs = embed(served, input=texts)
    np.testing.assert_allclose(docs, encoder.encode_documents(texts), atol=1e-5)
    queries = embed(served, input=texts, input_type="query")
    np.testing.assert_allclose(
        queries, encoder.encode_queries(texts, instruction=QUERY_INSTRUCTION), atol=1e-5
    )
    assert not np.allclose(queries, docs)
    custom = embed(served, input=texts, input_type="query", instruction="Find a rhyme:")
    np.testing.assert_allclose(
        custom, encoder.encode_queries(texts, instruction="Find a rhyme:"), atol=1e-5
    )


def test_dimensions_and_base64(served):
    full = embed(served, input=["a b c", "rivers"])
    cut = embed(served, input=["a b c", "rivers"], dimensions=8)
    assert cut.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-5
    )
    status, out, _ = request(
        served, "POST", "/v1/embeddings", {"input": ["a b c"], "encoding_format": "base64"}
    )
    assert status == 200
    vec = np.frombuffer(base64.b64decode(out["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, full[0], atol=1e-6)


def test_search_route(served):
    status, out, _ = request(served, "POST", "/search", {"query": "river", "k": 3})
    assert status == 200 and 1 <= len(out["results"]) <= 3
    assert all({"id", "score", "text", "source", "metadata"} <= set(r) for r in out["results"])
    status, out, _ = request(
        served, "POST", "/search", {"query": "river", "k": 50, "filter": {"source": "corpus/b.txt"}}
    )
    assert (
        status == 200
        and out["results"]
        and all(r["source"] == "corpus/b.txt" for r in out["results"])
    )
    status, out, _ = request(
        served, "POST", "/search", {"query": "river", "filter": {"chunk": {"$bad": 1}}}
    )
    assert status == 400 and "filter" in out["error"]["message"]


def test_concurrent_requests_equal_sequential(served):
    texts = [f"text number {i} about rivers and {'fox ' * (i % 5)}" for i in range(32)]
    bodies = [
        {"input": texts[i : i + 2], "input_type": "query" if i % 4 else "document"}
        for i in range(0, 32, 2)
    ]
    sequential = [embed(served, **b) for b in bodies]
    with ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda b: embed(served, **b), bodies))
    for a, b in zip(sequential, concurrent, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_limits_and_errors(served):
    status, out, _ = request(
        served, "POST", "/v1/embeddings", raw=b'{"input": "' + b"x" * 30000 + b'"}'
    )
    assert status == 413 and out["error"]["code"] == "body_too_large"
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": ["a"] * 33})
    assert status == 413 and "at most 32" in out["error"]["message"]
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": ["ok", "word " * 200]})
    assert (
        status == 400
        and "max_length" in out["error"]["message"]
        and "input[1]" in out["error"]["message"]
    )
    status, out, _ = request(served, "POST", "/v1/embeddings", raw=b"{not json")
    assert status == 400 and out["error"]["code"] == "bad_json"
    for bad in (
        {"input": []},
        {"input": [1, 2]},
        {},
        {"input": "a", "dimensions": 0},
        {"input": "a", "encoding_format": "int8"},
        {"input": "a", "input_type": "passage"},
    ):
        status, out, _ = request(served, "POST", "/v1/embeddings", bad)
        assert status == 400, bad
        assert out["error"]["type"] == "invalid_request_error"
    status, out, _ = request(served, "GET", "/nope")
    assert status == 404
    status, out, headers = request(served, "GET", "/v1/embeddings")
    assert status == 405 and headers.get("Allow") == "POST"
    status, out, _ = request(served, "POST", "/health", {})
    assert status == 405
    status, _, _ = request(served, "GET", "/health")  # still serving after all that
    assert status == 200


def test_port_in_use_is_one_line(served):
    host, port = served[0], served[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", "serve", "--host", host, "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "already in use" in err and "\n" not in err
    assert time.monotonic() - t0 < 60  # fails before loading a model


def test_micro_batcher_groups_concurrent_requests():
    from llm2vec_retrieval.server import MicroBatcher

    class SlowEncoder:
        calls: list[int] = []

        def encode(self, pairs, **kwargs):
            self.calls.append(len(pairs))
            time.sleep(0.05)
            return np.array([[float(len(text)), 1.0] for _, text in pairs], dtype=np.float32)

    enc = SlowEncoder()
    batcher = MicroBatcher(enc, max_batch_tokens=10_000, wait_ms=1)
    try:
        futures = [batcher.submit([("", "x" * i), ("", "y")], tokens=2) for i in range(16)]
        results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, [[i, 1.0], [1.0, 1.0]])
    assert sum(enc.calls) == 32 and len(enc.calls) < 16


def test_search_modes(served):
    status, out, _ = request(served, "POST", "/search", {"query": "river", "k": 3})
    assert status == 200 and out["mode"] == "hybrid"
    status, out, _ = request(
        served, "POST", "/search", {"query": "vaccines", "k": 2, "mode": "lexical"}
    )
    assert status == 200 and out["mode"] == "lexical"
    assert "vaccines" in out["results"][0]["text"].lower() and out["results"][0]["score"] > 0
    status, out, _ = request(
        served,
        "POST",
        "/search",
        {"query": "vaccines", "k": 2, "mode": "hybrid", "alpha": 0.0, "fusion": "alpha"},
    )
    assert status == 200 and "vaccines" in out["results"][0]["text"].lower()
    assert out["results"][0]["lexical_score"] > 0 and out["results"][0]["dense_score"] is not None
    for bad, param in (
        ({"mode": "sparse"}, "mode"),
        ({"fusion": "max"}, "fusion"),
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": True}, "alpha"),
    ):
        status, out, _ = request(served, "POST", "/search", {"query": "vaccines", **bad})
        assert status == 400 and out["error"]["param"] == param, bad
