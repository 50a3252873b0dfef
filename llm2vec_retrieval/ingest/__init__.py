"""Indexing folders of files into a searchable index folder (the `index`/`search` commands).

- :mod:`.readers`: finding files and reading .txt/.md/.jsonl/.csv/.pdf into text segments;
- :mod:`.chunking`: token windows with overlap, cut with the tokenizer's offsets;
- :mod:`.folder`: the index folder layout (manifest, files.json, store) and the embedder;
- :mod:`.manifest`: the typed manifest (`IndexManifest`) and files.json entries (`FileEntry`);
- :mod:`.indexer`: incremental, crash-safe indexing: settings, report, the folder's lock;
- :mod:`.plan`, :mod:`.run`, :mod:`.committer`: one run's planning, files and commits;
- :mod:`.searcher`: opening an index folder for search.
"""

from .chunking import Span, chunk_spans
from .folder import IndexFolder, IndexFolderError
from .indexer import Indexer, IndexReport, IndexSettings
from .readers import SUPPORTED_SUFFIXES, SkipFile, discover, read_segments
from .run import EmptyCorpusError
from .searcher import Searcher, snippet

__all__ = [
    "SUPPORTED_SUFFIXES",
    "EmptyCorpusError",
    "IndexFolder",
    "IndexFolderError",
    "IndexReport",
    "IndexSettings",
    "Indexer",
    "Searcher",
    "SkipFile",
    "Span",
    "chunk_spans",
    "discover",
    "read_segments",
    "snippet",
]
