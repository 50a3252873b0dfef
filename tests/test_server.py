"""`llm2vec-retrieval serve` over real HTTP on 127.0.0.1 (subprocesses on a tiny random model).

Three servers: ``served`` (an index, small limits), ``guarded`` (API key from the environment,
CORS, a 2 s read timeout, a connection cap, a served name with a slash) and, for one test, a
server whose encoder fails on a marked text (to show that a failing request fails alone).
Each runs with one torch thread; its stderr goes to a file (a full pipe would block it).
Both fixtures' servers encode in float32 (``--dtype float32``: their vectors are compared with
an in-process float32 encoder at 1e-5); one test starts a server with the default dtype.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
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
API_KEY = "test-key-1234"
GUARDED_NAME = "tiny/llama"
CORS_ORIGIN = "http://allowed.example"
pytest.importorskip("faiss")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def start_server(argv: list[str], cwd: Path, env: dict[str, str] | None = None):
    """(process, host, port) of `python ARGV` once it printed its 'serving ... on URL' line."""
    log = open(cwd / f"server-{len(list(cwd.glob('server-*.log')))}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, *argv],
        cwd=cwd,
        env=env or _env(),
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    proc.log = log  # type: ignore[attr-defined]
    line = proc.stdout.readline()
    if not line.startswith("serving "):
        stop_server(proc)
        raise AssertionError(line + Path(log.name).read_text())
    url = line.rsplit(" on ", 1)[1].strip()
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return proc, host, int(port)


def stop_server(proc) -> str:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stdout.close()
    proc.log.close()
    return Path(proc.log.name).read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_llama):
    """(host, port, encoder used in-process, subprocess) for a server on a tiny model with an index."""
    from llm2vec_retrieval.ingest.folder import embedder_spec, encoder_from_spec

    work = tmp_path_factory.mktemp("serve")
    corpus = work / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text(
        "Vaccines train the immune system. Cells and proteins are studied in biology."
    )
    (corpus / "b.txt").write_text(
        "Heavy rain raises river levels until the water spills over the banks."
    )
    argv = ["index", str(corpus), "--index", str(work / "idx"), "--model", tiny_llama]
    argv += ["--root", str(work), "--chunk-tokens", "12", "--overlap", "2"]
    assert cli.main([*argv, "--query-instruction", QUERY_INSTRUCTION]) == 0
    proc, host, port = start_server(
        ["-m", "llm2vec_retrieval", "--threads", "1", "serve", "--index", str(work / "idx")]
        + ["--port", "0", "--max-body-bytes", "20000", "--max-inputs", "32", "--dtype", "float32"]
        + ["--max-input-tokens", "64"],
        work,
    )
    try:
        yield host, port, encoder_from_spec(embedder_spec(tiny_llama, None), "float32"), proc
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, tiny_llama):
    """(host, port, encoder, subprocess): API key (from the environment), CORS, 2 s read
    timeout, at most 24 connections, served as GUARDED_NAME, large bodies allowed."""
    from llm2vec_retrieval.ingest.folder import embedder_spec, encoder_from_spec

    work = tmp_path_factory.mktemp("guarded")
    proc, host, port = start_server(
        ["-m", "llm2vec_retrieval", "--threads", "1", "serve", "--model", tiny_llama]
        + ["--dtype", "float32"]
        + ["--port", "0", "--served-model-name", GUARDED_NAME, "--cors-origin", CORS_ORIGIN]
        + ["--read-timeout", "2", "--max-connections", "24", "--max-body-bytes", "8000000"],
        work,
        env={**_env(), "LLM2VEC_RETRIEVAL_API_KEY": API_KEY},
    )
    try:
        yield host, port, encoder_from_spec(embedder_spec(tiny_llama, None), "float32"), proc
    finally:
        stop_server(proc)


class Reply:
    def __init__(self, status: int, body, headers: http.client.HTTPMessage):
        self.status, self.body, self.headers = status, body, headers

    def __iter__(self):  # status, body, headers (case-insensitive)
        return iter((self.status, self.body, self.headers))


def request(
    server,
    method: str,
    path: str,
    body=None,
    raw: bytes | None = None,
    headers: dict | None = None,
    key: str | None = None,
) -> Reply:
    host, port = server[0], server[1]
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        payload = resp.read()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload
        return Reply(resp.status, parsed, resp.headers)
    finally:
        conn.close()


def embed(server, key: str | None = None, **body) -> np.ndarray:
    status, out, _ = request(server, "POST", "/v1/embeddings", body, key=key)
    assert status == 200, out
    return np.array([d["embedding"] for d in out["data"]], dtype=np.float32)


# ---------------------------------------------------------------------- the API
def test_health_and_models(served):
    status, out, _ = request(served, "GET", "/health")
    assert status == 200 and out["status"] == "ok" and out["dim"] == 32
    assert out["dtype"] == "float32"  # --dtype float32 honoured
    assert out["index"]["chunks"] > 0
    name = served[2].source["model"]
    status, out, _ = request(served, "GET", "/v1/models")
    assert status == 200 and out["object"] == "list" and out["data"][0]["id"] == name
    status, out, _ = request(served, "GET", f"/v1/models/{name}")
    assert status == 200 and out["id"] == name and out["object"] == "model"
    status, out, _ = request(served, "GET", "/v1/models/not-this-one")
    assert status == 404 and out["error"]["code"] == "model_not_found"


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


def test_dimensions_only_for_a_model_trained_for_it(served, tiny_llama, tmp_path):
    """Issue 25: `dimensions` cut every model's vectors, trained for it or not. Now a model
    whose config does not say `matryoshka` refuses it (400 naming the field)."""
    status, out, _ = request(
        served, "POST", "/v1/embeddings", {"input": ["a b c"], "dimensions": 8}
    )
    assert status == 400 and out["error"]["param"] == "dimensions", out
    assert out["error"]["code"] == "unsupported_parameter"
    assert out["error"]["message"].startswith("'dimensions' is not supported by ")
    # a model that says it was trained for truncated vectors: the first N, re-normalized
    import shutil

    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.server import EmbeddingService

    folder = tmp_path / "matryoshka"
    shutil.copytree(tiny_llama, folder)
    (folder / "llm2vec_retrieval_config.json").write_text(json.dumps({"matryoshka": True}))
    encoder = LLM2Vec.from_pretrained(str(folder))
    assert encoder.config.matryoshka is True
    service = EmbeddingService(encoder)
    try:
        texts = ["a b c", "rivers"]
        full = np.array([d["embedding"] for d in service.embeddings({"input": texts})["data"]])
        out = service.embeddings({"input": texts, "dimensions": 8})
        cut = np.array([d["embedding"] for d in out["data"]])
    finally:
        service.close()
    assert cut.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(
        cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), atol=1e-5
    )


def test_base64(served):
    full = embed(served, input=["a b c", "rivers"])
    status, out, _ = request(
        served, "POST", "/v1/embeddings", {"input": ["a b c"], "encoding_format": "base64"}
    )
    assert status == 200
    vec = np.frombuffer(base64.b64decode(out["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, full[0], atol=1e-6)


def test_token_array_inputs(served):
    encoder = served[2]
    texts = ["rivers flood", "the immune system"]
    ids = [encoder.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": ids})
    assert status == 200 and out["usage"]["prompt_tokens"] == sum(map(len, ids))
    got = np.array([d["embedding"] for d in out["data"]], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode_documents(texts), atol=1e-5)
    one = embed(served, input=ids[0])  # a single list of ids is one input
    np.testing.assert_allclose(one, got[:1], atol=1e-5)
    vocab = len(encoder.tokenizer)
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": [1, vocab]})
    assert (
        status == 422 and out["error"]["param"] == "input" and str(vocab) in out["error"]["message"]
    )
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": [[1, 2], []]})
    assert status == 422 and out["error"]["param"] == "input"
    status, out, _ = request(served, "POST", "/v1/embeddings", {"input": [7] * 65})
    assert status == 400 and out["error"]["code"] == "input_too_long"


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
        served, "POST", "/v1/search", {"query": "river", "filter": {"chunk": {"$bad": 1}}}
    )
    assert status == 422 and out["error"]["param"] == "filter"


def test_search_modes(served):
    status, out, _ = request(served, "POST", "/search", {"query": "river", "k": 3})
    assert status == 200 and out["mode"] == "hybrid"
    # without fusion/alpha, the fusion the index records (set when it was made: the default)
    from llm2vec_retrieval.index.fusion import default_hybrid

    recorded = default_hybrid()
    assert (out["fusion"], out.get("alpha", recorded["alpha"])) == (
        recorded["fusion"],
        recorded["alpha"],
    )
    status, same, _ = request(served, "POST", "/search", {"query": "river", "k": 3, **recorded})
    assert status == 200 and same["results"] == out["results"]
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
        ({"k": 0}, "k"),
        ({"kk": 3}, "kk"),
    ):
        status, out, _ = request(served, "POST", "/search", {"query": "vaccines", **bad})
        assert status == 422 and out["error"]["param"] == param, bad


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
    status, out, _ = request(served, "POST", "/v1/embeddings", raw=b"[1, 2]")
    assert status == 400 and out["error"]["code"] == "bad_json"
    for bad, param in (
        ({"input": []}, "input"),
        ({"input": [1, "a"]}, "input"),
        ({"input": None}, "input"),
        ({}, "input"),
        ({"input": "a", "dimensions": 0}, "dimensions"),  # out of range: 422 before 400
        ({"input": "a", "dimensions": 33}, "dimensions"),
        ({"input": "a", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "a", "input_type": "passage"}, "input_type"),
        ({"input": "a", "instruction": 5}, "instruction"),
        ({"input": "a", "input_typ": "query"}, "input_typ"),
    ):
        status, out, _ = request(served, "POST", "/v1/embeddings", bad)
        assert status == 422, bad
        assert out["error"]["type"] == "invalid_request_error" and out["error"]["param"] == param
        assert f"'{param}'" in out["error"]["message"], out
    status, out, _ = request(served, "GET", "/nope")
    assert status == 404 and out["error"]["code"] == "not_found"
    status, out, headers = request(served, "GET", "/v1/embeddings")
    assert status == 405 and headers.get("Allow") == "POST" and "error" in out
    status, out, _ = request(served, "POST", "/health", {})
    assert status == 405
    status, _, _ = request(served, "GET", "/health")  # still serving after all that
    assert status == 200


def test_empty_input_is_refused_as_openai_does(served):
    """An empty or blank text is a 422 naming the field and the item, not a zero-token 200."""
    for body, where in (
        ({"input": ""}, "input is empty"),
        ({"input": "   \n"}, "input is only whitespace"),
        ({"input": ["rivers", ""]}, "input[1] is empty"),
        ({"input": ["\t", "rivers"]}, "input[0] is only whitespace"),
    ):
        status, out, _ = request(served, "POST", "/v1/embeddings", body)
        assert status == 422 and out["error"]["param"] == "input", (body, out)
        assert out["error"]["message"] == f"'input' must not be empty: {where}"
    assert embed(served, input=["rivers", " a "]).shape == (2, 32)  # text beside blanks: fine


def test_blank_search_query_is_422_naming_the_field(served):
    for query, reason in (("", "empty"), ("  \n", "only whitespace")):
        for mode in ("dense", "lexical", "hybrid"):
            status, out, _ = request(served, "POST", "/search", {"query": query, "mode": mode})
            assert status == 422 and out["error"]["param"] == "query", (mode, out)
            assert out["error"]["message"] == f"'query' must not be empty: query is {reason}"


def test_lexical_search_returns_only_matches(served):
    status, out, _ = request(
        served, "POST", "/search", {"query": "zebra giraffe", "mode": "lexical", "k": 5}
    )
    assert status == 200 and out["results"] == []
    status, out, _ = request(served, "POST", "/search", {"query": "vaccines", "mode": "lexical"})
    assert status == 200 and 0 < len(out["results"]) < 5
    assert all("vaccine" in r["text"].lower() and r["score"] > 0 for r in out["results"])


def test_query_model_id(served):
    """Issue 25: OpenAI clients embedded queries as documents unless they sent the
    `input_type` extension. `<model>:query` is a second model id that embeds queries."""
    encoder = served[2]
    name = encoder.source["model"]
    status, out, _ = request(served, "GET", "/v1/models")
    assert [(m["id"], m["input_type"]) for m in out["data"]] == [
        (name, "document"),
        (f"{name}:query", "query"),
    ]
    assert out["data"][1]["llm2vec_fingerprint"] == encoder.fingerprint()
    status, out, _ = request(served, "GET", f"/v1/models/{name}:query")
    assert status == 200 and out["id"] == f"{name}:query" and out["input_type"] == "query"
    texts = ["rivers flood", "the immune system"]
    queries = embed(served, input=texts, model=f"{name}:query")
    np.testing.assert_allclose(
        queries, encoder.encode_queries(texts, instruction=QUERY_INSTRUCTION), atol=1e-5
    )
    same = embed(served, input=texts, model=f"{name}:query", input_type="query")
    np.testing.assert_allclose(same, queries, atol=1e-6)
    np.testing.assert_allclose(
        embed(served, input=texts, model=name), encoder.encode_documents(texts), atol=1e-5
    )
    status, out, _ = request(
        served,
        "POST",
        "/v1/embeddings",
        {"input": "x", "model": f"{name}:query", "input_type": "document"},
    )
    assert status == 422 and out["error"]["param"] == "input_type"


def tei(server, key: str | None = None, **body) -> np.ndarray:
    status, out, _ = request(server, "POST", "/embed", body, key=key)
    assert status == 200, out
    assert isinstance(out, list) and all(isinstance(v, list) for v in out)
    return np.array(out, dtype=np.float32)


def test_tei_embed(served):
    from llm2vec_retrieval.instructions import get_instruction

    encoder = served[2]
    texts = ["rivers flood", "the immune system"]
    one = tei(served, inputs="rivers flood")
    assert one.shape == (1, 32)
    np.testing.assert_allclose(one[0], encoder.encode_documents(texts[:1])[0], atol=1e-5)
    docs = tei(served, inputs=texts)
    np.testing.assert_allclose(docs, encoder.encode_documents(texts), atol=1e-5)
    queries = tei(served, inputs=texts, prompt_name="query")
    np.testing.assert_allclose(
        queries, encoder.encode_queries(texts, instruction=QUERY_INSTRUCTION), atol=1e-5
    )
    task = tei(served, inputs=texts, prompt_name="SciFact")
    np.testing.assert_allclose(
        task, encoder.encode_queries(texts, instruction=get_instruction("SciFact")), atol=1e-5
    )
    raw = tei(served, inputs=texts, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), docs, atol=1e-5)
    ids = [encoder.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    np.testing.assert_allclose(tei(served, inputs=ids), docs, atol=1e-5)
    # longer than the server's 64 tokens: refused, or cut at either end with truncate
    long = " ".join(f"word{i}" for i in range(120))
    status, out, _ = request(served, "POST", "/embed", {"inputs": ["ok", long]})
    assert status == 400 and out["error_type"] == "Validation" and out["param"] == "inputs"
    assert "inputs[1]" in out["error"]
    kept = tei(served, inputs=long, truncate=True)
    ids = encoder.tokenizer(long, add_special_tokens=False)["input_ids"]
    head = encoder.tokenizer.decode(ids[:64])
    tail = encoder.tokenizer.decode(ids[-64:])
    np.testing.assert_allclose(kept[0], encoder.encode_documents([head])[0], atol=1e-5)
    left = tei(served, inputs=long, truncate=True, truncation_direction="Left")
    np.testing.assert_allclose(left[0], encoder.encode_documents([tail])[0], atol=1e-5)


def test_tei_embed_errors_name_the_field(served):
    for body, param, message in (
        ({"inputs": ""}, "inputs", "'inputs' must not be empty: inputs is empty"),
        (
            {"inputs": ["ok", " "]},
            "inputs",
            "'inputs' must not be empty: inputs[1] is only whitespace",
        ),
        ({}, "inputs", None),
        ({"inputs": "x", "prompt_name": "nope"}, "prompt_name", None),
        ({"inputs": "x", "normalize": "yes"}, "normalize", None),
        ({"inputs": "x", "truncation_direction": "middle"}, "truncation_direction", None),
        ({"inputs": "x", "input": "y"}, "input", None),
    ):
        status, out, _ = request(served, "POST", "/embed", body)
        assert status == 422, (body, out)
        # text-embeddings-inference's error shape: its clients read "error" as a string
        assert out["error_type"] == "Validation" and out["param"] == param, out
        assert isinstance(out["error"], str) and f"'{param}'" in out["error"]
        if message:
            assert out["error"] == message


def test_tei_info(served):
    status, out, _ = request(served, "GET", "/info")
    assert status == 200
    assert out["model_id"] == served[2].source["model"] and out["model_dtype"] == "float32"
    assert out["model_type"] == {"embedding": {"pooling": "mean"}}
    assert out["max_input_length"] == 64 and out["max_client_batch_size"] == 32
    assert out["auto_truncate"] is False and out["max_batch_tokens"] > 0
    assert out["max_concurrent_requests"] > 0 and out["version"] and out["dim"] == 32
    assert out["prompts"] == {"query": QUERY_INSTRUCTION, "document": ""}
    for key in ("model_sha", "max_batch_requests", "tokenization_workers", "sha", "docker_label"):
        assert key in out


def _metrics(server, key: str | None = None) -> dict[str, float]:
    """Samples of /metrics by series (name + labels), each line checked against the format."""
    import re

    status, text, headers = request(server, "GET", "/metrics", key=key)
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = text.decode() if isinstance(text, bytes) else str(text)
    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[a-z_]+="[^"]*"(?:,[a-z_]+="[^"]*")*\})?) (\S+)$'
    )
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        m = sample.match(line)
        assert m, line
        out[m.group(1)] = float(m.group(2))
    return out


def test_prometheus_metrics(served):
    before = _metrics(served)
    for _ in range(3):
        tei(served, inputs=["rivers flood", "fox"])
    assert request(served, "GET", "/no/such/path").status == 404
    after = _metrics(served)
    key = 'llm2vec_requests_total{route="/embed",status="200"}'
    assert after[key] - before.get(key, 0) == 3
    other = 'llm2vec_requests_total{route="other",status="404"}'
    assert after[other] - before.get(other, 0) == 1
    assert after["llm2vec_embedded_inputs_total"] - before["llm2vec_embedded_inputs_total"] == 6
    assert after["llm2vec_embedded_tokens_total"] > before["llm2vec_embedded_tokens_total"]
    assert after["llm2vec_batch_size_count"] >= before["llm2vec_batch_size_count"] + 1
    count = 'llm2vec_request_duration_seconds_count{route="/embed"}'
    inf = 'llm2vec_request_duration_seconds_bucket{route="/embed",le="+Inf"}'
    assert after[count] == after[inf] >= 3 and "llm2vec_queue_size" in after


def test_deeply_nested_json_is_400(served):
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"input": ' + b"[" * 50_000):
        status, out, _ = request(served, "POST", "/v1/embeddings", raw=raw, headers={})
        assert status in (400, 413), status
        assert out["error"]["code"] in ("bad_json", "body_too_large")
    raw = b"[" * 9_000 + b"]" * 9_000  # under the 20000-byte limit: must be parsed and refused
    status, out, _ = request(served, "POST", "/v1/embeddings", raw=raw)
    assert status == 400 and out["error"]["code"] == "bad_json"
    status, out, _ = request(served, "POST", "/search", raw=raw)
    assert status == 400 and out["error"]["code"] == "bad_json"


def test_openapi_docs_and_no_cors_by_default(served):
    reply = request(served, "GET", "/docs")
    assert reply.status == 200 and b"swagger" in reply.body.lower()
    status, spec, _ = request(served, "GET", "/openapi.json")
    assert status == 200 and {"/v1/embeddings", "/search", "/v1/models"} <= set(spec["paths"])
    body = spec["paths"]["/v1/embeddings"]["post"]["requestBody"]["content"]["application/json"]
    assert "input_type" in body["schema"]["properties"]
    reply = request(served, "GET", "/health", headers={"Origin": CORS_ORIGIN})
    assert reply.status == 200 and reply.headers.get("access-control-allow-origin") is None


# ---------------------------------------------------------------------- bad requests stay alone
def test_lone_surrogate_in_a_field_does_not_fail_its_batch(served):
    """Issue 14 item 10: a JSON-escaped lone surrogate made every request batched with it 500."""
    encoder = served[2]
    bad = b'{"input": ["rivers flood"], "input_type": "query", "instruction": "Find \\ud83d:"}'
    good = [{"input": [f"text {i} about rivers"]} for i in range(8)]
    barrier = threading.Barrier(len(good) + 1)

    def send(item):
        barrier.wait()
        if isinstance(item, bytes):
            return request(served, "POST", "/v1/embeddings", raw=item)
        return request(served, "POST", "/v1/embeddings", item)

    with ThreadPoolExecutor(len(good) + 1) as pool:
        replies = list(pool.map(send, [bad, *good]))
    assert [r.status for r in replies] == [200] * len(replies), [r.body for r in replies]
    got = np.array(replies[0].body["data"][0]["embedding"], dtype=np.float32)
    want = encoder.encode_queries(["rivers flood"], instruction="Find \ufffd:")[0]
    np.testing.assert_allclose(got, want, atol=1e-5)  # the surrogate became U+FFFD
    for item, reply in zip(good, replies[1:], strict=True):
        vec = np.array(reply.body["data"][0]["embedding"], dtype=np.float32)
        np.testing.assert_allclose(vec, encoder.encode_documents(item["input"])[0], atol=1e-5)
    status, out, _ = request(
        served, "POST", "/v1/embeddings", raw=b'{"input": "x", "model": "\\udc00"}'
    )
    assert status == 200 and out["model"] == "\ufffd"


FAULTY_SERVER = """
import sys
from llm2vec_retrieval import LLM2Vec
from llm2vec_retrieval.server import EmbeddingService
from llm2vec_retrieval.server.app import bind, create_app, run, url_of

