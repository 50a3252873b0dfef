"""One shard's work: read a group of files, chunk them as ``index`` does, encode the chunks,
write the shard file. Runs wherever it is put: in a Ray actor (one `ShardJob` per actor,
holding one encoder) or in this process. It writes only the shard's parquet file (atomically,
`shards.write_shard_file`); recording the shard in the manifest is the driver's job, so a
job killed half way leaves nothing that counts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..ingest.readers import ReadOptions, SkipFile
from ..ingest.records import FileRecords, iter_records, read_file_records
from ..shards import shard_path, write_shard_file
from .plan import Group, SourceFile

ENCODE_SLICE = 256  # chunks per encode_documents call (memory bound; the encoder batches inside)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ShardJob:
    """Encodes groups into shard files with one encoder (loaded once).

    Args: ``embedder`` (an `ingest.folder.embedder_spec`), ``dtype`` (as ``--dtype``; "auto"
    is resolved for the device this runs on), ``chunking`` (``chunk_tokens``, ``overlap``,
    ``text_field``, ``text_column``), ``out`` (the shard folder), ``id_column`` (.parquet
    inputs), ``threads`` (torch CPU threads; None leaves torch's choice), ``batch_size``.
    """

    def __init__(
        self,
        embedder: dict[str, Any],
        dtype: str,
        chunking: dict[str, Any],
        out: str,
        id_column: str = "id",
        threads: int | None = None,
        batch_size: int = 32,
    ):
        import torch

        from ..hardware import resolve_dtype
        from ..ingest.folder import encoder_from_spec

        if threads:
            torch.set_num_threads(int(threads))
        self.device = pick_device()
        self.dtype = resolve_dtype(dtype, device=self.device)
        self.encoder = encoder_from_spec(embedder, dtype=self.dtype.name)
        if self.device != "cpu":
            self.encoder.to(self.device)
        self.chunking = chunking
        self.options = ReadOptions(chunking["text_field"], chunking["text_column"])
        self.id_column = id_column
        self.out = out
        self.batch_size = batch_size

    def read(self, f: SourceFile) -> FileRecords:
        c = self.chunking
        tok = self.encoder.tokenizer
        if f.is_parquet:
            return read_parquet_records(
                Path(f.path),
                f.src,
                tok,
                c["chunk_tokens"],
                c["overlap"],
                self.id_column,
                c["text_column"],
            )
        return read_file_records(
            Path(f.path), f.src, tok, c["chunk_tokens"], c["overlap"], self.options
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        parts = [
            np.asarray(
                self.encoder.encode_documents(
                    texts[i : i + ENCODE_SLICE], batch_size=self.batch_size
                ),
                dtype=np.float32,
            )
            for i in range(0, len(texts), ENCODE_SLICE)
        ]
        dim = self.encoder.embedding_dim
        return np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)

    def run(self, group: Group | dict[str, Any]) -> dict[str, Any]:
        """Write the group's shard file; returns what the driver records (files, skipped,
        rows, sha256) and counts (chunks, tokens, seconds)."""
        if isinstance(group, dict):
            group = Group.from_dict(group)
        t0 = time.perf_counter()
        files: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        notes: list[tuple[str, str]] = []
        records: list[tuple[str, str, dict[str, Any]]] = []
        for f in group.files:
            try:
                fr = self.read(f)
            except SkipFile as exc:
                skipped[f.src] = str(exc)
                continue
            files[f.src] = fr.entry().to_json()
            records += fr.records
            notes += [(f.src, n) for n in fr.notes]
        vectors = self.encode([t for _, t, _ in records])
        rows, sha = write_shard_file(
            shard_path(self.out, group.name),
            [i for i, _, _ in records],
            [t for _, t, _ in records],
            [m for _, _, m in records],
            vectors,
            self.encoder.embedding_dim,
        )
        return {
            "name": group.name,
            "position": group.position,
            "rows": rows,
            "sha256": sha,
            "files": files,
            "skipped": skipped,
            "notes": notes,
            "tokens": sum(int(m["tokens"]) for _, _, m in records),
            "seconds": time.perf_counter() - t0,
            "dtype": self.dtype.name,
            "device": self.device,
            "pid": os.getpid(),
        }


def read_parquet_records(
    path: Path,
    src: str,
    tokenizer: Any,
    chunk_tokens: int,
    overlap: int,
    id_column: str = "id",
    text_column: str = "text",
) -> FileRecords:
    """A parquet table, one document per row: chunk ids ``"<id>#<n>"`` (n per document),
    metadata as for a .csv row plus ``doc_id`` (``source`` is the parquet file, ``row`` the
    row). `SkipFile` when unreadable or a column is missing."""
    import pyarrow.parquet as pq

    from .._io import sha256_and_size

    try:
        sha, size = sha256_and_size(path)
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise SkipFile(f"unreadable parquet ({type(exc).__name__}: {exc})") from None
    missing = [c for c in (id_column, text_column) if c not in table.column_names]
    if missing:
        raise SkipFile(
            f"no column {', '.join(map(repr, missing))} (columns: {', '.join(table.column_names)}); "
            "choose them with --id-column/--text-column"
        )
    ids = table.column(id_column).to_pylist()
    texts = table.column(text_column).to_pylist()
    out = FileRecords(src, sha, size)
    for row, (doc_id, text) in enumerate(zip(ids, texts, strict=True)):
        if text is None or doc_id is None:
            out.notes.append(f"row {row}: empty id or text, skipped")
            continue
        for cid, chunk_text, meta in iter_records(
            tokenizer, str(doc_id), sha, [str(text)], [{"row": row}], chunk_tokens, overlap
        ):
            out.records.append((cid, chunk_text, {**meta, "source": src, "doc_id": str(doc_id)}))
    return out
