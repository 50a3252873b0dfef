"""Build benchmarks/RESULTS.md and PNG plots from every benchmarks/results/*.json.

    python -m benchmarks.report
    python -m benchmarks.report --results-dir DIR --output DIR/RESULTS.md --plots-dir DIR/plots

Reads the files the harnesses write (quality_*, speed_*, index_*, server_*, train_*; the kind is
the file's "benchmark" key, else its name prefix). Files it cannot read or whose kind it does not
know are listed under "Skipped files" with the reason. Tables:

- quality: every (model, task, data subset) from all quality files, the newest file winning;
- speed: the newest speed file (throughput, ratio vs official, roofline, memory, agreement,
  index build time); older speed files are listed;
- index: the newest index file; server: the newest server file; training: every train file;
  startup: the newest startup file (search/serve start-up per cache state, phases).

Every table names the result file and the command that produced it, and the machine.
Plots (benchmarks/results/plots/): quality.png (per model), throughput.png (per implementation
and dtype), index_build.png (when the speed file has an index build).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from benchmarks import capacity

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
OUTPUT = PROJECT_ROOT / "benchmarks" / "RESULTS.md"
KINDS = (
    "quality",
    "speed",
    "gpu",
    "int8",
    "index",
    "server",
    "train",
    "train_default",
    "hybrid_dev",
    "fusion_select",
    "startup",
    "dtype_cpu",
    "cpu_backends",
    "capacity",
)
MODEL_ORDER = (
    "bm25",
    "minilm",
    "minilm+bm25",
    "minilm+bm25-alpha",
    "minilm+bm25-rrf",
    "minilm+bm25-prev",
    "ours-v1",
    "ours-v1+bm25",
    "ours-v1+bm25-alpha",
    "ours-v1+bm25-rrf",
    "ours-v1+bm25-prev",
    "ours",
    "ours+bm25",
    "ours+bm25-alpha",
    "ours+bm25-rrf",
    "ours+bm25-prev",
    "ours-causal",
    "ours-bidirectional",
    "official",
)
# CPU features that decide CPU speed (bf16 is native only with avx512_bf16 or AMX)
KEY_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
IMPL_ORDER = ("ours", "official", "sentence-transformers", "hf-bare")
DTYPE_ORDER = ("float32", "bfloat16", "float16")


# ------------------------------------------------------------------------------- loading
def load_results(
    results_dir: Path,
) -> tuple[dict[str, list[tuple[Path, dict]]], list[tuple[str, str]]]:
    """{kind: [(path, data), ...] oldest first}, [(file name, reason skipped)]."""
    found: dict[str, list[tuple[Path, dict]]] = {k: [] for k in KINDS}
    skipped: list[tuple[str, str]] = []
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            skipped.append((path.name, f"not readable JSON ({type(e).__name__}: {e})"))
            continue
        if not isinstance(data, dict):
            skipped.append((path.name, "not a JSON object"))
            continue
        kind = data.get("benchmark")
        if kind not in KINDS:
            prefix = path.name.split("_", 1)[0]
            kind = prefix if prefix in KINDS else None
        if kind is None:
            skipped.append((path.name, f"unknown kind (benchmark={data.get('benchmark')!r})"))
            continue
        found[kind].append((path, data))
    for kind in found:
        found[kind].sort(key=lambda item: (_when(item[1]), item[0].name))
    return found, skipped


def _when(data: dict) -> str:
    return str(data.get("started") or data.get("date") or data.get("finished") or "")


# ------------------------------------------------------------------------------- helpers
def _fmt(value, spec: str = ".3f", missing: str = "-") -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return missing
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += [
        "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
        for row in rows
    ]
    return out


def machine_line(m: dict | None) -> str:
    """One line describing the machine of a result file (whatever keys it has)."""
    if not isinstance(m, dict):
        return "machine: not recorded"
    parts = []
    cpu = m.get("cpu_model") or m.get("processor")
    if cpu:
        parts.append(str(cpu))
    cores = m.get("cpu_affinity") or m.get("sched_affinity") or m.get("cpu_count")
    if cores:
        parts.append(f"{cores} cores")
    if m.get("ram_gb"):
        parts.append(f"{m['ram_gb']} GiB RAM")
    if m.get("platform"):
        parts.append(str(m["platform"]))
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    for dist in ("torch", "transformers", "sentence-transformers", "faiss-cpu"):
        if m.get(dist):
            parts.append(f"{dist} {m[dist]}")
    threads = m.get("torch_threads_per_worker") or m.get("torch_threads") or m.get("threads")
    if threads:
        parts.append(f"{threads} torch threads")
    flags = m.get("cpu_flags")
    if isinstance(flags, list):
        parts.append(
            "CPU flags "
            + (
                " ".join(f for f in KEY_CPU_FLAGS if f in flags)
                or "none of " + "/".join(KEY_CPU_FLAGS)
            )
        )
    load = m.get("loadavg_at_start") or m.get("load_average_at_start")
    if load:
        parts.append("load avg at start " + "/".join(_fmt(x, ".1f") for x in load))
    return "machine: " + ", ".join(parts) if parts else "machine: not recorded"


def source_line(path: Path, data: dict) -> str:
    cmd = data.get("command")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    if not cmd and isinstance(settings.get("argv"), list) and path.name.startswith("train_"):
        cmd = " ".join(["python -m benchmarks.train_evidence", *map(str, settings["argv"])])
    when = _when(data) or _stamp_from_name(path.name) or "date not recorded"
    machine = (
        data.get("machine") if isinstance(data.get("machine"), dict) else data.get("environment")
    )
    return f"Source: `{path.name}` ({when}), command `{cmd or 'not recorded'}`; {machine_line(machine)}."


def _stamp_from_name(name: str) -> str | None:
    import re

    m = re.search(r"(\d{8})-(\d{6})", name)
    if not m:
        return None
    d, t = m.groups()
    return f"{d[:4]}-{d[4:6]}-{d[6:]}T{t[:2]}:{t[2:4]}:{t[4:]}"


def _rel(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------- quality
def _subset_label(info: dict | None) -> str:
    if not info or not isinstance(info, dict):
        return "full"
    sub = info.get("subset")
    if not sub:
        return "full"
    parts = []
    if "n_docs" in info:
        parts.append(f"{info['n_docs']} docs")
    if "n_queries" in info and (sub.get("max_queries") if isinstance(sub, dict) else False):
        parts.append(f"{info['n_queries']} queries")
    if "n_pairs" in info:
        parts.append(f"{info['n_pairs']} pairs")
    return "subset: " + ", ".join(parts) if parts else "subset"


def quality_rows(files: list[tuple[Path, dict]]) -> list[dict]:
    """Newest result per (model, task, subset), from every quality file."""
    merged: dict[tuple, dict] = {}
    for path, data in files:  # oldest first: newer files overwrite
        results = data.get("results")
        if not isinstance(results, dict):
            continue
        opts = data.get("options") or {}
        data_info = data.get("data") or {}
        for model, tasks in results.items():
            if not isinstance(tasks, dict):
                continue
            label = model
            ours_or_official = model.startswith("ours") or model == "official"
            if ours_or_official and opts.get("dtype"):
                label = f"{model} ({opts['dtype']})"
            if (
                ours_or_official
                and opts.get("model")
                and model in ("ours-causal", "ours-bidirectional", "official")
            ):
                label = f"{label} [{Path(str(opts['model'])).name}]"
            for task, r in tasks.items():
                if not isinstance(r, dict):
                    continue
                subset = _subset_label(data_info.get(task))
                merged[(label, task, subset)] = {
                    "model": label,
                    "base_model": model,
                    "task": task,
                    "subset": subset,
                    "result": r,
                    "path": path,
                    "data": data,
                }
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(
        merged.values(),
        key=lambda x: (
            x["task"],
            x["subset"] != "full",
            x["subset"],
            order.get(x["base_model"], 99),
            x["model"],
        ),
    )


def quality_section(files, base: Path, plots: dict) -> list[str]:
    lines = ["## Quality", ""]
    rows = quality_rows(files)
    if not rows:
        return lines + ["No quality results.", ""]
    lines += [
        "SciFact (BEIR test queries): nDCG@10, Recall@100, MRR@10 of exact cosine search (BM25: bm25s). "
        "STS-B: Spearman x100 of cosine similarity. A subset run (fewer documents) is optimistic and not "
        "comparable to the references; `ref` says whether the reference number was reproduced "
        "(full sets only).",
        "",
    ]
    table = []
    sources: dict[str, tuple[Path, dict]] = {}
    for x in rows:
        r, m = x["result"], x["result"].get("metrics") or {}
        src = x["path"].name
        sources[src] = (x["path"], x["data"])
        if "error" in r:
            table.append(
                [
                    x["model"],
                    x["task"],
                    "error: " + str(r["error"])[:80],
                    "",
                    "",
                    "",
                    x["subset"],
                    "",
                    src,
                ]
            )
            continue
        ref = r.get("reference_ok") or {}
        ref_txt = (
            ("ok" if all(ref.values()) else "OFF: " + ", ".join(k for k, v in ref.items() if not v))
            if ref
            else "-"
        )
        if ref and r.get("subset"):
            ref_txt = "n/a (subset)"
        table.append(
            [
                x["model"],
                x["task"],
                _fmt(m.get("ndcg@10"), ".4f"),
                _fmt(m.get("recall@100"), ".4f"),
                _fmt(m.get("mrr@10"), ".4f"),
                _fmt(m.get("spearman"), ".2f"),
                x["subset"],
                ref_txt,
                src,
            ]
        )
    lines += _table(
        ["model", "task", "nDCG@10", "Recall@100", "MRR@10", "Spearman", "data", "ref", "file"],
        table,
    )
    lines.append("")
    for _name, (path, data) in sorted(sources.items()):
        lines.append(f"- {source_line(path, data)}")
    lines.append("")
    if "quality" in plots:
        lines += [f"![quality per model]({_rel(plots['quality'], base)})", ""]
    return lines


def _main_job_file(files) -> tuple[Path, dict] | None:
    """The newest quality file with full-set SciFact results fused with BM25 and the baselines
    (BM25 alone, MiniLM) beside them: the table compares models of one run. A later run of
    our model alone (a re-check) shows in the Quality table instead."""
    for path, data in reversed(files):
        results = data.get("results") or {}
        sf = (data.get("data") or {}).get("scifact") or {}
        if (
            not sf.get("subset")
            and {"bm25", "minilm"} <= set(results)
            and any(m.endswith("+bm25") and "scifact" in t for m, t in results.items())
        ):
            return path, data
    return None


def main_job_rows(files) -> list[tuple[str, str, dict, dict]]:
    """(model, kind, scifact metrics, stsb metrics) of the main-job file, in MODEL_ORDER."""
    found = _main_job_file(files)
    if found is None:
        return []
    results = found[1].get("results") or {}
    order = {m: i for i, m in enumerate(MODEL_ORDER)}
    rows = []
    for model in sorted(results, key=lambda m: (order.get(m, 99), m)):
        tasks = results[model]
        sf = (tasks.get("scifact") or {}).get("metrics") or {}
        st = (tasks.get("stsb") or {}).get("metrics") or {}
        if not sf and not st:
            continue
        if model == "bm25":
            kind = "lexical (bm25s)"
        elif "+bm25" in model:
            search = (tasks.get("scifact") or {}).get("search") or {}
            fusion = search.get("fusion")
            weighted = "alpha" in search and fusion != "rrf"
            kind = f"hybrid, {fusion}" + (f" {search.get('alpha')}" if weighted else "")
        else:
            kind = "dense"
        rows.append((model, kind, sf, st))
    return rows


def main_job_section(files, base: Path, plots: dict) -> list[str]:
    lines = ["## The main job: retrieval with the shipped default, dense and hybrid", ""]
    found = _main_job_file(files)
    if found is None:
        return lines + [
            "No full-set quality run with hybrid rows yet (`python -m benchmarks.quality --hybrid`).",
            "",
        ]
    path, data = found
    lines += [
        "Full SciFact test (300 queries, 5,183 documents) and full STS-B test, one run on one machine. "
        "`ours` is the shipped default, `ours-v1` the adapter it replaced; `+bm25` rows fuse the model's "
        "vectors with BM25 inside the IndexStore (the product's own search path), with the fusion named.",
        "",
    ]
    table = [
        [
            m,
            kind,
            _fmt(sf.get("ndcg@10"), ".4f"),
            _fmt(sf.get("recall@100"), ".4f"),
            _fmt(st.get("spearman"), ".2f"),
        ]
        for m, kind, sf, st in main_job_rows(files)
    ]
    lines += _table(
        ["model", "search", "SciFact nDCG@10", "SciFact Recall@100", "STS-B test Spearman"], table
    )
    lines += ["", f"- {source_line(path, data)}", ""]
    if "main_job" in plots:
        lines += [f"![the main job]({_rel(plots['main_job'], base)})", ""]
    return lines


def fusion_select_section(files) -> list[str]:
    """The newest out-of-domain fusion selection (rendered by benchmarks.fusion_select)."""
    from benchmarks.fusion_select import render

    lines = ["## Choosing the default search mode and fusion (out-of-domain sets)", ""]
    if not files:
        return lines + ["No fusion_select results.", ""]
    path, data = files[-1]
    lines += [
        "nDCG@10 through the IndexStore on sets the shipped adapter was never trained or tuned "
        "on (`benchmarks/fusion_select.py`: HealthVer, WikiQA, TwitterPPDB, MSRP from "
        "`supervised-pairs/restricted/`, scored only; manual pages of this machine). The "
        "default is the setting with the best worst-case margin over the better single mode "
        "for our model; SciFact and STS-B test play no part.",
        "",
        *render(data),
        "",
        f"- {source_line(path, data)}",
        "",
    ]
    return lines


def hybrid_dev_section(files, base: Path) -> list[str]:
    lines = ["## Choosing the default search mode (dev sets; superseded)", ""]
    if not files:
        return lines + ["No hybrid_dev results.", ""]
    lines += [
        "nDCG@10 on the retrieval dev sets carved from the supervised training data "
        "(`benchmarks.supervised_data`), through the IndexStore; the best mean picks `DEFAULT_TEXT_MODE`, "
        "`DEFAULT_FUSION` and `DEFAULT_ALPHA`. SciFact and STS-B test are not used for this choice.",
        "",
    ]
    for path, d in files:
        table = d.get("ndcg@10") or {}
        if not table:
            continue
        sets = [k for k in next(iter(table.values())) if k != "mean"]
        lines += [f"### `{path.name}`: {d.get('model')}", ""]
        rows = [
            [
                name + (" **(best)**" if name == d.get("best") else ""),
                *(_fmt(r.get(s), ".4f") for s in sets),
                _fmt(r.get("mean"), ".4f"),
            ]
            for name, r in table.items()
        ]
        lines += _table(["search", *sets, "mean"], rows)
        lines += ["", source_line(path, d), ""]
    return lines


def train_default_section(files, base: Path) -> list[str]:
    lines = ["## Retraining the default (supervised stage, dev sets)", ""]
    if not files:
        return lines + ["No train_default results.", ""]
    lines += [
        "Each run trains one supervised LoRA stage on top of the shipped default and is scored on dev data "
        "only: STS-B dev (Spearman) and nDCG@10 on the dev sets carved from the training data. `shipped` is the "
        "default before retraining.",
        "",
    ]
    for path, d in files:
        runs = d.get("runs") or {}
        if not runs:
            continue
        dev_keys: list[str] = []
        for r in runs.values():
            for k in r.get("dev") or {}:
                if k not in dev_keys:
                    dev_keys.append(k)
        rows = []
        for name, r in runs.items():
            dev = r.get("dev") or {}
            rows.append(
                [
                    name,
                    "+".join(r.get("sources") or []) or "-",
                    str(r.get("steps", "-")),
                    _fmt(r.get("train_s"), ".0f"),
                    *(_fmt(dev.get(k), ".4f" if k != "stsb_dev" else ".2f") for k in dev_keys),
                ]
            )
        lines += [f"### `{path.name}`", ""]
        lines += _table(["run", "sources", "steps", "train s", *dev_keys], rows)
        if d.get("combined"):
            c = d["combined"]
            lines += [
                "",
                f"Folded into one adapter: rank {c.get('rank')}, {c.get('bytes', 0) / 2**20:.1f} MiB.",
            ]
        lines += ["", source_line(path, d), ""]
    return lines


# --------------------------------------------------------------------------------- speed
def speed_section(files, base: Path, plots: dict) -> list[str]:
    lines = ["## Speed", ""]
    if not files:
        return lines + ["No speed results.", ""]
    path, d = files[-1]
    data = d.get("data") or {}
    model = d.get("model") or {}
    flops = d.get("flops") or {}
    lines += [
        f"Encoding the first {data.get('n_docs', '?')} SciFact documents ({data.get('tokens', '?')} tokens, mean "
        f"{_fmt(data.get('tokens_mean'), '.0f')}, each cut to {data.get('doc_max_length', 400)} tokens before any "
        f"implementation sees it) with `{model.get('name') or model.get('path')}`; {_fmt((flops.get('total') or 0) / 1e9, '.1f')} "
        "GFLOP counted from the config (2 x linear params per token + attention QK^T/AV on the real lengths, no lm_head). "
        "tokens/s = the documents' token count (same for every implementation) / median encode time over the interleaved "
        "repeats; `x official` > 1 means faster than llm2vec 0.2.3; roofline % = achieved FLOP/s / the best matmul "
        "FLOP/s of that dtype on the same machine. Peak RSS = ru_maxrss of the worker process after encoding "
        "(model load included); encode ΔRSS = RSS increase during one encode call (sampled every 10 ms).",
        "",
        source_line(path, d),
        "",
    ]
    table = []
    for r in sorted(
        d.get("results") or [], key=lambda r: (_dtype_order(r.get("dtype")), _order(r.get("impl")))
    ):
        if r.get("status") != "ok":
            err = str(r.get("error") or "").strip().splitlines()
            table.append(
                [
                    r.get("impl"),
                    r.get("dtype"),
                    f"{r.get('status')}: {err[0][:90] if err else ''}",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                ]
            )
            continue
        mem = r.get("memory") or {}
        reps = ", ".join(_fmt(x, ".2f") for x in r.get("repeats_s") or [])
        table.append(
            [
                r["impl"],
                r["dtype"],
                _fmt(r.get("tokens_per_s"), ".0f"),
                _fmt(r.get("docs_per_s"), ".2f"),
                _fmt(r.get("ratio_vs_official"), ".2f"),
                _fmt(r.get("roofline_pct"), ".1f"),
                f"{_fmt(r.get('median_s'), '.2f')} ({reps})",
                _fmt(mem.get("maxrss_after_encode_mb"), ".0f"),
                _fmt(mem.get("encode_rss_delta_mb"), ".0f"),
                _fmt(r.get("load_s"), ".1f"),
            ]
        )
    lines += _table(
        [
            "impl",
            "dtype",
            "tokens/s",
            "docs/s",
            "x official",
            "roofline %",
            "median s (repeats)",
            "peak RSS MiB",
            "encode ΔRSS MiB",
            "load s",
        ],
        table,
    )
    lines.append("")
    roof = d.get("roofline") or {}
    if roof:
        rows = []
        for dtype, r in roof.items():
            if "error" in r:
                rows.append([dtype, "error", "", ""])
                continue
            best = max(r.get("rows") or [{}], key=lambda x: x.get("flops_per_s", 0))
            rows.append(
                [
                    dtype,
                    _fmt(r.get("peak_flops_per_s", 0) / 1e9, ".1f"),
                    _fmt((r.get("square_flops_per_s") or 0) / 1e9, ".1f")
                    if r.get("square_flops_per_s")
                    else "-",
                    "x".join(str(v) for v in best.get("shape", [])),
                ]
            )
        lines += ["Matmul peak (torch `linear`, best of several, same thread count):", ""]
        lines += _table(["dtype", "peak GFLOP/s", "square GFLOP/s", "best shape (m x k x n)"], rows)
        lines.append("")
    agr = d.get("agreement") or {}
    agr_lines = []
    for dtype, per in agr.items():
        for impl, a in (per or {}).items():
            thr = d.get("agreement_threshold", 0.999)
            ok = "ok" if a.get("ok") else f"below {thr}"
            agr_lines.append(
                f"- {dtype}: ours vs {impl}: min cosine {_fmt(a.get('min_cos'), '.6f')}, mean "
                f"{_fmt(a.get('mean_cos'), '.6f')} over {a.get('n')} documents"
                + (f" ({ok})" if dtype == "float32" else "")
            )
    if agr_lines:
        lines += (
            [
                "Vectors agree (cosine with ours on the benchmark documents; fp32 must exceed "
                f"{d.get('agreement_threshold', 0.999)}):",
                "",
            ]
            + agr_lines
            + [""]
        )
    tc = d.get("token_count_check")
    if isinstance(tc, dict) and "equal" in tc:
        lines += [
            f"Token counts used for tokens/s equal our encoder's own: {'yes' if tc['equal'] else 'no'} "
            f"({tc.get('counted_tokens')} vs {tc.get('ours_tokens')}).",
            "",
        ]
    if "throughput" in plots:
        lines += [f"![throughput]({_rel(plots['throughput'], base)})", ""]
    ib = d.get("index_build")
    if isinstance(ib, dict) and ib.get("results"):
        lines += [
            f"### Index build (encode + add, {ib.get('n_docs')} documents, {ib.get('dtype')})",
            "",
        ]
        rows = []
        for r in ib["results"]:
            if r.get("status") != "ok":
                err = str(r.get("error") or "").strip().splitlines()
                rows.append(
                    [
                        r.get("impl"),
                        f"{r.get('status')}: {err[0][:90] if err else ''}",
                        "",
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            reps = ", ".join(_fmt(x, ".2f") for x in r.get("repeats_s") or [])
            rows.append(
                [
                    r["impl"],
                    f"{_fmt(r.get('median_s'), '.2f')} ({reps})",
                    _fmt(r.get("encode_s_median"), ".2f"),
                    _fmt(r.get("add_s_median"), ".3f"),
                    _fmt(r.get("docs_per_s"), ".2f"),
                    _fmt(r.get("speedup_vs_langchain"), ".2f"),
                    str(r.get("tokens_seen_by_model") or data.get("tokens", "-")),
                ]
            )
        lines += _table(
            [
                "implementation",
                "median s (repeats)",
                "encode s",
                "add s",
                "docs/s",
                "x LangChain",
                "tokens processed",
            ],
            rows,
        )
        lines += ["", str(ib.get("note") or ""), ""]
        if "index_build" in plots:
            lines += [f"![index build]({_rel(plots['index_build'], base)})", ""]
    if len(files) > 1:
        lines += [
            "Earlier speed runs (not shown): " + ", ".join(f"`{p.name}`" for p, _ in files[:-1]),
            "",
        ]
    return lines


def cpu_backends_section(files) -> list[str]:
    """Our encoder's CPU forward paths, A/B in one process (benchmarks/cpu_backends.py)."""
    if not files:
        return []
    lines = [
        "### CPU forward paths",
        "",
        "Our encoder only, one process, the modes interleaved on the same documents and batches "
        '(`benchmarks/cpu_backends.py`): padded = right-padded batches (`packing="off"`), packed = '
        "the default on CPU (texts end to end, attention per text), compile = the padded forward through "
        "`torch.compile(dynamic=True)` (setup = first call; a warm inductor cache only skips code "
        "generation), onnx = the padded forward exported by `torch.onnx.export(dynamo=True)` and run by "
        "onnxruntime. x padded > 1 means faster.",
        "",
    ]
    for path, d in reversed(files):
        rows = d.get("rows") or []
        padded = next((r["median_s"] for r in rows if r.get("mode") == "padded"), None)
        lines += [
            f"`{path.name}` ({d.get('started', '?')}), `{d.get('command', '?')}`, {d.get('dtype')}, "
            f"{d.get('n_docs')} docs / {d.get('tokens')} tokens, {d.get('threads')} threads; "
            f"{machine_line(d.get('machine'))}.",
            "",
            *([f"Note: {d['note']}", ""] if d.get("note") else []),
            "| mode | median s | tokens/s | x padded | min cosine vs padded | setup | repeats s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            setup = ", ".join(
                f"{k} {v}" for k, v in (r.get("setup") or {}).items() if k != "cache_dir"
            )
            ratio = padded / r["median_s"] if padded and r.get("median_s") else None
            lines.append(
                f"| {r.get('mode')} | {_fmt(r.get('median_s'), '.2f')} | {_fmt(r.get('tokens_per_s'), '.0f')} "
                f"| {_fmt(ratio, '.2f')} | {_fmt(r.get('min_cos_vs_padded'), '.6f')} | {setup or '-'} "
                f"| {', '.join(_fmt(x, '.2f') for x in r.get('seconds') or [])} |"
            )
        lines.append("")
    return lines


