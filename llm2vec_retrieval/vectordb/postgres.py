"""Shards -> PostgreSQL with pgvector, through psycopg 3 (``pip install 'llm2vec-retrieval[vectordb]'``).

One table per collection, ``data_<collection>``, in the layout of LlamaIndex's
``PGVectorStore(table_name=<collection>)`` (``id`` bigserial, ``text``, ``metadata_`` json,
``node_id``, ``embedding vector(D)``), which LangChain's ``langchain_postgres.PGVectorStore``
reads too when told the column names (docs/vector_databases.md). We add a unique index on
``node_id`` (our chunk id): loads are ``INSERT ... ON CONFLICT (node_id) DO UPDATE``, so a
second load, or a rerun after a kill, leaves one row per chunk. Each batch is one
transaction (binary COPY into a temporary table, then the upsert).

The load's manifest (fingerprint, dimension, embedder) is a row of ``llm2vec_collections``
(``name`` primary key, ``meta`` jsonb), written before the first row.
Not here: an ANN index (pgvector searches exactly without one; CREATE INDEX ... USING hnsw
when the table is large, see the doc).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UserError

META_TABLE = "llm2vec_collections"
INSTALL = "pip install 'llm2vec-retrieval[vectordb]'  (psycopg[binary] and pgvector)"


def table_name(collection: str) -> str:
    """The table LlamaIndex's PGVectorStore(table_name=collection) reads."""
    return f"data_{collection}"


def _clients() -> tuple[Any, Any]:
    try:
        import psycopg
        from pgvector.psycopg import register_vector
    except ImportError as exc:
        raise ImportError(f"loading into PostgreSQL needs psycopg and pgvector: {INSTALL}") from exc
    return psycopg, register_vector


class PostgresSink:
    """Writes shard batches into ``data_<collection>`` of one database."""

    def __init__(self, url: str, collection: str, dimension: int):
        self.url = url
        self.collection = collection
        self.table = table_name(collection)
        self.dimension = int(dimension)
        self.conn: Any = None
        self._staged = False

    # -------------------------------------------------------------- connection
    def __enter__(self) -> PostgresSink:
        psycopg, register_vector = _clients()
        try:
            self.conn = psycopg.connect(self.url)
        except psycopg.OperationalError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot connect to PostgreSQL: {first}") from exc
        self._ensure_extension(psycopg)
        register_vector(self.conn)
        with self.conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {META_TABLE} "
                "(name text PRIMARY KEY, meta jsonb NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
            )
        self.conn.commit()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _ensure_extension(self, psycopg: Any) -> None:
        with self.conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'")
            if cur.fetchone() is not None:
                return
            try:
                cur.execute("CREATE EXTENSION IF NOT EXISTS vector")
                self.conn.commit()
            except psycopg.errors.InsufficientPrivilege as exc:
                raise UserError(
                    "the pgvector extension is not enabled in this database and this user may not "
                    "enable it: ask a superuser to run CREATE EXTENSION vector; in it"
                ) from exc
            except (psycopg.errors.FeatureNotSupported, psycopg.errors.UndefinedFile) as exc:
                raise UserError(
                    "the PostgreSQL server has no pgvector extension: install it on the server "
                    "(Debian: apt-get install postgresql-<version>-pgvector)"
                ) from exc

    # -------------------------------------------------------------- the manifest
    def read_meta(self) -> dict[str, Any] | None:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT meta FROM {META_TABLE} WHERE name = %s", (self.collection,))
            row = cur.fetchone()
            cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.table,))
            exists = cur.fetchone()[0]
        self.conn.commit()
        if row is None and exists:
            raise UserError(
                f"table {self.table} exists but was not written by llm2vec-retrieval (no row in "
                f"{META_TABLE}); choose another --collection or pass --recreate to replace it"
            )
        return row[0] if row is not None else None

    def drop(self) -> None:
        with self.conn.cursor() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.table}")
            cur.execute(f"DELETE FROM {META_TABLE} WHERE name = %s", (self.collection,))
        self.conn.commit()

    def create(self, meta: dict[str, Any]) -> None:
        """The table (if missing) and its manifest row, in one transaction."""
        psycopg, _ = _clients()
        with self.conn.cursor() as cur:
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (id bigserial PRIMARY KEY, "
                "text varchar NOT NULL, metadata_ json, node_id varchar, "
                f"embedding vector({self.dimension}))"
            )
            cur.execute(
                f"CREATE UNIQUE INDEX IF NOT EXISTS {self.table}_node_id_key "
                f"ON {self.table} (node_id)"
            )
            cur.execute(
                f"INSERT INTO {META_TABLE} (name, meta) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET meta = EXCLUDED.meta, updated_at = now()",
                (self.collection, psycopg.types.json.Jsonb(meta)),
            )
        self.conn.commit()

    # -------------------------------------------------------------- rows
    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict], vectors: Any) -> None:
        psycopg, _ = _clients()
        stage = "llm2vec_stage"
        with self.conn.cursor() as cur:
            if not self._staged:
                cur.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (node_id varchar, "
                    f"text varchar, metadata_ json, embedding vector({self.dimension})) "
                    "ON COMMIT DELETE ROWS"
                )
                self._staged = True
            with cur.copy(
                f"COPY {stage} (node_id, text, metadata_, embedding) FROM STDIN WITH (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["varchar", "varchar", "json", "vector"])
                Json = psycopg.types.json.Json
                for i, chunk_id in enumerate(ids):
                    copy.write_row(
                        (chunk_id, texts[i], Json(metadatas[i], dumps=_dumps), vectors[i])
                    )
            # DISTINCT ON: a batch that names a chunk twice keeps one row, not an error
            cur.execute(
                f"INSERT INTO {self.table} (node_id, text, metadata_, embedding) "
                f"SELECT DISTINCT ON (node_id) node_id, text, metadata_, embedding FROM {stage} "
                "ON CONFLICT (node_id) DO UPDATE SET text = EXCLUDED.text, "
                "metadata_ = EXCLUDED.metadata_, embedding = EXCLUDED.embedding"
            )
        self.conn.commit()

    def count(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {self.table}")
            n = int(cur.fetchone()[0])
        self.conn.commit()
        return n


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
