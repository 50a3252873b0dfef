"""Trainer unit tests: objectives against hand computations, GradCache, data readers, configs.

Tiny tensors and the tiny random checkpoint only; torch runs single-threaded here (tiny
matrices are orders of magnitude slower with 2 threads on a busy CPU).
"""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from llm2vec_retrieval.training import data as D
from llm2vec_retrieval.training.config import (
    MNTPConfig,
    SimCSEConfig,
    SupervisedConfig,
    build_config,
)
from llm2vec_retrieval.training.gradcache import chunked, grad_cache_step
from llm2vec_retrieval.training.losses import (
    IGNORE,
    false_negative_mask,
    info_nce,
    listwise_kl,
    mask_tokens,
    mntp_loss,
)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------- MNTP
def test_mask_tokens_labels_and_position_zero():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 1000, (4, 64), generator=gen)
    ids[:, 0] = 1  # BOS
    special = ids == 1
    inputs, labels = mask_tokens(
        ids, special, 0.5, mask_token_id=3, vocab_size=1000, mode="all-mask", generator=gen
    )
    selected = labels != IGNORE
    assert not selected[:, 0].any(), "position 0 has no predecessor and is never a target"
    assert not selected[special].any(), "special tokens are never targets"
    assert torch.equal(labels[selected], ids[selected]), (
        "labels hold the original token at selected positions"
    )
    assert torch.equal(inputs[~selected], ids[~selected])
    assert (inputs[selected] == 3).all()


@pytest.mark.parametrize("mode", ["bert", "all-mask"])
def test_mask_rates(mode):
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(10, 50000, (256, 512), generator=gen)
    special = torch.zeros_like(ids, dtype=torch.bool)
    inputs, labels = mask_tokens(
        ids, special, 0.2, mask_token_id=5, vocab_size=50000, mode=mode, generator=gen
    )
    selected = labels != IGNORE
    rate = selected[:, 1:].float().mean().item()
    assert abs(rate - 0.2) < 0.005
    masked = (inputs == 5) & selected
    kept = (inputs == ids) & selected
    randomized = selected & ~masked & ~kept
    n = selected.sum().item()
    if mode == "all-mask":
        assert masked.sum().item() == n
    else:
        assert abs(masked.sum().item() / n - 0.8) < 0.01
        assert abs(kept.sum().item() / n - 0.1) < 0.01
        assert abs(randomized.sum().item() / n - 0.1) < 0.01


def test_mntp_loss_is_shifted_by_one():
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8)
    head = torch.nn.Linear(8, 11, bias=False)
    labels = torch.full((2, 6), IGNORE)
    labels[0, 2], labels[0, 5], labels[1, 1] = 4, 7, 9
    expected = []
    for b, i in [(0, 2), (0, 5), (1, 1)]:
        logits = head(hidden[b, i - 1])  # the token at i is predicted from the output at i-1
        expected.append(-torch.log_softmax(logits, -1)[labels[b, i]])
    assert torch.allclose(mntp_loss(hidden, labels, head), torch.stack(expected).mean(), atol=1e-6)
    # the output at the masked position itself does not matter
    hidden2 = hidden.clone()
    hidden2[0, 2] += 100.0
    assert torch.allclose(mntp_loss(hidden2, labels, head), mntp_loss(hidden, labels, head))