def _order(impl) -> int:
    return IMPL_ORDER.index(impl) if impl in IMPL_ORDER else 99


def _dtype_order(dtype) -> tuple[int, str]:
    return (DTYPE_ORDER.index(dtype) if dtype in DTYPE_ORDER else 99, str(dtype))


# ---------------------------------------------------------------------- index / server
def gpu_section(files, base: Path) -> list[str]:
    """benchmarks/gpu_speed.py results: our encoder vs a bare forward on a GPU."""
    lines = ["## GPU throughput", ""]
    if not files:
        return lines + ["No GPU results (the GPU machine is lent to some sessions only).", ""]
    for path, d in files:
        m = d.get("machine") or {}
        lines += [
            f"### `{path.name}`",
            "",
            f"Source: `{path.name}`, command `{d.get('command', 'not recorded')}`; GPU {m.get('gpu', '?')}, "
            f"torch {m.get('torch', '?')}, transformers {m.get('transformers', '?')}; {d.get('docs', '?')} SciFact "
            f"documents, {d.get('max_length', '?')}-token cap, {d.get('dtype', '?')}.",
            "",
        ]
        if d.get("notes"):
            lines += [f"Note: {d['notes']}", ""]
        rows = []
        for name, r in (d.get("runs") or {}).items():
            if isinstance(r, dict):
                rows.append(
                    [
                        name,
                        _fmt(r.get("s"), ".2f"),
                        _fmt(r.get("tok_s"), ".0f"),
                        _fmt(r.get("doc_s"), ".1f"),
                    ]
                )
        lines += _table(["run", "seconds", "tokens/s", "docs/s"], rows) + [""]
    return lines


