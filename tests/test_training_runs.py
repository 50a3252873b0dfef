"""Trainer end-to-end tests on tiny random checkpoints: each stage learns, adapters round-trip
through `LLM2Vec.from_pretrained`, the CLI survives a SIGKILL and resumes to the same result,
and an export loads in sentence-transformers with the same embeddings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from llm2vec_retrieval import LLM2Vec
from llm2vec_retrieval.testing import make_tiny_checkpoint
from llm2vec_retrieval.training import MNTPConfig, SimCSEConfig, SupervisedConfig, train

ROOT = Path(__file__).resolve().parents[1]
# transformers' own deprecation notice, raised inside peft's adapter loading
pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Rivers flow into the sea",
    "cells, genes and proteins",
    "2024",
]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def sharp_tiny(work):
    """The tiny llama with its LM head scaled up: random heads at init scale 0.02 give near-uniform
    predictions that LoRA alone cannot sharpen in 20 steps."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = make_tiny_checkpoint(work / "tiny-src", "llama")
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.lm_head.weight.mul_(25)
    out = work / "tiny"
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def texts_file(work):
    """300 distinct synthetic sentences, plus one empty line and one duplicate (counted, skipped)."""
    import itertools
    import random

    adjectives = ["quick", "lazy", "red", "small", "old", "bright", "cold", "green"]
    nouns = ["fox", "dog", "river", "cell", "gene", "model", "vector", "mountain"]
    verbs = ["reads", "finds", "sees", "stores", "predicts", "maps"]
    sentences = [
        f"The {a} {n} {v} the {m}."
        for a, n, v, m in itertools.product(adjectives, nouns, verbs, nouns[:3])
    ]
    random.Random(0).shuffle(sentences)
    sentences = sentences[:300]
    path = work / "sentences.txt"
    path.write_text("\n".join(sentences) + "\n\n" + sentences[0] + "\n")
    return str(path)


@pytest.fixture(scope="module")
def triples_file(work):
    rows = []
    words = [
        "fox",
        "dog",
        "river",
        "sea",
        "cell",
        "gene",
        "vector",
        "index",
        "mountain",
        "vaccine",
        "number",
        "model",
    ]
    for i, w in enumerate(words):
        rows.append(
            {
                "query": f"what is a {w}?",
                "positive": f"A {w} is described here.",
                "negative": f"Nothing about {words[i - 1]}.",
                "source": "qa",
            }
        )
        rows.append(
            {"anchor": f"the {w} sentence", "positive": f"a sentence on the {w}", "source": "sts"}
        )
    path = work / "triples.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _common(**kw):
    base = dict(max_steps=20, lr=1e-2, progress=False, save_steps=10, num_threads=1)
    base.update(kw)
    return base


@pytest.fixture(scope="module")
def mntp_run(sharp_tiny, texts_file, work):
    return train(
        MNTPConfig(
            model=sharp_tiny,
            data=[texts_file],
            output=str(work / "mntp"),
            batch_size=8,
            block_size=32,
            **_common(),
        )
    )


def _log_steps(out) -> list[dict]:
    return [
        r
        for r in map(json.loads, (Path(out) / "train_log.jsonl").read_text().splitlines())
        if "step" in r
    ]


def test_mntp_learns_and_writes_official_layout(mntp_run):
    losses = mntp_run.losses
    assert len(losses) == 20
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.5
    out = mntp_run.output_dir
    for name in (
        "adapter_config.json",
        "adapter_model.safetensors",
        "llm2vec_config.json",
        "training_config.json",
        "train_log.jsonl",
        "data_stats.json",
        "tokenizer.json",
    ):
        assert (out / name).is_file(), name
    assert set(json.loads((out / "llm2vec_config.json").read_text())) == {
        "pooling_mode",
        "max_length",
        "doc_max_length",
        "skip_instruction",
    }
    steps = _log_steps(out)
    assert [r["step"] for r in steps] == list(range(1, 21))
    assert {"loss", "lr", "tokens_per_s", "elapsed_s"} <= set(steps[0])
    from safetensors import safe_open

    with safe_open(str(out / "adapter_model.safetensors"), "pt") as fh:
        keys = list(fh.keys())
    # adapter keys relative to the base AutoModel (LlamaModel): what the encoder loads
    assert keys and all(k.startswith("base_model.model.layers.") for k in keys)
    assert not any("lm_head" in k for k in keys)
    stats = json.loads((out / "data_stats.json").read_text())
    assert stats["empty"] == 1 and stats["duplicates"] == 1
    from llm2vec_retrieval.training import load_saved_config

    assert load_saved_config(out) == MNTPConfig.from_dict(
        json.loads((out / "training_config.json").read_text())
    )


