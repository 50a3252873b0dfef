"""Shards -> LanceDB (a local folder; ``pip install 'llm2vec-retrieval[vectordb]'``).

One table per collection with the columns both frameworks read:
``id`` (our chunk id), ``doc_id`` (the source file), ``vector``
(fixed_size_list<float32>[D]), ``text`` and ``metadata`` (a struct) — the layout of
LlamaIndex's ``LanceDBVectorStore`` (``id``, ``doc_id``, ``vector``, ``text``,
``metadata``) and of LangChain's ``langchain_community.vectorstores.LanceDB`` (``id``,
``vector``, ``text``, ``metadata``). LangChain builds ``Document.metadata`` from the struct
and gives no id, so the struct carries ``chunk_id`` too.

An Arrow struct has fixed fields, so the metadata type is planned before writing: one pass
over the shards' metadata unifies the keys and value types of all rows (a key missing in a
row is null there). A key holding an integer beyond 64 bits in some row
(`rows.storable_metadata`) is a text column: its integers are decimal strings in every row. Upserts are ``merge_insert("id")`` (one Lance commit per batch): a
second load or a rerun after a kill leaves one row per chunk. The load's manifest is a row
of the table ``llm2vec_collections`` (``name``, ``meta`` JSON) in the same folder.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import UserError
from .rows import ref_doc_id, storable_metadata

META_TABLE = "llm2vec_collections"
CHUNK_ID_KEY = "chunk_id"
INSTALL = "pip install 'llm2vec-retrieval[vectordb]'  (lancedb)"


def _clients() -> tuple[Any, Any]:
    try:
        import lancedb
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError(f"loading into LanceDB needs lancedb: {INSTALL}") from exc
    return lancedb, pa


def metadata_type(metadatas_batches: Any) -> tuple[Any, set[str]]:
    """The Arrow struct type holding every metadata dict of ``metadatas_batches`` (an
    iterable of lists of dicts), with ``chunk_id`` first, and the keys that are text in
    every row: those holding an integer beyond 64 bits somewhere (`rows.storable_metadata`;
    their integers are stored as decimal strings, in every row, since a column has one
    type). `UserError` when a key holds values of types that do not unify (e.g. a number in
    one row and a string in another)."""
    _, pa = _clients()
    seen: dict[str, list[Any]] = {}  # key -> the distinct non-null types met, in order
    text_keys: set[str] = set()
    for metadatas in metadatas_batches:
        stored = []
        for m in metadatas:
            row, wide = storable_metadata(m)
            stored.append(row)
            text_keys |= wide
        for struct in _struct_types(pa, stored):
            for f in struct:
                types = seen.setdefault(f.name, [])
                if f.name != CHUNK_ID_KEY and not pa.types.is_null(f.type) and f.type not in types:
                    types.append(f.type)
    fields: dict[str, Any] = {CHUNK_ID_KEY: pa.string()}
    for name, types in seen.items():
        if name == CHUNK_ID_KEY:
            continue
        if name in text_keys:
            types = [_ints_as_text(pa, t) for t in types]
        fields[name] = _unify(pa, name, types)
    return pa.struct(list(fields.items())), text_keys


def _struct_types(pa: Any, metadatas: list[dict[str, Any]]) -> list[Any]:
    """The struct type(s) Arrow infers for ``metadatas``: one for the batch, or one per row
    when the rows disagree (``_unify`` then says which key)."""
    if not metadatas:
        return []
    try:
        types = [pa.array(metadatas).type]
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        types = [pa.array([m]).type for m in metadatas]
    return [t for t in types if pa.types.is_struct(t)]


def _ints_as_text(pa: Any, t: Any) -> Any:
    """The type of a value of type ``t`` after `rows.ints_as_text`: integers -> string."""
    if pa.types.is_integer(t):
        return pa.string()
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_ints_as_text(pa, t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([(f.name, _ints_as_text(pa, f.type)) for f in t])
    return t


def _unify(pa: Any, name: str, types: list[Any]) -> Any:
    """One type for all ``types`` of key ``name`` (int and float give float); a key that is
    null everywhere is a string column."""
    out = types[0] if types else pa.string()
    for t in types[1:]:
        if t == out:
            continue
        try:
            out = (
                pa.unify_schemas(
                    [pa.schema([(name, out)]), pa.schema([(name, t)])],
                    promote_options="permissive",
                )
                .field(name)
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise UserError(
                f"metadata key {name!r} holds values of types {out} and {t}; "
                "LanceDB needs one type per key"
            ) from exc
    return out


class LanceDBSink:
    """Writes shard batches into one LanceDB table."""

    def __init__(self, path: str, collection: str, dimension: int):
        self.path = path
        self.collection = collection
        self.dimension = int(dimension)
        self.db: Any = None
        self.table: Any = None
        self.meta_type: Any = None
        #: metadata keys stored as text in every row (planned; the loader converts them)
        self.text_keys: set[str] = set()

    def __enter__(self) -> LanceDBSink:
        lancedb, _ = _clients()
        self.db = lancedb.connect(self.path)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.db = self.table = None

    def _open(self, name: str) -> Any:
        try:
            return self.db.open_table(name)
        except (ValueError, FileNotFoundError):
            return None

    def schema(self, meta_type: Any) -> Any:
        _, pa = _clients()
        return pa.schema(
            [
                ("id", pa.string()),
                ("doc_id", pa.string()),
                ("vector", pa.list_(pa.float32(), self.dimension)),
                ("text", pa.string()),
                ("metadata", meta_type),
            ]
        )

    def plan(self, shards: Any, batch_rows: int) -> None:
        """The metadata struct type and the keys kept as text: a pass over the shards (see
        the module doc)."""
        self.meta_type, self.text_keys = metadata_type(
            b.metadatas for b in shards.iter_batches(batch_rows)
        )

    def read_meta(self) -> dict[str, Any] | None:
        meta_table = self._open(META_TABLE)
        row = None
        if meta_table is not None:
            rows = meta_table.search().where(f"name = '{self.collection}'").limit(1).to_list()
            row = rows[0] if rows else None
        if row is None and self._open(self.collection) is not None:
            raise UserError(
                f"LanceDB table {self.collection} was not written by llm2vec-retrieval; "
                "choose another --collection or pass --recreate to replace it"
            )
        return json.loads(row["meta"]) if row is not None else None

    def drop(self) -> None:
        if self._open(self.collection) is not None:
            self.db.drop_table(self.collection)
        meta_table = self._open(META_TABLE)
        if meta_table is not None:
            meta_table.delete(f"name = '{self.collection}'")

    def create(self, meta: dict[str, Any]) -> None:
        _, pa = _clients()
        if self.meta_type is None:
            raise RuntimeError("LanceDBSink.create before plan()")
        table = self._open(self.collection)
        if table is None:
            table = self.db.create_table(self.collection, schema=self.schema(self.meta_type))
        else:
            have = table.schema.field("metadata").type
            missing = [f.name for f in self.meta_type if have.get_field_index(f.name) < 0]
            if missing:
                raise UserError(
                    f"LanceDB table {self.collection} has no metadata field(s) "
                    f"{', '.join(missing)} that these shards hold; pass --recreate to rebuild it"
                )
            changed = [
                f"{k} ({have.field(k).type}, these shards need {self.meta_type.field(k).type})"
                for k in sorted(self.text_keys)
                if have.field(k).type != self.meta_type.field(k).type
            ]
            if changed:
                raise UserError(
                    f"LanceDB table {self.collection} stores metadata key(s) "
                    f"{', '.join(changed)} as numbers, these shards as text (integers beyond "
                    "64 bits); pass --recreate to rebuild it"
                )
            self.meta_type = have
        self.table = table
        meta_schema = pa.schema([("name", pa.string()), ("meta", pa.string())])
        meta_table = self._open(META_TABLE)  # not `or`: an empty table is falsy (len 0)
        if meta_table is None:
            meta_table = self.db.create_table(META_TABLE, schema=meta_schema)
        row = pa.table(
            {"name": [self.collection], "meta": [json.dumps(meta, ensure_ascii=False)]},
            schema=meta_schema,
        )
        meta_table.merge_insert(
            "name"
        ).when_matched_update_all().when_not_matched_insert_all().execute(row)

    def upsert(self, ids: list[str], texts: list[str], metadatas: list[dict], vectors: Any) -> None:
        _, pa = _clients()
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        try:
            meta = pa.array(
                [{**m, CHUNK_ID_KEY: i} for i, m in zip(ids, metadatas, strict=True)],
                type=self.meta_type,
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise UserError(
                f"metadata does not fit the table's metadata type ({exc}); pass --recreate"
            ) from exc
        data = pa.table(
            {
                "id": pa.array(ids, type=pa.string()),
                "doc_id": pa.array([ref_doc_id(m) for m in metadatas], type=pa.string()),
                "vector": pa.FixedSizeListArray.from_arrays(flat, self.dimension),
                "text": pa.array(texts, type=pa.string()),
                "metadata": meta,
            },
            schema=self.schema(self.meta_type),
        )
        self.table.merge_insert(
            "id"
        ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def count(self) -> int:
        return int(self.table.count_rows())