# ---------------------------------------------------------------------- contrastive losses
def _cos(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def _hand_info_nce(q, cands, t, masked=()):
    total = 0.0
    for i, qi in enumerate(q):
        scores = [
            (_cos(qi, c) / t if (i, j) not in masked else -math.inf) for j, c in enumerate(cands)
        ]
        m = max(scores)
        log_z = m + math.log(sum(math.exp(s - m) for s in scores))
        total += log_z - scores[i]
    return total / len(q)


def test_simcse_loss_matches_hand_computation():
    q = [[1.0, 0.0, 0.5], [0.2, 1.0, 0.0], [0.0, 0.3, 1.0]]
    p = [[0.9, 0.1, 0.4], [0.1, 1.0, 0.2], [0.3, 0.0, 1.0]]
    loss = info_nce(torch.tensor(q), torch.tensor(p), None, temperature=0.05)
    assert loss.item() == pytest.approx(_hand_info_nce(q, p, 0.05), rel=1e-5)


def test_supervised_loss_with_hard_negatives_and_masking():
    q = [[1.0, 0.0], [0.0, 1.0]]
    p = [[0.8, 0.6], [0.6, 0.8]]
    n = [[1.0, 0.1], [-1.0, 0.2]]
    cands = p + n
    loss = info_nce(torch.tensor(q), torch.tensor(p), torch.tensor(n), temperature=0.02)
    assert loss.item() == pytest.approx(_hand_info_nce(q, cands, 0.02), rel=1e-4, abs=1e-6)
    # query 0: cos(q0, n0) = 0.995 > cos(q0, p0) = 0.8 + 0.1 -> n0 masked as a false negative
    mask = false_negative_mask(torch.tensor(q), torch.tensor(cands), 0.1)
    assert mask.tolist() == [[False, False, True, False], [False, False, False, False]]
    masked = info_nce(torch.tensor(q), torch.tensor(p), torch.tensor(n), 0.02, mask)
    assert masked.item() == pytest.approx(
        _hand_info_nce(q, cands, 0.02, masked={(0, 2)}), rel=1e-4, abs=1e-6
    )


def _hand_kl(teacher_row, student_row):
    pt = [math.exp(t) for t in teacher_row]
    ps = [math.exp(x) for x in student_row]
    pt = [v / sum(pt) for v in pt]
    ps = [v / sum(ps) for v in ps]
    return sum(a * math.log(a / b) for a, b in zip(pt, ps, strict=True))


def test_listwise_kl_by_hand_and_with_a_mask():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cands = torch.tensor([[0.8, 0.6], [0.6, 0.8], [1.0, 0.1]])
    cos = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(cands, dim=-1).T
    teacher = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.7, 0.3]])
    got = listwise_kl(q, cands, teacher, temperature=0.1, teacher_temperature=0.2)
    want = sum(_hand_kl((teacher[i] / 0.2).tolist(), (cos[i] / 0.1).tolist()) for i in range(2)) / 2
    assert got.item() == pytest.approx(want, rel=1e-5)
    # a teacher that agrees with the student has nothing to teach
    same = listwise_kl(q, cands, cos, temperature=0.1, teacher_temperature=0.1)
    assert same.item() == pytest.approx(0.0, abs=1e-6)
    # a masked candidate leaves both distributions: the KL over the other candidates, no NaN
    mask = torch.tensor([[False, False, True], [False, False, False]])
    masked = listwise_kl(q, cands, teacher, 0.1, 0.2, mask)
    want = (
        _hand_kl((teacher[0, :2] / 0.2).tolist(), (cos[0, :2] / 0.1).tolist())
        + _hand_kl((teacher[1] / 0.2).tolist(), (cos[1] / 0.1).tolist())
    ) / 2
    assert masked.item() == pytest.approx(want, rel=1e-4)
    # gradients reach the student only
    qq = q.clone().requires_grad_(True)
    listwise_kl(qq, cands, teacher, 0.1, 0.2, mask).backward()
    assert torch.isfinite(qq.grad).all() and qq.grad.abs().sum() > 0
    with pytest.raises(Exception, match="teacher scores have shape"):
        listwise_kl(q, cands, teacher[:, :2], 0.1, 0.2)


def test_false_negative_mask_identical_texts_and_own_positive():
    q = torch.eye(3)
    cands = torch.eye(3)
    texts_q = ["a", "b", "c"]
    cand_texts = [
        "x",
        "x",
        "b",
    ]  # candidate 1 has query 0's positive text; candidate 2 is query 1's text
    mask = false_negative_mask(q, cands, None, texts_q, cand_texts)
    assert mask.tolist() == [[False, True, False], [True, False, True], [False, False, False]]
    # a huge margin masks nothing by similarity; the own positive is never masked
    mask = false_negative_mask(torch.ones(2, 2), torch.ones(2, 2), -10.0)
    assert mask.tolist() == [[False, True], [True, False]]


