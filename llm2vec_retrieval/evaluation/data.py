"""Loading evaluation data: BEIR folders, STS Benchmark files, checksums, corpus subsets.

Nothing here downloads anything: every loader reads local files (by default the read-only
``../shared/data`` folder next to the project, see :func:`default_data_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import sha256_file

__all__ = [
    "BeirData",
    "StsData",
    "default_data_dir",
    "sha256_file",
    "checksum_files",
    "checksum_texts",
    "load_beir",
    "load_sts",
    "doc_text",
    "subset_corpus",
    "subset_queries",
]

DATA_DIR_ENV = "LLM2VEC_DATA_DIR"


def default_data_dir() -> Path:
    """``$LLM2VEC_DATA_DIR`` if set, else ``../shared/data`` relative to the project root."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    project_root = Path(__file__).resolve().parents[2]
    if not (project_root / "pyproject.toml").exists():  # installed, not a checkout
        project_root = Path.cwd()
    return project_root.parent / "shared" / "data"


def checksum_files(paths: Iterable[str | os.PathLike]) -> tuple[str, dict[str, str]]:
    """(combined sha256, {file name: sha256}) over the given files, in the given order."""
    per_file = {}
    combined = hashlib.sha256()
    for p in paths:
        p = Path(p)
        digest = sha256_file(p)
        name = f"{p.parent.name}/{p.name}" if p.parent.name == "qrels" else p.name
        per_file[name] = digest
        combined.update(f"{name}\0{digest}\n".encode())
    return combined.hexdigest(), per_file


def checksum_texts(texts: Sequence[str]) -> str:
    """sha256 of an ordered list of strings (length-prefixed, so the split is unambiguous)."""
    h = hashlib.sha256()
    for t in texts:
        b = t.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def beir_from_pairs(
    name: str, rows: Iterable[tuple[str, str, str | None]], split: str = "dev"
) -> BeirData:
    """A retrieval set from (query, positive, negative or None) rows: each distinct query a
    query, each distinct positive and negative a document, a positive relevant to its query
    (negatives stay as distractors). The checksum covers the rows in order."""
    rows = list(rows)
    qid_of: dict[str, str] = {}
    doc_of: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for query, positive, negative in rows:
        qid = qid_of.setdefault(query, f"q{len(qid_of)}")
        for text in filter(None, (positive, negative)):
            doc_of.setdefault(text, f"d{len(doc_of)}")
        qrels.setdefault(qid, {})[doc_of[positive]] = 1
    return BeirData(
        name=name,
        split=split,
        corpus={did: {"title": "", "text": text} for text, did in doc_of.items()},
        queries={qid: text for text, qid in qid_of.items()},
        qrels=qrels,
        checksum=checksum_texts([f"{q}\t{p}\t{n or ''}" for q, p, n in rows]),
    )


# --------------------------------------------------------------------------------------- BEIR


@dataclass
class BeirData:
    """One split of a BEIR dataset.

    ``corpus``: ``{doc_id: {"title": str, "text": str}}`` in file order;
    ``queries``: ``{query_id: text}``, only the queries judged in this split, in file order;
    ``qrels``: ``{query_id: {doc_id: relevance}}``.
    """

    name: str
    split: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    checksum: str = ""
    file_checksums: dict[str, str] = field(default_factory=dict)
    subset: dict | None = None  # description of the subset, None for the full split

    @property
    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    @property
    def query_ids(self) -> list[str]:
        return list(self.queries)

    def documents(self) -> list[str]:
        """Document texts as ``title + " " + text`` (stripped), in corpus order."""
        return [doc_text(d) for d in self.corpus.values()]


def doc_text(doc: Mapping[str, str]) -> str:
    """BEIR/MTEB/sentence-transformers convention: ``title + " " + text``, stripped."""
    return (str(doc.get("title") or "") + " " + str(doc.get("text") or "")).strip()


def _read_jsonl(path: Path) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) < 3 or not parts[0]:
                continue
            if i == 0 and not parts[2].lstrip("-").isdigit():
                continue  # header "query-id corpus-id score"
            qid, did, score = parts[0], parts[1], int(parts[2])
            qrels.setdefault(qid, {})[did] = score
    return qrels


