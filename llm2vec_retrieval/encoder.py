"""The encoder: LLM2Vec models as text encoders, a drop-in for the official `llm2vec`.

Flow of one `encode` call:
  inputs -> (instruction, text) pairs -> text cut to `doc_max_length` tokens
  -> one batched tokenizer call for "instruction text" and one for the text part
     (its token count fixes which trailing positions belong to the text, exactly
     as the official library decides it) -> length-sorted token-budget batches
  -> bidirectional decoder forward -> pooling over text positions -> float32.

The same steps are public, as in sentence-transformers' modules and the official library:
`tokenize(inputs)` -> `Features` (padded tensors, the pooled text positions, how many inputs
were cut) and `forward(features)` -> pooled vectors, with gradients unless the caller turns
them off. `encode` is these two steps over length-sorted batches. `lock` (re-entrant) is held
around every tokenization and forward pass.

Deliberate differences from llm2vec 0.2.3 are listed in README.md ("Differences from
the official library"); each one has a test.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import fingerprint, hardware, merge_cache, packing, quantize, sources, st_compat
from .batching import token_budget_batches
from .bidirectional import (
    SUPPORTED_MODEL_TYPES,
    UnsupportedModelError,
    is_bidirectional,
    set_bidirectional,
)
from .bidirectional import enable_bidirectional as make_bidirectional
from .config import EncoderConfig
from .instructions import get_instruction
from .pooling import pool
from .progress import progress_bar
from .text import repair_surrogates, repair_texts, warn_repaired

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

# Chat wrappers the official library applies by model name (prepare_for_tokenization).
_CHAT_TEMPLATES = {
    "meta-llama/Meta-Llama-3-8B-Instruct": (
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|>",
    ),
    "mistralai/Mistral-7B-Instruct-v0.2": ("[INST] ", " [/INST]"),
    "meta-llama/Llama-2-7b-chat-hf": ("[INST] ", " [/INST]"),
    "google/gemma-2-9b-it": ("<bos><start_of_turn>user\n", "<end_of_turn>"),
    "Qwen/Qwen2-1.5B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
    "Qwen/Qwen2-7B-Instruct": ("<|im_start|>user\n", "<|im_end|>"),
}
_CONFIG_FIELDS = {f.name for f in dataclasses.fields(EncoderConfig)}
_LLAMA3_INSTRUCT = "meta-llama/Meta-Llama-3-8B-Instruct"
SEPARATOR = "!@#$%^&*()"  # the official library's instruction/text separator (prepared texts)


class Features(dict):
    """What `LLM2Vec.tokenize` returns and `LLM2Vec.forward` reads, as the official library's.

    (batch, seq) long tensors, padded on the right: ``input_ids``, ``attention_mask`` (1 on
    real tokens) and ``embed_mask`` (1 on the text's tokens, the positions pooled when
    ``skip_instruction`` is on). ``truncated``: how many inputs were cut, their text to
    ``doc_max_length`` tokens or instruction + text to ``max_length``.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], truncated: int = 0):
        super().__init__(tensors)
        self.truncated = truncated

    def to(self, device: str | torch.device) -> Features:
        """The same features on `device`."""
        return Features({k: v.to(device) for k, v in self.items()}, self.truncated)