def int8_section(files, base: Path) -> list[str]:
    """int8 on CPU (rendered by benchmarks.int8): the newest run and the superseded ones."""
    from benchmarks.int8 import render

    if not files:
        return []
    lines = [
        "## int8 on CPU: should `--dtype auto` pick it?",
        "",
        "`benchmarks/int8.py`: tokens/s of `encode_documents` and dev-set scores (STS-B dev, "
        "HealthVer, WikiQA; SciFact and STS-B test play no part) for float32, bfloat16 and each "
        "int8 arm. Rule: auto picks an int8 arm only at >= 1.5x bfloat16's tokens/s and within "
        "0.5 points of bfloat16 on every dev set.",
        "",
    ]
    for path, data in reversed(files):
        lines += render(data) + [f"- {source_line(path, data)}", ""]
    return lines


def index_section(files, base: Path) -> list[str]:
    lines = ["## Vector index kinds", ""]
    if not files:
        return lines + ["No index results.", ""]
    path, d = files[-1]
    cfg = d.get("config") or {}
    k = cfg.get("k", 10)
    lines += [
        f"`IndexStore` kinds on {cfg.get('n', '?')} clustered random vectors of dimension {cfg.get('dim', '?')} "
        f"({cfg.get('metric', 'cosine')}), {cfg.get('queries', '?')} queries, recall@{k} against exact search; "
        f"filtered: {cfg.get('filter', 'a metadata filter')}.",
        "",
        source_line(path, d),
        "",
    ]
    rows = []
    for r in d.get("results") or []:
        if not isinstance(r, dict):
            continue
        rows.append(
            [
                r.get("kind"),
                _fmt(r.get("build_s"), ".1f"),
                _fmt(r.get("batch_qps"), ".0f"),
                _fmt(r.get("single_qps"), ".0f"),
                _fmt(r.get("recall_at_k"), ".3f"),
                _fmt(r.get("filtered_recall_at_k"), ".3f"),
                _fmt(r.get("filtered_batch_qps"), ".0f"),
                _fmt(r.get("total_bytes_per_vector"), ".0f"),
                _fmt(r.get("save_s"), ".2f"),
                _fmt(r.get("load_s"), ".2f"),
            ]
        )
    lines += _table(
        [
            "kind",
            "build s",
            "batch QPS",
            "single QPS",
            f"recall@{k}",
            f"filtered recall@{k}",
            "filtered QPS",
            "bytes/vector",
            "save s",
            "load s",
        ],
        rows,
    )
    lines.append("")
    if len(files) > 1:
        lines += ["Earlier index runs: " + ", ".join(f"`{p.name}`" for p, _ in files[:-1]), ""]
    return lines


