"""Encoding worker for benchmarks/speed.py: one implementation, one dtype, loaded once.

    python benchmarks/_workers/encode_worker.py --impl ours --model DIR --dtype float32 --threads 2

Implementations (`--impl`):
  ours                   llm2vec_retrieval LLM2Vec.from_pretrained(DIR, dtype=...).encode_documents
  official               llm2vec 0.2.3 LLM2Vec.from_pretrained(DIR, torch_dtype=...).encode (its own venv)
  sentence-transformers  Transformer(DIR) + Pooling(mean), config.is_causal = False (bidirectional),
                         plain-text modality (sentence-transformers >= 6 would otherwise wrap every
                         text in the model's chat template)
  hf-bare                transformers AutoModel, config.is_causal = False, length-sorted
                         token-budget batches, mean pooling: a reference without any wrapper
  peak                   no model: matmul peak of the dtype (op "peak")

Ops: set_texts {texts}, encode {batch_size, return_vectors, instruction}, probe, peak {shapes, min_time},
tokenize (ours only: the encoder's own token counts). See protocol.py for the framing.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402

STATE: dict = {"texts": []}


def _dtype(name: str):
    import torch

    return {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }[name]


def probe_bidirectional(model) -> bool:
    """Does the first token's output change when the last token changes (no padding)?"""
    import torch

    a = torch.tensor([[5, 6, 7]])
    b = a.clone()
    b[0, -1] = 8
    with torch.inference_mode():
        out_a = model(input_ids=a, attention_mask=torch.ones_like(a))[0][0, 0].float()
        out_b = model(input_ids=b, attention_mask=torch.ones_like(b))[0][0, 0].float()
    return not torch.equal(out_a, out_b)


# ------------------------------------------------------------------------ implementations
class Ours:
    def __init__(self, args):
        from llm2vec_retrieval import LLM2Vec
        from llm2vec_retrieval.bidirectional import is_bidirectional

        kwargs = {"max_batch_tokens": args.max_batch_tokens} if args.max_batch_tokens else {}
        self.m = LLM2Vec.from_pretrained(args.model, dtype=args.dtype, **kwargs)
        self.info = {
            "bidirectional": bool(is_bidirectional(self.m.model)),
            "config": vars(self.m.config).copy(),
            "attn_implementation": getattr(self.m.model.config, "_attn_implementation", None),
        }

    def encode(self, texts, batch_size, instruction=None):
        if instruction is not None:
            return self.m.encode_queries(texts, instruction=instruction, batch_size=batch_size)
        return self.m.encode_documents(texts, batch_size=batch_size)

    def tokenize(self, texts):
        texts = list(texts)
        lengths = []
        for i in range(0, len(texts), 1024):  # bounded padding: the features are padded tensors
            features = self.m.tokenize([("", t) for t in texts[i : i + 1024]])
            lengths += features["attention_mask"].sum(dim=1).tolist()
        return lengths


class Official:
    def __init__(self, args):
        import llm2vec
        from llm2vec import LLM2Vec

        self.m = LLM2Vec.from_pretrained(args.model, torch_dtype=_dtype(args.dtype))
        self.m.eval()
        self.info = {
            "bidirectional": probe_bidirectional(self.m.model),
            "llm2vec_file": llm2vec.__file__,
            "model_class": type(self.m.model).__name__,
            "attn_implementation": getattr(self.m.model.config, "_attn_implementation", None),
            "settings": {
                "pooling_mode": self.m.pooling_mode,
                "max_length": self.m.max_length,
                "doc_max_length": self.m.doc_max_length,
                "skip_instruction": self.m.skip_instruction,
            },
        }

    def encode(self, texts, batch_size, instruction=None):
        items = list(texts) if instruction is None else [[instruction, t] for t in texts]
        out = self.m.encode(items, batch_size=batch_size, show_progress_bar=False)
        return out.float().numpy() if hasattr(out, "float") else out


class SentenceTransformers:
    def __init__(self, args):
        from sentence_transformers import SentenceTransformer

        try:
            from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
        except ImportError:  # sentence-transformers < 6
            from sentence_transformers.models import Pooling, Transformer
        kwargs = {"max_seq_length": 512, "model_kwargs": {"dtype": _dtype(args.dtype)}}
        try:  # plain text modality: no chat template (sentence-transformers >= 6)
            transformer = Transformer(
                args.model,
                modality_config={
                    "text": {"method": "forward", "method_output_name": "last_hidden_state"}
                },
                module_output_name="token_embeddings",
                **kwargs,
            )
        except TypeError:
            transformer = Transformer(
                args.model, max_seq_length=512, model_args={"torch_dtype": _dtype(args.dtype)}
            )
        auto = transformer.auto_model
        causal_before = not probe_bidirectional(auto)
        auto.config.is_causal = False
        flag_only = probe_bidirectional(auto)
        module_flags = False
        if not flag_only:  # older transformers: the attention modules carry the flag
            for module in auto.modules():
                if module is not auto and isinstance(getattr(module, "is_causal", None), bool):
                    module.is_causal = False
            module_flags = True
        pooling = Pooling(auto.config.hidden_size, "mean")
        self.m = SentenceTransformer(modules=[transformer, pooling], device="cpu")
        self.m.to(_dtype(args.dtype))
        tok = self.m.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.info = {
            "bidirectional": probe_bidirectional(auto),
            "causal_before_switch": causal_before,
            "config_is_causal_false_suffices": flag_only,
            "module_flags_needed": module_flags,
            "attn_implementation": getattr(auto.config, "_attn_implementation", None),
            "max_seq_length": self.m.max_seq_length,
            "dtype": str(next(auto.parameters()).dtype),
        }

    def encode(self, texts, batch_size):
        return self.m.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False
        )


