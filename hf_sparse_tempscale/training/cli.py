"""`hf-sparse-tempscale train-cross-encoder` and `train-embedding`: run a recipe from a config file and/or options.

Options override the config file; every recipe setting has an option (`--train-limit 2000`, `--patch '{"window": 4}'`,
`--no-attention-stats`, ...). `--lora` turns LoRA on with default settings (or `--lora '{"r": 8}'`),
`--resume` continues from the newest checkpoint in the output folder, `--push-to-hub REPO` uploads the final model.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from .recipe_config import CrossEncoderRecipe, EmbeddingRecipe, RecipeConfig, read_config_file

_HELP = {
    "model": '"minilm" (the packaged all-MiniLM-L6-v2), a local folder or a hub id',
    "patch": 'patch_model settings as JSON, e.g. \'{"window": 4, "pattern": "independent_query"}\'; "null" = unpatched',
    "train_limit": "train on a seeded random subset of this many rows",
    "resume": "continue from the newest checkpoint in --output-dir (or give a checkpoint folder)",
    "lora": "train a LoRA adapter (peft LoraConfig fields as JSON, or no value for the defaults); merged at the end",
    "push_to_hub": "upload the final model to this hub repo id",
    "hub_folder": "build the hub upload folder here (also without --push-to-hub)",
    "temperature_schedule": 'TemperatureScheduleCallback settings as JSON, e.g. \'{"start": 1.0, "end": 0.9}\'',
    "window_curriculum": 'WindowCurriculumCallback settings as JSON, e.g. \'{"start": null, "end_fraction": 0.5}\'',
}


def _json_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {text!r} ({err.msg})") from None


def _optional(kind: type):
    """Parse `kind`, or none/null -> None (e.g. `--train-limit none` to use all rows)."""

    def parse(text: str):
        return None if text.lower() in ("none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in error messages
    return parse


def _resume_value(text: str) -> bool | str:
    return {"true": True, "false": False}.get(text.lower(), text)


def _add_options(parser: argparse.ArgumentParser, recipe: type[RecipeConfig]) -> None:
    hints = typing.get_type_hints(recipe)
    for f in fields(recipe):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        optional = isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)
        if isinstance(hint, types.UnionType):  # X | None -> X
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint) or hint
        default = f.default if f.default is not MISSING else f.default_factory()
        help_text = _HELP.get(f.name, "") + f" (default: {json.dumps(default)})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if f.name == "resume":
            parser.add_argument(flag, nargs="?", const=True, type=_resume_value, **kw)
        elif f.name == "lora":
            parser.add_argument(flag, nargs="?", const={}, type=_json_value, **kw)
        elif origin is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif origin is dict:
            parser.add_argument(flag, type=_json_value, **kw)
        elif origin is list:
            parser.add_argument(flag, nargs="+", type=str, **kw)
        elif origin in (int, float, str):
            parser.add_argument(flag, type=_optional(origin) if optional else origin, **kw)
        else:  # pragma: no cover - every field type is handled above
            raise TypeError(f"no option type for {f.name}: {hint}")


def recipe_from_args(recipe: type[RecipeConfig], args: argparse.Namespace) -> RecipeConfig:
    settings = read_config_file(args.config) if getattr(args, "config", None) else {}
    names = {f.name for f in fields(recipe)}
    settings.update({k: v for k, v in vars(args).items() if k in names})
    return recipe.from_dict(settings)


def _report(results: dict[str, Any]) -> int:
    if int(os.environ.get("RANK", "0")) == 0:  # one summary per run, not one per process
        print(json.dumps({k: v for k, v in results.items() if k != "config"}, indent=2, default=str))
    return 0


def _run_cross_encoder(args: argparse.Namespace) -> int:
    from .cross_encoder import run_cross_encoder

    return _report(run_cross_encoder(recipe_from_args(CrossEncoderRecipe, args)))


def _run_embedding(args: argparse.Namespace) -> int:
    from .embedding import run_embedding

    return _report(run_embedding(recipe_from_args(EmbeddingRecipe, args)))


def register(subparsers) -> None:
    for name, recipe, func, text in (
        ("train-cross-encoder", CrossEncoderRecipe, _run_cross_encoder,
         "train a (sparse) cross-encoder on judged DL21 pairs/triples, evaluate on DL19 BM25 top-100"),
        ("train-embedding", EmbeddingRecipe, _run_embedding,
         "fine-tune an embedding model with MNRL (with/without TempScale), evaluate on SciFact and STS-B"),
    ):
        p = subparsers.add_parser(name, help=text, description=text + ". Options override --config.")
        p.add_argument("--config", help="recipe settings file (.yaml/.yml/.json)")
        _add_options(p, recipe)
        p.set_defaults(func=func)