def test_false_negative_mask_repeated_anchor():
    # rows 0 and 2 share their anchor (one row per positive): each one's positive is the other's
    # positive too, so neither counts as a negative; their hard negatives (3, 4) still do
    q = torch.eye(3)
    cands = torch.eye(5, 3)
    texts_q = ["what is x", "what is y", "what is x"]
    cand_texts = ["x1", "y1", "x2", "neg a", "neg b"]
    mask = false_negative_mask(q, cands, None, texts_q, cand_texts)
    assert mask.tolist() == [
        [False, False, True, False, False],
        [False, False, False, False, False],
        [True, False, False, False, False],
    ]


# ---------------------------------------------------------------------- GradCache
def _tiny_lora_embedder(tiny_llama, lora_dropout: float, attention_dropout: float):
    from llm2vec_retrieval.training.modeling import (
        Embedder,
        add_lora,
        load_training_base,
        set_attention_dropout,
    )

    cfg = SimCSEConfig(lora_dropout=lora_dropout)
    torch.manual_seed(0)
    encoder = load_training_base(tiny_llama)
    set_attention_dropout(encoder.model, attention_dropout)
    encoder.model = add_lora(encoder.model, cfg)
    for (
        name,
        param,
    ) in encoder.model.named_parameters():  # non-zero B so every LoRA weight gets a gradient
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    embedder = Embedder(encoder)
    embedder.train()
    return embedder


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_grad_cache_equals_full_batch_gradients(tiny_llama, dropout):
    embedder = _tiny_lora_embedder(tiny_llama, lora_dropout=dropout, attention_dropout=dropout)
    texts = [
        "the quick brown fox",
        "a river flows",
        "vectors and ids",
        "cells and genes",
        "numbers like 10",
        "search",
    ]
    q = [("Retrieve:", t) for t in texts]
    d = [("", t[::-1]) for t in texts]
    params = [p for p in embedder.parameters() if p.requires_grad]

    def loss_fn(a, b):
        return info_nce(a, b, None, 0.05)

    def run(chunk_size, use_grad_cache):
        embedder.zero_grad(set_to_none=True)
        torch.manual_seed(123)
        groups = [[embedder.features(list(c))[0] for c in chunked(g, chunk_size)] for g in (q, d)]
        if use_grad_cache:
            loss, _ = grad_cache_step(lambda f: embedder(**f), groups, loss_fn)
        else:  # one graph over the whole batch, chunk by chunk (same dropout draws as GradCache's first pass)
            loss = loss_fn(*[torch.cat([embedder(**f) for f in g]) for g in groups])
            loss.backward()
        return loss.item(), [p.grad.clone() for p in params]

    # without dropout GradCache equals the plain full-batch step; with dropout it equals the
    # full-batch graph built with the same per-chunk dropout masks (its RNG states are replayed)
    reference_loss, reference = run(0 if dropout == 0 else 2, use_grad_cache=False)
    cached_loss, cached = run(2, use_grad_cache=True)
    assert cached_loss == pytest.approx(reference_loss, rel=1e-5)
    assert all(g is not None and g.abs().sum() > 0 for g in cached)
    for a, b in zip(reference, cached, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    if dropout:  # dropout really is active: another seed gives another loss
        torch.manual_seed(999)
        groups = [[embedder.features(list(c))[0] for c in chunked(g, 2)] for g in (q, d)]
        with torch.no_grad():
            other = loss_fn(*[torch.cat([embedder(**f) for f in g]) for g in groups]).item()
        assert other != pytest.approx(cached_loss, rel=1e-6)


# ---------------------------------------------------------------------- data
def test_read_texts_counts_skips(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("one sentence\n\n   \ntwo sentence\none sentence\n" + "x" * 50 + "\nthree\n")
    stats = D.DataStats()
    out = list(D.read_texts(f, stats, max_chars=40))
    assert out == ["one sentence", "two sentence", "three"]
    assert (stats.lines, stats.used, stats.empty, stats.duplicates, stats.too_long) == (
        7,
        3,
        2,
        1,
        1,
    )
    # a bounded dedup set stops remembering when full (and says so)
    g = tmp_path / "u.txt"
    g.write_text("a\nb\nb\na\n")
    stats = D.DataStats()
    assert list(D.read_texts(g, stats, dedup_max_entries=1)) == ["a", "b", "b"]
    assert stats.dedup_saturated and stats.duplicates == 1


def test_tsv_triples_like_snli(tmp_path):
    f = tmp_path / "triples.tsv"
    f.write_text(
        "anchor\tpositive\thard_negative\tsplit\nA man .\tA person .\tA cat .\tdev\nbad line\nB\tC\t\tdev\n"
    )
    stats = D.DataStats()
    ex = list(D.read_examples(f, stats))
    assert [(e.query, e.positive, e.negative, e.source) for e in ex] == [
        ("A man .", "A person .", "A cat .", "triples"),
        ("B", "C", None, "triples"),
    ]
    assert stats.malformed == 1


def test_real_snli_header_is_understood():
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[1].parent
        / "shared"
        / "data"
        / "snli-triples-small"
        / "snli_dev_test_triples.tsv"
    )
    if not path.is_file():
        pytest.skip("shared data not present")
    first = next(D.read_examples(path))
    assert (
        first.query.startswith("Two women are embracing")
        and first.negative
        and first.source == path.stem
    )


def test_jsonl_pairs_triples_and_sources(tmp_path):
    f = tmp_path / "mix.jsonl"
    rows = [
        {"query": "q1", "positive": "p1", "negative": "n1", "source": "nq"},
        {"anchor": "q2", "positive": "p2", "source": "quora"},
        {"query": "q3"},
        "not an object",
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    stats = D.DataStats()
    ex = list(D.read_examples(f, stats))
    assert [(e.query, e.negative, e.source) for e in ex] == [
        ("q1", "n1", "nq"),
        ("q2", None, "quora"),
    ]
    assert stats.malformed == 3


def test_beir_train_split(tmp_path):
    folder = tmp_path / "toy"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "\n".join(
            json.dumps({"_id": i, "title": f"T{i}", "text": f"doc {i}"}) for i in ("d1", "d2")
        )
        + "\n"
    )
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what?"}) + "\n")
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td2\t1\nq1\td1\t0\n"
    )
    ex = list(D.read_examples(folder))
    assert [(e.query, e.positive, e.source) for e in ex] == [("what?", "Td2 doc d2", "toy")]
    (folder / "qrels" / "train.tsv").unlink()
    with pytest.raises(FileNotFoundError, match="train"):
        D.check_data_paths([str(folder)], "supervised")