class LLM2Vec(torch.nn.Module):
    """A decoder-only LLM used as a text encoder.

    Construct with `LLM2Vec.from_pretrained(...)`. `encode` follows the official
    library's signature; `encode_queries` / `encode_documents` are the API the rest
    of this project uses (instruction on queries, none on documents, float32 numpy,
    L2-normalized by default). `tokenize` / `forward` are the two steps of `encode`,
    for training and custom batching.

    Thread safety: `lock` is a re-entrant lock held around each tokenization and forward
    pass and across each `encode*` call, so threads may share one encoder. A caller that
    needs several calls to run back to back holds it: ``with encoder.lock: ...``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        pooling_mode: str = "mean",
        max_length: int = 512,
        doc_max_length: int = 400,
        skip_instruction: bool = True,
        *,
        config: EncoderConfig | None = None,
        source: dict | None = None,
    ):
        super().__init__()
        if config is None:
            config = EncoderConfig(
                pooling_mode=pooling_mode,
                max_length=max_length,
                doc_max_length=doc_max_length,
                skip_instruction=skip_instruction,
            )
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.source = source or {}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.lock = threading.RLock()
        self._model_type = getattr(self._base_config(), "model_type", "")
        # sentence-transformers' model attributes (see `prompts`, `similarity_fn_name`)
        self._extra_prompts: dict[str, str] = {}
        self._similarity_fn_name = "cosine"
        self.default_prompt_name: str | None = None

    # Official attribute names, kept in sync with the config.
    pooling_mode = property(
        lambda self: self.config.pooling_mode, lambda self, v: self._set("pooling_mode", v)
    )
    max_length = property(
        lambda self: self.config.max_length, lambda self, v: self._set("max_length", v)
    )
    doc_max_length = property(
        lambda self: self.config.doc_max_length, lambda self, v: self._set("doc_max_length", v)
    )
    skip_instruction = property(
        lambda self: self.config.skip_instruction, lambda self, v: self._set("skip_instruction", v)
    )

    def _set(self, name: str, value: Any) -> None:
        setattr(self.config, name, value)
        self.config.validate()

    # sentence-transformers' name for the token cap on the whole input (instruction + text)
    max_seq_length = property(
        lambda self: self.config.max_length, lambda self, v: self._set("max_length", v)
    )

    @property
    def prompts(self) -> st_compat.Prompts:
        """Prompt name -> instruction, as sentence-transformers' ``model.prompts``: ``"query"``
        and ``"document"`` are ``config.query_instruction`` / ``config.document_instruction``;
        other names are kept on this object (not saved). Assigning a dict replaces the other
        names and sets ``query`` / ``document`` where it has them."""
        return st_compat.Prompts(self.config, self._extra_prompts)

    @prompts.setter
    def prompts(self, value: dict[str, str]) -> None:
        items = dict(value)
        for name, prompt in items.items():
            if not isinstance(name, str) or not isinstance(prompt, str):
                raise TypeError(f"prompts map names to strings, got {name!r}: {prompt!r}")
        self._extra_prompts.clear()
        self.prompts.update(items)

    @property
    def similarity_fn_name(self) -> str:
        """What `similarity` computes: "cosine" (the default), "dot", "euclidean" or
        "manhattan", as sentence-transformers names them (not saved with the model)."""
        return self._similarity_fn_name

    @similarity_fn_name.setter
    def similarity_fn_name(self, value: Any) -> None:
        self._similarity_fn_name = (
            "cosine" if value is None else st_compat.check_similarity_fn_name(value)
        )

    def _base_config(self):
        cfg = self.model.config
        return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(
        cls,
        base_model_name_or_path: str | os.PathLike | None = None,
        peft_model_name_or_path: str | os.PathLike | None = None,
        merge_peft: bool = False,
        enable_bidirectional: bool = True,
        **kwargs: Any,
    ) -> LLM2Vec:
        """Load a model (with optional PEFT adapters) as an encoder.

        `base_model_name_or_path=None` loads the embedded default (`DEFAULT_MODEL`).
        Encoder settings (pooling_mode, max_length, doc_max_length, skip_instruction,
        and this project's query_instruction, document_instruction, normalize,
        max_batch_tokens) come from keyword arguments, else from
        `llm2vec_config.json` / `llm2vec_retrieval_config.json` in the adapter or base
        folder. Other keyword arguments go to transformers (dtype / torch_dtype,
        device_map, attn_implementation, ...). The dtype defaults to "auto": bfloat16 where
        the device runs it natively, else float32 (`hardware.resolve_dtype`), as in the CLI
        and the integrations; pass ``dtype="float32"`` for float32 everywhere.
        """
        encoder_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
        encoder_kwargs = {k: v for k, v in encoder_kwargs.items() if v is not None}
        encoder_kwargs.pop("enable_bidirectional", None)
        hf_kwargs = _hf_kwargs(kwargs)
        int8 = hf_kwargs["dtype"] == torch.int8
        if int8:  # load float32, then quantize the linear layers (llm2vec_retrieval.quantize)
            reason = quantize.int8_unavailable(hardware.load_device(hf_kwargs))
            if reason:
                raise hardware.DtypeUnavailableError(reason)
            hf_kwargs["dtype"] = torch.float32

        base_path = sources.resolve_model_path(base_model_name_or_path)
        peft_path = (
            os.fspath(peft_model_name_or_path) if peft_model_name_or_path is not None else None
        )
        if peft_path is not None and not os.path.isdir(peft_path):
            raise FileNotFoundError(f"Adapter path {peft_path!r} does not exist")

        model, tokenizer, inner_adapter = _load_base(base_path, hf_kwargs)
        if peft_path is not None:
            model = sources.apply_adapter(model, peft_path, merge=merge_peft or int8)
        model.eval()
        declared = getattr(model.config, "is_causal", None)  # set by exported LLM2Vec checkpoints
        if declared is None and is_bidirectional(model):
            raise UnsupportedModelError(
                f"{base_path}: {getattr(model.config, 'model_type', '?')} is not a decoder-only (causal) LLM; "
                f"LLM2Vec needs one (checked: {', '.join(SUPPORTED_MODEL_TYPES)})"
            )
        if enable_bidirectional:
            make_bidirectional(model)
        else:
            set_bidirectional(model, False)
        if int8:
            quantize.quantize_linears(model)

        saved = EncoderConfig.read_saved(peft_path if peft_path is not None else base_path)
        saved.pop("enable_bidirectional", None)
        settings = {**saved, **encoder_kwargs, "enable_bidirectional": enable_bidirectional}
        config = EncoderConfig.from_dict(settings)
        source = {
            "model": _model_label(base_model_name_or_path, base_path),
            "model_path": base_path,
            "model_digest": fingerprint.folder_digest(base_path),
            "inner_adapter": inner_adapter,
            "adapter": peft_path,
            "adapter_digest": fingerprint.folder_digest(peft_path, ("adapter_model.*",))
            if peft_path
            else None,
        }
        return cls(model, tokenizer, config=config, source=source)

    def save(
        self,
        output_path: str | os.PathLike,
        merge_before_save: bool = False,
        save_config: bool = True,
    ) -> None:
        """Write the official layout: weights or adapter, tokenizer, llm2vec_config.json."""
        from peft import PeftModel

        if merge_before_save and isinstance(self.model, PeftModel):
            self.model = self.model.merge_and_unload()
        output_path = Path(output_path)
        output_path.mkdir(parents=True, exist_ok=True)
        model: Any = self.model  # a transformers or peft model (nn.Module's typing says Tensor)
        model.save_pretrained(output_path)
        self.tokenizer.save_pretrained(output_path)
        if save_config:
            self.config.save(output_path)

    # ------------------------------------------------------------------ facts
    @property
    def embedding_dim(self) -> int:
        return int(self._base_config().hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def fingerprint(self) -> dict:
        """What determines the vectors: compare two fingerprints to know if indexes are
        compatible (see `llm2vec_retrieval.fingerprint.encoder_fingerprint`)."""
        return fingerprint.encoder_fingerprint(self)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Token counts of `texts` without special tokens (lone surrogates count as U+FFFD)."""
        texts, _ = repair_texts(texts)
        with self.lock:
            return [
                len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]
            ]

    # ------------------------------------------------------------------ encoding
    def encode(
        self,
        sentences: str | Sequence[str] | Sequence[Sequence[str]],
        batch_size: int = 32,
        show_progress_bar: bool | None = True,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool = False,
        truncate_dim: int | None = None,
        precision: str = "float32",
    ) -> torch.Tensor | np.ndarray:
        """Encode strings or [instruction, text] pairs; float32, not normalized (as upstream).

        The official library's signature and outputs: a single string gives a 1-D vector, a
        list (n, dim); a torch tensor unless `convert_to_numpy` (and not `convert_to_tensor`).
        Texts alone get no instruction. `batch_size` caps the rows per forward pass; the
        token budget (`config.max_batch_tokens`) caps the padded tokens.

        Keyword-only, as sentence-transformers takes them: `prompt` (an instruction) or
        `prompt_name` (a name in `prompts` or a task of the instruction registry; default
        `default_prompt_name`) for the items without an instruction of their own,
        `normalize_embeddings`, `truncate_dim` (first dims, before normalizing) and
        `precision` ("float32", "int8", "uint8", "binary", "ubinary"; see
        `st_compat.quantize_embeddings`).
        """
        single = isinstance(sentences, str)
        pairs = _as_pairs(sentences)
        instruction = self._prompt(prompt, prompt_name, self.default_prompt_name)
        if instruction:
            pairs = [(i if i else instruction, t) for i, t in pairs]
        return self._encode_output(
            pairs,
            single,
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize=normalize_embeddings,
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
            stacked=True,
            warn_stacklevel=6,
        )

    def encode_queries(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        *,
        task: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = False,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Queries with an instruction: `instruction` (or `prompt`), else the named one
        (`prompt_name` in `prompts`, or `task` / `prompt_name` in the instruction registry),
        else ``prompts["query"]`` (`config.query_instruction`).

        Float32 numpy, L2-normalized by default (`normalize` / `normalize_embeddings`, None:
        `config.normalize`); the other keywords as in sentence-transformers' `encode_query`.
        """
        return self._encode_side(
            texts,
            self._side_instruction("query", instruction, task, prompt, prompt_name),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize=_same("normalize", normalize, "normalize_embeddings", normalize_embeddings),
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
        )

    def encode_documents(
        self,
        texts: str | Sequence[str],
        instruction: str | None = None,
        *,
        batch_size: int = 32,
        show_progress_bar: bool | None = False,
        normalize: bool | None = None,
        prompt_name: str | None = None,
        prompt: str | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Documents, with no instruction unless one is given (LLM2Vec's convention):
        ``prompts["document"]`` is `config.document_instruction`, empty by default. The
        other arguments as in `encode_queries`."""
        return self._encode_side(
            texts,
            self._side_instruction("document", instruction, None, prompt, prompt_name),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize=_same("normalize", normalize, "normalize_embeddings", normalize_embeddings),
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
        )

    # sentence-transformers' `encode_query` / `encode_document`, with its positional order; our
    # `instruction`, `task` and `normalize` as keywords. Defaults as `encode_queries` except
    # show_progress_bar=None (shown when this module's logger is at INFO or DEBUG, as theirs).
    def encode_query(
        self,
        inputs: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        *,
        instruction: str | None = None,
        task: str | None = None,
        normalize: bool | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Queries, as sentence-transformers' `encode_query` (see `encode_queries`)."""
        _check_st_only(output_value, pool)
        return self._encode_side(
            inputs,
            self._side_instruction("query", instruction, task, prompt, prompt_name),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize=_same("normalize", normalize, "normalize_embeddings", normalize_embeddings),
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
        )

    def encode_document(
        self,
        inputs: str | Sequence[str],
        prompt_name: str | None = None,
        prompt: str | None = None,
        batch_size: int = 32,
        show_progress_bar: bool | None = None,
        output_value: str | None = "sentence_embedding",
        precision: str = "float32",
        convert_to_numpy: bool = True,
        convert_to_tensor: bool = False,
        device: str | torch.device | None = None,
        normalize_embeddings: bool | None = None,
        truncate_dim: int | None = None,
        pool: Any = None,
        chunk_size: int | None = None,
        *,
        instruction: str | None = None,
        normalize: bool | None = None,
    ) -> np.ndarray | torch.Tensor | list[torch.Tensor]:
        """Documents, as sentence-transformers' `encode_document` (see `encode_documents`)."""
        _check_st_only(output_value, pool)
        return self._encode_side(
            inputs,
            self._side_instruction("document", instruction, None, prompt, prompt_name),
            batch_size=batch_size,
            show_progress_bar=show_progress_bar,
            normalize=_same("normalize", normalize, "normalize_embeddings", normalize_embeddings),
            truncate_dim=truncate_dim,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            device=device,
        )

    # ------------------------------------------------------------------ sentence-transformers
    def similarity(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """(n, m) float32 tensor: `similarity_fn_name` of every row of `embeddings1` against
        every row of `embeddings2` (arrays, tensors or lists of them; 1-D is one row)."""
        return st_compat.similarity(embeddings1, embeddings2, self.similarity_fn_name)

    def similarity_pairwise(self, embeddings1: Any, embeddings2: Any) -> torch.Tensor:
        """(n,) float32 tensor: `similarity_fn_name` of ``embeddings1[i]`` and ``embeddings2[i]``."""
        return st_compat.similarity_pairwise(embeddings1, embeddings2, self.similarity_fn_name)

    def get_embedding_dimension(self) -> int:
        """`embedding_dim`, under sentence-transformers' name."""
        return self.embedding_dim

    get_sentence_embedding_dimension = get_embedding_dimension  # its name before v6

    def _prompt(
        self, prompt: str | None, prompt_name: str | None, default: str | None, stacklevel: int = 3
    ) -> str | None:
        """The instruction sentence-transformers' `prompt` / `prompt_name` ask for (None: none)."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise TypeError(
                    f"the instruction (prompt) must be a string, got {type(prompt).__name__}"
                )
            if prompt_name is not None:
                warnings.warn(
                    "Provide either a `prompt`, a `prompt_name`, or neither, but not both. "
                    "Ignoring the `prompt_name` in favor of `prompt`.",
                    stacklevel=stacklevel,
                )
            return prompt
        name = prompt_name if prompt_name is not None else default
        if name is None:
            return None
        prompts = self.prompts
        if name in prompts:
            return prompts[name]
        try:
            return get_instruction(name)
        except KeyError:
            raise ValueError(
                f"Prompt name {name!r} is neither in the prompts dictionary (keys "
                f"{list(prompts)!r}) nor a task of llm2vec_retrieval.INSTRUCTIONS"
            ) from None

    def _side_instruction(self, side, instruction, task, prompt, prompt_name) -> str | None:
        """One side's instruction: given text (`instruction` or `prompt`) beats a name
        (`task` / `prompt_name`), which beats ``prompts[side]``."""
        if instruction is not None and prompt is not None and instruction != prompt:
            raise ValueError("instruction= and prompt= name the same thing: pass one of them")
        text = instruction if instruction is not None else prompt
        if text is None and task is not None:
            if prompt_name is not None:
                raise ValueError("task= and prompt_name= name the same thing: pass one of them")
            return get_instruction(task)
        return self._prompt(text, prompt_name, side, stacklevel=4)

    def _encode_side(self, texts, instruction, **options):
        single = isinstance(texts, str)
        texts = [texts] if single else _as_text_list(texts)
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a string, got {type(instruction).__name__}")
        _check_texts(texts)
        options["normalize"] = (
            self.config.normalize if options["normalize"] is None else options["normalize"]
        )
        return self._encode_output(
            [(instruction, t) for t in texts], single, warn_stacklevel=7, **options
        )

    def _encode_output(
        self,
        pairs: list[tuple[str, str]],
        single: bool,
        *,
        batch_size: int,
        show_progress_bar: bool | None,
        normalize: bool,
        truncate_dim: int | None,
        precision: str,
        convert_to_numpy: bool,
        convert_to_tensor: bool,
        device: Any,
        stacked: bool = False,
        warn_stacklevel: int,
    ):
        """Encode `pairs`, cut to `truncate_dim`, normalize, quantize and convert (in
        sentence-transformers' order; see `st_compat.convert_output`)."""
        st_compat.check_precision(precision)
        truncate_dim = st_compat.check_truncate_dim(truncate_dim)
        if show_progress_bar is None:
            show_progress_bar = logger.getEffectiveLevel() in (logging.INFO, logging.DEBUG)
        if device is not None:
            if isinstance(device, (list, tuple)):
                raise ValueError(
                    "device must be one device: multi-process encoding is not supported "
                    "(llm2vec_retrieval.distributed encodes a corpus on several workers)"
                )
            self.to(device)
        vectors = self._encode_pairs(pairs, batch_size, show_progress_bar, warn_stacklevel)
        if truncate_dim is not None:
            vectors = vectors[:, :truncate_dim]
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, dim=-1)
        return st_compat.convert_output(
            vectors,
            single=single,
            precision=precision,
            convert_to_numpy=convert_to_numpy,
            convert_to_tensor=convert_to_tensor,
            stacked=stacked,
        )

    @torch.inference_mode()
    def _encode_pairs(
        self,
        pairs: list[tuple[str, str]],
        batch_size: int,
        show_progress_bar: bool,
        warn_stacklevel: int = 4,
    ) -> torch.Tensor:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not pairs:
            return torch.zeros((0, self.embedding_dim), dtype=torch.float32)
        pairs, repaired = _repair_pairs(pairs)
        warn_repaired(repaired, stacklevel=warn_stacklevel)
        out = torch.empty((len(pairs), self.embedding_dim), dtype=torch.float32)
        with self.lock:
            rows = self._tokenize(pairs)
            self._warn_truncated(rows, stacklevel=warn_stacklevel)
            lengths = [len(ids) for ids in rows["input_ids"]]
            batches = token_budget_batches(lengths, self.config.max_batch_tokens, batch_size)
            device = self.device
            with progress_bar(len(pairs), "Encoding", "text", bool(show_progress_bar)) as bar:
                for batch in batches:
                    features = self._collate(
                        [rows["input_ids"][i] for i in batch],
                        [rows["text_len"][i] for i in batch],
                        device,
                    )
                    out[torch.tensor(batch)] = self.forward(features).float().cpu()
                    bar.update(len(batch))
        return out

    def _warn_truncated(self, rows: dict[str, list], stacklevel: int) -> None:
        cfg = self.config
        cut, over = sum(rows["cut"]), sum(rows["over"])
        if cut:
            warnings.warn(
                f"{cut} text(s) longer than doc_max_length={cfg.doc_max_length} tokens were truncated",
                stacklevel=stacklevel,
            )
        if over:
            warnings.warn(
                f"{over} input(s) longer than max_length={cfg.max_length} tokens (instruction + text) were truncated",
                stacklevel=stacklevel,
            )

    # ------------------------------------------------------------------ the seam
    def tokenize(self, inputs: str | Sequence[str] | Sequence[Sequence[str]]) -> Features:
        """Token tensors for `inputs`, prepared exactly as `encode` prepares them.

        `inputs`: [instruction, text] pairs or texts (no instruction), as `encode` takes them;
        a string holding the official separator ``"!@#$%^&*()"`` is a text the official
        `prepare_for_tokenization` already prepared ("instruction!@#$%^&*()text") and is
        tokenized as is, as official `LLM2Vec.tokenize` does. No warning on truncation:
        `Features.truncated` counts the inputs cut. Thread-safe (holds `lock`).
        """
        items = [inputs] if isinstance(inputs, str) else _as_text_list(inputs)
        prepared = [i for i, x in enumerate(items) if isinstance(x, str) and SEPARATOR in x]
        skip = set(prepared)
        pairs = _as_pairs([x for i, x in enumerate(items) if i not in skip])
        pairs, repaired = _repair_pairs(pairs)
        warn_repaired(repaired, stacklevel=3)
        with self.lock:
            rows = self._tokenize(pairs)
            if prepared:
                rows = _merge_rows(
                    rows, self._tokenize_prepared([items[i] for i in prepared]), prepared
                )
            features = self._collate(rows["input_ids"], rows["text_len"], "cpu")
        truncated = sum(c or o for c, o in zip(rows["cut"], rows["over"], strict=True))
        return Features(features, truncated)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pooled vectors (batch, dim), float32, for `tokenize`'s features; not normalized.

        Runs on the encoder's device. Gradients follow the caller's mode: `encode` runs
        under `torch.inference_mode()`, training does not. Thread-safe (holds `lock`).
        """
        device = self.device
        input_ids = features["input_ids"].to(device)
        attention = features["attention_mask"].to(device)
        pool_mask = features["embed_mask"].to(device)
        if self.config.skip_instruction:  # an empty text pools every real token
            pool_mask = torch.where(pool_mask.any(dim=1, keepdim=True), pool_mask, attention)
        else:
            pool_mask = attention
        with self.lock:
            if self._packs(attention):
                hidden = packing.packed_hidden(self.model, input_ids, attention)
            else:
                hidden = self.model(input_ids=input_ids, attention_mask=attention).last_hidden_state
        return pool(
            hidden,
            attention,
            pool_mask,
            self.config.pooling_mode,
            input_ids,
            self.tokenizer.bos_token_id,
        )

    def _packs(self, attention: torch.Tensor) -> bool:
        """Does this batch run packed (`config.packing`, see llm2vec_retrieval.packing)?"""
        mode = self.config.packing
        if mode == "off" or (mode == "auto" and attention.device.type != "cpu"):
            return False
        if not packing.enabled(self.model) and not packing.enable(self.model):
            return False  # not an SDPA model of a checked architecture: padded batches
        return packing.packable(self.model, attention)

    # ------------------------------------------------------------------ tokenization
    def _format(self, instruction: str, text: str) -> tuple[str, str]:
        """(full string, text part) as llm2vec 0.2.3 builds them; the text part ends the string.

        Upstream joins "instruction text", wraps known chat models in their template,
        appends EOS for eos_token pooling, and strips the string where it wraps or
        appends (which trims trailing whitespace of the text).
        """
        head = f"{instruction.strip()} " if instruction.strip() else ""
        name = str(getattr(self._base_config(), "_name_or_path", ""))
        template = _CHAT_TEMPLATES.get(name)
        eos = (
            self._eos_suffix()
            if self.config.pooling_mode == "eos_token" and name != _LLAMA3_INSTRUCT
            else ""
        )
        if template is None and not eos:
            return head + text, text
        prefix, suffix = template or ("", "")
        part = text.rstrip() + suffix + eos
        return prefix + head + part, part

    def _eos_suffix(self) -> str:
        # Upstream appends " </s>" for Llama/Mistral configs, the bare EOS token otherwise.
        eos = self.tokenizer.eos_token or ""
        return f" {eos}" if eos == "</s>" and self._model_type in ("llama", "mistral") else eos

    def _tokenize(self, pairs: list[tuple[str, str]]) -> dict[str, list]:
        """Unpadded rows: input_ids, text_len (trailing text tokens), cut / over (per row:
        text cut to doc_max_length, input cut to max_length)."""
        cfg = self.config
        if not pairs:  # the tokenizer refuses an empty batch
            return {"input_ids": [], "text_len": [], "over": [], "cut": []}
        texts = [text for _, text in pairs]
        cut = [False] * len(texts)
        with self.lock:
            raw = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
            for i, ids in enumerate(raw["input_ids"]):
                if len(ids) > cfg.doc_max_length:
                    end = raw["offset_mapping"][i][cfg.doc_max_length - 1][1]
                    texts[i] = texts[i][:end]
                    cut[i] = True
            formatted = [
                self._format(instr, text) for (instr, _), text in zip(pairs, texts, strict=True)
            ]
            # The text part's token count is usually the one just computed: re-tokenize only the
            # parts that changed (cut to doc_max_length, or given a suffix/stripped by _format).
            text_len = [len(ids) for ids in raw["input_ids"]]
            redo = [i for i, (_, part) in enumerate(formatted) if part != pairs[i][1]]
            if redo:
                again = self.tokenizer([formatted[i][1] for i in redo], add_special_tokens=False)[
                    "input_ids"
                ]
                for i, ids in zip(redo, again, strict=True):
                    text_len[i] = len(ids)
            full = self.tokenizer(
                [f for f, _ in formatted], add_special_tokens=True, truncation=False
            )["input_ids"]
        return {**self._rows(full, text_len), "cut": cut}

    def _tokenize_prepared(self, prepared: list[str]) -> dict[str, list]:
        """`_tokenize`'s rows for texts the official library prepared (see `tokenize`)."""
        parts = [p.split(SEPARATOR) for p in prepared]
        with self.lock:
            full = self.tokenizer(["".join(p) for p in parts], add_special_tokens=True)
            text = self.tokenizer([p[1] for p in parts], add_special_tokens=False)
        text_len = [len(ids) for ids in text["input_ids"]]
        return {**self._rows(full["input_ids"], text_len), "cut": [False] * len(prepared)}

    def _rows(self, full: list[list[int]], text_len: list[int]) -> dict[str, list]:
        cfg = self.config
        input_ids, text_counts = [], []
        for ids, n_text in zip(full, text_len, strict=True):
            ids = list(ids[: cfg.max_length])
            if (
                not ids
            ):  # empty text, no instruction, no BOS: feed one EOS so the model sees something
                ids = [
                    self.tokenizer.eos_token_id
                    if self.tokenizer.eos_token_id is not None
                    else self.tokenizer.pad_token_id
                ]
            input_ids.append(ids)
            text_counts.append(min(n_text, len(ids)))
        over = [len(ids) > cfg.max_length for ids in full]
        return {"input_ids": input_ids, "text_len": text_counts, "over": over}

    def _collate(
        self, rows: list[list[int]], text_lens: list[int], device
    ) -> dict[str, torch.Tensor]:
        """Right-padded tensors; embed_mask marks each row's last `text_len` real tokens."""
        width = max((len(r) for r in rows), default=0)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        embed_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, n_text) in enumerate(zip(rows, text_lens, strict=True)):
            length = len(row)
            input_ids[i, :length] = torch.tensor(row)
            attention[i, :length] = 1
            embed_mask[i, length - n_text : length] = 1
        return {
            "input_ids": input_ids.to(device),
            "attention_mask": attention.to(device),
            "embed_mask": embed_mask.to(device),
        }

    def __repr__(self) -> str:
        return f"LLM2Vec(model={self.source.get('model')!r}, dim={self.embedding_dim}, config={self.config})"


# ---------------------------------------------------------------------- helpers
def _check_texts(texts) -> None:
    if texts is None:
        raise TypeError("texts must be a string or a list of strings, got None")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"text {i} is {type(text).__name__}, expected str")


def _as_text_list(texts) -> list:
    """Texts as a list, read once: a generator or ``map(...)`` is materialized here, before
    any check iterates it (a second pass would see it empty)."""
    if texts is None:
        raise TypeError("texts must be a string or a list of strings, got None")
    if isinstance(texts, list):
        return texts
    try:
        return list(texts)
    except TypeError:
        raise TypeError(
            f"texts must be a string or an iterable of strings, got {type(texts).__name__}"
        ) from None


def _merge_rows(rows: dict[str, list], other: dict[str, list], at: list[int]) -> dict[str, list]:
    """`rows` with `other`'s rows placed at positions `at` (sorted) of the merged order."""
    merged: dict[str, list] = {k: [] for k in rows}
    mine, theirs, slots = iter(range(len(rows["input_ids"]))), iter(range(len(at))), set(at)
    for pos in range(len(rows["input_ids"]) + len(at)):
        src, i = (other, next(theirs)) if pos in slots else (rows, next(mine))
        for k in merged:
            merged[k].append(src[k][i])
    return merged


def _repair_pairs(pairs: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], int]:
    """Pairs with lone surrogates replaced (see :mod:`.text`) and how many pairs changed."""
    out, repaired = [], 0
    for instruction, text in pairs:
        fixed = (repair_surrogates(instruction), repair_surrogates(text))
        if fixed[0] is not instruction or fixed[1] is not text:
            repaired += 1
        out.append(fixed)
    return out if repaired else pairs, repaired


