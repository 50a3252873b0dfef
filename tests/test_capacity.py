"""The capacity benchmark (benchmarks/capacity.py): its derived plan, its report section and docs
block, and an end-to-end run on a few hundred chunks with the real CLI and a tiny model."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import capacity

SENTENCES = [
    "Rivers carry sediment from the mountains down to the sea.",
    "A vaccine trains the immune system to recognise a virus.",
    "The committee met in February to discuss the new railway line.",
    "Proteins fold into shapes that decide what they can do in a cell.",
    "Farmers in the valley planted wheat after the long dry winter.",
    "The orchestra played the symphony twice on the same evening.",
]


def _run(n, kind, build_s, rss_mb, disk, cpu_s, commit_s, open_rss_mb, cli_lex):
    return {
        "build": {
            "status": "ok",
            "wall_s": build_s,
            "cpu_s": cpu_s,
            "peak_rss_mb": rss_mb,
            "disk_bytes": disk,
            "index_report": {"chunks": n},
        },
        "commit": {"status": "ok", "wall_s": commit_s, "cpu_s": commit_s / 2},
        "open_lexical": {"status": "ok", "peak_rss_mb": open_rss_mb, "child": {"open_s": 0.5}},
        "cli_search": {
            "status": "ok",
            "modes": {
                "lexical": {
                    "wall_p50_s": cli_lex,
                    "runs": [{"status": "ok", "wall_s": cli_lex, "cpu_s": cli_lex / 4}],
                }
            },
        },
    }


def test_capacity_plan_by_hand():
    data = {
        "options": {"dim": 32},
        "runs": {
            "10000": {"flat": _run(10_000, "flat", 10.0, 400.0, 5e6, 20.0, 2.0, 300.0, 1.0)},
            "100000": {"flat": _run(100_000, "flat", 100.0, 490.0, 50e6, 200.0, 20.0, 390.0, 10.0)},
            "1000000": {"flat": {"build": {"status": "timeout", "note": "did not finish"}}},
        },
        "shards": {
            "10000": {"status": "ok", "cpu_s": 15.0},
            "100000": {"status": "ok", "cpu_s": 105.0},
        },
    }
    plan = capacity.capacity_plan(data, dim=640)
    assert list(plan) == ["flat"]  # the timed-out size is not a finished run
    p = plan["flat"]
    assert p["from_sizes"] == [10_000, 100_000]
    # marginal: (50e6 - 5e6) / 90,000 = 500 bytes a chunk on disk
    assert p["disk_bytes_per_chunk"] == 500.0
    assert p["chunks_per_gb_disk"] == 2_000_000
    # RAM: 90 MiB over 90,000 chunks = 1,048.576 bytes a chunk
    assert p["build_ram_bytes_per_chunk"] == pytest.approx(1048.6, abs=0.1)
    assert p["chunks_per_gb_ram_build"] == int(1e9 / (90 * 2**20 / 90_000))
    # CPU: 180 s over 90,000 chunks = 2 ms a chunk = 1.8M chunks per core-hour
    assert p["chunks_per_core_hour"] == 1_800_000
    # writing the shards (read, hash, chunk): 90 s over 90,000 chunks
    assert p["chunks_per_core_hour_chunking"] == 3_600_000
    # 640 dims: 4 x (640 - 32) = 2,432 more bytes a chunk
    assert p["dim640"]["extra_bytes_per_chunk"] == 2432
    assert p["dim640"]["chunks_per_gb_disk"] == int(1e9 / (500 + 2432))
    # linear growth extrapolates linearly: x10 at 1M
    assert p["estimate_1m"]["build_wall_s"] == pytest.approx(1000.0)
    assert p["estimate_1m"]["commit_wall_s"] == pytest.approx(200.0)
    assert p["estimate_1m"]["cli_lexical_wall_s"] == pytest.approx(100.0)
    assert p["estimate_1m"]["build_cpu_s"] == pytest.approx(2000.0)
    assert p["estimate_1m"]["commit_cpu_s"] == pytest.approx(100.0)
    assert p["estimate_1m"]["cli_lexical_cpu_s"] == pytest.approx(25.0)
    steps = p["estimate_1m"]["steps_wall_s"]
    assert steps["build"] == pytest.approx(1000.0) and steps["cli_search"] == pytest.approx(100.0)
    assert steps["open_full"] is None and "run_wall_s" not in p["estimate_1m"]  # not measured


def test_extrapolate_superlinear_as_power_else_fixed_plus_per_chunk():
    # a cost that grows as n^2 between the points is extrapolated as n^2
    assert capacity._extrapolate([(10, 1.0), (100, 100.0)], 1000) == pytest.approx(10_000.0)
    # one that grew less than the size: a fixed part plus 1/90 a chunk
    assert capacity._extrapolate([(10, 1.0), (100, 2.0)], 1000) == pytest.approx(12.0)
    # linear growth stays linear; a cost that fell (noise) stays where it is
    assert capacity._extrapolate([(10, 1.0), (100, 10.0)], 1000) == pytest.approx(100.0)
    assert capacity._extrapolate([(10, 3.0), (100, 2.0)], 1000) == pytest.approx(2.0)
    assert capacity._extrapolate([(10, 1.0)], 1000) is None


def test_percentiles_nearest_rank():
    values = [i / 1000 for i in range(1, 101)]  # 1..100 ms
    p = capacity.percentiles(values)
    assert p["n"] == 100 and p["p50_ms"] == 50.5 and p["p99_ms"] == 99.0 and p["max_ms"] == 100.0
    assert capacity.percentiles([0.002])["p99_ms"] == 2.0


def test_write_corpus_is_deterministic_and_complete(tmp_path):
    a = capacity.write_corpus(tmp_path / "a", 25, 10, SENTENCES, seed=3)
    assert capacity.write_corpus(tmp_path / "b", 25, 10, SENTENCES, seed=3) == a
    assert a["records"] == 25 and a["files"] == 3
    files = sorted(p.name for p in (tmp_path / "a").glob("*.jsonl"))
    assert files == ["part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"]
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    records = [
        json.loads(line)
        for name in files
        for line in (tmp_path / "a" / name).read_text().splitlines()
    ]
    assert [r["id"] for r in records] == list(range(25))
    assert all(r["text"].split(". ")[0].rstrip(".") + "." in SENTENCES for r in records)
    # a finished corpus is reused, never rewritten
    (tmp_path / "a" / "part-00000.jsonl").write_text("changed")
    assert capacity.write_corpus(tmp_path / "a", 25, 10, SENTENCES, seed=3) == a
    assert (tmp_path / "a" / "part-00000.jsonl").read_text() == "changed"


@pytest.mark.slow  # subprocesses (index, search, open): tens of seconds on a busy machine
def test_capacity_end_to_end_tiny(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("\n".join(SENTENCES * 5) + "\n")
    out = tmp_path / "capacity.json"
    argv = ["--sizes", "200", "--kinds", "flat", "--queries", "4", "--cli-repeats", "1"]
    argv += ["--cli-modes", "lexical", "--records-per-file", "50", "--sentences", str(sentences)]
    argv += ["--work-dir", str(tmp_path / "work"), "--output", str(out), "--label", "smoke"]
    assert capacity.main(argv) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "capacity" and data["command"].startswith(
        "python -m benchmarks.capacity --sizes 200"
    )
    assert "avx2" in data["machine"]["cpu_flags"] or data["machine"]["cpu_flags"] is not None
    assert len(data["machine"]["loadavg_at_start"]) == 3
    assert data["code"]["label"] == "smoke" and data["finished"]
    steps = data["runs"]["200"]["flat"]
    assert {s: v["status"] for s, v in steps.items()} == dict.fromkeys(capacity.STEPS, "ok")
    shards = data["shards"]["200"]
    assert shards["status"] == "ok" and shards["child"]["chunks_written"] == 200
    build = steps["build"]
    assert build["method"] == "index-from-shards" and build["index_report"]["chunks"] == 200
    assert build["disk_bytes"] > 200 * 32 * 4  # at least the vectors
    assert 50 < build["peak_rss_mb"] <= build["maxrss_wait4_mb"]
    assert build["cpu_s"] > 0 and len(build["loadavg_before"]) == 3
    commit = steps["commit"]
    assert commit["index_report"]["chunks_added"] == 1 and commit["index_report"]["chunks"] == 201
    assert commit["disk_bytes_after"] > commit["disk_bytes_before"]
    lex = steps["open_lexical"]["child"]
    assert lex["open_s"] > 0 and lex["search"]["lexical"]["n"] == 4
    full = steps["open_full"]["child"]
    assert full["model_load_s"] > 0 and full["open_s"] > 0
    assert {m: full["search"][m]["n"] for m in capacity.MODES} == dict.fromkeys(capacity.MODES, 4)
    run = steps["cli_search"]["modes"]["lexical"]["runs"][0]
    assert run["status"] == "ok" and run["hits"] > 0 and run["wall_s"] > 0
    assert data["plan"]["flat"]["chunks_per_gb_disk"] > 0
    assert out.with_suffix(".png").stat().st_size > 0
    section = "\n".join(capacity.section([(out, data)]))
    assert "| flat | 200 |" in section and "![capacity](" in section

    # a second run in the same work dir keeps every finished step (resumable) ...
    out2 = tmp_path / "again.json"
    assert capacity.main([*argv[:-4], "--output", str(out2), "--label", "smoke"]) == 0
    again = json.loads(out2.read_text())["runs"]["200"]["flat"]
    assert again["build"]["wall_s"] == build["wall_s"]
    assert len(json.loads(out2.read_text())["sittings"]) == 2

    # ... and a step past its cap is recorded as such, the steps that need it as skipped
    # (here a build through `index`, which encodes with the tiny model)
    out3 = tmp_path / "capped.json"
    capped = [
        "--sizes",
        "300",
        "--kinds",
        "flat",
        "--build",
        "index",
        "--sentences",
        str(sentences),
    ]
    capped += ["--work-dir", str(tmp_path / "work"), "--output", str(out3)]
    assert capacity.main([*capped, "--max-seconds-per-step", "0.5"]) == 0
    steps = json.loads(out3.read_text())["runs"]["300"]["flat"]
    assert steps["build"]["status"] == "timeout" and steps["build"]["method"] == "index"
    assert steps["build"]["note"].startswith("did not finish within 0.5 s")
    assert (
        steps["commit"]["status"] == "skipped" and "build did not finish" in steps["commit"]["note"]
    )


def test_render_docs_replaces_only_the_marked_block(tmp_path, monkeypatch):
    data = {
        "started": "2026-12-07T22:00:00",
        "command": "python -m benchmarks.capacity",
        "machine": {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx2"]},
        "code": {"git_commit": "abcdef0123", "label": "before the segmented index"},
        "options": {"dim": 32, "threads": 2, "queries": 50, "cli_repeats": 3},
        "runs": {
            "10000": {"flat": _run(10_000, "flat", 10.0, 400.0, 5e6, 20.0, 2.0, 300.0, 1.0)},
            "100000": {"flat": _run(100_000, "flat", 100.0, 490.0, 50e6, 200.0, 20.0, 390.0, 10.0)},
        },
    }
    results = tmp_path / "capacity_20261207-220000.json"
    results.write_text(json.dumps(data))
    docs = tmp_path / "scale.md"
    docs.write_text(
        f"# Title\n\nbefore\n\n{capacity.DOCS_BEGIN}\nold\n{capacity.DOCS_END}\n\nafter\n"
    )
    capacity.render_docs(results, docs)
    text = docs.read_text()
    assert text.startswith("# Title\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "old" not in text and "capacity_20261207-220000.json" in text
    assert "before the segmented index" in text and "`abcdef0`" in text
    assert "| flat | 100,000 | 100.0 (200.0) |" in text  # wall (CPU) seconds
    assert "flat: adding one file took 1.0 CPU s (2.0 s wall) at 10,000 chunks" in text
    assert "x10.00 in CPU time, growing with the index" in text
    assert "| flat | 10,000, 100,000 | 500.0 |" in text  # the plan row: 500 disk bytes a chunk
    docs.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="no capacity markers"):
        capacity.render_docs(results, docs)


def test_report_calls_the_capacity_section(tmp_path):
    from benchmarks import report

    data = {
        "benchmark": "capacity",
        "started": "2026-12-07T22:00:00",
        "command": "python -m benchmarks.capacity",
        "machine": {"cpu_model": "Test CPU"},
        "options": {"dim": 32},
        "runs": {"10000": {"flat": _run(10_000, "flat", 10.0, 400.0, 5e6, 20.0, 2.0, 300.0, 1.0)}},
    }
    (tmp_path / "capacity_20261207-220000.json").write_text(json.dumps(data))
    text = report.build_report(tmp_path, tmp_path / "RESULTS.md", tmp_path / "plots")
    assert "## Capacity of one index" in text and "| flat | 10,000 | 10.0 (20.0) |" in text
    assert "capacity_20261207-220000.json" in text and "Skipped files" not in text


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