def server_section(files, base: Path) -> list[str]:
    lines = ["## HTTP server under load", ""]
    if not files:
        return lines + ["No server results.", ""]
    path, d = files[-1]
    srv = d.get("server") or {}
    opts = d.get("options") or {}
    lines += [
        f"`llm2vec-retrieval serve` with {srv.get('model', '?')}{' (tiny random model: plumbing only)' if srv.get('tiny') else ''}, "
        f"clients on the same machine, {opts.get('duration_s', '?')} s per level, {opts.get('inputs_per_request', '?')} "
        f"text(s) per request, {opts.get('request_mix', '')}.",
        "",
        source_line(path, d),
        "",
    ]
    rows = []
    for r in d.get("results") or []:
        if not isinstance(r, dict):
            continue
        lat = r.get("latency_ms") or {}
        rows.append(
            [
                r.get("concurrency"),
                _fmt(r.get("requests_per_s"), ".2f"),
                _fmt(r.get("inputs_per_s"), ".2f"),
                _fmt(r.get("prompt_tokens_per_s"), ".0f"),
                _fmt(lat.get("p50"), ".0f"),
                _fmt(lat.get("p90"), ".0f"),
                _fmt(lat.get("p99"), ".0f"),
                r.get("errors", "-"),
                _fmt(r.get("requests_per_batch"), ".1f"),
            ]
        )
    lines += _table(
        [
            "clients",
            "requests/s",
            "inputs/s",
            "tokens/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "errors",
            "requests per model batch",
        ],
        rows,
    )
    lines.append("")
    for r in d.get("results") or []:
        big = r.get("large") if isinstance(r, dict) else None
        if isinstance(big, dict):
            lat = big.get("latency_ms") or {}
            lines += [
                f"With {r.get('concurrency')} clients, {big.get('clients')} more client(s) sent requests of "
                f"{big.get('inputs_per_request')} long texts back to back meanwhile (the latencies above are "
                f"the small requests'): {big.get('requests_ok')} done, p50 {_fmt(lat.get('p50'), '.0f')} ms, "
                f"{big.get('errors')} error(s).",
                "",
            ]
    if len(files) > 1:
        lines += ["Earlier server runs: " + ", ".join(f"`{p.name}`" for p, _ in files[:-1]), ""]
    return lines