def test_data_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.check_data_paths([str(tmp_path / "nope.txt")], "mntp")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        D.check_data_paths([str(empty)], "simcse")
    with pytest.raises(ValueError, match="is a folder"):
        D.check_data_paths([str(tmp_path)], "mntp")
    text = tmp_path / "t.txt"
    text.write_text("a sentence\n")
    with pytest.raises(ValueError, match="pairs or triples"):
        D.check_data_paths([str(text)], "supervised")


def test_one_source_per_batch_and_resume_position(tmp_path):
    f = tmp_path / "s.jsonl"
    rows = [{"query": f"q{i}", "positive": f"p{i}", "source": "ab"[i % 2]} for i in range(40)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = SupervisedConfig(data=[str(f)], output="x", batch_size=4, shuffle_buffer=8)

    def stream(position=None):
        s = D.BatchStream(D.supervised_batches(cfg.data, cfg, D.DataStats()), seed=7)
        if position:
            s.position = D.DataPosition(*position)
        return s

    it = iter(stream())
    batches = [next(it) for _ in range(15)]  # crosses into the second pass
    assert all(len({e.source for e in b}) == 1 for b in batches)
    again = iter(stream())
    assert [[e.query for e in b] for b in (next(again) for _ in range(15))] == [
        [e.query for e in b] for b in batches
    ]
    # a stream resumed at (pass 1, 2 batches done) continues exactly where the first one was
    s = stream()
    it = iter(s)
    for _ in range(12):
        next(it)
    position = (s.position.pass_index, s.position.batches_in_pass)
    rest = [next(it) for _ in range(3)]
    resumed = iter(stream(position))
    assert [[e.query for e in next(resumed)] for _ in range(3)] == [
        [e.query for e in b] for b in rest
    ]


def test_buffered_shuffle_is_a_permutation():
    items = list(range(100))
    out = list(D.buffered_shuffle(iter(items), 10, random.Random(0)))
    assert sorted(out) == items and out != items


# ---------------------------------------------------------------------- configs
def test_config_defaults_and_paper_values():
    mntp = MNTPConfig()
    assert (mntp.lora_r, mntp.lora_alpha, mntp.lora_dropout, mntp.mask_probability, mntp.lr) == (
        16,
        32.0,
        0.05,
        0.2,
        5e-5,
    )
    assert set(mntp.lora_target_modules) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert (
        MNTPConfig.paper_values()["batch_size"] == 32
        and MNTPConfig.paper_values()["block_size"] == 512
    )
    assert SimCSEConfig().temperature == 0.05 and SimCSEConfig().attention_dropout == 0.3
    assert SupervisedConfig().temperature == 0.02
    paper = SimCSEConfig.from_dict({"preset": "paper"})
    assert (paper.batch_size, paper.max_length, paper.lr) == (128, 128, 3e-5)


@pytest.mark.parametrize(
    "cls, paper",
    [
        (MNTPConfig, {"batch_size": 32, "block_size": 512}),
        (SimCSEConfig, {"batch_size": 128, "max_length": 128}),
        (SupervisedConfig, {"batch_size": 512, "max_length": 512, "warmup_steps": 300}),
    ],
)
def test_paper_preset_applies_in_the_constructor(cls, paper):
    direct = cls(preset="paper")
    assert direct == cls.from_dict({"preset": "paper"})
    assert {name: getattr(direct, name) for name in paper} == paper
    # explicit values win, even when they equal the cpu defaults
    name = "batch_size"
    cpu_value = getattr(cls(), name)
    assert getattr(cls(preset="paper", **{name: cpu_value}), name) == cpu_value
    assert cls(preset="paper", **{name: cpu_value}) == cls.from_dict(
        {"preset": "paper", name: cpu_value}
    )
    assert cls("some-model", preset="paper").model == "some-model"
    # a saved config reloads unchanged
    assert cls.from_dict(direct.to_dict()) == direct
    assert cls().batch_size != direct.batch_size


def test_config_validation_lists_choices():
    with pytest.raises(ValueError, match="Valid choices are: bert, all-mask"):
        MNTPConfig(masking="random")
    with pytest.raises(ValueError, match=r"mask_probability must be in \(0, 1\)"):
        MNTPConfig(mask_probability=0)
    with pytest.raises(ValueError, match="Valid keys are: .*batch_size"):
        MNTPConfig.from_dict({"batch_sise": 3})
    with pytest.raises(ValueError, match="pooling_mode"):
        SimCSEConfig(pooling_mode="max")


def test_config_file_and_flags(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("batch_size: 5\nmax-steps: 7\nmasking: all-mask\n")
    cfg = build_config("mntp", yaml_file, {"batch_size": 9})
    assert (cfg.batch_size, cfg.max_steps, cfg.masking) == (9, 7, "all-mask")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"learning_rate": 1}))
    with pytest.raises(ValueError, match=r"unknown mntp config key.*learning_rate -> lr"):
        build_config("mntp", bad)

    from llm2vec_retrieval.training.cli import build_parser, config_from_args

    sim = tmp_path / "s.json"
    sim.write_text(json.dumps({"batch_size": 3, "lr": 1.0}))
    args = build_parser().parse_args(
        [
            "train",
            "simcse",
            "--config",
            str(sim),
            "--data",
            "a.txt",
            "b.txt",
            "--output",
            "o",
            "--no-resume",
            "--lr",
            "0.1",
            "--attention-dropout",
            "none",
        ]
    )
    cfg = config_from_args(args)
    assert (cfg.data, cfg.batch_size, cfg.lr, cfg.resume, cfg.attention_dropout) == (
        ["a.txt", "b.txt"],
        3,
        0.1,
        False,
        None,
    )
    assert args.func.__name__ == "cmd_train"
