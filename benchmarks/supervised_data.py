"""Prepare the supervised training mix of the default model: instructions, dev split, BM25 hard negatives.

    python -m benchmarks.supervised_data --out benchmarks/.cache/supervised     # shippable sources only
    python -m benchmarks.supervised_data --out DIR --restricted                 # + restricted/ (experiments only)

Reads (never copies into the project) `../shared/data/snli-triples-small` and the top-level
`../shared/data/supervised-pairs/*.tsv`; `restricted/*.tsv` only with --restricted, and the
output then says so in its manifest (`"shippable": false`), which `benchmarks.train_default`
refuses to ship from.

Per source, the query-side instruction LLM2Vec's supervised stage uses for that kind of task
(E5-style, Wang et al. 2023): question -> passage retrieval for MedQuAD and Stack Exchange
question -> accepted answer, the STS instruction for the symmetric paraphrase-like pairs
(SNLI entailment, English -> Simple Wikipedia), and a duplicate-question style one for
Stack Exchange title -> question body.

Dev split (for choosing sources and settings; SciFact and STS-B test are never looked at):
a fixed number of anchors per source (`--dev-anchors`), chosen by a hash of the normalized
anchor, so every row of a dev anchor is held out and no dev text is a training negative.
Each dev set is a small retrieval task: its anchors as queries, the positives of all its
anchors as the corpus. SNLI has no dev split (STS-B dev is the similarity dev set).

Hard negatives: mined from each source's training positives with the project's BM25
(`llm2vec_retrieval.training.mining`), excluding the positive, its duplicates and the
anchor's other positives, and anything scoring >= 95% of the positive; rows that have a
labelled negative keep it.

Writes DIR/train/<source>.jsonl (query, positive, negative, source, instruction),
DIR/dev/<source>.jsonl (query, positive, instruction) and DIR/manifest.json (inputs with
sha256, counts, mining statistics, the command).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from collections import defaultdict
from pathlib import Path

from llm2vec_retrieval.evaluation.data import default_data_dir, sha256_file
from llm2vec_retrieval.instructions import STS_INSTRUCTION
from llm2vec_retrieval.training.data import Example, read_examples
from llm2vec_retrieval.training.mining import mine_hard_negatives, normalize_text

QA_INSTRUCTION = "Given a question, retrieve passages that answer the question:"
# Per source (and Stack Exchange row kind): the instruction on the query side.
INSTRUCTIONS = {
    "snli": STS_INSTRUCTION,
    "altlex": STS_INSTRUCTION,
    "medquad": "Given a health question, retrieve passages that answer the question:",
    "stackexchange-title": "Given a question title, retrieve the full question it belongs to:",
    "stackexchange-answer": QA_INSTRUCTION,
    # restricted/ (experiments only)
    "msrp": STS_INSTRUCTION,
    "twitterppdb": STS_INSTRUCTION,
    "wikiqa": QA_INSTRUCTION,
    "healthver": "Given a health claim, retrieve evidence that supports or refutes the claim:",
}
DEV_ANCHORS = {"medquad": 300, "altlex": 300, "stackexchange": 150}


def source_name(ex: Example, path: Path) -> str:
    """The training source of a row: the file's source name, Stack Exchange split by row kind."""
    fields = (ex.source or "").split("|")
    name = fields[0] if fields[0] in INSTRUCTIONS or fields[0] == "stackexchange" else path.stem
    if name.startswith("snli"):
        return "snli"
    if name == "stackexchange":
        return "stackexchange-title" if fields[-1] == "title-body" else "stackexchange-answer"
    return name


def _hash(text: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=8).digest(), "big"
    )


def split_dev(rows: list[Example], n_anchors: int) -> tuple[list[Example], list[Example]]:
    """(train, dev): the n_anchors anchors with the smallest hash, with all their rows, are dev."""
    anchors = sorted({normalize_text(ex.query) for ex in rows}, key=lambda a: _hash(a))
    dev_keys = set(anchors[:n_anchors])
    train = [ex for ex in rows if normalize_text(ex.query) not in dev_keys]
    dev = [ex for ex in rows if normalize_text(ex.query) in dev_keys]
    return train, dev


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.supervised_data", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="shared data folder (default: $LLM2VEC_DATA_DIR or ../shared/data)",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--restricted",
        action="store_true",
        help="also read supervised-pairs/restricted/ (licenses allow experiments only: never ship)",
    )
    p.add_argument(
        "--max-ratio",
        type=float,
        default=0.95,
        help="mined negative must score below this x the positive",
    )
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    data = Path(args.data_dir) if args.data_dir else default_data_dir()
    files = [
        data / "snli-triples-small" / "snli_dev_test_triples.tsv",
        *sorted((data / "supervised-pairs").glob("*.tsv")),
    ]
    if args.restricted:
        files += sorted((data / "supervised-pairs" / "restricted").glob("*.tsv"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing or len(files) < 2:
        print(
            f"error: missing data files {missing or 'supervised-pairs/*.tsv'}; see ../shared/data/README.md",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out)
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "dev").mkdir(parents=True, exist_ok=True)

    by_source: dict[str, list[Example]] = defaultdict(list)
    for f in files:
        for ex in read_examples(f):
            name = source_name(ex, f)
            by_source[name].append(
                Example(ex.query, ex.positive, ex.negative, name, INSTRUCTIONS[name])
            )
    train_rows: list[Example] = []
    counts = {}
    for name, rows in sorted(by_source.items()):
        family = name.split("-")[0]
        n_dev = DEV_ANCHORS.get(family, 0)
        if family == "stackexchange":  # one dev budget shared by its two row kinds
            n_dev = n_dev // 2
        train, dev = split_dev(rows, n_dev) if n_dev else (rows, [])
        if dev:
            _write_jsonl(
                out / "dev" / f"{name}.jsonl",
                [
                    {"query": ex.query, "positive": ex.positive, "instruction": ex.instruction}
                    for ex in dev
                ],
            )
        train_rows += train
        counts[name] = {
            "rows": len(rows),
            "train": len(train),
            "dev": len(dev),
            "dev_anchors": len({normalize_text(ex.query) for ex in dev}),
        }
        print(f"{name}: {len(train)} train, {len(dev)} dev rows", flush=True)

    mined, stats = mine_hard_negatives(train_rows, max_ratio=args.max_ratio, show_progress_bar=True)
    print(stats.summary(), flush=True)
    per_source: dict[str, list[dict]] = defaultdict(list)
    for ex in mined:
        row = {
            "query": ex.query,
            "positive": ex.positive,
            "source": ex.source,
            "instruction": ex.instruction,
        }
        if ex.negative is not None:
            row["negative"] = ex.negative
        per_source[ex.source].append(row)
    for name, rows in per_source.items():
        _write_jsonl(out / "train" / f"{name}.jsonl", rows)
        counts[name]["with_negative"] = sum("negative" in r for r in rows)
    manifest = {
        "command": shlex.join(
            [
                "python",
                "-m",
                "benchmarks.supervised_data",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "shippable": not args.restricted,
        "inputs": {str(f.relative_to(data)): sha256_file(f) for f in files},
        "instructions": {name: INSTRUCTIONS[name] for name in by_source},
        "counts": counts,
        "mining": {"max_ratio": args.max_ratio, **stats.__dict__},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out} in {manifest['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
