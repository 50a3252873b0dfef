"""`RemoteEncoder` (`search --server URL`) against servers that misbehave.

Each fake server is a real ``http.server`` on 127.0.0.1 in a thread. Its model card carries
the fingerprint of the tiny model the index was built with, so the client accepts it; then
it answers the embeddings request with one kind of garbage. Every case ends in one line:
``ServerUnavailableError`` from the client, and a note plus a local search (same results
as without a server) from the CLI. One server drips its answer a byte at a time: the
client's total deadline (1 s here) ends the call.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from llm2vec_retrieval import cli
from llm2vec_retrieval.client import RemoteEncoder, ServerUnavailableError

pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def index(tmp_path_factory, tiny_llama, tiny_encoder):
    """(index folder, fingerprint of its model, dim)."""
    work = tmp_path_factory.mktemp("client")
    corpus = work / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("Rivers flood after heavy rain. Vaccines train immune cells.")
    (corpus / "b.txt").write_text("Glaciers carve valleys over thousands of years.")
    argv = ["index", str(corpus), "--index", str(work / "idx"), "--model", tiny_llama]
    assert cli.main([*argv, "--chunk-tokens", "8", "--overlap", "0"]) == 0
    return str(work / "idx"), tiny_encoder.fingerprint(), tiny_encoder.embedding_dim


def _b64(values) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _embeddings(*items) -> dict:
    return {"object": "list", "data": list(items), "model": "m"}


def _item(embedding, index=0) -> dict:
    return {"object": "embedding", "index": index, "embedding": embedding}


class FakeServer:
    """A real HTTP server whose answers a test sets: ``card`` (the /v1/models answer, None:
    a good one), ``embeddings`` (the /v1/embeddings JSON) and ``drip`` (send it one byte at a
    time, forever)."""

    def __init__(self, fingerprint: dict):
        self.fingerprint = fingerprint
        self.card: object = None
        self.embeddings: object = None
        self.drip = False
        self.dripping = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 (http.server's name)
                card = fake.card
                if card is None:
                    card = {
                        "id": "tiny",
                        "object": "model",
                        "llm2vec_fingerprint": fake.fingerprint,
                    }
                self.answer({"object": "list", "data": [card]})

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                self.answer(fake.embeddings)

            def answer(self, payload) -> None:
                body = json.dumps(payload).encode()
                if not (fake.drip and self.command == "POST"):
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # status line, headers and body, a byte every 50 ms (about 15 s in all)
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                fake.dripping.set()
                try:
                    for byte in head + body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:  # the client hung up
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake(index):
    server = FakeServer(index[1])
    try:
        yield server
    finally:
        server.close()


# (what the embeddings answer is, the answer for a dimension `dim`, what the note says)
BAD_EMBEDDINGS = [
    ("no data key", lambda dim: {"object": "list"}, "no 'data' list"),
    ("an empty list", lambda dim: _embeddings(), "0 embeddings for 1 queries"),
    ("wrong dimension", lambda dim: _embeddings(_item(_b64(np.ones(dim - 1)))), "bytes"),
    ("huge dimension", lambda dim: _embeddings(_item(_b64(np.ones(100_000)))), "bytes"),
    ("NaN values", lambda dim: _embeddings(_item(_b64([np.nan] * dim))), "NaN"),
    ("floats, not base64", lambda dim: _embeddings(_item([0.1] * dim)), "not the base64"),
    ("short base64", lambda dim: _embeddings(_item(_b64(np.ones(dim))[:-8])), "bytes"),
    ("not base64", lambda dim: _embeddings(_item("%%%not-base64%%%")), "not valid base64"),
    ("bad index", lambda dim: _embeddings(_item(_b64(np.ones(dim)), index=3)), "'index'"),
    ("not an object", lambda dim: [1, 2, 3], "no 'data' list"),
]
BAD_CARDS = [
    ("fingerprint a string", {"id": "m", "llm2vec_fingerprint": "abc"}, "not an object"),
    ("fingerprint a list", {"id": "m", "llm2vec_fingerprint": [1]}, "not an object"),
    ("no dim", {"id": "m", "llm2vec_fingerprint": {"model": "x"}}, "'dim'"),
    ("huge dim", {"id": "m", "llm2vec_fingerprint": {"dim": 10**12}}, "'dim'"),
    ("no id", {"llm2vec_fingerprint": {"dim": 8}}, "no 'id'"),
]


@pytest.mark.parametrize("name,answer,note", BAD_EMBEDDINGS, ids=[c[0] for c in BAD_EMBEDDINGS])
def test_malformed_embeddings_are_one_line(fake, index, name, answer, note):
    fake.embeddings = answer(index[2])
    encoder = RemoteEncoder(fake.url)
    with pytest.raises(ServerUnavailableError) as err:
        encoder.encode_queries(["rain"])
    message = str(err.value)
    assert "\n" not in message and "malformed answer to POST /v1/embeddings" in message
    assert note in message


@pytest.mark.parametrize("name,card,note", BAD_CARDS, ids=[c[0] for c in BAD_CARDS])
def test_malformed_model_cards_are_one_line(fake, name, card, note):
    fake.card = card
    with pytest.raises(ServerUnavailableError) as err:
        RemoteEncoder(fake.url)
    message = str(err.value)
    assert "\n" not in message and "malformed answer to GET /v1/models" in message
    assert note in message


def test_a_good_answer_is_used(fake, index):
    """The fake is right when it answers right (so the cases above fail for their garbage)."""
    dim = index[2]
    fake.embeddings = _embeddings(_item(_b64(np.arange(dim) / dim), 1), _item(_b64(np.ones(dim))))
    vectors = RemoteEncoder(fake.url).encode_queries(["a", "b"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, dim)
    assert np.allclose(vectors[1], np.arange(dim) / dim) and np.allclose(vectors[0], 1.0)


def test_a_dripping_server_meets_the_total_deadline(fake, index):
    """Each byte arrives well within any per-read timeout; the whole answer takes ~15 s."""
    dim = index[2]
    fake.embeddings = _embeddings(_item(_b64(np.ones(dim))))
    fake.drip = True
    encoder = RemoteEncoder(fake.url, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(
        ServerUnavailableError, match=r"did not answer POST /v1/embeddings within 1 s"
    ):
        encoder.encode_queries(["rain"])
    assert fake.dripping.is_set()
    assert time.monotonic() - started < 10  # not the drip's ~15 s


@pytest.mark.parametrize(
    "case",
    [("embeddings", c[0], c[1]) for c in BAD_EMBEDDINGS[:8]]
    + [("card", c[0], c[1]) for c in BAD_CARDS[:3]],
    ids=lambda c: f"{c[0]}-{c[1]}",
)
def test_cli_search_falls_back_on_a_malformed_answer(fake, index, capsys, case):
    """`search --server` says why in one note, loads the model here, and ranks as a local
    search does."""
    where, _, answer = case
    query = ["search", index[0], "heavy rain", "-k", "3", "--json", "--dtype", "float32"]
    capsys.readouterr()
    assert cli.main(query) == 0
    expected = [r["id"] for r in json.loads(capsys.readouterr().out)["results"]]
    if where == "card":
        fake.card = answer
    else:
        fake.embeddings = answer(index[2])
    assert cli.main([*query, "--server", fake.url]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note: ")]
    assert len(notes) == 1 and f"{fake.url} sent a malformed answer" in notes[0], captured.err
    assert notes[0].endswith("loading the model here instead")
    assert "Traceback" not in captured.err
    assert [r["id"] for r in json.loads(captured.out)["results"]] == expected
