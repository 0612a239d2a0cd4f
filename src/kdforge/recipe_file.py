"""Reading recipes: YAML file -> validated `Recipe`, `--set` overrides, one-line errors.

The schema itself is `kdforge.config`; this module turns files and dicts into it
and pydantic's errors into one line naming the field, the bad value and what is allowed.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kdforge.compress.config import STAGE_KINDS
from kdforge.config import LOSS_KINDS, Recipe
from kdforge.data.checks import decode_utf8
from kdforge.errors import KDForgeError


def format_validation_error(err: ValidationError, what: str = "recipe") -> str:
    """One line: the first problem, by dotted field path, with the bad value."""
    def path(loc: tuple) -> str:
        parts, prev = [], None
        for p in loc:
            # pydantic inserts the discriminator tag after a list index (losses.0.kd.alpha) and the
            # union member after a field (alpha.constrained-float, alpha.literal['auto']): drop them
            if not str(p).startswith(_UNION_TAGS) and not (isinstance(prev, int) and isinstance(p, str) and p in _TAGS):
                parts.append(str(p))
            prev = p
        return ".".join(parts)

    errors = err.errors()
    first = errors[0]
    loc = path(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    same = [e for e in errors[1:] if path(e["loc"]) == loc]  # the other members of a `float | "auto"` union
    if any(e["type"] == "literal_error" for e in same):
        msg += " (or " + ", ".join(e["ctx"]["expected"] for e in same if e["type"] == "literal_error") + ")"
    rest = len(errors) - 1 - len(same)
    more = f" (+{rest} more)" if rest > 0 else ""
    if first["type"] == "extra_forbidden":
        return f"{what} field {loc}: unknown field{more}"
    bad = first.get("input")
    shown = "" if isinstance(bad, dict) or bad is None else f"got {bad!r}: "
    if not loc and re.match(r"[\w.]+: ", msg):  # a whole-recipe check that names its own field
        return f"{what} field {msg}{more}"
    return f"{what} field {loc or '(top level)'}: {shown}{msg}{more}"


_TAGS = {*LOSS_KINDS, *STAGE_KINDS}  # pydantic puts these discriminator tags into error locations
_UNION_TAGS = ("function-", "constrained-", "literal[")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`a.b.0.c=value` pairs; values are parsed as YAML (so 3 is an int, [1,2] a list)."""
    for item in overrides:
        if "=" not in item:
            raise KDForgeError(f"--set {item!r}: expected FIELD=VALUE, e.g. distill.epochs=3")
        path, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        node: Any = raw
        keys = path.split(".")
        for k in keys[:-1]:
            if isinstance(node, list):
                node = node[_index(k, path, len(node))]
            else:
                node = node.setdefault(k, {})
        if isinstance(node, list):
            node[_index(keys[-1], path, len(node))] = parsed
        elif isinstance(node, dict):
            node[keys[-1]] = parsed
        else:
            raise KDForgeError(f"--set {path}: {'.'.join(keys[:-1])} is not a section")
    return raw


def _index(k: str, path: str, n: int) -> int:
    if not k.isdigit() or int(k) >= n:
        raise KDForgeError(f"--set {path}: {k!r} is not an index of a list of {n}")
    return int(k)


def parse_recipe(raw: Any, overrides: list[str] = ()) -> Recipe:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise KDForgeError(f"recipe: expected a mapping of fields at the top level, got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
        if not overrides:
            return recipe
        # overrides apply to the resolved recipe, so defaults (distill.losses.0...) can be addressed
        return Recipe.model_validate(apply_overrides(recipe.model_dump(mode="json"), list(overrides)))
    except ValidationError as e:
        raise KDForgeError(format_validation_error(e)) from None


class _RecipeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate keys (PyYAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden by explicit keys
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:  # an unhashable key (a list or mapping): yaml itself says so below
                continue
            if first != key_node.start_mark.line + 1:
                raise KDForgeError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                   f"(first at line {first}); a key may appear once per section")
        return super().construct_mapping(node, deep=deep)


MAX_RECIPE_NODES = 100_000  # a recipe is a few hundred values; aliases can multiply that exponentially


def _expanded_size(obj: Any, memo: dict[int, int]) -> int:
    """Values in `obj` once every YAML alias is expanded (shared objects counted per use)."""
    if not isinstance(obj, (dict, list)):
        return 1
    if id(obj) not in memo:
        memo[id(obj)] = MAX_RECIPE_NODES + 1  # a self-referencing alias counts as too large
        kids = obj.values() if isinstance(obj, dict) else obj
        memo[id(obj)] = 1 + sum(min(_expanded_size(k, memo), MAX_RECIPE_NODES + 1) for k in kids)
    return memo[id(obj)]


def read_recipe_file(path: str | Path) -> Any:
    """The YAML content of a recipe file; every problem with the file itself is a one-line KDForgeError."""
    path = Path(path)
    if path.is_dir():
        raise KDForgeError(f"recipe {path} is a directory; give a recipe YAML file")
    if not path.is_file():
        raise KDForgeError(f"recipe file not found: {path}")
    text = decode_utf8(path.read_bytes(), str(path), "a recipe is a YAML text file")
    try:
        raw = yaml.load(text, Loader=_RecipeLoader)  # noqa: S506 (a SafeLoader subclass)
    except KDForgeError as e:
        raise KDForgeError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise KDForgeError(f"{path}: malformed YAML{where}: {problem}") from None
    except RecursionError:
        raise KDForgeError(f"{path}: nested too deeply to be a recipe") from None
    if raw is None:
        raise KDForgeError(f"{path}: the recipe is empty; give at least one section (data, teacher, student, distill)")
    if not isinstance(raw, dict):
        raise KDForgeError(f"{path}: expected a mapping of fields at the top level (data:, student:, ...), got {type(raw).__name__}")
    if _expanded_size(raw, {}) > MAX_RECIPE_NODES:
        raise KDForgeError(f"{path}: YAML aliases expand to more than {MAX_RECIPE_NODES:,} values; "
                           "a recipe this large is refused (an alias bomb?)")
    return raw


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    return parse_recipe(read_recipe_file(path), overrides)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
