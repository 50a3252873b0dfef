"""Command-line registration of `train`, `export` and `combine`.

    register(subparsers)   # adds: train {mntp,simcse,supervised} ..., export ..., combine ...

Every config key is a flag (`max_steps` -> `--max-steps`, booleans as `--bf16/--no-bf16`);
`--config FILE` (JSON or YAML) holds any of them; flags given on the command line override the
file; unknown keys in the file are an error that lists the valid keys. Handlers return an int
exit code and raise `llm2vec_retrieval.errors.UserError`s (`InvalidInputError`,
`MissingInputError`, `MissingExtraError`) with one-line messages for user errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from ..hardware import WEIGHT_DTYPES
from .config import STAGES, TrainConfig, build_config, config_class

_ALIASES = {"lr": ["--learning-rate"], "data": [], "output": ["-o"]}


def _field_types(cls) -> dict:
    return typing.get_type_hints(cls)


def _add_config_flags(parser: argparse.ArgumentParser, cls) -> None:
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        names = [flag, *_ALIASES.get(f.name, [])]
        if f.name == "init_adapter":
            names.append("--init-adapters")
        hint = hints[f.name]
        origin = typing.get_origin(hint)
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        kw: dict = {
            "dest": f.name,
            "default": argparse.SUPPRESS,
            "help": cls.help_of(f.name) + _default_text(f),
        }
        if hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin is list:
            kw["nargs"] = "+"
            kw["metavar"] = f.name.upper()
        else:
            base = args[0] if args else hint
            optional = type(None) in typing.get_args(hint)
            if base is float and optional:
                kw["type"] = _optional_float
            elif base in (int, float):
                kw["type"] = base
            else:
                kw["metavar"] = f.name.upper()
        parser.add_argument(*names, **kw)


def _optional_float(text: str):
    return None if text.lower() in ("none", "null") else float(text)


def _default_text(f) -> str:
    if f.default is not dataclasses.MISSING:
        return f" (default: {f.default})"
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return f" (default: {' '.join(map(str, value)) if value else 'none'})"
    return ""


def register(subparsers: Any) -> None:
    """Add the `train`, `export` and `combine` subcommands to an argparse subparsers object."""
    train = subparsers.add_parser(
        "train",
        help="train an LLM2Vec stage (MNTP, SimCSE, supervised) with LoRA",
        description="Train one LLM2Vec stage. Each stage can start from the previous one with --init-adapter.",
    )
    stages = train.add_subparsers(dest="stage", required=True, metavar="{" + ",".join(STAGES) + "}")
    for stage in STAGES:
        cls = config_class(stage)
        p = stages.add_parser(stage, help=(cls.__doc__ or "").strip().splitlines()[0])
        p.add_argument(
            "--config",
            dest="config_file",
            default=None,
            metavar="FILE",
            help="JSON or YAML file with any of the settings below (flags override it)",
        )
        _add_config_flags(p, cls)
        _add_json_flag(p)
        p.set_defaults(func=cmd_train, train_stage=stage)

    export = subparsers.add_parser(
        "export",
        help="merge adapters into the base and write a standalone bidirectional checkpoint",
        description="Merge LoRA adapters (in order) into the base model and save a stock transformers "
        "checkpoint with is_causal=false, the tokenizer, encoder configs and sentence-transformers files.",
    )
    export.add_argument(
        "--model",
        default=None,
        help="base model folder or embedded name (default: gemma3-270m, the default model's untrained base)",
    )
    export.add_argument(
        "--adapter",
        nargs="+",
        required=True,
        metavar="DIR",
        help="adapter folder(s), merged in order (e.g. the MNTP output, then the SimCSE output)",
    )
    export.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    export.add_argument(
        "--dtype",
        default="float32",
        choices=WEIGHT_DTYPES,
        help="saved weight dtype",
    )
    export.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder"
    )
    _add_json_flag(export)
    export.set_defaults(func=cmd_export)

    combine = subparsers.add_parser(
        "combine",
        help="fold a chain of stage adapters into one LoRA adapter (exact, or truncated to --rank)",
        description="Sum the updates of adapters trained one on top of the other (MNTP, SimCSE, supervised) "
        "into a single official-layout adapter: exact (rank = sum of ranks) or the best rank-R approximation.",
    )
    combine.add_argument(
        "--adapter",
        nargs="+",
        required=True,
        metavar="DIR",
        help="adapter folders, in training order",
    )
    combine.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder")
    combine.add_argument(
        "--rank", type=int, default=None, help="target rank (default: exact, the sum of the ranks)"
    )
    combine.add_argument(
        "--dtype",
        default="float32",
        choices=WEIGHT_DTYPES,
        help="saved weight dtype",
    )
    combine.add_argument(
        "--base-model",
        default=None,
        help="base model to record in adapter_config.json (default: the first adapter's)",
    )
    combine.add_argument(
        "--overwrite", action="store_true", help="replace a non-empty output folder"
    )
    _add_json_flag(combine)
    combine.set_defaults(func=cmd_combine)


def _add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON document on stdout"
    )


def _report(args: argparse.Namespace, data: dict[str, Any], line: str) -> None:
    """What a command prints at its end: ``line``, or ``data`` as JSON with --json."""
    if getattr(args, "json", False):
        import json

        print(json.dumps(data, ensure_ascii=False, indent=2, default=str))
    else:
        print(line)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cls = config_class(args.train_stage)
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)
    }
    return build_config(args.train_stage, args.config_file, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = config_from_args(args)
    result = train(cfg)
    loss = f"{result.loss:.4f}" if result.loss is not None else "n/a"
    data = {
        "stage": cfg.stage,
        "step": result.step,
        "max_steps": cfg.max_steps,
        "loss": result.loss,
        "output_dir": str(result.output_dir),
    }
    line = f"{cfg.stage}: step {result.step}/{cfg.max_steps}, last loss {loss}; adapter in {result.output_dir}"
    _report(args, data, line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_model

    out = export_model(
        args.model, args.adapter, args.output, dtype=args.dtype, overwrite=args.overwrite
    )
    _report(args, {"output": str(out)}, f"exported to {out}")
    return 0


def cmd_combine(args: argparse.Namespace) -> int:
    from .combine import combine_adapters

    info = combine_adapters(
        args.adapter,
        args.output,
        rank=args.rank,
        dtype=args.dtype,
        base_model=args.base_model,
        overwrite=args.overwrite,
    )
    err = info["relative_error"]
    line = (
        f"combined {len(args.adapter)} adapter(s) into {args.output}: rank {info['rank']}, {info['dtype']}, "
        f"{info['bytes'] / 1e6:.1f} MB, relative error max {err['max']:.4f} mean {err['mean']:.4f}"
    )
    _report(args, {"adapters": list(args.adapter), "output": str(args.output), **info}, line)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """A standalone parser (`python -m llm2vec_retrieval.training ...`)."""
    parser = argparse.ArgumentParser(
        prog="python -m llm2vec_retrieval.training",
        description="LLM2Vec trainer: train and export.",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    import os
    import sys

    parser = build_parser()
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, ImportError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
