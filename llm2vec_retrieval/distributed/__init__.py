"""Corpus encoding on Ray: sources -> encoded parquet shards (`llm2vec_retrieval.shards`).

- :mod:`.plan`: finding the files (the `index` command's readers, plus .parquet tables) and
  cutting them into groups, one shard each, named after their files;
- :mod:`.work`: one group -> one shard file, in any process (a Ray actor, or this one);
- :mod:`.runner`: the Ray Data pipeline (one encoder per actor, streaming) and the driver
  that records each finished shard, so that a rerun skips it.

Ray is imported where used (``pip install 'llm2vec-retrieval[ray]'``).
"""

from .plan import Group, plan_groups
from .runner import CorpusSettings, EncodeReport, encode_corpus
from .work import ShardJob

__all__ = ["CorpusSettings", "EncodeReport", "Group", "ShardJob", "encode_corpus", "plan_groups"]