def _as_pairs(sentences) -> list[tuple[str, str]]:
    if sentences is None:
        raise TypeError(
            "sentences must be a string, a list of strings or a list of [instruction, text] pairs, got None"
        )
    if isinstance(sentences, str):
        return [("", sentences)]
    if (
        isinstance(sentences, (list, tuple))
        and len(sentences) >= 2
        and isinstance(sentences[0], str)
        and isinstance(sentences[-1], int)
    ):
        sentences = [
            sentences
        ]  # a single MEDI-style [instruction, text, id] item, as upstream accepts
    pairs = []
    for i, item in enumerate(sentences):
        if isinstance(item, str):
            pairs.append(("", item))
        elif isinstance(item, (list, tuple)):
            if len(item) == 3 and isinstance(item[2], int):
                item = item[:2]
            if len(item) != 2 or not all(isinstance(x, str) for x in item):
                raise ValueError(
                    f"item {i} must be [instruction, text] (two strings), got {item!r}"
                )
            pairs.append((item[0], item[1]))
        else:
            raise TypeError(
                f"item {i} is {type(item).__name__}, expected str or [instruction, text]"
            )
    return pairs


def _hf_kwargs(kwargs: dict) -> dict:
    """transformers' keyword arguments, the dtype a torch dtype: a name is parsed by
    `hardware.resolve_dtype`, "auto" (the default, also None) resolved by hardware for the
    device the model loads on, never handed to transformers, where it means the checkpoint's."""
    hf = dict(kwargs)
    if "torch_dtype" in hf:  # transformers 5 renamed it
        hf.setdefault("dtype", hf.pop("torch_dtype"))
    dtype = hf.get("dtype")
    if not isinstance(dtype, torch.dtype):
        choice = hardware.resolve_dtype(dtype, hardware.load_device(hf))
        if choice.asked == "auto":
            logger.info("%s", choice.describe("dtype="))
        dtype = choice.dtype
    hf["dtype"] = dtype
    return hf