def _flatten(obj, prefix: str = "", out: dict | None = None, depth: int = 0) -> dict:
    out = {} if out is None else out
    if depth > 4:
        return out
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("machine", "command", "options", "cwd"):
                continue
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out, depth + 1)
    elif isinstance(obj, (int, float, str)) and not isinstance(obj, bool) and prefix:
        if not isinstance(obj, str) or len(obj) <= 80:
            out[prefix] = obj
    elif isinstance(obj, bool) and prefix:
        out[prefix] = str(obj).lower()
    return out


def train_evidence_lines(path: Path, d: dict, base: Path, plots: dict) -> list[str]:
    """Table of a benchmarks/train_evidence.py result: encoders before/after training, losses, timings."""
    settings = d.get("settings") or {}
    lines = []
    if settings.get("smoke"):
        lines += [
            "Smoke run (a few steps, small evaluations): it shows the pipeline runs and how long steps take, "
            "not what training achieves.",
            "",
        ]
    sts = settings.get("sts") or {}
    sf = settings.get("scifact") or {}
    if "split" in sts:  # older files: one STS split, SciFact subset keys n_docs / max_queries
        sts_txt = f"STS-B {sts['split']} ({sts.get('pairs', '?')} pairs)"
    else:
        sts_txt = "STS-B " + ", ".join(f"{k} ({v} pairs)" for k, v in sts.items())
    if sf:
        n_docs = sf.get("docs", sf.get("n_docs", "?"))
        n_q = sf.get("queries", sf.get("max_queries", "?"))
        sf_txt = f"; SciFact test, {n_q} queries over {n_docs} documents"
    else:
        sf_txt = ""
    dtype = settings.get("eval_dtype") or ("bfloat16" if settings.get("eval_bf16") else "float32")
    lines += [
        f"{sts_txt}{sf_txt}; evaluation in {dtype} on {settings.get('eval_device', 'cpu')}, documents cut to "
        f"{settings.get('doc_max_length', '?')} tokens. Spearman x100; nDCG@10 and Recall@100 as fractions.",
        "",
    ]
    metric_names = {
        "stsb_dev_spearman": "STS-B dev",
        "stsb_test_spearman": "STS-B test",
        "scifact_ndcg@10": "SciFact nDCG@10",
        "scifact_recall@100": "SciFact R@100",
        "scifact_ndcg@10_subset": "SciFact nDCG@10 (subset)",
        "scifact_recall@100_subset": "SciFact R@100 (subset)",
    }
    row_dicts = {n: r for n, r in (d.get("rows") or {}).items() if isinstance(r, dict)}
    keys = [k for k in metric_names if any(k in r for r in row_dicts.values())]
    rows = [
        [name] + [_fmt(r.get(k), ".2f" if "spearman" in k else ".4f") for k in keys]
        for name, r in row_dicts.items()
    ]
    if rows:
        lines += _table(["encoder"] + [metric_names[k] for k in keys], rows) + [""]
    curves = d.get("loss_curves") or {}
    crow = []
    for stage, pts in curves.items():
        pts = [
            p for p in pts or [] if isinstance(p, dict) and isinstance(p.get("loss"), (int, float))
        ]
        if not pts:
            continue
        cfg = (d.get("settings_per_stage") or {}).get(stage) or settings.get(stage) or {}
        tps = [p["tokens_per_s"] for p in pts if isinstance(p.get("tokens_per_s"), (int, float))]
        crow.append(
            [
                stage,
                pts[-1].get("step", len(pts)),
                _fmt(pts[0]["loss"], ".4f"),
                _fmt(pts[-1]["loss"], ".4f"),
                _fmt(cfg.get("batch_size"), "d") if isinstance(cfg.get("batch_size"), int) else "-",
                _fmt(sum(tps) / len(tps), ".0f") if tps else "-",
                _fmt((d.get("timings_s") or {}).get(f"train:{stage}"), ".0f"),
            ]
        )
    if crow:
        lines += _table(
            ["stage", "steps", "first loss", "last loss", "batch", "tokens/s (mean)", "train s"],
            crow,
        ) + [""]
    key = f"loss:{path.name}"
    if key in plots:
        lines += [f"![training loss]({_rel(plots[key], base)})", ""]
    return lines


STAGE_ORDER = (
    "causal",
    "bidirectional",
    "mntp",
    "mntp+simcse",
    "mntp+supervised",
    "mntp+simcse+supervised",
)
FULL_KEYS = ("stsb_test_spearman", "scifact_ndcg@10")


def full_stage_rows(files) -> dict[str, dict[str, dict]]:
    """{model: {stage: row}} from training runs evaluated on the full sets (newer files win)."""
    out: dict[str, dict[str, dict]] = {}
    for _path, d in files:
        settings = d.get("settings") or {}
        model = str(settings.get("model") or "?").split(" ")[0]
        for stage, row in (d.get("rows") or {}).items():
            if isinstance(row, dict) and all(k in row for k in FULL_KEYS):
                out.setdefault(model, {})[stage] = row
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    return {
        m: dict(sorted(rows.items(), key=lambda kv: order.get(kv[0], 99)))
        for m, rows in out.items()
    }


def stage_summary(files, quality_files, base: Path, plots: dict) -> list[str]:
    """Every stage of every trained model on the full sets, beside the full-set baselines."""
    merged = full_stage_rows(files)
    if not merged:
        return []
    lines = [
        "### Every stage on the full sets, beside the baselines",
        "",
        "SciFact test (all 300 queries, 5,183 documents) nDCG@10 and STS-B test Spearman x100, from the "
        "training runs below (bf16, GPU) and the quality runs above (baselines). The shipped default "
        "(`LLM2Vec.from_pretrained()`) is Gemma 3 270M after mntp+simcse+supervised, folded into one "
        "rank-40 adapter (docs/default_model.md).",
        "",
    ]
    rows = []
    for model, stages in merged.items():
        for stage, r in stages.items():
            rows.append(
                [
                    model,
                    stage,
                    _fmt(r.get("scifact_ndcg@10"), ".4f"),
                    _fmt(r.get("stsb_test_spearman"), ".2f"),
                ]
            )
    for x in quality_rows(quality_files):
        m = x["result"].get("metrics") or {}
        if x["subset"] != "full" or x["base_model"] not in ("bm25", "minilm"):
            continue
        if x["task"] == "scifact":
            rows.append([x["model"], "baseline", _fmt(m.get("ndcg@10"), ".4f"), ""])
        elif x["task"] == "stsb":
            rows.append([x["model"], "baseline", "", _fmt(m.get("spearman"), ".2f")])
    lines += _table(["model", "stage", "SciFact nDCG@10", "STS-B test"], rows) + [""]
    if "stages" in plots:
        lines += [f"![quality per training stage]({_rel(plots['stages'], base)})", ""]
    return lines


