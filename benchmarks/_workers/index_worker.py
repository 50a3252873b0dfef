"""Index-build worker for benchmarks/speed.py: encode + add the documents into a fresh vector store.

    python benchmarks/_workers/index_worker.py --impl ours-indexstore --model DIR --threads 2

Implementations (`--impl`):
  ours-indexstore      LLM2Vec.encode_documents + llm2vec_retrieval.index.IndexStore (flat, cosine)
  ours-langchain       langchain_llm2vec LLM2VecVectorStore.from_texts(texts, LLM2VecEmbeddings(encoder=...))
  langchain-hf-faiss   langchain_huggingface HuggingFaceEmbeddings(model_name=DIR) + langchain_community
                       FAISS.from_texts: what a LangChain user gets from the same folder (sentence-transformers
                       wraps it itself: causal attention, mean pooling, and on sentence-transformers >= 6 the
                       model's chat template around every text)

Ops: set_texts {texts}, build {batch_size}. Every build starts from an empty store.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402

STATE: dict = {"texts": []}


class OursIndexStore:
    def __init__(self, args):
        from llm2vec_retrieval import LLM2Vec

        self.m = LLM2Vec.from_pretrained(args.model, dtype=args.dtype)
        self.info = {
            "index": "llm2vec_retrieval.index.IndexStore kind=flat metric=cosine",
            "bidirectional": True,
        }

    def build(self, texts, batch_size):
        from llm2vec_retrieval.index import IndexStore

        t0 = time.perf_counter()
        vectors = self.m.encode_documents(texts, batch_size=batch_size)
        t1 = time.perf_counter()
        store = IndexStore(
            self.m.embedding_dim, kind="flat", metric="cosine", fingerprint=self.m.fingerprint()
        )
        store.add([str(i) for i in range(len(texts))], vectors, texts)
        t2 = time.perf_counter()
        return {"encode_s": t1 - t0, "add_s": t2 - t1, "size": len(store)}


class OursLangChain:
    def __init__(self, args):
        from langchain_llm2vec import LLM2VecEmbeddings

        from llm2vec_retrieval import LLM2Vec

        self.emb = LLM2VecEmbeddings(
            encoder=LLM2Vec.from_pretrained(args.model, dtype=args.dtype),
            batch_size=args.batch_size,
        )
        self.info = {
            "index": "langchain_llm2vec.LLM2VecVectorStore (IndexStore flat, cosine)",
            "bidirectional": True,
        }

    def build(self, texts, batch_size):
        from langchain_llm2vec import LLM2VecVectorStore

        store = LLM2VecVectorStore.from_texts(list(texts), self.emb)
        return {"size": len(store)}


class LangChainHFFaiss:
    def __init__(self, args):
        import torch
        from langchain_huggingface import HuggingFaceEmbeddings

        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            args.dtype
        ]
        self.emb = HuggingFaceEmbeddings(
            model_name=args.model,
            model_kwargs={"device": "cpu", "model_kwargs": {"dtype": dtype}},
            encode_kwargs={"batch_size": args.batch_size, "normalize_embeddings": True},
        )
        client = self.emb._client
        auto = client[0].auto_model
        self.info = {
            "index": "langchain_community.vectorstores.FAISS (IndexFlatL2, normalized vectors)",
            "embeddings": "langchain_huggingface.HuggingFaceEmbeddings",
            "bidirectional": False,
            "is_causal": getattr(auto.config, "is_causal", None),
            "modules": [type(m).__name__ for m in client],
            "max_seq_length": client.max_seq_length,
            "dtype": str(next(auto.parameters()).dtype),
            "note": "sentence-transformers builds Transformer + mean Pooling itself from a plain checkpoint",
        }

    def tokens_seen(self, texts) -> int:
        """Tokens the sentence-transformers model actually processes (its own preprocessing)."""
        client = self.emb._client
        pre = getattr(client, "preprocess", None) or client.tokenize
        total = 0
        for s in range(0, len(texts), 64):
            features = pre(list(texts[s : s + 64]))
            total += int(features["attention_mask"].sum())
        return total

    def build(self, texts, batch_size):
        from langchain_community.vectorstores import FAISS

        store = FAISS.from_texts(list(texts), self.emb)
        return {"size": int(store.index.ntotal)}


IMPLS = {
    "ours-indexstore": OursIndexStore,
    "ours-langchain": OursLangChain,
    "langchain-hf-faiss": LangChainHFFaiss,
}
VERSION_DISTS = (
    "torch",
    "transformers",
    "sentence-transformers",
    "faiss-cpu",
    "langchain-core",
    "langchain-community",
    "langchain-huggingface",
)


def main() -> int:
    args = protocol.base_args(__doc__.splitlines()[0]).parse_args()
    if args.project_root:
        sys.path[:0] = [args.project_root, os.path.join(args.project_root, "integrations")]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    impl = {}

    def load():
        protocol.set_threads(args.threads)
        import torch

        impl["obj"] = IMPLS[args.impl](args)
        info = dict(impl["obj"].info)
        info.update(
            {
                "impl": args.impl,
                "dtype": args.dtype,
                "torch_threads": torch.get_num_threads(),
                "versions": protocol.versions(*VERSION_DISTS),
            }
        )
        return info

    def set_texts(req):
        STATE["texts"] = list(req["texts"])
        reply = {"n": len(STATE["texts"])}
        if hasattr(impl["obj"], "tokens_seen"):
            reply["tokens_seen"] = impl["obj"].tokens_seen(STATE["texts"])
        return reply

    def build(req):
        import gc

        texts = STATE["texts"][: req["limit"]] if req.get("limit") else STATE["texts"]
        gc.collect()
        parts, seconds = protocol.timed(
            impl["obj"].build, texts, req.get("batch_size", args.batch_size)
        )
        parts.update({"seconds": seconds, "n": len(texts)})
        return parts

    return protocol.serve(load, {"set_texts": set_texts, "build": build})


if __name__ == "__main__":
    sys.exit(main())
