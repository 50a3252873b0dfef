"""Indexes written by main at 757fd90 (before issue 24 split loading.py, moved the
fingerprint into its own module and dropped the legacy digests) keep loading.

The fixture was made by that commit's code: `make_tiny_checkpoint(model)` then
`Indexer(IndexFolder(index), IndexSettings(model=model)).run([corpus])` in float32; the
model folder is kept beside the index, so its digest is the one the index recorded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

FIXTURE = Path(__file__).parent / "fixtures" / "index_main_757fd90"


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "saved"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_store_loads_with_the_fingerprint_it_records(saved):
    from llm2vec_retrieval.fingerprint import folder_digest
    from llm2vec_retrieval.index import IndexStore

    manifest = json.loads((saved / "index" / "store" / "manifest.json").read_text())
    fingerprint = manifest["fingerprint"]
    assert folder_digest(saved / "model") == fingerprint["model_digest"]  # the same digest
    store = IndexStore.load(saved / "index" / "store", fingerprint=fingerprint)
    assert len(store) == 4 and store.dim == 32 and store.has_lexical
    vector = store.vectors(["corpus/b.md#0"])
    assert store.search(vector[0], k=1)[0].id == "corpus/b.md#0"


def test_searcher_encodes_as_the_index_was_built(saved):
    from llm2vec_retrieval.ingest import Searcher

    searcher = Searcher(saved / "index", model=str(saved / "model"), dtype="float32")
    text = "Rivers flow into the sea after heavy rain."
    stored = searcher.store.vectors(["corpus/a.txt#0"])[0]
    np.testing.assert_allclose(searcher.encoder.encode_documents([text])[0], stored, atol=1e-5)
    hits = searcher.search("rivers after rain", k=2, mode="hybrid")
    assert len(hits) == 2 and all(h.id.startswith("corpus/") for h in hits)
    lexical = Searcher(saved / "index", lexical_only=True)
    assert lexical.search("mountains clouds", k=1, mode="lexical")[0].id == "corpus/c.jsonl#1"
