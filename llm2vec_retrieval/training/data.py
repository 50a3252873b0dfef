"""Training data: streamed readers, cleaning statistics, deterministic shuffling and batching.

Formats (chosen by file name; a folder is a BEIR dataset):
- plain text (`.txt` or anything else): one sentence/paragraph per line (MNTP, SimCSE);
- JSONL (`.jsonl`/`.json`, one object per line): `{"text"}` for MNTP/SimCSE;
  `{"query"|"anchor", "positive", "negative"?, "source"?, "instruction"?}` for supervised;
- TSV (`.tsv`): a header naming the columns (`anchor` or `query`, `positive`,
  `negative` or `hard_negative`, optional `source`, `instruction`; others such as
  `split` are ignored), e.g. `../shared/data/snli-triples-small`;
- BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/train.tsv` (only the *train*
  judgments are read; a dataset without them is refused). Positives come from the
  qrels (score > 0), there are no hard negatives (in-batch negatives only).

Every reader is a generator over the file: nothing is read whole (the BEIR reader keeps
a map from document id to byte offset, not the documents). Empty lines, duplicates
(a bounded set of 64-bit hashes per file), over-long lines and malformed records are
skipped and counted in a `DataStats`.

Order: the stream is shuffled with a bounded buffer seeded by (seed, pass), so a given
seed always gives the same order, and a position is just (pass, batches done in the
pass): resuming replays the stream and skips that many batches.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, MissingInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from .config import MNTPConfig, SimCSEConfig, SupervisedConfig, TrainConfig

TEXT_SUFFIXES = (".txt", ".text")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
TSV_SUFFIXES = (".tsv",)
_QUERY_KEYS = ("query", "anchor")
_NEGATIVE_KEYS = ("negative", "hard_negative")


@dataclass
class Example:
    """One supervised example. `negative` is None when the data has no hard negative."""

    query: str
    positive: str
    negative: str | None = None
    source: str = "default"
    instruction: str | None = None


@dataclass
class DataStats:
    """Counts of what the readers kept and skipped (summed over files, first pass only)."""

    lines: int = 0
    used: int = 0
    empty: int = 0
    duplicates: int = 0
    too_long: int = 0
    malformed: int = 0
    dedup_saturated: bool = False
    truncated_texts: int = 0  # texts cut to max_length tokens by the encoder
    passes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"data: {self.used} used of {self.lines} lines/records "
            f"(skipped: {self.empty} empty, {self.duplicates} duplicate, {self.too_long} over-long, "
            f"{self.malformed} malformed; {self.truncated_texts} texts truncated to max_length; "
            f"pass {self.passes + 1})"
            + (
                "; dedup hash set full, later duplicates not detected"
                if self.dedup_saturated
                else ""
            )
        )


class _Dedup:
    """A bounded set of 64-bit line hashes: once full, new lines are no longer remembered."""

    def __init__(self, max_entries: int, stats: DataStats | None):
        self.seen: set[int] = set()
        self.max_entries = max_entries
        self.stats = stats

    def is_duplicate(self, key: str) -> bool:
        h = int.from_bytes(
            hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little"
        )
        if h in self.seen:
            return True
        if len(self.seen) < self.max_entries:
            self.seen.add(h)
        elif self.stats is not None:
            self.stats.dedup_saturated = True
        return False


# ---------------------------------------------------------------------- checks
def check_data_paths(paths: list[str], stage: str) -> None:
    """Missing, empty or unsuitable data is an error with a one-line message."""
    if not paths:
        raise InvalidInputError("no training data given (--data FILE)")
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise MissingInputError(f"data file {p} does not exist")
        if path.is_dir():
            if stage != "supervised":
                raise InvalidInputError(
                    f"{p} is a folder; {stage} needs text files (one text per line)"
                )
            _beir_files(path)
            continue
        if path.stat().st_size == 0:
            raise InvalidInputError(f"data file {p} is empty")
        kind = file_kind(path)
        if stage == "supervised" and kind == "text":
            raise InvalidInputError(
                f"{p}: supervised training needs pairs or triples (.jsonl with query/positive/negative, .tsv with a header, or a BEIR folder)"
            )
        if stage != "supervised" and kind == "tsv":
            raise InvalidInputError(
                f"{p}: {stage} needs plain text (one text per line) or JSONL with a 'text' key"
            )


def file_kind(path: str | os.PathLike) -> str:
    path = Path(path)
    if path.is_dir():
        return "beir"
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in TSV_SUFFIXES:
        return "tsv"
    return "text"


def _beir_files(folder: Path) -> tuple[Path, Path, Path]:
    corpus, queries, qrels = (
        folder / "corpus.jsonl",
        folder / "queries.jsonl",
        folder / "qrels" / "train.tsv",
    )
    for f in (corpus, queries):
        if not f.is_file():
            raise MissingInputError(f"{folder} is not a BEIR folder: {f.name} is missing")
    if not qrels.is_file():
        raise MissingInputError(
            f"{folder} has no qrels/train.tsv: only BEIR *train* judgments are used for training "
            "(test/dev judgments are never trained on)"
        )
    return corpus, queries, qrels


# ---------------------------------------------------------------------- readers
def _lines(
    path: Path, stats: DataStats | None, max_chars: int, dedup: _Dedup | None
) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            if stats is not None:
                stats.lines += 1
            line = raw.rstrip("\r\n")
            if not line.strip():
                if stats is not None:
                    stats.empty += 1
                continue
            if len(line) > max_chars:
                if stats is not None:
                    stats.too_long += 1
                continue
            if dedup is not None and dedup.is_duplicate(line):
                if stats is not None:
                    stats.duplicates += 1
                continue
            yield line


def read_texts(
    path: str | os.PathLike,
    stats: DataStats | None = None,
    max_chars: int = 20000,
    dedup_max_entries: int = 2_000_000,
) -> Iterator[str]:
    """Texts of a plain-text or JSONL (`{"text": ...}`) file, cleaned and deduplicated."""
    path = Path(path)
    dedup = _Dedup(dedup_max_entries, stats)
    kind = file_kind(path)
    for line in _lines(
        path,
        stats,
        max_chars if kind == "text" else max(max_chars * 4, max_chars),
        dedup if kind == "text" else None,
    ):
        if kind == "text":
            text = line.strip()
        else:
            try:
                obj = json.loads(line)
                raw = obj["text"] if isinstance(obj, dict) else None
            except (json.JSONDecodeError, KeyError):
                raw = None
            if not isinstance(raw, str):
                if stats is not None:
                    stats.malformed += 1
                continue
            text = raw.strip()
            if not text:
                if stats is not None:
                    stats.empty += 1
                continue
            if len(text) > max_chars:
                if stats is not None:
                    stats.too_long += 1
                continue
            if dedup.is_duplicate(text):
                if stats is not None:
                    stats.duplicates += 1
                continue
        if stats is not None:
            stats.used += 1
        yield text


def _example_from_mapping(obj: dict, default_source: str) -> Example | None:
    query = next((obj[k] for k in _QUERY_KEYS if k in obj), None)
    positive = obj.get("positive")
    negative = next((obj[k] for k in _NEGATIVE_KEYS if k in obj), None)
    if (
        not isinstance(query, str)
        or not isinstance(positive, str)
        or not query.strip()
        or not positive.strip()
    ):
        return None
    if negative is not None and (not isinstance(negative, str) or not negative.strip()):
        negative = None
    source = obj.get("source") or default_source
    instruction = obj.get("instruction")
    return Example(
        query,
        positive,
        negative,
        str(source),
        instruction if isinstance(instruction, str) else None,
    )


def _clean_example(
    ex: Example | None, stats: DataStats | None, max_chars: int, dedup: _Dedup
) -> Example | None:
    if ex is None:
        if stats is not None:
            stats.malformed += 1
        return None
    if any(t is not None and len(t) > max_chars for t in (ex.query, ex.positive, ex.negative)):
        if stats is not None:
            stats.too_long += 1
        return None
    if dedup.is_duplicate("\x1f".join((ex.query, ex.positive, ex.negative or "", ex.source))):
        if stats is not None:
            stats.duplicates += 1
        return None
    if stats is not None:
        stats.used += 1
    return ex


def read_examples(
    path: str | os.PathLike,
    stats: DataStats | None = None,
    max_chars: int = 20000,
    dedup_max_entries: int = 2_000_000,
) -> Iterator[Example]:
    """Supervised examples from a JSONL file, a TSV file with a header, or a BEIR folder."""
    path = Path(path)
    kind = file_kind(path)
    dedup = _Dedup(dedup_max_entries, stats)
    default_source = path.stem if kind != "beir" else path.name
    if kind == "beir":
        yield from _read_beir(path, stats, max_chars, dedup)
        return
    if kind == "jsonl":
        for line in _lines(path, stats, max_chars * 4, None):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            ex = _example_from_mapping(obj, default_source) if isinstance(obj, dict) else None
            ex = _clean_example(ex, stats, max_chars, dedup)
            if ex is not None:
                yield ex
        return
    if kind == "tsv":
        yield from _read_tsv(path, stats, max_chars, dedup, default_source)
        return
    raise InvalidInputError(f"{path}: supervised training needs .jsonl, .tsv or a BEIR folder")


def _read_tsv(path: Path, stats, max_chars, dedup, default_source) -> Iterator[Example]:
    columns: list[str] | None = None
    for line in _lines(path, stats, max_chars * 4, None):
        parts = line.split("\t")
        if columns is None:
            names = [p.strip().lower() for p in parts]
            if any(k in names for k in _QUERY_KEYS) and "positive" in names:
                columns = names
                continue
            # no header: (query, positive[, negative])
            columns = ["query", "positive", "negative"][: max(2, min(3, len(parts)))]
        if len(parts) < len(columns):
            parts = parts + [""] * (len(columns) - len(parts))
        obj = {name: value for name, value in zip(columns, parts, strict=False) if value != ""}
        ex = _clean_example(_example_from_mapping(obj, default_source), stats, max_chars, dedup)
        if ex is not None:
            yield ex


def _offset_index(path: Path, key: str = "_id") -> dict[str, int]:
    """{record id: byte offset} of a JSONL file, read line by line."""
    index: dict[str, int] = {}
    with open(path, "rb") as fh:
        offset = 0
        for raw in fh:
            if raw.strip():
                try:
                    rid = json.loads(raw)[key]
                except (json.JSONDecodeError, KeyError, TypeError):
                    rid = None
                if rid is not None:
                    index[str(rid)] = offset
            offset += len(raw)
    return index


def _read_beir(folder: Path, stats, max_chars, dedup) -> Iterator[Example]:
    corpus_path, queries_path, qrels_path = _beir_files(folder)
    corpus_index = _offset_index(corpus_path)
    query_index = _offset_index(queries_path)
    with (
        open(corpus_path, "rb") as corpus,
        open(queries_path, "rb") as queries,
        open(qrels_path, encoding="utf-8") as qrels,
    ):

        def record(fh, index, rid):
            if rid not in index:
                return None
            fh.seek(index[rid])
            return json.loads(fh.readline())

        reader = csv.reader(qrels, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if not row or row[0] in ("query-id", "query_id", "qid"):
                continue
            if stats is not None:
                stats.lines += 1
            if len(row) < 3:
                if stats is not None:
                    stats.malformed += 1
                continue
            qid, did, score = row[0], row[1], row[-1]
            try:
                if float(score) <= 0:
                    continue
            except ValueError:
                if stats is not None:
                    stats.malformed += 1
                continue
            q, d = record(queries, query_index, qid), record(corpus, corpus_index, did)
            ex = None
            if q is not None and d is not None:
                doc = (str(d.get("title") or "") + " " + str(d.get("text") or "")).strip()
                ex = Example(str(q.get("text") or ""), doc, None, folder.name)
                if not ex.query.strip() or not ex.positive.strip():
                    ex = None
            ex = _clean_example(ex, stats, max_chars, dedup)
            if ex is not None:
                yield ex


# ---------------------------------------------------------------------- order
def buffered_shuffle(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """Shuffle a stream with a bounded buffer (buffer_size 0 or 1: keep the order)."""
    if buffer_size <= 1:
        yield from items
        return
    buf: list[Any] = []
    for item in items:
        if len(buf) < buffer_size:
            buf.append(item)
            continue
        i = rng.randrange(buffer_size)
        yield buf[i]
        buf[i] = item
    rng.shuffle(buf)
    yield from buf


@dataclass
class DataPosition:
    """Where the batch stream stands: pass number and batches already yielded in that pass."""

    pass_index: int = 0
    batches_in_pass: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BatchStream:
    """Endless deterministic stream of batches over passes of the data.

    `make_batches(pass_index, rng, first_pass)` returns an iterator of the batches of one pass.
    """

    make_batches: Callable[[int, random.Random, bool], Iterator]
    seed: int
    position: DataPosition = field(default_factory=DataPosition)
    stats: DataStats = field(default_factory=DataStats)

    def __iter__(self) -> Iterator:
        skip = self.position.batches_in_pass
        while True:
            p = self.position.pass_index
            rng = random.Random(f"{self.seed}:{p}")
            produced = 0
            for batch in self.make_batches(p, rng, p == 0):
                produced += 1
                if skip:
                    skip -= 1
                    continue
                self.position.batches_in_pass += 1
                yield batch
            if produced == 0:
                raise InvalidInputError(
                    f"the training data yields no batch ({self.stats.used} usable examples; "
                    "too few for one batch of this size?)"
                )
            skip = 0
            self.position.pass_index += 1
            self.position.batches_in_pass = 0
            self.stats.passes = self.position.pass_index


def text_stream(
    paths: list[str], stats: DataStats | None, cfg: TrainConfig
) -> Callable[[random.Random], Iterator[str]]:
    """Shuffled texts of all files, in file order then buffer-shuffled."""

    def gen(rng: random.Random) -> Iterator[str]:
        def chained():
            for p in paths:
                yield from read_texts(p, stats, cfg.max_line_chars, cfg.dedup_max_entries)

        yield from buffered_shuffle(chained(), cfg.shuffle_buffer, rng)

    return gen


def mntp_batches(
    paths: list[str], tokenizer: PreTrainedTokenizerBase, cfg: MNTPConfig, stats: DataStats
) -> Callable:
    """Batches of `batch_size` blocks of `block_size` token ids (texts concatenated, remainder dropped)."""
    block = cfg.block_size

    def make(pass_index: int, rng: random.Random, first: bool) -> Iterator[list[list[int]]]:
        texts = text_stream(paths, stats if first else None, cfg)(rng)
        buffer: list[int] = []
        blocks: list[list[int]] = []
        chunk: list[str] = []

        def flush(chunk):
            nonlocal buffer
            for ids in tokenizer(chunk, add_special_tokens=True)["input_ids"]:
                buffer.extend(ids)
            out = []
            while len(buffer) >= block:
                out.append(buffer[:block])
                buffer = buffer[block:]
            return out

        for text in texts:
            chunk.append(text)
            if len(chunk) >= 64:
                blocks.extend(flush(chunk))
                chunk = []
                while len(blocks) >= cfg.batch_size:
                    yield blocks[: cfg.batch_size]
                    blocks = blocks[cfg.batch_size :]
        if chunk:
            blocks.extend(flush(chunk))
        while len(blocks) >= cfg.batch_size:
            yield blocks[: cfg.batch_size]
            blocks = blocks[cfg.batch_size :]

    return make


def simcse_batches(paths: list[str], cfg: SimCSEConfig, stats: DataStats) -> Callable:
    """Batches of `batch_size` distinct sentences (a last partial batch is dropped)."""

    def make(pass_index: int, rng: random.Random, first: bool) -> Iterator[list[str]]:
        batch: list[str] = []
        for text in text_stream(paths, stats if first else None, cfg)(rng):
            batch.append(text)
            if len(batch) == cfg.batch_size:
                yield batch
                batch = []

    return make


def supervised_batches(paths: list[str], cfg: SupervisedConfig, stats: DataStats) -> Callable:
    """Batches of `batch_size` examples, each from one source when `one_source_per_batch`.

    Sources are the files (default source: the file name) or the `source` field/column.
    Each file is shuffled with the buffer; the next file to read from is drawn at random in
    proportion to its size, and examples collect in one bucket per source until a bucket
    holds a full batch. When a file ends, its partial buckets with at least 2 examples are
    yielded (fewer than 2 give no contrastive signal and are dropped).
    """
    sizes = [max(1, _size(p)) for p in paths]

    def make(pass_index: int, rng: random.Random, first: bool) -> Iterator[list[Example]]:
        streams = [
            iter(
                buffered_shuffle(
                    read_examples(
                        p, stats if first else None, cfg.max_line_chars, cfg.dedup_max_entries
                    ),
                    cfg.shuffle_buffer,
                    random.Random(f"{rng.random()}:{i}"),
                )
            )
            for i, p in enumerate(paths)
        ]
        alive = list(range(len(paths)))
        buckets: list[OrderedDict[str, list[Example]]] = [OrderedDict() for _ in paths]
        while alive:
            i = (
                rng.choices(alive, weights=[sizes[j] for j in alive])[0]
                if len(alive) > 1
                else alive[0]
            )
            emitted = False
            for ex in streams[i]:
                key = ex.source if cfg.one_source_per_batch else "_all"
                bucket = buckets[i].setdefault(key, [])
                bucket.append(ex)
                if len(bucket) == cfg.batch_size:
                    buckets[i][key] = []
                    yield bucket
                    emitted = True
                    break
            if not emitted:
                alive.remove(i)
                for bucket in buckets[i].values():
                    if len(bucket) >= 2:
                        yield bucket
                buckets[i].clear()

    return make


def _size(path: str) -> int:
    p = Path(path)
    if p.is_dir():
        q = p / "qrels" / "train.tsv"
        return q.stat().st_size if q.is_file() else 1
    return p.stat().st_size