def test_simcse_on_mntp_learns_and_round_trips(mntp_run, sharp_tiny, texts_file, work):
    result = train(
        SimCSEConfig(
            model=sharp_tiny,
            init_adapter=[str(mntp_run.output_dir)],
            data=[texts_file],
            output=str(work / "simcse"),
            batch_size=8,
            **_common(lr=1e-3),
        )
    )
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    trained = result.encoder.encode(TEXTS, show_progress_bar=False)
    # the official way to load a stage trained on top of MNTP: the MNTP folder as the base
    loaded = LLM2Vec.from_pretrained(
        str(mntp_run.output_dir), peft_model_name_or_path=str(result.output_dir), dtype="float32"
    )
    assert torch.equal(loaded.encode(TEXTS, show_progress_bar=False), trained)
    untrained = LLM2Vec.from_pretrained(str(mntp_run.output_dir), dtype="float32").encode(
        TEXTS, show_progress_bar=False
    )
    assert not torch.allclose(untrained, trained, atol=1e-3)


def test_supervised_gradcache_learns_and_round_trips(sharp_tiny, triples_file, work):
    result = train(
        SupervisedConfig(
            model=sharp_tiny,
            data=[triples_file],
            output=str(work / "sup"),
            batch_size=6,
            mini_batch_size=4,
            instruction="Find the answer:",
            **_common(lr=2e-3),
        )
    )
    assert np.mean(result.losses[-5:]) < np.mean(result.losses[:5])
    loaded = LLM2Vec.from_pretrained(
        sharp_tiny, peft_model_name_or_path=str(result.output_dir), dtype="float32"
    )
    for side in ("encode_queries", "encode_documents"):
        a = getattr(result.encoder, side)(
            TEXTS, instruction="Find the answer:" if side == "encode_queries" else None
        )
        b = getattr(loaded, side)(
            TEXTS, instruction="Find the answer:" if side == "encode_queries" else None
        )
        assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def tiny_teacher(sharp_tiny, work):
    """A sentence-transformers folder (the tiny llama, mean pooling): a real teacher."""
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

    module = Transformer(sharp_tiny)
    pooling = Pooling(module.get_embedding_dimension(), "mean")
    out = work / "teacher"
    st.SentenceTransformer(modules=[module, pooling], device="cpu").save(str(out))
    return str(out)


@pytest.mark.parametrize("mini_batch_size", [0, 4])  # one graph; GradCache chunks
def test_supervised_distillation_runs_and_changes_training(
    sharp_tiny, triples_file, tiny_teacher, work, mini_batch_size
):
    def run(name, **kw):
        return train(
            SupervisedConfig(
                model=sharp_tiny,
                data=[triples_file],
                output=str(work / f"distill-{name}-{mini_batch_size}"),
                batch_size=6,
                mini_batch_size=mini_batch_size,
                lora_dropout=0.0,
                **_common(max_steps=6, lr=2e-3),
                **kw,
            )
        )

    plain = run("plain")
    off = run("off", distill_teacher=tiny_teacher, distill_weight=0.0)
    on = run("on", distill_teacher=tiny_teacher, distill_weight=1.0)
    assert off.losses == pytest.approx(plain.losses, rel=1e-6)  # weight 0: the plain stage
    assert all(np.isfinite(on.losses))
    # the KL term is >= 0 and the teacher (a different model) disagrees: the first loss is larger
    assert on.losses[0] > plain.losses[0]
    assert json.loads((on.output_dir / "training_config.json").read_text())[
        "distill_teacher"
    ] == str(tiny_teacher)