def _load_base(path: str, hf_kwargs: dict):
    """Base model + tokenizer; an adapter folder (official MNTP layout) is merged into its base."""
    from transformers import AutoModel, AutoTokenizer

    inner_base = sources.read_adapter_base(path) if os.path.isdir(path) else None
    weights_path = sources.resolve_model_path(inner_base) if inner_base is not None else path
    with sources.quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path if _has_tokenizer(path) else weights_path)
        try:
            model = (
                merge_cache.load_merged(path, weights_path, hf_kwargs)
                if inner_base is not None
                else AutoModel.from_pretrained(weights_path, **hf_kwargs)
            )
        except ValueError as exc:
            if "Unrecognized" in str(exc) or "does not recognize" in str(exc):
                raise UnsupportedModelError(
                    f"{weights_path}: not a supported decoder model ({exc})"
                ) from None
            raise
    if getattr(model.config, "is_encoder_decoder", False):
        raise UnsupportedModelError(
            f"{weights_path}: encoder-decoder models are not supported; use a decoder-only LLM"
        )
    # As upstream: the name recorded in a local config.json (not the folder path) identifies the
    # model, and selects its chat template in `_format`.
    recorded = _recorded_name(path)
    if recorded:
        model.config._name_or_path = recorded
    return model, tokenizer, path if inner_base is not None else None


