"""One spelling across the command line (issue 25): `--version`; an index folder is
`--index DIR` on every command (the old positional form still works, with one `deprecated:`
line); an output folder is `--output DIR` (`--out` a hidden alias); the global flags may
follow the command; `--json` on every command that prints a result, with the shapes
docs/cli.md documents. In-process `cli.main` on a tiny random model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from llm2vec_retrieval import __version__, cli
from llm2vec_retrieval.testing import make_small_corpus

pytest.importorskip("faiss")

# commands that print no result a script would parse: a demo, a server, the training
# commands (a trained or exported folder; training/cli.py)
NO_JSON = {"demo", "serve", "train", "export", "combine"}


def leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser, nested ones as "eval beir", "train mntp", "cache info"."""
    out: dict[str, argparse.ArgumentParser] = {}

    def walk(action: argparse.Action, prefix: str) -> None:
        for name, parser in action.choices.items():  # type: ignore[union-attr]
            below = getattr(parser, "subcommands", None)
            if below is None:
                out[prefix + name] = parser
            else:
                walk(below, prefix + name + " ")

    top = cli.build_parser()
    # argparse has no public list of a parser's actions (docgen.cli_defaults reads it too)
    walk(next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)), "")
    return out


def options(parser: argparse.ArgumentParser, hidden: bool = False) -> set[str]:
    return {
        o
        for a in parser._actions
        for o in a.option_strings
        if hidden or a.help is not argparse.SUPPRESS
    }


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def indexed(tiny_llama, tmp_path_factory):
    root = tmp_path_factory.mktemp("consistency")
    corpus = make_small_corpus(root)
    idx = root / "idx"
    args = ["index", str(corpus), "--index", str(idx), "--model", tiny_llama, "--root", str(root)]
    assert cli.main([*args, "--chunk-tokens", "24", "--overlap", "4", "--dtype", "float32"]) == 0
    return root, corpus, idx


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"llm2vec-retrieval {__version__}"


def test_every_command_names_its_index_folder_with_index():
    parsers = leaf_parsers()
    for name in ("index", "search", "info", "index-from-shards", "serve", "demo"):
        assert "--index" in options(parsers[name]), name
    # no visible positional argument is an index folder any more
    for name, parser in parsers.items():
        for a in parser._actions:
            if not a.option_strings and a.help is not argparse.SUPPRESS:
                assert a.metavar not in ("DIR", "INDEX") or name.startswith("eval"), name


def test_search_and_info_take_index_and_keep_the_old_form(indexed, capsys):
    _, _, idx = indexed
    lexical = ["--mode", "lexical"]  # loads no model: the parsing is what is tested
    rc, new, err = run(
        capsys, "search", "--index", str(idx), "rivers", "-k", "3", "--json", *lexical
    )
    assert rc == 0 and "deprecated" not in err and json.loads(new)["results"]
    # options anywhere: after the query, before it, between the old positionals
    for args in (
        ["search", "rivers", "-k", "3", "--json", *lexical, "--index", str(idx)],
        ["search", "-k", "3", "--index", str(idx), *lexical, "--json", "rivers"],
    ):
        rc, out, err = run(capsys, *args)
        assert rc == 0 and json.loads(out) == json.loads(new) and "deprecated" not in err
    for args in (
        ["search", str(idx), "rivers", "-k", "3", "--json", *lexical],
        ["search", str(idx), "-k", "3", *lexical, "--json", "rivers"],
    ):
        rc, old, err = run(capsys, *args)
        assert rc == 0 and json.loads(old) == json.loads(new)
        assert err.splitlines() == [
            "deprecated: `search DIR QUERY` (the index folder as a positional argument); use "
            "`search --index DIR QUERY` (the old form will be removed in a later version)"
        ]
    rc, info_new, err = run(capsys, "info", "--index", str(idx), "--json")
    assert rc == 0 and err == "" and json.loads(info_new)["chunks"] > 0
    rc, info_old, err = run(capsys, "info", str(idx), "--json")
    assert rc == 0 and info_old == info_new and err.startswith("deprecated: `info DIR`")
    assert len(err.splitlines()) == 1


def test_index_folder_given_wrong_is_one_line(indexed, capsys):
    _, _, idx = indexed
    for args, says in (
        (["search", "rivers"], "search needs the index folder: usage: search --index DIR QUERY"),
        (["search", "--index", str(idx)], "search needs QUERY: usage: search --index DIR QUERY"),
        (["search", "--index", str(idx), str(idx), "rivers"], "unexpected argument(s)"),
        (["info"], "info needs the index folder: usage: info --index DIR"),
        (["index-from-shards", "--index", str(idx)], "index-from-shards needs SHARDS"),
    ):
        rc, _, err = run(capsys, *args)
        assert rc == 2 and err.startswith("error: ") and says in err, (args, err)
        assert len(err.splitlines()) == 1


def write_shards(idx: Path, out: Path) -> None:
    """What encode-corpus would write for the index `idx`: one shard of its chunks."""
    from llm2vec_retrieval.index import IndexStore
    from llm2vec_retrieval.ingest import IndexFolder
    from llm2vec_retrieval.shards import ShardWriter, shard_name

    pytest.importorskip("pyarrow")
    folder = IndexFolder(idx)
    manifest, files = folder.read_manifest(), folder.read_files()
    store = IndexStore.load(folder.store_path)
    recs = store.get(store.ids)
    header = {
        "embedder": manifest["embedder"],
        "fingerprint": store.fingerprint,
        "dimension": store.dim,
        "chunking": manifest["chunking"],
        "query_instruction": manifest["query_instruction"],
        "source_root": manifest["root"],
    }
    sources = sorted(files)
    with ShardWriter(out, header) as w:
        w.write(
            shard_name(sources),
            {s: {k: files[s][k] for k in ("sha256", "chunks", "bytes", "tokens")} for s in sources},
            [r.id for r in recs],
            [r.text for r in recs],
            [r.metadata for r in recs],
            np.stack([r.vector for r in recs]),
            position=0,
        )


