"""The driver of ``encode-corpus``: plan shards, encode them on Ray Data, record each one.

Pipeline: one dataset row per planned group (`plan.plan_groups`), one block each, mapped
by `EncodeActor` (``map_batches`` with an actor pool of ``workers`` actors, one encoder
each, ``batch_size=1``: a group per call). Execution streams: the driver iterates the
results as the actors finish them and adds each shard to the manifest at once
(`shards.ShardWriter.commit`), so a run killed at any point keeps every recorded shard and
a rerun encodes only the rest. Shard files written but not recorded (an actor or the
driver killed between) are rewritten; temporary files never count.

Resources: each actor asks for ``cpus_per_worker`` CPUs (its torch thread count) and, when
the cluster has GPUs, one GPU (one worker per GPU). Without ``ray_address`` a local Ray
starts with the machine's CPUs (at least workers x cpus_per_worker) and no dashboard.
The driver loads the model once, to fingerprint it (what the manifest records).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..shards import SHARD_DIR, ShardWriter, shard_header
from .plan import Group, find_sources, plan_groups
from .work import ShardJob

RAY_HINT = "encode-corpus needs Ray: pip install 'llm2vec-retrieval[ray]'"


@dataclass
class CorpusSettings:
    """Options of ``encode-corpus``."""

    model: str | None = field(default=None, metadata={"help": "model (None: the default)"})
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter folder"})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16, float16"})
    chunk_tokens: int = field(default=256, metadata={"help": "tokens per chunk"})
    overlap: int = field(default=32, metadata={"help": "tokens shared by consecutive chunks"})
    text_field: str = field(default="text", metadata={"help": ".jsonl field holding the text"})
    text_column: str = field(
        default="text", metadata={"help": ".csv / .parquet column holding the text"}
    )
    id_column: str = field(default="id", metadata={"help": ".parquet column holding the id"})
    query_instruction: str | None = field(
        default=None, metadata={"help": "instruction `search` prepends to queries"}
    )
    root: str | None = field(
        default=None, metadata={"help": "folder `source` paths are relative to (None: cwd)"}
    )
    follow_symlinks: bool = field(
        default=False,
        metadata={"help": "follow symbolic links that lead outside the sources (else skipped)"},
    )
    workers: int = field(default=1, metadata={"help": "encoder actors (one per GPU)"})
    cpus_per_worker: int | None = field(
        default=None, metadata={"help": "CPUs (torch threads) per actor; None: CPUs / workers"}
    )
    ray_address: str | None = field(
        default=None, metadata={"help": "Ray cluster address; None: start a local Ray"}
    )
    shard_bytes: int = field(default=16 << 20, metadata={"help": "input bytes per shard"})
    max_files: int = field(default=1000, metadata={"help": "files per shard at most"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})


@dataclass
class EncodeReport:
    shards: int = 0  # written by this run
    shards_before: int = 0  # already finished (skipped)
    files: int = 0
    chunks: int = 0
    tokens: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)  # actor pid -> "device dtype"


class EncodeActor:
    """Ray Data callable class: one `ShardJob` (one encoder) per actor; a batch is groups."""

    def __init__(self, **job_kwargs: Any):
        self.job = ShardJob(**job_kwargs)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[str]]:
        return {"result": [json.dumps(self.job.run(json.loads(g))) for g in batch["group"]]}


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError(RAY_HINT) from None
    return ray


def encode_corpus(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    settings: CorpusSettings | None = None,
    show_progress_bar: bool | None = None,
    on_shard: Callable[[dict[str, Any]], None] | None = None,
) -> EncodeReport:
    """Encode ``sources`` into the shard folder ``out`` (see the module docstring)."""
    from ..ingest.chunking import check_chunking
    from ..ingest.folder import embedder_spec, encoder_from_spec
    from ..ingest.manifest import Chunking

    s = settings or CorpusSettings()
    t0 = time.perf_counter()
    report = EncodeReport()
    if s.workers < 1:
        raise UserError(f"--workers must be at least 1, got {s.workers}")
    try:
        check_chunking(s.chunk_tokens, s.overlap)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    out = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
    root = Path(os.path.abspath(os.path.expanduser(s.root))) if s.root else Path.cwd()
    files, refused = find_sources(sources, root, exclude=[out], follow_symlinks=s.follow_symlinks)
    report.skipped += refused
    if not files:
        raise UserError(
            "empty corpus: no .txt, .md, .jsonl, .csv, .pdf or .parquet files in "
            + ", ".join(os.fspath(x) for x in sources)
        )
    spec = embedder_spec(s.model, s.adapter)
    encoder = encoder_from_spec(spec, dtype=s.dtype)  # to fingerprint the model (not to encode)
    if s.chunk_tokens > encoder.config.doc_max_length:
        raise UserError(
            f"--chunk-tokens {s.chunk_tokens} is more than the model's doc_max_length "
            f"({encoder.config.doc_max_length})"
        )
    header = shard_header(
        spec,
        encoder,
        Chunking(
            chunk_tokens=s.chunk_tokens,
            overlap=s.overlap,
            text_field=s.text_field,
            text_column=s.text_column,
        ),
        s.query_instruction,
        root,
    )
    chunking = header["chunking"]
    with ShardWriter(out, header) as writer:
        _remove_temp_files(out / SHARD_DIR)
        done = set(writer.manifest["files"]) | set(writer.manifest.get("skipped", {}))
        report.shards_before = len(writer.done)
        groups = plan_groups(files, done, s.shard_bytes, s.max_files)
        if groups:
            for result in _run_on_ray(groups, s, spec, chunking, out, show_progress_bar):
                writer.commit(
                    result["name"],
                    result["rows"],
                    result["sha256"],
                    result["files"],
                    result["position"],
                    result["skipped"],
                )
                report.shards += 1
                report.files += len(result["files"])
                report.chunks += result["rows"]
                report.tokens += result["tokens"]
                report.skipped += list(result["skipped"].items())
                report.notes += [tuple(n) for n in result["notes"]]
                report.devices[str(result["pid"])] = f"{result['device']} {result['dtype']}"
                if on_shard is not None:
                    on_shard(result)
    report.seconds = time.perf_counter() - t0
    return report


def _run_on_ray(
    groups: list[Group],
    s: CorpusSettings,
    spec: dict[str, Any],
    chunking: dict[str, Any],
    out: Path,
    progress: bool | None,
):
    """Yield each group's result (a dict) as its actor finishes it."""
    ray = import_ray()
    cpus = s.cpus_per_worker or max(1, (os.cpu_count() or 1) // s.workers)
    started = False
    if not ray.is_initialized():
        if s.ray_address:
            ray.init(address=s.ray_address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=max(os.cpu_count() or 1, s.workers * cpus),
                include_dashboard=False,
                log_to_driver=False,
            )
            started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = bool(progress)
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        ds = ray.data.from_items(
            [{"group": json.dumps(g.to_dict())} for g in groups], override_num_blocks=len(groups)
        )
        ds = ds.map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "embedder": spec,
                "dtype": s.dtype,
                "chunking": chunking,
                "out": str(out),
                "id_column": s.id_column,
                "threads": cpus if not gpus else None,
                "batch_size": s.batch_size,
            },
            batch_size=1,
            compute=ray.data.ActorPoolStrategy(size=min(s.workers, len(groups))),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        for row in ds.iter_rows():
            yield json.loads(row["result"])
    finally:
        if started:
            ray.shutdown()


def _remove_temp_files(shard_dir: Path) -> None:
    """Temporary shard files of killed writers (only the lock holder runs this)."""
    for p in shard_dir.glob(".*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass
