"""The `llm2vec-retrieval` command line.

Subcommands are small functions registered on one argparse parser; errors the
user can fix are printed as one line with a non-zero exit code (a traceback only
with --debug).
"""

from __future__ import annotations

import argparse
import os
import sys

DEMO_QUERIES = [
    "How do vaccines train the immune system?",
    "What makes a river flood?",
    "Which animal is fast and red?",
]
DEMO_DOCUMENTS = [
    "Vaccines expose the immune system to a harmless piece of a pathogen so it can respond faster later.",
    "Heavy rain and melting snow raise river levels until the water spills over the banks.",
    "The quick brown fox jumps over the lazy dog.",
    "A database index stores keys in sorted order to speed up lookups.",
]


class UserError(Exception):
    """An error the user can fix: printed as one line, exit code 2."""


def cmd_demo(args: argparse.Namespace) -> int:
    """Encode queries (with an instruction) and documents; print their cosine similarities."""
    from . import LLM2Vec

    encoder = LLM2Vec.from_pretrained(args.model)
    print(f"model: {encoder.source.get('model')}  dim: {encoder.embedding_dim}  pooling: {encoder.config.pooling_mode}")
    queries = encoder.encode_queries(DEMO_QUERIES, instruction=args.instruction)
    docs = encoder.encode_documents(DEMO_DOCUMENTS)
    scores = queries @ docs.T
    print(f"query instruction: {args.instruction or encoder.config.query_instruction!r}\n")
    header = "".join(f"  doc{j}" for j in range(len(DEMO_DOCUMENTS)))
    print(f"{'cosine':<48}{header}")
    for i, query in enumerate(DEMO_QUERIES):
        row = "".join(f"  {s:+.2f}" for s in scores[i])
        best = scores[i].argmax()
        print(f"{query[:46]:<48}{row}   best: doc{best}")
    print()
    for j, doc in enumerate(DEMO_DOCUMENTS):
        print(f"doc{j}: {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm2vec-retrieval", description="LLM2Vec text encoders for retrieval.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="encode a few queries and documents and print their similarities")
    demo.add_argument("--model", default=None, help="model folder or embedded name (default: the embedded default)")
    demo.add_argument("--instruction", default=None, help="query instruction (default: the model's)")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (UserError, FileNotFoundError, ValueError, ImportError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