def load_beir(folder: str | os.PathLike, split: str = "test") -> BeirData:
    """Load a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``)."""
    folder = Path(folder)
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    for p in files:
        if not p.exists():
            raise FileNotFoundError(f"BEIR file not found: {p}")
    corpus = {
        str(d["_id"]): {"title": d.get("title") or "", "text": d.get("text") or ""}
        for d in _read_jsonl(files[0])
    }
    qrels = _read_qrels(files[2])
    queries = {str(q["_id"]): q.get("text") or "" for q in _read_jsonl(files[1])}
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise ValueError(
            f"{len(missing)} judged queries are missing from queries.jsonl, e.g. {missing[0]!r}"
        )
    queries = {qid: text for qid, text in queries.items() if qid in qrels}
    checksum, per_file = checksum_files(files)
    return BeirData(folder.name, split, corpus, queries, qrels, checksum, per_file)


def subset_queries(data: BeirData, max_queries: int | None) -> BeirData:
    """The first ``max_queries`` judged queries (file order) and their judgments."""
    if not max_queries or max_queries >= len(data.queries):
        return data
    keep = list(data.queries)[:max_queries]
    subset = dict(data.subset or {})
    subset.update({"max_queries": max_queries, "n_queries_full": len(data.queries)})
    return BeirData(
        data.name,
        data.split,
        data.corpus,
        {q: data.queries[q] for q in keep},
        {q: data.qrels[q] for q in keep},
        data.checksum,
        data.file_checksums,
        subset,
    )


def subset_corpus(data: BeirData, max_docs: int | None, seed: int = 0) -> BeirData:
    """Keep every judged document of the (remaining) queries plus a seeded sample of the rest.

    The result has ``max(max_docs, number of judged documents)`` documents, in corpus order.
    The sample is drawn with ``numpy.random.default_rng(seed)`` from the other documents in
    corpus order, so it is reproducible. Retrieval scores on a subset are optimistic (fewer
    distractors) and must be reported as such: ``data.subset`` says what was kept.
    """
    if not max_docs or max_docs >= len(data.corpus):
        return data
    judged = {d for judgments in data.qrels.values() for d in judgments if d in data.corpus}
    others = [d for d in data.corpus if d not in judged]
    n_extra = max(0, max_docs - len(judged))
    rng = np.random.default_rng(seed)
    picked = set()
    if n_extra:
        idx = rng.choice(len(others), size=min(n_extra, len(others)), replace=False)
        picked = {others[i] for i in idx}
    keep = judged | picked
    corpus = {d: doc for d, doc in data.corpus.items() if d in keep}
    subset = dict(data.subset or {})
    subset.update(
        {
            "max_docs": max_docs,
            "seed": seed,
            "n_docs": len(corpus),
            "n_docs_full": len(data.corpus),
            "n_judged_docs_kept": len(judged),
        }
    )
    return BeirData(
        data.name,
        data.split,
        corpus,
        data.queries,
        data.qrels,
        data.checksum,
        data.file_checksums,
        subset,
    )


# ---------------------------------------------------------------------------------------- STS


@dataclass
class StsData:
    """Sentence pairs with gold similarity scores (0-5 for STS-B)."""

    name: str
    split: str
    sentences1: list[str]
    sentences2: list[str]
    scores: np.ndarray
    checksum: str = ""
    file_checksums: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.scores)


def load_sts(path: str | os.PathLike, split: str = "test") -> StsData:
    """Load an STS Benchmark file of the original release (``sts-<split>.csv``).

    ``path`` is either the file itself or the folder holding ``sts-{train,dev,test}.csv``.
    Format: UTF-8, tab-separated, no header; columns genre, filename, year, id, score,
    sentence1, sentence2, and on some lines two extra source columns. Lines are split on tabs
    (not parsed as CSV: some sentences carry unbalanced quotes).
    """
    path = Path(path)
    if path.is_dir():
        path = path / f"sts-{split}.csv"
    if not path.exists():
        raise FileNotFoundError(f"STS file not found: {path}")
    s1, s2, scores = [], [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            parts = line.split("\t")
            if len(parts) < 7:
                raise ValueError(
                    f"{path}:{lineno}: expected at least 7 tab-separated columns, got {len(parts)}"
                )
            scores.append(float(parts[4]))
            s1.append(parts[5])
            s2.append(parts[6])
    checksum, per_file = checksum_files([path])
    return StsData(
        path.parent.name or "stsb",
        split,
        s1,
        s2,
        np.asarray(scores, dtype=np.float64),
        checksum,
        per_file,
    )