model, log_path = sys.argv[1], sys.argv[2]


class FailsOnMarkedText:
    '''The real tiny encoder, except that a batch holding a text with FAIL raises.'''

    def __init__(self, encoder):
        self._encoder = encoder

    def __getattr__(self, name):
        return getattr(self._encoder, name)

    def encode(self, pairs, **kwargs):
        marked = any("FAIL" in text for _, text in pairs)
        with open(log_path, "a") as log:
            log.write(f"{len(pairs)} {int(marked)}\\n")
        if marked:
            raise RuntimeError("provoked failure")
        return self._encoder.encode(pairs, **kwargs)


service = EmbeddingService(
    FailsOnMarkedText(LLM2Vec.from_pretrained(model, dtype="float32")), batch_wait_ms=400
)
sock = bind("127.0.0.1", 0)
print(f"serving faulty on {url_of(sock)}", flush=True)
try:
    run(create_app(service), sock)
finally:
    service.close()
"""


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_a_failing_request_fails_alone(tmp_path, tiny_llama, tiny_encoder):
    """Issue 14 item 10: the micro-batcher gave one failure to every request of the batch."""
    script = tmp_path / "faulty_server.py"
    script.write_text(FAULTY_SERVER)
    log = tmp_path / "calls.log"
    proc, host, port = start_server([str(script), tiny_llama, str(log)], tmp_path)
    server = (host, port)
    try:
        bodies = [{"input": [f"request {i} about rivers", "and fox"]} for i in range(6)]
        bodies.insert(3, {"input": ["this one will FAIL", "fine text"]})
        barrier = threading.Barrier(len(bodies))

        def send(body):
            barrier.wait()
            return request(server, "POST", "/v1/embeddings", body)

        with ThreadPoolExecutor(len(bodies)) as pool:
            replies = list(pool.map(send, bodies))
    finally:
        stop_server(proc)
    calls = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert any(n > 2 and marked for n, marked in calls), calls  # it was batched with others
    for body, reply in zip(bodies, replies, strict=True):
        if "this one will FAIL" in body["input"]:
            assert reply.status == 500 and "provoked failure" in reply.body["error"]["message"]
            assert reply.body["error"]["type"] == "server_error"
        else:
            assert reply.status == 200, reply.body
            got = np.array([d["embedding"] for d in reply.body["data"]], dtype=np.float32)
            np.testing.assert_allclose(got, tiny_encoder.encode_documents(body["input"]), atol=1e-5)


# ---------------------------------------------------------------------- the micro-batcher
class _GatedEncoder:
    """Records each batch's texts; model call number k waits for `gates[k]` when one is set.

    `started[k]` is set when call k begins: the tests order events through these, not sleeps.
    """

    def __init__(self, gates: dict[int, threading.Event] | None = None):
        self.gates = gates or {}
        self.started: dict[int, threading.Event] = {k: threading.Event() for k in range(64)}
        self.calls: list[list[str]] = []

    def encode(self, pairs, **kwargs):
        texts = [t for _, t in pairs]
        k = len(self.calls)
        self.calls.append(texts)
        self.started[k].set()
        if k in self.gates:
            assert self.gates[k].wait(30), f"call {k} was never released"
        if any(t.startswith("FAIL") for t in texts):
            raise RuntimeError("bad text")
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_micro_batcher_groups_concurrent_requests():
    from llm2vec_retrieval.server import MicroBatcher

    release = threading.Event()
    enc = _GatedEncoder({0: release})  # the first call waits until all 16 are queued
    batcher = MicroBatcher(enc, max_batch_tokens=10_000, wait_ms=1)
    try:
        futures = [batcher.submit([("", "x" * i), ("", "y")], tokens=2) for i in range(16)]
        release.set()
        results = [f.result(timeout=10) for f in futures]
    finally:
        batcher.close()
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r, [[i, 1.0], [1.0, 1.0]])
    assert sum(map(len, enc.calls)) == 32 and len(enc.calls) < 16


def test_micro_batcher_isolates_a_failing_job():
    from llm2vec_retrieval.server import MicroBatcher

    enc = _GatedEncoder()
    batcher = MicroBatcher(enc, max_batch_tokens=10_000, wait_ms=200)
    try:
        ok1 = batcher.submit([("", "aa"), ("", "b")], tokens=[2, 1])
        bad = batcher.submit([("", "FAIL me"), ("", "c")], tokens=[2, 1])
        ok2 = batcher.submit([("", "dddd")], tokens=[4])
        np.testing.assert_array_equal(ok1.result(timeout=10), [[2.0, 1.0], [1.0, 1.0]])
        np.testing.assert_array_equal(ok2.result(timeout=10), [[4.0, 1.0]])
        with pytest.raises(RuntimeError, match="bad text"):
            bad.result(timeout=10)
    finally:
        batcher.close()
    assert enc.calls[0] == ["aa", "b", "FAIL me", "c", "dddd"]  # one batch, then one retry each
    assert batcher.failed == 1 and batcher.requests == 2


def test_micro_batcher_interleaves_a_large_job_with_small_ones():
    """Issue 14 item 11: a small request waited for the whole of a large one."""
    from llm2vec_retrieval.server import MicroBatcher

    first, third = threading.Event(), threading.Event()
    enc = _GatedEncoder({0: first, 2: third})
    batcher = MicroBatcher(enc, max_batch_tokens=400, wait_ms=0)
    try:
        large = batcher.submit([("", "L" * 100)] * 40, tokens=[100] * 40)  # 10 batches of 4 rows
        assert enc.started[0].wait(10)  # the large job is being encoded
        small = batcher.submit([("", "s")], tokens=[1])
        first.set()
        small.result(timeout=10)
        assert not large.done()  # the small one did not wait for the large one
        third.set()
        assert large.result(timeout=30).shape == (40, 2)
    finally:
        first.set()
        third.set()
        batcher.close()
    assert max(sum(len(t) for t in c) for c in enc.calls) <= 400
    mixed = [c for c in enc.calls if "s" in c]
    assert len(mixed) == 1 and any(t.startswith("L") for t in mixed[0])  # shared a budget batch
    assert enc.calls[1] is mixed[0]  # the batch right after the one in flight, not the last


def test_micro_batcher_drops_cancelled_jobs():
    from llm2vec_retrieval.server import MicroBatcher

    release = threading.Event()
    enc = _GatedEncoder({0: release})
    batcher = MicroBatcher(enc, max_batch_tokens=100, wait_ms=0)
    try:
        big = batcher.submit([("", "L" * 100)] * 20, tokens=[100] * 20)  # 20 batches of 1 row
        assert enc.started[0].wait(10)
        assert big.cancel()
        release.set()
        assert batcher.submit([("", "ok")], tokens=[2]).result(timeout=10).shape == (1, 2)
    finally:
        release.set()
        batcher.close()
    done = sum(len(c) for c in enc.calls if c[0].startswith("L"))
    assert done == 1  # only the piece in flight when it was cancelled
    assert enc.calls[-1] == ["ok"]


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_load_small_requests_beside_a_large_one(tmp_path):
    """Issue 14 items 11 and 13: 32 clients of small requests plus one of 256 x ~400-token
    requests for a few seconds (benchmarks.bench_server; the issue's version is 20 s): no
    errors, and the small requests' p99 under 1.5 s while the large requests take longer."""
    from benchmarks import bench_server

    out = tmp_path / "bench.json"
    argv = ["--tiny", "--threads", "1", "--concurrency", "32", "--duration", "4"]
    argv += ["--large-inputs", "256", "--warmup", "2", "--api-key", "bench-key"]
    argv += ["--max-p99-ms", "1500", "--output", str(out)]
    # float32 as before --dtype auto existed: this checks scheduling, not the dtype's speed
    argv += ["--server-arg=--dtype", "--server-arg=float32"]
    code = bench_server.main(argv)
    result = json.loads(out.read_text())["results"][0]
    assert code == 0, result
    assert result["errors"] == 0 and result["large"]["errors"] == 0
    assert result["requests_ok"] > 100 and result["large"]["requests_ok"] >= 1
    assert result["latency_ms"]["p99"] < 1500
    assert result["latency_ms"]["p99"] < result["large"]["latency_ms"]["p50"]


# ---------------------------------------------------------------------- connections
def _conn(server) -> socket.socket:
    return socket.create_connection((server[0], server[1]), timeout=10)


def _read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def test_read_timeout_answers_408_and_closes(guarded):
    """Issue 14 item 12: a request announcing 100 bytes and sending 10 held a thread forever."""
    head = (
        "POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {API_KEY}\r\n"
    )
    stalls = {
        "body": (head + "Content-Length: 100\r\n\r\n").encode() + b'{"input": ',
        "headers": head.encode(),
        "nothing": b"",
    }
    # the three stall at once (each connection has its own timer), so the test waits once
    started = {}
    for what, data in stalls.items():
        sock = _conn(guarded)
        started[what] = (sock, time.monotonic())
        sock.sendall(data)
    for what, (sock, t0) in started.items():
        reply = _read_until_closed(sock)
        took = time.monotonic() - t0
        sock.close()
        assert reply.startswith(b"HTTP/1.1 408"), (what, reply)
        # not before the read timeout (2 s); the socket's own 10 s timeout bounds it above
        assert b'"read_timeout"' in reply and took > 1.8, (what, took)
    assert request(guarded, "GET", "/health").status == 200


def test_connection_cap_and_no_thread_per_connection(guarded):
    """Issue 14 item 12: 400 idle partial connections made 405 threads."""
    pid = guarded[3].pid
    threads_before = len(os.listdir(f"/proc/{pid}/task"))
    socks = []
    for _ in range(60):
        sock = _conn(guarded)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finished
        socks.append(sock)
    # The refused connections are answered at once: wait until they are (no fixed sleep).
    readable: list[socket.socket] = []
    deadline = time.monotonic() + 30
    while len(readable) < 36 and time.monotonic() < deadline:
        readable, _, _ = select.select(socks, [], [], 0.1)
    threads_during = len(os.listdir(f"/proc/{pid}/task"))
    replies = []
    for sock in socks:  # the held ones get a 408 once the read timeout (2 s) passes
        sock.settimeout(10)
        replies.append(_read_until_closed(sock))
        sock.close()
    for reply in replies:
        assert reply == b"" or reply.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503")), reply
    # told by the answer, not by its timing: a 408 was held open, the others refused at once
    refused = sum(not r.startswith(b"HTTP/1.1 408") for r in replies)
    assert 36 <= refused <= 40, refused  # 24 held open (a few may still be closing)
    assert threads_during - threads_before <= 4, (threads_before, threads_during)
    assert request(guarded, "GET", "/health").status == 200


# ---------------------------------------------------------------------- auth, CORS, clients
def test_api_key(guarded):
    for method, path, body in (
        ("POST", "/v1/embeddings", {"input": "x"}),
        ("GET", "/v1/models", None),
        ("GET", f"/v1/models/{GUARDED_NAME}", None),
        ("POST", "/search", {"query": "x"}),
        ("POST", "/embed", {"inputs": "x"}),
        ("GET", "/info", None),
        ("GET", "/metrics", None),
    ):
        for key in (None, "wrong-key"):
            status, out, headers = request(guarded, method, path, body, key=key)
            assert status == 401 and out["error"]["code"] == "invalid_api_key", (path, key)
            assert headers.get("WWW-Authenticate") == "Bearer"
    assert embed(guarded, key=API_KEY, input="x").shape == (1, 32)
    assert request(guarded, "GET", "/health").status == 200  # probes need no key
    assert request(guarded, "GET", "/docs").status == 200


def test_without_the_key_nothing_about_the_host_is_shown(guarded):
    """/health without the key: liveness only; with it: the details. A 404 lists no routes."""
    for key in (None, "wrong-key"):
        status, out, _ = request(guarded, "GET", "/health", key=key)
        assert status == 200 and out == {"status": "ok"}, key
        status, out, _ = request(guarded, "GET", "/no/such/route", key=key)
        assert status == 404 and out["error"]["code"] == "not_found"
        assert "/v1/embeddings" not in out["error"]["message"]
        assert "routes:" not in out["error"]["message"]
    status, out, _ = request(guarded, "GET", "/health", key=API_KEY)
    assert status == 200 and out["model"] == GUARDED_NAME and out["dim"] == 32


def test_cors_origin(guarded):
    reply = request(guarded, "GET", "/health", headers={"Origin": CORS_ORIGIN})
    assert reply.headers.get("access-control-allow-origin") == CORS_ORIGIN
    reply = request(guarded, "GET", "/health", headers={"Origin": "http://other.example"})
    assert reply.headers.get("access-control-allow-origin") is None
    preflight = {
        "Origin": CORS_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    reply = request(guarded, "OPTIONS", "/v1/embeddings", headers=preflight)
    assert reply.status == 200 and reply.headers.get("access-control-allow-origin") == CORS_ORIGIN


def test_openai_client(guarded):
    openai = pytest.importorskip("openai")
    host, port, encoder = guarded[0], guarded[1], guarded[2]
    client = openai.OpenAI(base_url=f"http://{host}:{port}/v1", api_key=API_KEY, max_retries=0)
    texts = ["rivers flood", "the immune system"]
    out = client.embeddings.create(model=GUARDED_NAME, input=texts)  # base64 on the wire
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode_documents(texts), atol=1e-5)
    assert out.model == GUARDED_NAME and out.usage.prompt_tokens == sum(encoder.count_tokens(texts))
    floats = client.embeddings.create(model=GUARDED_NAME, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, got[0], atol=1e-6)
    query = client.embeddings.create(
        model=GUARDED_NAME, input=texts[0], extra_body={"input_type": "query"}
    )
    want = encoder.encode_queries([texts[0]])[0]
    np.testing.assert_allclose(query.data[0].embedding, want, atol=1e-5)
    # no extra field: the query model id embeds queries (issue 25)
    plain = client.embeddings.create(model=f"{GUARDED_NAME}:query", input=texts[0])
    np.testing.assert_allclose(plain.data[0].embedding, want, atol=1e-5)
    assert plain.model == f"{GUARDED_NAME}:query"
    with pytest.raises(openai.BadRequestError):  # not trained for truncated vectors
        client.embeddings.create(model=GUARDED_NAME, input=texts[0], dimensions=8)
    ids = encoder.tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    tokens = client.embeddings.create(model=GUARDED_NAME, input=[ids])
    np.testing.assert_allclose(tokens.data[0].embedding, got[1], atol=1e-5)
    assert [m.id for m in client.models.list()] == [GUARDED_NAME, f"{GUARDED_NAME}:query"]
    assert client.models.retrieve(GUARDED_NAME).id == GUARDED_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other-model")
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model=GUARDED_NAME, input="x", dimensions=0)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