def test_index_from_shards_takes_index_and_prints_json(indexed, tmp_path, capsys):
    _, _, idx = indexed
    shards = tmp_path / "shards"
    write_shards(idx, shards)
    chunks = json.loads(run(capsys, "info", "--index", str(idx), "--json")[1])["chunks"]
    rc, out, err = run(
        capsys, "index-from-shards", str(shards), "--index", str(tmp_path / "a"), "--json"
    )
    assert rc == 0 and "deprecated" not in err
    assert json.loads(out) == {
        "index": str((tmp_path / "a").resolve()),
        "shards": str(shards),
        "kind": "flat",
        "lexical": True,
        "files": 4,
        "chunks": chunks,
    }
    rc, out, err = run(capsys, "index-from-shards", str(shards), str(tmp_path / "b"))
    assert rc == 0 and f"index {(tmp_path / 'b').resolve()}: 4 files, {chunks} chunks" in out
    assert err.startswith("deprecated: `index-from-shards SHARDS DIR`")
    assert "use `index-from-shards SHARDS --index DIR`" in err


def test_index_prints_json(indexed, tmp_path, capsys, tiny_llama):
    root, corpus, _ = indexed
    args = ["index", str(corpus), "--index", str(tmp_path / "j"), "--model", tiny_llama]
    args += ["--root", str(root), "--chunk-tokens", "24", "--overlap", "4", "--json"]
    rc, out, _ = run(capsys, *args)
    first = json.loads(out)
    assert rc == 0 and first["index"] == str((tmp_path / "j").resolve())
    assert sorted(first["indexed"]) == sorted(
        p.relative_to(root).as_posix() for p in corpus.rglob("*") if p.is_file()
    )
    assert first["files"] == 4 and first["chunks"] == first["chunks_added"] > 0
    assert first["unchanged"] == 0 and first["removed"] == [] and first["skipped"] == []
    assert first["commits"] >= 1 and first["tokens"] > 0 and first["model"]
    rc, out, _ = run(capsys, *args)  # nothing changed
    again = json.loads(out)
    assert again["indexed"] == [] and again["unchanged"] == 4 and again["chunks_added"] == 0
    assert set(again) == {
        "index",
        "model",
        "indexed",
        "unchanged",
        "removed",
        "skipped",
        "notes",
        "chunks_added",
        "tokens",
        "commits",
        "seconds",
        "files",
        "chunks",
    }


def test_load_shards_prints_json(indexed, tmp_path, capsys):
    pytest.importorskip("lancedb")
    _, _, idx = indexed
    shards = tmp_path / "shards"
    write_shards(idx, shards)
    target = f"lancedb://{tmp_path / 'lance'}"
    rc, out, _ = run(capsys, "load-shards", str(shards), target, "--collection", "c", "--json")
    data = json.loads(out)
    assert rc == 0 and data["collection"] == "c" and data["rows"] == data["count"] > 0
    assert set(data) == {"target", "collection", "rows", "count", "seconds", "text_keys"}


def test_every_result_printing_command_has_json():
    missing = [
        name
        for name, parser in leaf_parsers().items()
        if name.split()[0] not in NO_JSON and "--json" not in options(parser)
    ]
    assert missing == []


def test_one_output_flag_spelling():
    parsers = leaf_parsers()
    for name in ("encode-corpus", "export", "combine", "train mntp", "train simcse"):
        assert {"--output", "-o"} <= options(parsers[name]), name
    for name, parser in parsers.items():
        assert "--out" not in options(parser), name  # visible nowhere


def test_out_is_a_deprecated_alias_of_output(capsys):
    args = cli.build_parser().parse_args(["encode-corpus", "corpus/", "--out", "shards/"])
    assert args.output == "shards/"
    assert capsys.readouterr().err.splitlines() == [
        "deprecated: --out; use --output DIR (the old form will be removed in a later version)"
    ]
    args = cli.build_parser().parse_args(["encode-corpus", "corpus/", "-o", "shards/"])
    assert args.output == "shards/" and capsys.readouterr().err == ""


def test_encode_corpus_without_output_is_one_line(capsys):
    rc, _, err = run(capsys, "encode-corpus", "corpus/")
    assert rc == 2 and err == "error: encode-corpus needs --output DIR (the shard folder)\n"


def test_global_flags_after_the_command(tmp_path, capsys):
    parse = cli.build_parser().parse_args
    for argv in (
        ["--debug", "--threads", "2", "info", "--index", "x"],
        ["info", "--index", "x", "--debug", "--threads", "2"],
        ["cache", "info", "--debug", "--threads", "2"],
        ["eval", "sts", "f.csv", "--threads", "2", "--debug"],
        ["train", "mntp", "--debug", "--threads", "2"],
    ):
        args = parse(argv)
        assert (args.debug, args.threads) == (True, 2), argv
    # given before the command and not after: the value before wins
    assert parse(["--debug", "info", "--index", "x"]).debug is True
    assert parse(["info", "--index", "x"]).debug is False
    # --debug after the command raises the exception as --debug before it does
    from llm2vec_retrieval.ingest import IndexFolderError

    missing = str(tmp_path / "missing")
    with pytest.raises(IndexFolderError):
        cli.main(["info", "--index", missing, "--debug"])
    rc, _, err = run(capsys, "info", "--index", missing)
    assert rc == 2 and err.startswith("error: index folder not found")