def test_distillation_teacher_errors_name_the_fix(sharp_tiny, triples_file, work):
    from llm2vec_retrieval.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="not a sentence-transformers model folder"):
        train(
            SupervisedConfig(
                model=sharp_tiny,
                data=[triples_file],
                output=str(work / "distill-bad"),
                distill_teacher=str(work / "no-such-teacher"),
                **_common(max_steps=1),
            )
        )
    with pytest.raises(InvalidInputError, match="distill_weight must be a number >= 0"):
        SupervisedConfig(data=[triples_file], output="x", distill_weight=-1).validate()


def test_length_sorted_chunks_and_grad_cache_do_not_change_training(sharp_tiny, triples_file, work):
    """Without dropout, chunked (length-sorted) forwards, with or without GradCache, give the same
    losses as one full-batch forward: step 2's loss also checks step 1's gradients."""
    runs = {}
    for mb, gc in [(0, True), (2, True), (2, False)]:
        runs[(mb, gc)] = train(
            SupervisedConfig(
                model=sharp_tiny,
                data=[triples_file],
                output=str(work / f"chunks-{mb}-{gc}"),
                batch_size=6,
                mini_batch_size=mb,
                grad_cache=gc,
                lora_dropout=0.0,
                **_common(max_steps=3, lr=1e-2),
            )
        ).losses
    assert runs[(2, True)] == pytest.approx(runs[(0, True)], rel=1e-4)
    assert runs[(2, False)] == pytest.approx(runs[(0, True)], rel=1e-4)


@pytest.mark.parametrize("stage", ["mntp", "supervised"])
def test_bf16_checkpointing_and_accumulation_run(stage, sharp_tiny, texts_file, triples_file, work):
    opts = dict(
        bf16=True,
        gradient_checkpointing=True,
        gradient_accumulation_steps=2,
        **_common(max_steps=2),
    )
    if stage == "mntp":
        cfg = MNTPConfig(
            model=sharp_tiny,
            data=[texts_file],
            output=str(work / "opt-mntp"),
            batch_size=2,
            block_size=16,
            **opts,
        )
    else:
        cfg = SupervisedConfig(
            model=sharp_tiny,
            data=[triples_file],
            output=str(work / "opt-sup"),
            batch_size=4,
            mini_batch_size=2,
            attention_dropout=0.1,
            **opts,
        )
    result = train(cfg)
    assert result.step == 2 and all(np.isfinite(result.losses))
    assert sum(r["tokens"] > 0 for r in _log_steps(result.output_dir)) == 2


def test_tied_embeddings_head_is_shared(work):
    from transformers import AutoModelForCausalLM

    from llm2vec_retrieval.testing import make_tiny_tokenizer, tiny_config
    from llm2vec_retrieval.training.modeling import load_lm_head, load_training_base

    tok = make_tiny_tokenizer()
    model = AutoModelForCausalLM.from_config(
        tiny_config("llama", vocab_size=len(tok), tie_word_embeddings=True)
    )
    model.save_pretrained(work / "tied")
    tok.save_pretrained(work / "tied")
    encoder = load_training_base(str(work / "tied"))
    head = load_lm_head(encoder)
    assert head.weight is encoder.model.get_input_embeddings().weight


def test_clear_errors(sharp_tiny, texts_file, work):
    from transformers import BertConfig, BertModel, BertTokenizerFast  # noqa: F401

    from llm2vec_retrieval import UnsupportedModelError
    from llm2vec_retrieval.training.cli import main

    assert (
        main(
            [
                "train",
                "mntp",
                "--model",
                sharp_tiny,
                "--data",
                str(work / "missing.txt"),
                "--output",
                str(work / "e"),
            ]
        )
        == 2
    )
    bad = work / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 0.1}))
    assert (
        main(
            [
                "train",
                "simcse",
                "--config",
                str(bad),
                "--data",
                texts_file,
                "--output",
                str(work / "e"),
            ]
        )
        == 2
    )
    bert = work / "bert"
    BertModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    ).save_pretrained(bert)
    make_tiny_checkpoint(work / "tok-only", "llama")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(work / "tok-only").save_pretrained(bert)
    with pytest.raises(UnsupportedModelError):
        train(
            SimCSEConfig(
                model=str(bert), data=[texts_file], output=str(work / "e2"), **_common(max_steps=1)
            )
        )