async def test_openai_async_client(guarded):
    openai = pytest.importorskip("openai")
    import asyncio

    host, port, encoder = guarded[0], guarded[1], guarded[2]
    client = openai.AsyncOpenAI(base_url=f"http://{host}:{port}/v1", api_key=API_KEY, max_retries=0)
    texts = [f"async text {i} about rivers" for i in range(8)]
    outs = await asyncio.gather(
        *(client.embeddings.create(model=GUARDED_NAME, input=t) for t in texts)
    )
    got = np.array([o.data[0].embedding for o in outs], dtype=np.float32)
    np.testing.assert_allclose(got, encoder.encode_documents(texts), atol=1e-5)
    assert (await client.models.retrieve(GUARDED_NAME)).id == GUARDED_NAME
    await client.close()


# ---------------------------------------------------------------------- the command line
def test_port_in_use_is_one_line(served):
    host, port = served[0], served[1]
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", "serve", "--host", host, "--port", str(port)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "already in use" in err and "\n" not in err
    assert time.monotonic() - t0 < 60  # fails before loading a model


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--port", "70000"], "--port"),
        (["--max-inputs", "0"], "--max-inputs"),
    ],
)
def test_bad_serve_argument_is_one_line_in_a_process(argv, option):
    """Issue 14 item 9: --port 70000 printed an OverflowError traceback; --max-inputs 0 passed."""
    proc = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", "serve", *argv],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("error: ") and "\n" not in err, err
    assert option in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, option",
    [
        (["--port", "-1"], "--port"),
        (["--port", "eighty"], "--port"),
        (["--max-body-bytes", "0"], "--max-body-bytes"),
        (["--max-input-tokens", "-5"], "--max-input-tokens"),
        (["--batch-tokens", "0"], "--batch-tokens"),
        (["--batch-wait-ms", "nan"], "--batch-wait-ms"),
        (["--batch-wait-ms", "-1"], "--batch-wait-ms"),
        (["--read-timeout", "0"], "--read-timeout"),
        (["--keep-alive", "inf"], "--keep-alive"),
        (["--request-timeout", "-3"], "--request-timeout"),
        (["--max-connections", "0"], "--max-connections"),
        (["--cors-origin", "allowed.example/path"], "--cors-origin"),
        (["--api-key", " "], "--api-key"),
        (["--host", ""], "--host"),
        (["--served-model-name", ""], "--served-model-name"),
    ],
)
def test_bad_serve_argument_is_one_line(argv, option, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["serve", *argv])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and err.startswith("error: ") and "\n" not in err, err
    assert option in err


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_serve_default_dtype_is_said_at_start(tmp_path, tiny_llama):
    """Issue 16.1: without --dtype the server encodes in the dtype the hardware runs natively
    (bfloat16 with avx512_bf16/AMX/ARM bf16, else float32), says so in its start-up log, and
    /health reports it. Its vectors stay close to float32 ones."""
    from llm2vec_retrieval.hardware import resolve_dtype
    from llm2vec_retrieval.ingest.folder import embedder_spec, encoder_from_spec

    auto = resolve_dtype("auto")
    proc, host, port = start_server(
        ["-m", "llm2vec_retrieval", "--threads", "1", "serve", "--model", tiny_llama]
        + ["--port", "0"],
        tmp_path,
    )
    try:
        status, health, _ = request((host, port), "GET", "/health")
        got = embed((host, port), input=["rivers flood after rain", "the immune system"])
    finally:
        log = stop_server(proc)
    assert auto.describe("--dtype") in log.splitlines(), log
    assert status == 200 and health["dtype"] == auto.name
    want = encoder_from_spec(embedder_spec(tiny_llama, None), "float32").encode_documents(
        ["rivers flood after rain", "the immune system"]
    )
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert (cos > 0.99).all(), cos


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_the_server_cleanly(tmp_path, tiny_llama, sig):
    """Issue 24.5: uvicorn raises the signal again after its graceful shutdown (Python's
    default handlers: KeyboardInterrupt, or killed by SIGTERM); `serve` absorbs it with
    handlers of its own (no uvicorn.Server subclass) and exits 0 saying "server stopped"."""
    proc, host, port = start_server(
        ["-m", "llm2vec_retrieval", "--threads", "1", "serve", "--model", tiny_llama]
        + ["--dtype", "float32", "--port", "0"],
        tmp_path,
    )
    try:
        status = request((host, port), "GET", "/health").status
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        log = stop_server(proc)
    assert status == 200
    assert code == 0 and log.rstrip().endswith("server stopped"), (code, log)
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_bad_dtype_is_one_line_before_binding():
    proc = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", "serve", "--port", "0", "--dtype", "fp8"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: unknown --dtype 'fp8'; valid choices: auto, float32, bfloat16, float16, int8"
    )


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_max_input_tokens_above_the_model_limit_is_one_line(tiny_llama):
    proc = subprocess.run(
        [sys.executable, "-m", "llm2vec_retrieval", "--threads", "1", "serve", "--port", "0"]
        + ["--model", tiny_llama, "--max-input-tokens", "5000"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and err[-1].startswith("error: ") and "doc_max_length" in err[-1]


def test_the_core_imports_no_web_framework():
    code = (
        "import sys, llm2vec_retrieval, llm2vec_retrieval.server, llm2vec_retrieval.cli as c\n"
        "c.build_parser()\n"
        "print([m for m in ('fastapi', 'uvicorn', 'starlette', 'pydantic') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_serve_without_the_extra_names_the_install_command():
    code = (
        "import sys\n"
        "sys.modules['fastapi'] = None  # as if the serve extra were not installed\n"
        "from llm2vec_retrieval import cli\n"
        "raise SystemExit(cli.main(['serve', '--port', '0', '--model', 'none']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    err = out.stderr.strip()
    assert out.returncode == 2 and "\n" not in err, err
    assert err.startswith("error: ") and "pip install 'llm2vec-retrieval[serve]'" in err


# ---------------------------------------------------------------------- `search --server`
SEARCH_THROUGH = r"""
import json, sys
from llm2vec_retrieval import cli
rc = cli.main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "transformers") if m in sys.modules)
print(json.dumps({"rc": rc, "heavy": heavy}), file=sys.stderr)
"""


def _url(server) -> str:
    return f"http://{server[0]}:{server[1]}"


def _served_index(server) -> str:
    status, out, _ = request(server, "GET", "/health")
    assert status == 200
    return out["index"]["path"]


def test_models_name_the_fingerprint(served):
    status, out, _ = request(served, "GET", "/v1/models")
    card = out["data"][0]
    assert card["llm2vec_fingerprint"] == served[2].fingerprint()
    assert card["dtype"] == "float32"


def test_cli_search_through_the_server_equals_a_local_search(served, capsys):
    """The query is encoded by the running server (no torch in the searching process) and
    the results equal a search that loads the model itself."""
    idx = _served_index(served)
    query = ["search", idx, "river banks", "-k", "4", "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", SEARCH_THROUGH, *query, "--server", _url(served)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report == {"rc": 0, "heavy": []}, proc.stderr
    assert f"encoding the query on the server at {_url(served)} (float32)" in proc.stderr
    remote = json.loads(proc.stdout)

    local = main_json(capsys, *query, "--dtype", "float32")
    assert remote["instruction"] == local["instruction"] == QUERY_INSTRUCTION
    assert [r["id"] for r in remote["results"]] == [r["id"] for r in local["results"]]
    for a, b in zip(remote["results"], local["results"], strict=True):
        assert abs(a["dense_score"] - b["dense_score"]) < 1e-5
        assert abs(a["score"] - b["score"]) < 1e-5


def main_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert cli.main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_search_server_from_the_environment_and_fallbacks(served, guarded, monkeypatch, capsys):
    """$LLM2VEC_RETRIEVAL_SERVER is used like --server; no server there, a refused key, or a
    server of another model: a note, then the model loads here and the results are right."""
    idx = _served_index(served)
    query = ["search", idx, "immune cells", "-k", "3", "--json", "--dtype", "float32"]
    expected = [r["id"] for r in main_json(capsys, *query)["results"]]

    monkeypatch.setenv("LLM2VEC_RETRIEVAL_SERVER", _url(served))
    out = main_json(capsys, *query)
    assert [r["id"] for r in out["results"]] == expected

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    notes = {
        closed: f"note: no llm2vec-retrieval server at {closed}",
        _url(guarded): f"note: {_url(guarded)} refused the API key",
        "ftp://x": "note: bad server address 'ftp://x'",
    }
    for url, note in notes.items():
        capsys.readouterr()
        assert cli.main([*query, "--server", url]) == 0
        captured = capsys.readouterr()
        assert note in captured.err and "loading the model here instead" in captured.err
        assert [r["id"] for r in json.loads(captured.out)["results"]] == expected

    # the guarded server with its key serves the same model: used
    monkeypatch.setenv("LLM2VEC_RETRIEVAL_API_KEY", API_KEY)
    assert cli.main([*query, "--server", _url(guarded)]) == 0
    captured = capsys.readouterr()
    assert f"encoding the query on the server at {_url(guarded)}" in captured.err
    assert [r["id"] for r in json.loads(captured.out)["results"]] == expected


def test_search_server_of_another_model_is_not_used(served, tmp_path, capsys):
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    other = make_tiny_checkpoint(tmp_path / "other", "llama", seed=1)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after heavy rain. Vaccines train immune cells.")
    argv = ["index", str(corpus), "--index", str(tmp_path / "idx"), "--model", str(other)]
    assert cli.main([*argv, "--chunk-tokens", "8", "--overlap", "0"]) == 0
    capsys.readouterr()
    query = ["search", str(tmp_path / "idx"), "rain", "--json", "--dtype", "float32"]
    assert cli.main([*query, "--server", _url(served)]) == 0
    captured = capsys.readouterr()
    assert f"note: the server at {_url(served)} serves another model than index" in captured.err
    assert "loading the index's model here instead" in captured.err
    assert json.loads(captured.out)["results"]


def test_a_running_server_serves_each_new_commit(tmp_path, tiny_llama):
    """`index` re-run under a running `serve --index`: the next request sees the deleted file
    gone and the new one there, and /health names the new commit. An index re-built with
    another model is not served from memory: /search answers 503 until a commit of the
    served model lands."""
    from llm2vec_retrieval.testing import make_tiny_checkpoint

    corpus, idx = tmp_path / "corpus", tmp_path / "idx"
    corpus.mkdir()
    (corpus / "doc01.txt").write_text("Glaciers carve deep valleys in the mountains.")
    (corpus / "doc02.txt").write_text("Heavy rain raises river levels over the banks.")
    index = ["index", str(corpus), "--index", str(idx), "--chunk-tokens", "12", "--overlap", "2"]
    assert cli.main([*index, "--model", tiny_llama]) == 0
    proc, host, port = start_server(
        ["-m", "llm2vec_retrieval", "--threads", "1", "serve", "--index", str(idx)]
        + ["--port", "0", "--dtype", "float32"],
        tmp_path,
    )
    server = (host, port)

    def sources() -> set[str]:
        status, out, _ = request(server, "POST", "/search", {"query": "valleys", "k": 100})
        assert status == 200, out
        return {Path(r["source"]).name for r in out["results"]}

    def on_disk() -> tuple[str, int]:
        manifest = json.loads((idx / "store" / "manifest.json").read_text())
        return manifest["manifest_sha256"], manifest["count"]

    try:
        assert sources() == {"doc01.txt", "doc02.txt"}
        status, health, _ = request(server, "GET", "/health")
        first = health["index"]
        assert (first["commit"], first["chunks"]) == on_disk() and first["reloads"] == 0

        (corpus / "doc01.txt").unlink()
        (corpus / "doc03.txt").write_text("Volcanoes erupt molten rock and ash; valleys fill.")
        assert cli.main([*index, "--model", tiny_llama]) == 0
        assert sources() == {"doc02.txt", "doc03.txt"}
        status, health, _ = request(server, "GET", "/health")
        assert (health["index"]["commit"], health["index"]["chunks"]) == on_disk()
        assert health["index"]["commit"] != first["commit"] and health["index"]["error"] is None
        assert health["index"]["reloads"] == 1  # checked per request, loaded once per commit

        other = make_tiny_checkpoint(tmp_path / "other", "llama", seed=1)
        assert cli.main([*index, "--model", str(other), "--rebuild"]) == 0
        status, out, _ = request(server, "POST", "/search", {"query": "valleys"})
        assert status == 503 and out["error"]["code"] == "index_unavailable"
        assert "re-indexed with another model" in out["error"]["message"]
        status, health, _ = request(server, "GET", "/health")
        assert "re-indexed with another model" in health["index"]["error"]

        assert cli.main([*index, "--model", tiny_llama, "--rebuild"]) == 0
        assert sources() == {"doc02.txt", "doc03.txt"}
    finally:
        stop_server(proc)


def test_remote_encoder_refuses_a_server_that_is_not_ours(tmp_path):
    """Another OpenAI-compatible server (no fingerprint in its model card) is not used."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from llm2vec_retrieval.client import RemoteEncoder, ServerUnavailableError

    class Models(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            body = json.dumps({"object": "list", "data": [{"id": "other-model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Models)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerUnavailableError, match="is not an llm2vec-retrieval server"):
            RemoteEncoder(f"127.0.0.1:{httpd.server_address[1]}")
    finally:
        httpd.shutdown()
        httpd.server_close()