def train_section(files, base: Path, plots: dict | None = None, quality_files=()) -> list[str]:
    plots = plots or {}
    lines = ["## Training", ""]
    if not files:
        return lines + ["No training results.", ""]
    lines += stage_summary(files, quality_files, base, plots)
    lines += ["Evidence that training runs (the values each train result file records).", ""]
    for path, d in files:
        lines += [f"### `{path.name}`", "", source_line(path, d), ""]
        if d.get("notes"):
            lines += [f"Note: {d['notes']}", ""]
        if isinstance(d.get("rows"), dict) and "loss_curves" in d:
            lines += train_evidence_lines(path, d, base, plots)
            continue
        flat = _flatten(d)
        items = [(k, v) for k, v in flat.items() if k not in ("benchmark",)][:60]
        if items:
            lines += _table(
                ["key", "value"],
                [[k, _fmt(v, ".4g") if isinstance(v, float) else v] for k, v in items],
            )
            if len(flat) > 60:
                lines.append(f"\n({len(flat) - 60} more values in the file)")
        else:
            lines.append("(no scalar values found)")
        lines.append("")
    return lines


# ---------------------------------------------------------------------------------- plots
def make_plots(found: dict, plots_dir: Path) -> dict[str, Path]:
    """Write the PNGs; returns {name: path} for those written (none if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {}
    plots_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}

    rows = quality_rows(found.get("quality") or [])
    panels = [
        ("scifact", "ndcg@10", "SciFact nDCG@10"),
        ("scifact", "recall@100", "SciFact Recall@100"),
        ("stsb", "spearman", "STS-B Spearman"),
    ]
    panels = [
        p
        for p in panels
        if any(
            x["task"] == p[0] and (x["result"].get("metrics") or {}).get(p[1]) is not None
            for x in rows
        )
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
        for ax, (task, metric, title) in zip(axes[0], panels, strict=False):
            sel = [
                x
                for x in rows
                if x["task"] == task and (x["result"].get("metrics") or {}).get(metric) is not None
            ]
            labels = [
                x["model"] + ("\n" + x["subset"] if x["subset"] != "full" else "") for x in sel
            ]
            values = [x["result"]["metrics"][metric] for x in sel]
            colors = ["#4c72b0" if x["base_model"].startswith("ours") else "#999999" for x in sel]
            bars = ax.bar(range(len(values)), values, color=colors)
            for b, v in zip(bars, values, strict=False):
                ax.annotate(
                    f"{v:.3f}" if v <= 1 else f"{v:.1f}",
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_xticks(range(len(values)))
            ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
            ax.set_title(title)
            ax.set_ylim(0, max(values + [1.0 if metric != "spearman" else 100.0]) * 1.12)
        fig.suptitle("Quality per model (grey: baselines, blue: ours)")
        fig.tight_layout()
        written["quality"] = plots_dir / "quality.png"
        fig.savefig(written["quality"], dpi=110)
        plt.close(fig)

    job = main_job_rows(found.get("quality") or [])
    if job:
        panels = [
            (
                "SciFact nDCG@10",
                [(m, k, sf.get("ndcg@10")) for m, k, sf, _ in job if sf.get("ndcg@10") is not None],
            ),
            (
                "STS-B test Spearman",
                [
                    (m, k, st.get("spearman"))
                    for m, k, _, st in job
                    if st.get("spearman") is not None
                ],
            ),
        ]
        panels = [p for p in panels if p[1]]
        fig, axes = plt.subplots(
            1,
            len(panels),
            figsize=(6.5 * len(panels), 4.4),
            squeeze=False,
            gridspec_kw={"width_ratios": [len(p[1]) for p in panels]},
        )
        colors = {"dense": "#4c72b0", "lexical (bm25s)": "#999999"}
        for ax, (title, items) in zip(axes[0], panels, strict=False):
            values = [v for _, _, v in items]
            bars = ax.bar(
                range(len(items)),
                values,
                color=[
                    colors.get(k, "#dd8452")
                    if not m.startswith("minilm") or "+" in m
                    else "#bbbbbb"
                    for m, k, _ in items
                ],
            )
            for b, v in zip(bars, values, strict=False):
                ax.annotate(
                    f"{v:.3f}" if v <= 1 else f"{v:.1f}",
                    (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
            ax.set_xticks(range(len(items)))
            ax.set_xticklabels([m for m, _, _ in items], rotation=30, ha="right", fontsize=8)
            ax.set_title(title)
            ax.set_ylim(0, max(values) * 1.15)
        fig.suptitle("The main job (blue: dense, orange: hybrid with BM25, grey: baselines)")
        fig.tight_layout()
        written["main_job"] = plots_dir / "main_job.png"
        fig.savefig(written["main_job"], dpi=110)
        plt.close(fig)

    speed = found.get("speed") or []
    if speed:
        path, d = speed[-1]
        ok = [r for r in d.get("results") or [] if r.get("status") == "ok"]
        impls = sorted({r["impl"] for r in ok}, key=_order)
        dtypes = sorted({r["dtype"] for r in ok}, key=_dtype_order)
        if ok:
            fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(impls) + 2), 4.4))
            width = 0.8 / max(len(dtypes), 1)
            ymax = 0.0
            for j, dtype in enumerate(dtypes):
                xs, ys, lo, hi, pct = [], [], [], [], []
                for i, impl in enumerate(impls):
                    r = next((r for r in ok if r["impl"] == impl and r["dtype"] == dtype), None)
                    if r is None:
                        continue
                    tokens = r["tokens_per_s"] * r["median_s"]
                    reps = [tokens / s for s in r.get("repeats_s") or [r["median_s"]]]
                    xs.append(i + (j - (len(dtypes) - 1) / 2) * width)
                    ys.append(r["tokens_per_s"])
                    lo.append(r["tokens_per_s"] - min(reps))
                    hi.append(max(reps) - r["tokens_per_s"])
                    pct.append(r.get("roofline_pct"))
                    ymax = max(ymax, max(reps))
                bars = ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=dtype)
                for b, y, top, p in zip(bars, ys, hi, pct, strict=False):
                    txt = f"{y:.0f}" + (
                        f"\n{p:.0f}% of peak" if isinstance(p, (int, float)) else ""
                    )
                    ax.annotate(
                        txt,
                        (b.get_x() + b.get_width() / 2, y + top),
                        xytext=(0, 3),
                        textcoords="offset points",
                        ha="center",
                        va="bottom",
                        fontsize=7,
                    )
            ax.set_xticks(range(len(impls)))
            ax.set_xticklabels(impls)
            ax.set_ylabel("tokens / s (median; bars: min-max of repeats)")
            ax.set_ylim(0, ymax * 1.3 if ymax else 1)
            n = (d.get("data") or {}).get("n_docs")
            ax.set_title(f"Encoding throughput, {n} SciFact docs ({path.name})", fontsize=10)
            ax.legend(title="dtype")
            fig.tight_layout()
            written["throughput"] = plots_dir / "throughput.png"
            fig.savefig(written["throughput"], dpi=110)
            plt.close(fig)
        ib = d.get("index_build") or {}
        ib_ok = [r for r in ib.get("results") or [] if r.get("status") == "ok"]
        if ib_ok:
            fig, ax = plt.subplots(figsize=(6.5, 3.6))
            names = [r["impl"] for r in ib_ok]
            vals = [r["median_s"] for r in ib_ok]
            bars = ax.barh(
                names, vals, color=["#4c72b0" if n.startswith("ours") else "#999999" for n in names]
            )
            for b, v in zip(bars, vals, strict=False):
                ax.annotate(
                    f"{v:.1f} s",
                    (v, b.get_y() + b.get_height() / 2),
                    xytext=(3, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
            ax.set_xlabel("seconds (median), encode + add")
            ax.set_xlim(0, max(vals) * 1.25)
            ax.set_title(f"Index build, {ib.get('n_docs')} docs, {ib.get('dtype')}", fontsize=10)
            fig.tight_layout()
            written["index_build"] = plots_dir / "index_build.png"
            fig.savefig(written["index_build"], dpi=110)
            plt.close(fig)
    for path, d in found.get("train") or []:
        curves = d.get("loss_curves") if isinstance(d, dict) else None
        if not isinstance(curves, dict):
            continue
        series = {
            stage: [
                (p["step"], p["loss"])
                for p in pts or []
                if isinstance(p, dict)
                and isinstance(p.get("step"), (int, float))
                and isinstance(p.get("loss"), (int, float))
            ]
            for stage, pts in curves.items()
        }
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        fig, axes = plt.subplots(1, len(series), figsize=(4.8 * len(series), 3.4), squeeze=False)
        for ax, (stage, pts) in zip(axes[0], series.items(), strict=False):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None)
            ax.set_title(f"{stage} loss")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.suptitle(path.name, fontsize=9)
        fig.tight_layout()
        target = plots_dir / f"train_loss_{path.stem}.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written[f"loss:{path.name}"] = target
    merged = full_stage_rows(found.get("train") or [])
    if merged:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), squeeze=False)
        baselines = {}
        for x in rows:
            m = x["result"].get("metrics") or {}
            if x["subset"] == "full" and x["base_model"] in ("bm25", "minilm"):
                key = (
                    ("scifact_ndcg@10", m.get("ndcg@10"))
                    if x["task"] == "scifact"
                    else ("stsb_test_spearman", m.get("spearman"))
                )
                if key[1] is not None:
                    baselines.setdefault(key[0], []).append((x["model"], key[1]))
        for ax, (metric, title) in zip(
            axes[0],
            (
                ("scifact_ndcg@10", "SciFact nDCG@10 (test)"),
                ("stsb_test_spearman", "STS-B test Spearman x100"),
            ),
            strict=True,
        ):
            for model, stages in merged.items():
                names = list(stages)
                ax.plot(
                    range(len(names)), [stages[n][metric] for n in names], marker="o", label=model
                )
                ax.set_xticks(range(len(names)), [n.replace("+", "+\n") for n in names], fontsize=7)
            for j, (name, value) in enumerate(baselines.get(metric, [])):
                ax.axhline(value, color="#999999", linestyle="--" if j == 0 else ":", linewidth=1)
                ax.text(0, value, f" {name}", va="bottom", fontsize=7, color="#666666")
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        target = plots_dir / "training_stages.png"
        fig.savefig(target, dpi=100)
        plt.close(fig)
        written["stages"] = target
    return written


STARTUP_STATES = (
    ("cold", "cold: empty cache (GGUF dequantized, digests hashed, adapter merged and cached)"),
    (
        "merge_every_load",
        "dequantized base cached, adapter merged at every load (before issue 16.2)",
    ),
    ("warm", "warm: merged model cached"),
)


STARTUP_COMMANDS = {
    "search_lexical": "search --mode lexical",
    "search_server": "search --server URL",
}
STARTUP_NOTES = {
    "search_lexical": "(no model loaded)",
    "search_server": "query encoded by a running `serve` (started before, not timed)",
}


def warm_search_lines(files) -> list[str]:
    """The newest `python -m benchmarks.startup --warm-search` run: a local `search` without
    the warm helper, the first one (starts it) and the later ones (use it)."""
    if not files:
        return []
    path, d = files[-1]
    r = d.get("results") or {}
    rows = []
    for key, label in (
        ("search_no_warm", "`search --no-warm` (loads the model)"),
        ("search_first_starts_helper", "first `search` (starts the warm helper)"),
        ("search_warm", "later `search` (the helper encodes the query)"),
    ):
        x = r.get(key)
        if isinstance(x, dict):
            rows.append(
                [
                    label,
                    len(x.get("runs") or [x]),
                    _fmt(x.get("median_s", x.get("seconds")), ".2f"),
                    _fmt(x.get("median_cpu_s", x.get("cpu_s")), ".2f"),
                ]
            )
    load = (d.get("loadavg_at_start") or [None])[0]
    lines = [
        "### Warm search helper",
        "",
        source_line(path, d),
        "",
        f"Index `{d.get('index', '?')}`; load average at the start {_fmt(load, '.1f')} (the machine "
        "was shared: compare CPU s).",
        "",
    ]
    return lines + _table(["search", "runs", "median s", "median CPU s"], rows) + [""]


def startup_section(files, base: Path) -> list[str]:
    """Each (command, cache state) row from the newest startup file that has it (a run with
    --no-cold adds no cold rows); every file used is cited, phases from the newest."""
    lines = ["## Start-up time of search and serve", ""]
    warm = [f for f in files if "search_no_warm" in (f[1].get("results") or {})]
    files = [f for f in files if f not in warm]  # `--warm-search` runs: their own table below
    if not files:
        return lines + ["No start-up results.", ""] + warm_search_lines(warm)
    path, d = files[-1]
    lines += [
        "Wall time of a fresh process with the default model in the CLI's dtype, on a warm OS page "
        f"cache: `search` until its results are printed (`--server`: with a `serve` of the same "
        "model already running, which encodes the query), `serve` until the first `POST /v1/embeddings` "
        f"answers 200 on 127.0.0.1. Query {d.get('query', '?')!r}; index `{d.get('index', '?')}`; "
        f"scheduling: {d.get('autogroup') or 'not recorded'}. Other processes share the machine: the "
        "load average before each run is in the file; CPU s (user + system of the process) is what "
        "they change least.",
        "",
    ]
    rows, used = [], []
    for state, label in STARTUP_STATES:
        for cmd in ("search", "search_lexical", "search_server", "serve"):
            found = next(
                (
                    (i, f[1]["results"][f"{cmd}_{state}"])
                    for i, f in reversed(list(enumerate(files)))
                    if isinstance((f[1].get("results") or {}).get(f"{cmd}_{state}"), dict)
                ),
                None,
            )
            if found is None:
                continue
            i, r = found
            if i not in used:
                used.append(i)
            runs = r.get("runs") or [r]
            loads = [x.get("loadavg_before", [None])[0] for x in runs if isinstance(x, dict)]
            loads = [x for x in loads if isinstance(x, (int, float))]
            rows.append(
                [
                    STARTUP_COMMANDS.get(cmd, cmd),
                    STARTUP_NOTES.get(cmd, label),
                    len(runs),
                    _fmt(r.get("median_s", r.get("seconds")), ".2f"),
                    _fmt(r.get("min_s", r.get("seconds")), ".2f"),
                    _fmt(r.get("max_s", r.get("seconds")), ".2f"),
                    _fmt(r.get("median_cpu_s", r.get("cpu_s")), ".2f"),
                    f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-",
                    f"`{files[i][0].name}`",
                ]
            )
    for i in sorted(used, reverse=True):
        lines += [source_line(*files[i]), ""]
    lines += _table(
        [
            "command",
            "cache",
            "runs",
            "median s",
            "min s",
            "max s",
            "median CPU s",
            "load avg (1 min)",
            "file",
        ],
        rows,
    )
    lines.append("")
    phases = d.get("phases_warm")
    if isinstance(phases, dict) and phases:
        lines += [
            f"Where a warm start's seconds go (one process, `phases_warm` in `{path.name}`):",
            "",
        ]
        lines += _table(["phase", "s"], [[k, _fmt(v, ".2f")] for k, v in phases.items()])
        lines.append("")
    rest = [p.name for i, (p, _) in enumerate(files) if i not in used]
    if rest:
        lines += ["Earlier start-up runs: " + ", ".join(f"`{n}`" for n in rest), ""]
    return lines + warm_search_lines(warm)


# ------------------------------------------------------------------------- dtype per CPU
def _flags(machine: dict | None) -> str:
    flags = (machine or {}).get("cpu_flags") or []
    shown = [f for f in KEY_CPU_FLAGS if f in flags]
    return " ".join(shown) if shown else "not recorded"


def dtype_section(dtype_files, speed_files, quality_files, base: Path) -> list[str]:
    """What `--dtype auto` picks per CPU, why (fp32 vs bf16 speed per CPU), and the quality
    check (the shipped default in bf16 vs fp32 on the full test sets)."""
    lines = [
        "## Compute dtype per CPU (`--dtype auto`)",
        "",
        "`auto` encodes in bfloat16 where the CPU has `avx512_bf16` or `amx_bf16` (x86) or the "
        "`bf16` feature (ARM), else in float32 (`llm2vec_retrieval/hardware.py`). Speed: our "
        "encoder, the same documents in both dtypes, tokens/s (median of interleaved repeats).",
        "",
    ]
    rows, cited = [], []
    if dtype_files:
        path, d = dtype_files[-1]
        cited.append((path, d))
        for r in d.get("rows") or []:
            tps = r.get("tokens_per_s") or {}
            cos = (r.get("bf16_vs_fp32_cosine") or {}).get("min")
            where = (
                "this CPU as it is"
                if r.get("isa") == "native"
                else (
                    "capped to AVX2 ("
                    + " ".join(f"{k}={v}" for k, v in (r.get("env") or {}).items())
                    + ")"
                )
            )
            rows.append(
                [
                    f"{(d.get('machine') or {}).get('cpu_model', '?')}: {where}, "
                    f"{d.get('documents', '?')} documents",
                    " ".join(r.get("bf16_flags") or []) or "none",
                    r.get("auto_picks", "-"),
                    _fmt(tps.get("float32"), ".0f"),
                    _fmt(tps.get("bfloat16"), ".0f"),
                    "x" + _fmt(r.get("bf16_speed_vs_fp32"), ".2f"),
                    _fmt(cos, ".5f"),
                    f"`{path.name}`",
                ]
            )
    by_cpu: dict[str, tuple[dict, Path, dict]] = {}
    for path, d in speed_files:  # oldest first: a newer run with both dtypes wins
        m = d.get("machine") or {}
        ours = {
            r["dtype"]: r.get("tokens_per_s")
            for r in d.get("results") or []
            if isinstance(r, dict) and r.get("impl") == "ours" and r.get("dtype")
        }
        if {"float32", "bfloat16"} <= set(ours):
            by_cpu[f"{m.get('cpu_model', '?')} ({_flags(m)})"] = (ours, path, d)
    for key, (ours, path, d) in by_cpu.items():
        fp32, bf16 = ours["float32"], ours["bfloat16"]
        cited.append((path, d))
        bf16_flags = [f for f in ("avx512_bf16", "amx_bf16") if f in key]
        rows.append(
            [
                f"{key.split(' (')[0]} (speed benchmark, {d.get('data', {}).get('n_docs', 32)} documents)",
                " ".join(bf16_flags) or "none",
                "bfloat16" if bf16_flags else "float32",
                _fmt(fp32, ".0f"),
                _fmt(bf16, ".0f"),
                "x" + _fmt(bf16 / fp32 if fp32 and bf16 else None, ".2f"),
                "-",
                f"`{path.name}`",
            ]
        )
    if not rows:
        lines += ["No dtype results.", ""]
    else:
        lines += _table(
            [
                "CPU",
                "native bf16 flags",
                "auto picks",
                "fp32 tokens/s",
                "bf16 tokens/s",
                "bf16 speed vs fp32",
                "min cosine bf16/fp32",
                "file",
            ],
            rows,
        )
        lines.append("")
    # quality: the shipped default in both dtypes on the full sets (newest of each)
    found: dict[tuple[str, str], tuple[float, Path, dict]] = {}
    for r in quality_rows(quality_files):
        if r["base_model"] != "ours" or r["subset"] != "full":
            continue
        dtype = (r["data"].get("options") or {}).get("dtype")
        metric = "ndcg@10" if r["task"] == "scifact" else "spearman"
        value = (r["result"].get("metrics") or {}).get(metric)
        if dtype and isinstance(value, (int, float)):
            value = value * 100 if metric == "ndcg@10" else value
            found[(r["task"], dtype)] = (value, r["path"], r["data"])
    qrows = []
    for task, label in (("scifact", "SciFact nDCG@10 x100"), ("stsb", "STS-B Spearman x100")):
        a, b = found.get((task, "float32")), found.get((task, "bfloat16"))
        if not (a and b):
            continue
        delta = b[0] - a[0]
        for item in (a, b):
            if (item[1], item[2]) not in cited:
                cited.append((item[1], item[2]))
        qrows.append(
            [
                label,
                f"{a[0]:.2f}",
                f"{b[0]:.2f}",
                f"{delta:+.2f}",
                "ok" if abs(delta) <= 0.3 else "fails",
                f"`{a[1].name}`, `{b[1].name}`",
            ]
        )
    if qrows:
        lines += [
            "Quality check: the shipped default on the full test sets in both dtypes; bf16 must "
            "stay within 0.3 points of fp32.",
            "",
        ]
        lines += _table(
            ["metric", "float32", "bfloat16", "bf16 - fp32", "within 0.3", "files"], qrows
        )
        lines.append("")
    for path, d in cited:
        lines += [source_line(path, d), ""]
    return lines


# ---------------------------------------------------------------------------------- main
def build_report(results_dir: Path, output: Path, plots_dir: Path) -> str:
    found, skipped = load_results(results_dir)
    plots = make_plots(found, plots_dir)
    base = output.parent
    n_files = sum(len(v) for v in found.values())
    lines = [
        "# Benchmark results",
        "",
        "<!-- Generated by benchmarks/report.py: do not edit by hand; re-run `python -m benchmarks.report`. -->",
        "",
        "Generated by `python -m benchmarks.report` (the same files give the same bytes) from "
        f"{n_files} result file(s) in `{_rel(results_dir, base)}/`. Every table names the file and the command that "
        "produced it and the machine it ran on; compare numbers only between runs on the same machine.",
        "",
    ]
    lines += main_job_section(found["quality"], base, plots)
    lines += fusion_select_section(found["fusion_select"])
    lines += hybrid_dev_section(found["hybrid_dev"], base)
    lines += train_default_section(found["train_default"], base)
    lines += quality_section(found["quality"], base, plots)
    lines += dtype_section(found["dtype_cpu"], found["speed"], found["quality"], base)
    lines += speed_section(found["speed"], base, plots)
    lines += cpu_backends_section(found["cpu_backends"])
    lines += gpu_section(found["gpu"], base)
    lines += int8_section(found["int8"], base)
    lines += index_section(found["index"], base)
    lines += server_section(found["server"], base)
    lines += startup_section(found["startup"], base)
    lines += capacity.section(found["capacity"])
    lines += train_section(found["train"], base, plots, found["quality"])
    if skipped:
        lines += ["## Skipped files", ""] + [f"- `{name}`: {why}" for name, why in skipped] + [""]
    text = "\n".join(lines).rstrip() + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.report", description=(__doc__ or "").split("\n")[0]
    )
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--output", type=Path, default=None, help="markdown path (default benchmarks/RESULTS.md)"
    )
    p.add_argument(
        "--plots-dir", type=Path, default=None, help="PNG folder (default <results-dir>/plots)"
    )
    args = p.parse_args(argv)
    output = args.output or (
        OUTPUT
        if args.results_dir.resolve() == RESULTS_DIR.resolve()
        else args.results_dir / "RESULTS.md"
    )
    plots_dir = args.plots_dir or args.results_dir / "plots"
    build_report(args.results_dir, output, plots_dir)
    print(f"wrote {output} (plots in {plots_dir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
