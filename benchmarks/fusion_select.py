"""Choose the default search mode and fusion on out-of-domain data, by the worst case.

    python -m benchmarks.fusion_select                    # shipped default + MiniLM, all sets
    python -m benchmarks.fusion_select --models ours --sets healthver,manpages

Each set is searched through the product's own path (`evaluation.evaluate_beir_store`: an
IndexStore, flat, cosine, with its BM25 part; queries with the index's default query
instruction, as `llm2vec-retrieval search` encodes them) in every setting: dense, lexical
(BM25), and hybrid with each fusion of `llm2vec_retrieval.index.fusion` (rrf; wrrf, alpha
(min-max), tmm (theoretical min-max) and zscore at alpha 0.1 ... 0.9).

The sets come from nothing the shipped adapter was trained or tuned on:
  healthver, wikiqa, twitterppdb, msrp   `../shared/data/supervised-pairs/restricted/` (licenses
        allow experiments only: read here to score searches, never trained on). Every anchor
        a query, every positive and hard negative a document.
  manpages   the manual pages of sections 1, 5, 7 and 8 on the machine (`/usr/share/man`, as
        rendered by `man`): the one-line summary of a page's NAME section is the query, the
        page's DESCRIPTION (first 300 words) the one relevant document; pages picked by a
        hash of their file name, summaries that occur twice dropped, the Google Cloud SDK's
        pages left out. Long technical documents
        whose words a query often shares: the kind of set where BM25 is strong.
SciFact, NFCorpus and SICK stay out (kept for independent checks), and so do the dev sets
carved from the training sources (they flatter the dense side).

The rule (`choose`): for each set, a setting's margin is its nDCG@10 minus the better of dense
and lexical on that set; the default is the setting with the largest worst margin over the
sets (ties: the larger mean), for the shipped model, among the settings that lift a lone
lexical match above a document that matches no query term (`lifts_a_lone_match`; the
rendered table recomputes the choice with the current rule). MiniLM's columns show whether the choice
holds for another dense model. Writes benchmarks/results/fusion_select_<timestamp>.json.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
RESTRICTED = ("healthver", "wikiqa", "twitterppdb", "msrp")
SETS = (*RESTRICTED, "manpages")
MODELS = ("ours", "minilm")
MAN_WORDS = 300
MAN_SECTIONS = (1, 5, 7, 8)  # commands, file formats, overviews, administration
#: Google Cloud SDK pages (thousands of near-identical alpha/beta/GA command pages, not
#: Debian's) would make the set mostly one product.
SKIP_MAN_PREFIXES = ("gcloud",)


def searches() -> dict[str, dict]:
    """{setting name: IndexStore.search keywords} for every setting compared."""
    from llm2vec_retrieval.index.fusion import FUSIONS, WEIGHTED_FUSIONS

    out: dict[str, dict] = {"dense": {"mode": "dense"}, "lexical": {"mode": "lexical"}}
    for fusion in FUSIONS:
        if fusion not in WEIGHTED_FUSIONS:
            out[fusion] = {"mode": "hybrid", "fusion": fusion}
            continue
        for a in ALPHAS:
            out[f"{fusion} {a}"] = {"mode": "hybrid", "fusion": fusion, "alpha": a}
    return out


def restricted_set(data_dir: Path, name: str):
    from llm2vec_retrieval.evaluation.data import beir_from_pairs
    from llm2vec_retrieval.training.data import read_examples

    path = data_dir / "supervised-pairs" / "restricted" / f"{name}.tsv"
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing; pass --data-dir (the shared data folder)")
    rows = [(ex.query, ex.positive, ex.negative) for ex in read_examples(path)]
    return beir_from_pairs(name, rows)


_SECTION = re.compile(r"^(\S[^\n]*)$", re.M)


def man_sections(text: str) -> dict[str, str]:
    """{HEADING: body} of a page rendered by `man` (headings start in column 0)."""
    text = re.sub(r".\x08", "", text)  # overstrike, should a pager leave any
    parts = _SECTION.split(text)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def render_man(path: Path) -> str:
    env = {**os.environ, "MANWIDTH": "2000", "LC_ALL": "C.UTF-8", "MAN_KEEP_FORMATTING": ""}
    proc = subprocess.run(
        ["man", "--nh", "--nj", "-l", "-P", "cat", str(path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    return proc.stdout if proc.returncode == 0 else ""


def manpage_pairs(man_dir: Path, n: int) -> list[tuple[str, str, str]]:
    """Up to n (page, summary, description) from ``man_dir``, picked by a hash of the name."""
    from tqdm import tqdm

    files = [f for sec in MAN_SECTIONS for f in (man_dir / f"man{sec}").glob("*")]
    files.sort(key=lambda p: hashlib.sha256(p.name.encode()).digest())
    out: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    with tqdm(total=n, desc="man pages", unit="page") as bar:
        for path in files:
            if len(out) >= n:
                break
            if path.is_symlink() or path.name.startswith(SKIP_MAN_PREFIXES):
                continue
            sec = man_sections(render_man(path))
            name, desc = sec.get("NAME", ""), sec.get("DESCRIPTION", "")
            if " - " not in name:
                continue
            summary = " ".join(name.split(" - ", 1)[1].split())
            words = desc.split()
            if len(summary.split()) < 3 or len(words) < 30 or summary.lower() in seen:
                continue
            seen.add(summary.lower())
            out.append((path.name, summary, " ".join(words[:MAN_WORDS])))
            bar.update()
    return out


def manpage_set(man_dir: Path, n: int, cache_dir: Path):
    """The manpages set (built once per machine and cached as JSONL under ``cache_dir``)."""
    from llm2vec_retrieval.evaluation.data import beir_from_pairs

    cache = cache_dir / f"manpages-{n}x{MAN_WORDS}.jsonl"
    if cache.is_file():
        rows = [json.loads(line) for line in cache.read_text().splitlines()]
    else:
        if not man_dir.is_dir():
            raise SystemExit(f"error: {man_dir} is missing; pass --man-dir or leave manpages out")
        rows = [{"page": p, "query": q, "document": d} for p, q, d in manpage_pairs(man_dir, n)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = beir_from_pairs("manpages", [(r["query"], r["document"], None) for r in rows])
    # duplicate summaries were dropped at build, so each query has its own page
    return data


def lifts_a_lone_match(search: dict) -> bool:
    """Whether a hybrid setting ranks a document that is the only lexical match, and mid-way
    in the dense list, above a document that matches no query term but is first in the dense
    list: the rare part number or name that hybrid search exists for. Checked on the fusion
    function itself (z-score normalizes a one-candidate list to 0, the value of a missing
    document, so it gives that match no lift)."""
    import numpy as np

    from llm2vec_retrieval.index.fusion import fuse

    if search.get("mode") != "hybrid":
        return True
    dense = (np.array([[0.9, 0.8, 0.7, 0.6, 0.5]]), np.array([[0, 1, 2, 3, 4]]))
    lexical = (np.array([[7.0]]), np.array([[2]]))
    rows = fuse(dense, lexical, 5, search["fusion"], search.get("alpha", 0.5), dense_floor=-1.0)
    return rows[0][0][0] == 2


def choose(
    table: dict[str, dict[str, float]], sets: list[str], eligible=lambda setting: True
) -> tuple[str, dict]:
    """The eligible setting with the largest worst-case margin over the better single mode
    (ties: the larger mean), and every setting's {"worst_margin", "mean", "margins"}."""
    summary = {}
    for setting, row in table.items():
        margins = {s: row[s] - max(table["dense"][s], table["lexical"][s]) for s in sets}
        summary[setting] = {
            "worst_margin": round(min(margins.values()), 4),
            "mean": round(sum(row[s] for s in sets) / len(sets), 4),
            "margins": {s: round(m, 4) for s, m in margins.items()},
        }
    best = max(
        (s for s in summary if eligible(s)),
        key=lambda s: (summary[s]["worst_margin"], summary[s]["mean"]),
    )
    return best, summary