class HFBare:
    """Bare transformers forward: length-sorted token-budget batches, mean pooling over the mask."""

    max_batch_tokens = 16384

    def __init__(self, args):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(args.model)
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModel.from_pretrained(args.model, dtype=_dtype(args.dtype)).eval()
        self.model.config.is_causal = False
        flag_only = probe_bidirectional(self.model)
        if not flag_only:
            for module in self.model.modules():
                if module is not self.model and isinstance(
                    getattr(module, "is_causal", None), bool
                ):
                    module.is_causal = False
        self.info = {
            "bidirectional": probe_bidirectional(self.model),
            "config_is_causal_false_suffices": flag_only,
            "attn_implementation": getattr(self.model.config, "_attn_implementation", None),
            "max_batch_tokens": self.max_batch_tokens,
        }
        self.torch = torch

    def encode(self, texts, batch_size):
        torch = self.torch
        ids = self.tok(list(texts), add_special_tokens=True, truncation=True, max_length=512)[
            "input_ids"
        ]
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = torch.empty((len(ids), self.model.config.hidden_size), dtype=torch.float32)
        pad = self.tok.pad_token_id
        start = 0
        with torch.inference_mode():
            while start < len(order):
                width = len(ids[order[start]])
                rows = max(1, min(batch_size, self.max_batch_tokens // max(width, 1)))
                batch = order[start : start + rows]
                start += rows
                x = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    x[r, : len(ids[i])] = torch.tensor(ids[i])
                    mask[r, : len(ids[i])] = 1
                hidden = self.model(input_ids=x, attention_mask=mask).last_hidden_state
                m = mask.unsqueeze(-1).to(hidden.dtype)
                vec = (hidden * m).sum(1) / m.sum(1)
                out[torch.tensor(batch)] = vec.float()
        return out.numpy()


class Peak:
    def __init__(self, args):
        self.info = {}


IMPLS = {
    "ours": Ours,
    "official": Official,
    "sentence-transformers": SentenceTransformers,
    "hf-bare": HFBare,
    "peak": Peak,
}
VERSION_DISTS = ("torch", "transformers", "llm2vec", "sentence-transformers", "peft", "numpy")


def matmul_peak(dtype_name: str, shapes, min_time: float = 0.5, max_iters: int = 50) -> list[dict]:
    """Best-of-several FLOP/s of `F.linear(x[m,k], w[n,k])` for each (m, k, n); 2*m*k*n FLOPs per call."""
    import torch

    dtype = _dtype(dtype_name)
    rows = []
    gen = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(m, k, generator=gen).to(dtype)
        w = torch.randn(n, k, generator=gen).to(dtype)
        with torch.inference_mode():
            for _ in range(2):
                torch.nn.functional.linear(x, w)
            times = []
            t_end = time.perf_counter() + min_time
            while len(times) < 3 or (time.perf_counter() < t_end and len(times) < max_iters):
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, w)
                times.append(time.perf_counter() - t0)
        best = min(times)
        rows.append(
            {
                "shape": [m, k, n],
                "best_s": best,
                "median_s": sorted(times)[len(times) // 2],
                "iters": len(times),
                "flops_per_s": 2.0 * m * k * n / best,
            }
        )
    return rows


def main() -> int:
    args = protocol.base_args(__doc__.splitlines()[0]).parse_args()
    if args.project_root:
        sys.path.insert(0, args.project_root)
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
                "torch_interop_threads": torch.get_num_interop_threads(),
                "versions": protocol.versions(*VERSION_DISTS),
            }
        )
        return info

    def set_texts(req):
        STATE["texts"] = list(req["texts"])
        return {"n": len(STATE["texts"])}

    def encode(req):
        texts = STATE["texts"][: req["limit"]] if req.get("limit") else STATE["texts"]
        import gc

        gc.collect()
        kwargs = {}
        if (
            req.get("instruction") is not None
        ):  # queries: only ours and official take an instruction
            if args.impl not in ("ours", "official"):
                raise ValueError(f"{args.impl} takes no instruction")
            kwargs["instruction"] = req["instruction"]
        vectors, seconds = protocol.timed(
            impl["obj"].encode, texts, req.get("batch_size", args.batch_size), **kwargs
        )
        reply = {"seconds": seconds, "n": len(texts)}
        if req.get("return_vectors"):
            reply["vectors"] = protocol.encode_array(vectors)
        return reply

    def tokenize(req):
        return {"lengths": impl["obj"].tokenize(req.get("texts") or STATE["texts"])}

    def peak(req):
        return {"rows": matmul_peak(args.dtype, req["shapes"], req.get("min_time", 0.5))}

    return protocol.serve(
        load, {"set_texts": set_texts, "encode": encode, "tokenize": tokenize, "peak": peak}
    )


if __name__ == "__main__":
    sys.exit(main())