@pytest.mark.slow  # subprocesses: tens of seconds; make test runs it, make test-fast skips it
def test_cli_kill_and_resume_reaches_the_same_loss(sharp_tiny, texts_file, work, capsys):
    out = work / "killed"
    args = [
        "--model",
        sharp_tiny,
        "--data",
        texts_file,
        "--max-steps",
        "60",
        "--batch-size",
        "4",
        "--mini-batch-size",
        "2",
        "--lr",
        "1e-3",
        "--save-steps",
        "5",
        "--seed",
        "5",
        "--no-progress",
        "--num-threads",
        "1",
    ]
    cmd = [
        sys.executable,
        "-m",
        "llm2vec_retrieval.training",
        "train",
        "simcse",
        "--output",
        str(out),
        *args,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    first = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT
    )
    marker = out / "checkpoints" / "step-000005" / "trainer_state.json"
    deadline = time.time() + 240
    while not marker.exists():
        if first.poll() is not None:
            pytest.fail(
                f"training exited before its first checkpoint: {first.stderr.read().decode()[-2000:]}"
            )
        if time.time() > deadline:
            first.kill()
            pytest.fail("no checkpoint within the time limit")
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    first.stderr.close()
    assert first.returncode == -signal.SIGKILL
    assert not (out / "training_state.json").exists(), "killed before the end"

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming from" in second.stderr
    state = json.loads((out / "training_state.json").read_text())
    assert state["finished"] and state["step"] == 60

    reference = train(
        SimCSEConfig(
            output=str(work / "uninterrupted"),
            model=sharp_tiny,
            data=[texts_file],
            max_steps=60,
            batch_size=4,
            mini_batch_size=2,
            lr=1e-3,
            save_steps=100,
            seed=5,
            progress=False,
            num_threads=1,
        )
    )
    assert reference.step == 60
    assert state["loss"] == pytest.approx(reference.loss, rel=1e-6, abs=1e-9)
    resumed_log = [r["loss"] for r in _log_steps(out)]
    assert len(resumed_log) == 60
    assert resumed_log == pytest.approx(reference.losses, rel=1e-6, abs=1e-9)
    # a finished run is not redone (same command, in-process this time)
    from llm2vec_retrieval.training.cli import main

    assert main(cmd[cmd.index("train") :]) == 0
    assert "already finished" in capsys.readouterr().err


def test_export_loads_in_sentence_transformers(sharp_tiny, texts_file, work):
    pytest.importorskip("sentence_transformers")
    from tokenizers import processors
    from transformers import AutoModel, AutoTokenizer

    from llm2vec_retrieval.bidirectional import is_bidirectional
    from llm2vec_retrieval.training.cli import main

    # a tokenizer without BOS (like SmolLM2's): sentence-transformers then pools exactly our tokens
    base = work / "nobos"
    model = AutoModel.from_pretrained(sharp_tiny)
    tok = AutoTokenizer.from_pretrained(sharp_tiny)
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(sharp_tiny).save_pretrained(base)
    tok.save_pretrained(base)
    del model
    result = train(
        SimCSEConfig(
            model=str(base),
            data=[texts_file],
            output=str(work / "nobos-simcse"),
            batch_size=4,
            **_common(max_steps=3),
        )
    )
    out = work / "exported"
    assert (
        main(
            [
                "export",
                "--model",
                str(base),
                "--adapter",
                str(result.output_dir),
                "--output",
                str(out),
            ]
        )
        == 0
    )
    config = json.loads((out / "config.json").read_text())
    assert config["is_causal"] is False and config["architectures"] == ["LlamaModel"]
    assert is_bidirectional(AutoModel.from_pretrained(out))  # plain transformers, fresh load

    trained = result.encoder.encode(TEXTS, show_progress_bar=False)
    ours = LLM2Vec.from_pretrained(str(out), dtype="float32").encode(TEXTS, show_progress_bar=False)
    assert torch.allclose(ours, trained, atol=1e-5)

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(out), device="cpu")
    batch = st.encode(TEXTS, convert_to_tensor=True)
    single = torch.stack(
        [st.encode(t, convert_to_tensor=True) for t in TEXTS]
    )  # no padding: sdpa's own causal flag path
    assert torch.allclose(batch, trained, atol=1e-5)
    assert torch.allclose(single, trained, atol=1e-5)