def load_model(name: str, dtype: str):
    if name == "minilm":
        from benchmarks.quality import MiniLMEmbedder

        return MiniLMEmbedder()
    from llm2vec_retrieval import LLM2Vec

    return LLM2Vec.from_pretrained(dtype=dtype)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fusion_select", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--models", default=",".join(MODELS), help=f"from {', '.join(MODELS)}")
    p.add_argument("--sets", default=",".join(SETS), help=f"from {', '.join(SETS)}")
    p.add_argument("--data-dir", default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--man-dir", default="/usr/share/man")
    p.add_argument("--man-pages", type=int, default=1200, help="pages in the manpages set")
    p.add_argument("--max-queries", type=int, default=None, help="first N queries of each set")
    p.add_argument("--dtype", default="auto", help="dtype of ours (auto, float32, bfloat16)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-cache", action="store_true", help="do not reuse cached embeddings")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    sets = [s for s in args.sets.split(",") if s]
    for value, valid, what in ((models, MODELS, "models"), (sets, SETS, "sets")):
        bad = sorted(set(value) - set(valid))
        if bad:
            raise SystemExit(f"error: unknown {what} {bad}; valid: {', '.join(valid)}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from benchmarks.speed import result_header
    from llm2vec_retrieval.evaluation import EmbeddingCache, evaluate_beir_store
    from llm2vec_retrieval.evaluation.data import default_data_dir, subset_queries
    from llm2vec_retrieval.index import fusion as fusion_mod

    if args.threads:
        torch.set_num_threads(args.threads)
    started = _dt.datetime.now()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    cache_root = ROOT / "benchmarks" / ".cache"
    data = {}
    for s in sets:
        beir = (
            manpage_set(Path(args.man_dir), args.man_pages, cache_root)
            if s == "manpages"
            else restricted_set(data_dir, s)
        )
        data[s] = subset_queries(beir, args.max_queries)
    cache = None if args.no_cache else EmbeddingCache(cache_root)
    report = {
        **result_header("fusion_select", argv, started),
        "defaults_at_run": {
            "fusion": fusion_mod.DEFAULT_FUSION,
            "alpha": fusion_mod.DEFAULT_ALPHA,
        },
        "sets": {
            s: {"queries": len(d.queries), "documents": len(d.corpus), "checksum": d.checksum}
            for s, d in data.items()
        },
        "searches": searches(),
        "models": {},
    }
    for model_name in models:
        enc = load_model(model_name, args.dtype)
        instruction = getattr(getattr(enc, "config", None), "query_instruction", None)
        table: dict[str, dict[str, float]] = {}
        for s, beir in data.items():
            res = evaluate_beir_store(
                enc, beir, searches(), metrics=("ndcg@10",), cache=cache, query_instruction=None
            )
            res.pop("_timing_s")
            for setting, r in res.items():
                table.setdefault(setting, {})[s] = round(r["metrics"]["ndcg@10"], 4)
            print(
                f"{model_name} {s}: dense {table['dense'][s]:.4f} lexical "
                f"{table['lexical'][s]:.4f}",
                flush=True,
            )
        best, summary = choose(table, sets, lambda st: lifts_a_lone_match(searches()[st]))
        fp = enc.fingerprint() if hasattr(enc, "fingerprint") else None
        report["models"][model_name] = {
            "fingerprint": fp,
            "query_instruction": instruction,
            "ndcg@10": table,
            "summary": summary,
            "best": best,
        }
        del enc
    if "ours" in report["models"]:
        report["chosen"] = report["models"]["ours"]["best"]
        report["chosen_search"] = searches()[report["chosen"]]
    out = Path(args.results_dir) / f"fusion_select_{started.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(render(report)))
    print(f"\nwrote {out}")
    return 0


def render(report: dict) -> list[str]:
    """Markdown for RESULTS.md, per set with the worst margin: every setting for our model;
    for the others the single modes, RRF, the best setting of each weighted fusion and the
    default when it ran."""
    lines = []
    for model, res in report["models"].items():
        table = res["ndcg@10"]
        sets = list(next(iter(table.values())))
        best, summary = choose(table, sets, lambda st: lifts_a_lone_match(report["searches"][st]))
        show = ["dense", "lexical", "rrf"]
        families: dict[str, str] = {}
        for setting in table:
            fam = setting.split()[0]
            if " " in setting and (
                fam not in families
                or summary[setting]["worst_margin"] > summary[families[fam]]["worst_margin"]
            ):
                families[fam] = setting
        show += [s for s in families.values() if s not in show]
        if model == "ours":  # every arm for the shipped model
            show = list(table)
        at_run = report["defaults_at_run"]
        previous = f"{at_run['fusion']} {at_run['alpha']}"  # the default when this ran
        if previous in table and previous not in show:
            show.append(previous)
        lines += [
            f"**{model}** (nDCG@10; margin = minus the better of dense and lexical on that set)",
            "",
            "| setting | " + " | ".join(sets) + " | mean | worst margin |",
            "|---" * (len(sets) + 3) + "|",
        ]
        for setting in show:
            mark = " (best by the rule)" if setting == best else ""
            if not lifts_a_lone_match(report["searches"][setting]):
                mark += " (no lift for a lone match)"
            cells = " | ".join(f"{table[setting][s]:.4f}" for s in sets)
            lines.append(
                f"| {setting}{mark} | {cells} | {summary[setting]['mean']:.4f} | "
                f"{summary[setting]['worst_margin']:+.4f} |"
            )
        lines.append("")
    return lines[:-1]


if __name__ == "__main__":
    sys.exit(main())
