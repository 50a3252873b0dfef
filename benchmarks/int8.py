"""Should `--dtype auto` pick int8 on this CPU? Speed and dev-set quality of every int8 arm.

    python -m benchmarks.int8                                   # all arms, default sizes
    python -m benchmarks.int8 --arms float32,bfloat16,int8 --repeats 3 --wikiqa-queries 200

One fp32 load of the shipped default encoder; each arm is a converted copy of it:
  float32, bfloat16                      the references (bfloat16 is what auto picks here today)
  int8                                   the product's `--dtype int8`: `quantize.quantize_linears`,
                                         dynamic, per-channel weights, every Linear
  int8-per-tensor                        the same with one weight scale per tensor (what the old
                                         int8_check measured: torch.ao's default qconfig)
  int8-keep-ends                         per-channel, the first and last decoder blocks left fp32
  int8-weight-only                       int8 weights (per channel) with bf16 activations through
                                         `torch.ops.aten._weight_int8pack_mm` (no int8 products)
Speed: tokens/s (wall clock) and tokens per CPU-second of the process (less disturbed by other
jobs on a shared machine) of `encode_documents` on passages of 50-300 words built from
`english-sentences` (cut to the encoder's 400-token document limit, so realistic chunk
lengths), same thread count for all, one warm-up each, then `--repeats` rounds in which the
arms take turns in a rotated order (so a load spike on this shared machine hits all arms);
the median per arm, with the load average around each round.
Quality, dev sets only (SciFact and STS-B test play no part): STS-B dev Spearman x100 and
dense nDCG@10 x100 on HealthVer and the first `--wikiqa-queries` WikiQA queries
(`supervised-pairs/restricted/`, scored only, never trained on; see benchmarks/fusion_select.py).
The rule (`decide`): auto may pick an int8 arm only if its median tokens/s is at least
`MIN_SPEEDUP` x bfloat16's and on every dev set it is within `MAX_DROP` points of bfloat16;
the fastest arm that passes wins. Writes benchmarks/results/int8_<stamp>.json.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_SPEEDUP = 1.5  # x bfloat16 tokens/s
MAX_DROP = 0.5  # points (Spearman x100, nDCG@10 x100) below bfloat16 on any dev set
ARMS = (
    "float32",
    "bfloat16",
    "int8",
    "int8-per-tensor",
    "int8-keep-ends",
    "int8-weight-only",
)
PASSAGE_WORDS = (300, 150, 50, 200)
#: The order quality runs in (on a busy machine the run may be cut short: most needed first).
QUALITY_ORDER = (
    "bfloat16",
    "int8",
    "float32",
    "int8-keep-ends",
    "int8-per-tensor",
    "int8-weight-only",
)


def passages(path: Path, n: int) -> list[str]:
    """``n`` passages of consecutive sentences from ``path``, their lengths cycling through
    `PASSAGE_WORDS` words."""
    out: list[str] = []
    words: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            words += line.split()
            target = PASSAGE_WORDS[len(out) % len(PASSAGE_WORDS)]
            if len(words) >= target:
                out.append(" ".join(words))
                words = []
                if len(out) == n:
                    break
    return out


class WeightOnlyLinear:
    """Factory for an ``nn.Module`` with int8 weights (one scale per output channel) that
    multiplies bf16 activations with ``aten._weight_int8pack_mm``."""

    @staticmethod
    def make(linear):
        import torch

        class _Int8WeightOnly(torch.nn.Module):
            def __init__(self, lin):
                super().__init__()
                w = lin.weight.detach().float()
                scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
                q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
                self.register_buffer("weight_int8", q.contiguous())
                self.register_buffer("scales", scale.to(torch.bfloat16))
                b = lin.bias
                self.register_buffer("bias", None if b is None else b.detach().to(torch.bfloat16))

            def forward(self, x):
                shape = x.shape
                y = torch.ops.aten._weight_int8pack_mm(
                    x.reshape(-1, shape[-1]).to(torch.bfloat16), self.weight_int8, self.scales
                )
                if self.bias is not None:
                    y = y + self.bias
                return y.reshape(*shape[:-1], y.shape[-1])

        return _Int8WeightOnly(linear)


def convert(model, arm: str):
    """A converted copy of the float32 ``model`` for ``arm``."""
    import torch

    from llm2vec_retrieval.quantize import decoder_blocks, quantize_linears

    m = copy.deepcopy(model)
    if arm == "float32":
        return m
    if arm == "bfloat16":
        return m.to(torch.bfloat16)
    if arm == "int8":
        return quantize_linears(m)
    if arm == "int8-per-tensor":
        return quantize_linears(m, per_channel=False)
    if arm == "int8-keep-ends":
        blocks = decoder_blocks(m)
        return quantize_linears(m, keep=(blocks[0], blocks[-1]))
    if arm == "int8-weight-only":
        m = m.to(torch.bfloat16)
        for module in list(m.modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, torch.nn.Linear):
                    setattr(module, child_name, WeightOnlyLinear.make(child))
        return m
    raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")


def speed(encoders: dict, texts: list[str], repeats: int) -> dict:
    """{arm: {tokens_per_s (median), runs, seconds}} and the load averages, arms interleaved."""
    any_enc = next(iter(encoders.values()))
    limit = any_enc.config.doc_max_length or any_enc.config.max_length
    tokens = sum(min(n, limit) for n in any_enc.count_tokens(texts))
    for enc in encoders.values():  # warm-up
        enc.encode_documents(texts[:4], show_progress_bar=False)
    secs: dict[str, list[float]] = {a: [] for a in encoders}
    cpu: dict[str, list[float]] = {a: [] for a in encoders}
    loads = []
    names = list(encoders)
    for r in range(repeats):
        loads.append(os.getloadavg()[0])
        order = names[r % len(names) :] + names[: r % len(names)]
        for arm in order:
            c0, t0 = time.process_time(), time.perf_counter()
            encoders[arm].encode_documents(texts, show_progress_bar=False)
            secs[arm].append(time.perf_counter() - t0)
            cpu[arm].append(time.process_time() - c0)
        print(
            f"speed round {r + 1}/{repeats}: "
            + ", ".join(f"{a} {tokens / secs[a][-1]:.0f}" for a in names)
            + " tokens/s",
            flush=True,
        )
    loads.append(os.getloadavg()[0])
    return {
        "documents": len(texts),
        "tokens": tokens,
        "loadavg_1min_around_rounds": loads,
        "arms": {
            a: {
                "tokens_per_s": round(tokens / statistics.median(s), 1),
                "tokens_per_cpu_s": round(tokens / statistics.median(cpu[a]), 1),
                "seconds": [round(x, 2) for x in s],
                "cpu_seconds": [round(x, 2) for x in cpu[a]],
            }
            for a, s in secs.items()
        },
    }


def spaced_sts(data, n: int | None):
    """Every k-th pair of ``data`` so that ``n`` pairs remain (the file is ordered by genre:
    spacing keeps captions, news and forums in proportion)."""
    from dataclasses import replace

    if not n or n >= len(data):
        return data
    idx = [round(i * len(data) / n) for i in range(n)]
    pick = lambda xs: [xs[i] for i in idx]  # noqa: E731
    return replace(
        data,
        sentences1=pick(data.sentences1),
        sentences2=pick(data.sentences2),
        scores=data.scores[idx],
    )


def quality(enc, sets: dict) -> dict:
    """{set: score x100} on the dev sets for one encoder."""
    from llm2vec_retrieval.evaluation import evaluate_beir
    from llm2vec_retrieval.evaluation.sts import evaluate_sts

    out = {}
    for name, data in sets.items():
        if name == "stsb-dev":
            out[name] = round(evaluate_sts(enc, data)["metrics"]["spearman"], 2)
        else:
            res = evaluate_beir(
                enc, data, query_instruction=enc.config.query_instruction, metrics=("ndcg@10",)
            )
            out[name] = round(100 * res["metrics"]["ndcg@10"], 2)
    return out


def decide(report: dict) -> dict:
    """Which int8 arm (if any) auto may pick: >= MIN_SPEEDUP x bfloat16 tokens/s and within
    MAX_DROP points of bfloat16 on every dev set; each arm's verdict and reasons. An arm whose
    dev sets were not all scored (a run cut short) cannot pass."""
    tps = {a: r["tokens_per_s"] for a, r in report["speed"]["arms"].items()}
    qual = report.get("quality") or {}
    sets = list(qual.get("bfloat16") or {})
    verdicts = {}
    for arm in tps:
        if not arm.startswith("int8"):
            continue
        speedup = tps[arm] / tps["bfloat16"]
        scored = qual.get(arm) or {}
        drops = {s: round(qual["bfloat16"][s] - scored[s], 2) for s in sets if s in scored}
        reasons = []
        if speedup < MIN_SPEEDUP:
            reasons.append(f"x{speedup:.2f} bfloat16's tokens/s (needs x{MIN_SPEEDUP})")
        reasons += [
            f"{s} {-d:+.2f} points (limit -{MAX_DROP})" for s, d in drops.items() if d > MAX_DROP
        ]
        if not sets or len(drops) < len(sets):
            reasons.append("dev sets not scored (run cut short)")
        verdicts[arm] = {
            "speedup_vs_bfloat16": round(speedup, 2),
            "speedup_vs_float32": round(tps[arm] / tps["float32"], 2),
            "drop_vs_bfloat16": drops,
            "passes": not reasons,
            "fails_because": reasons,
        }
    passing = [a for a, v in verdicts.items() if v["passes"]]
    chosen = max(passing, key=lambda a: tps[a]) if passing else None
    return {
        "rule": {"min_speedup_vs_bfloat16": MIN_SPEEDUP, "max_drop_points": MAX_DROP},
        "arms": verdicts,
        "auto_picks_int8": chosen is not None,
        "chosen_arm": chosen,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.int8", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--arms", default=",".join(ARMS), help=f"from {', '.join(ARMS)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-docs", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sts-pairs", type=int, default=500, help="N STS-B dev pairs, evenly spaced")
    p.add_argument("--queries", type=int, default=100, help="first N HealthVer/WikiQA queries")
    p.add_argument("--docs", type=int, default=250, help="their judged documents + a sample to N")
    p.add_argument("--skip-quality", action="store_true", help="speed only (no decision)")
    p.add_argument("--data-dir", default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--finish",
        metavar="FILE",
        help="a result file whose run was cut short: add the decision over the arms it holds",
    )
    args = p.parse_args(argv)
    if args.finish:
        path = Path(args.finish)
        report = json.loads(path.read_text())
        done = set(report.get("quality") or {})
        report["cut_short"] = {
            "quality_not_scored": [a for a in report["speed"]["arms"] if a not in done],
            "finished_by": "python -m benchmarks.int8 --finish " + path.name,
        }
        report["decision"] = decide(report)
        save(report, path)
        print("\n".join(render(report)))
        return 0
    arms = [a for a in args.arms.split(",") if a]
    bad = sorted(set(arms) - set(ARMS))
    if bad or not {"float32", "bfloat16"} <= set(arms):
        raise SystemExit(f"error: arms must be from {', '.join(ARMS)} and include float32,bfloat16")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    import torch

    from benchmarks.fusion_select import restricted_set
    from benchmarks.speed import result_header
    from llm2vec_retrieval import LLM2Vec
    from llm2vec_retrieval.evaluation.data import (
        default_data_dir,
        load_sts,
        subset_corpus,
        subset_queries,
    )

    warnings.filterwarnings("ignore", message=".*quantiz", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
    torch.set_num_threads(args.threads)
    started = _dt.datetime.now()
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    report = {
        **result_header("int8", argv, started),
        "threads": args.threads,
        "torch_quantized_engines": list(torch.backends.quantized.supported_engines),
        "shared_machine_note": "2 cores shared with other engineers' jobs; see the load averages",
    }
    base = LLM2Vec.from_pretrained(dtype=torch.float32)
    report["model"] = base.fingerprint()
    encoders = {}
    for arm in arms:
        encoders[arm] = LLM2Vec(
            convert(base.model, arm), base.tokenizer, config=base.config, source=base.source
        )
    out = Path(args.results_dir) / f"int8_{started.strftime('%Y%m%d-%H%M%S')}.json"
    texts = passages(data_dir / "english-sentences" / "wikipedia_sentences.txt", args.speed_docs)
    report["speed"] = speed(encoders, texts, args.repeats)
    save(report, out)
    if not args.skip_quality:
        sets = {"stsb-dev": spaced_sts(load_sts(data_dir / "stsb" / "sts-dev.csv"), args.sts_pairs)}
        for name in ("healthver", "wikiqa"):
            full = restricted_set(data_dir, name)
            sets[name] = subset_corpus(subset_queries(full, args.queries), args.docs)
        report["dev_sets"] = {
            name: {
                "items": len(d) if name == "stsb-dev" else len(d.queries),
                "documents": None if name == "stsb-dev" else len(d.corpus),
            }
            for name, d in sets.items()
        }
        report["quality"] = {}
        report["quality_seconds"] = {}
        for arm in sorted(encoders, key=QUALITY_ORDER.index):
            t0 = time.perf_counter()
            report["quality"][arm] = quality(encoders[arm], sets)
            report["quality_seconds"][arm] = round(time.perf_counter() - t0, 1)
            print(f"{arm}: {report['quality'][arm]} ({time.perf_counter() - t0:.0f} s)", flush=True)
            save(report, out)  # a kill keeps the arms done so far
        report["decision"] = decide(report)
    report["loadavg_at_end"] = list(os.getloadavg())
    save(report, out)
    print("\n".join(render(report)))
    print(f"\nwrote {out}")
    return 0


def save(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")


def render(report: dict) -> list[str]:
    """Markdown for RESULTS.md: speed and dev-set scores of every arm, and the decision."""
    if "speed" not in report:  # the old benchmarks/int8_check.py layout
        return render_old(report)
    sp = report["speed"]
    qual = report.get("quality") or {}
    decision = report.get("decision") or decide(report)
    sets = list(qual.get("bfloat16") or {})
    loads = sp.get("loadavg_1min_around_rounds") or []
    lines = [
        f"{sp['documents']} passages, {sp['tokens']} tokens, {report.get('threads')} threads, "
        f"median of {len(next(iter(sp['arms'].values()))['seconds'])} interleaved rounds; "
        f"load average {min(loads):.1f}-{max(loads):.1f} during the rounds on a machine shared "
        "with other jobs (absolute tokens/s are low for that reason; the arms took turns, so "
        "the ratios are the measurement).",
        "",
    ]
    rows = []
    for arm, r in sp["arms"].items():
        v = (decision.get("arms") or {}).get(arm)
        scores = qual.get(arm) or {}
        rows.append(
            "| "
            + " | ".join(
                [
                    arm,
                    f"{r['tokens_per_s']:.0f}",
                    f"x{r['tokens_per_s'] / sp['arms']['bfloat16']['tokens_per_s']:.2f}",
                    f"{r['tokens_per_cpu_s']:.0f}" if "tokens_per_cpu_s" in r else "-",
                    *[f"{scores[s]:.2f}" if s in scores else "not scored" for s in sets],
                    "-"
                    if v is None
                    else ("passes" if v["passes"] else "; ".join(v["fails_because"])),
                ]
            )
            + " |"
        )
    head = ["arm", "tokens/s", "vs bf16", "tokens/CPU-s", *sets, "rule"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *rows, ""]
    ds = report.get("dev_sets") or {}
    lines.append(
        "Dev sets: "
        + ", ".join(
            f"{n} ({d['items']} {'pairs' if d['documents'] is None else 'queries'}"
            + ("" if d["documents"] is None else f", {d['documents']} documents")
            + ")"
            for n, d in ds.items()
        )
        + "; STS-B dev Spearman x100, the others dense nDCG@10 x100."
    )
    if report.get("cut_short"):
        lines.append(
            "The run was cut short: quality not scored for "
            + ", ".join(report["cut_short"]["quality_not_scored"])
            + "."
        )
    chosen = decision.get("chosen_arm")
    lines += [
        "",
        f"Decision: auto picks {chosen}"
        if chosen
        else "Decision: auto does not pick int8 on "
        "this CPU class; `--dtype int8` stays available when asked.",
        "",
    ]
    return lines


def render_old(report: dict) -> list[str]:
    """A benchmarks/int8_check.py file: fp32 vs int8-dynamic (per tensor) on SciFact test."""
    rows = report.get("rows") or {}
    fp, q = rows.get("float32") or {}, rows.get("int8-dynamic") or {}
    return [
        "Superseded: this run chose on the SciFact *test* set (not allowed for a choice) with "
        f"the older adapter: nDCG@10 fp32 {fp.get('ndcg@10')}, int8 (per-tensor dynamic) "
        f"{q.get('ndcg@10')} ({-report.get('ndcg@10_drop', 0) * 100:+.2f} points), "
        f"{fp.get('seconds')} s vs {q.get('seconds')} s to score.",
        "",
    ]


if __name__ == "__main__":
    sys.exit(main())