def _recorded_name(path: str) -> str | None:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text()).get("_name_or_path") or None
    except json.JSONDecodeError:
        return None


def _has_tokenizer(path: str) -> bool:
    return os.path.isdir(path) and any(
        (Path(path) / name).is_file()
        for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
    )


def _model_label(requested, resolved: str) -> str:
    if requested is None:
        return sources.DEFAULT_MODEL
    key = sources.embedded_name(os.fspath(requested))
    if key is not None:
        return key
    name = _recorded_name(resolved)
    if name and not os.path.isabs(name):
        return name
    return Path(resolved).name


def _same(name: str, value: Any, alias: str, alias_value: Any) -> Any:
    """One setting given under two names (ours and sentence-transformers'): either, not both
    with different values."""
    if value is not None and alias_value is not None and value != alias_value:
        raise ValueError(f"{name}= and {alias}= are the same setting: pass one of them")
    return value if value is not None else alias_value


def _check_st_only(output_value: Any, pool: Any) -> None:
    """sentence-transformers arguments accepted for their signature, supported only as default."""
    if output_value != "sentence_embedding":
        raise ValueError(
            f"output_value={output_value!r} is not supported: LLM2Vec returns sentence "
            "embeddings only (output_value='sentence_embedding')"
        )
    if pool is not None:
        raise ValueError(
            "multi-process pools are not supported: encode in one process, or use "
            "llm2vec_retrieval.distributed for a corpus"
        )
