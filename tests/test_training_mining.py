"""BM25 hard-negative mining (llm2vec_retrieval.training.mining) on small hand-made data."""

from __future__ import annotations

import pytest

pytest.importorskip("bm25s")

from llm2vec_retrieval.training.data import Example  # noqa: E402
from llm2vec_retrieval.training.mining import mine_hard_negatives, normalize_text  # noqa: E402


def ex(q, p, n=None, source="qa"):
    return Example(q, p, n, source)


def test_negative_is_a_close_non_positive():
    rows = [
        ex("what causes river floods", "Heavy rain makes rivers flood their banks."),
        ex(
            "what causes river floods", "Melting snow raises river levels in spring."
        ),  # same anchor, 2nd positive
        ex("how do vaccines work", "Vaccines train the immune system."),
        ex("why do rivers change course", "Rivers change course when floods cut new channels."),
        ex("what is a glacier", "A glacier is a slow river of ice."),
    ]
    mined, stats = mine_hard_negatives(rows, max_ratio=1.0)
    first = mined[0].negative
    # never the positive, nor the anchor's other positive
    assert first not in (rows[0].positive, rows[1].positive)
    assert first == "Rivers change course when floods cut new channels."
    assert mined[1].negative not in (rows[0].positive, rows[1].positive)
    assert stats.mined + stats.no_candidate == len(rows) and stats.rejected_as_positive >= 2


def test_duplicates_of_the_positive_are_not_negatives():
    rows = [
        ex("river floods", "Heavy rain makes rivers flood."),
        ex(
            "flooding rivers", "heavy rain makes RIVERS flood!"
        ),  # the same text, other case/punctuation
        ex("mountain weather", "Rain falls on the mountain; rivers flood valleys below."),
    ]
    mined, _ = mine_hard_negatives(rows, max_ratio=1.0)
    assert normalize_text(mined[0].negative) != normalize_text(rows[0].positive)
    assert mined[0].negative == rows[2].positive


def test_ratio_rule_and_existing_negatives_and_sources():
    rows = [
        ex("heavy rain river flood", "Heavy rain river flood warning issued."),
        # scores about as high as the positive: an unlabelled positive, not a negative
        ex("other", "Heavy rain river flood warning issued today for the valley."),
        ex("kept", "x y z", "a labelled negative"),
        ex("heavy rain river flood", "unrelated sentence about rain", source="other-source"),
    ]
    mined, stats = mine_hard_negatives(rows, max_ratio=0.5)
    assert mined[0].negative is None and stats.rejected_by_ratio >= 1
    assert mined[2].negative == "a labelled negative" and stats.had_negative == 1
    # sources are mined apart: the other source has one text, so nothing to pick
    assert mined[3].negative is None
    with pytest.raises(ValueError, match="max_ratio"):
        mine_hard_negatives(rows, max_ratio=0)


def test_supervised_data_prepares_sources_dev_split_and_negatives(tmp_path, monkeypatch):
    import json

    from benchmarks import supervised_data

    data = tmp_path / "data"
    (data / "snli-triples-small").mkdir(parents=True)
    (data / "supervised-pairs" / "restricted").mkdir(parents=True)
    (data / "snli-triples-small" / "snli_dev_test_triples.tsv").write_text(
        "anchor\tpositive\thard_negative\tsplit\n"
        + "".join(
            f"a man rides horse {i}\ta person rides {i}\ta cat sleeps {i}\tdev\n" for i in range(6)
        )
    )
    header = "anchor\tpositive\thard_negative\tsource\n"
    (data / "supervised-pairs" / "medquad.tsv").write_text(
        header
        + "".join(
            f"What is disease {i} of the liver ?\tDisease {i} is a liver condition with symptom {i}.\t\tmedquad|GHR|q{i}\n"
            for i in range(12)
        )
    )
    (data / "supervised-pairs" / "restricted" / "msrp.tsv").write_text(
        header + "a b c d\te f g h\t\tmsrp|x\n"
    )
    monkeypatch.setattr(supervised_data, "DEV_ANCHORS", {"medquad": 3})
    out = tmp_path / "out"
    assert supervised_data.main(["--data-dir", str(data), "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["shippable"] is True and not any("restricted" in k for k in manifest["inputs"])
    train = [json.loads(x) for x in (out / "train" / "medquad.jsonl").read_text().splitlines()]
    dev = [json.loads(x) for x in (out / "dev" / "medquad.jsonl").read_text().splitlines()]
    assert len(train) == 9 and len(dev) == 3
    dev_texts = {r["positive"] for r in dev} | {r["query"] for r in dev}
    assert not any(
        r["query"] in dev_texts or r["positive"] in dev_texts or r.get("negative") in dev_texts
        for r in train
    )
    assert all(r["instruction"] == supervised_data.INSTRUCTIONS["medquad"] for r in train + dev)
    assert sum("negative" in r for r in train) > 0
    snli = [json.loads(x) for x in (out / "train" / "snli.jsonl").read_text().splitlines()]
    assert len(snli) == 6 and all(r["negative"].startswith("a cat sleeps") for r in snli)
    # with --restricted the output says it must not be shipped
    assert (
        supervised_data.main(
            ["--data-dir", str(data), "--out", str(tmp_path / "r"), "--restricted"]
        )
        == 0
    )
    assert json.loads((tmp_path / "r" / "manifest.json").read_text())["shippable"] is False
