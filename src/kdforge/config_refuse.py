"""A recipe refuses what its method will not use: one line naming the field and the method (the CLI exits 2).

What a method and its workflow act on is declared once, in its registration (`MethodSpec.reads`,
`.section`, `.teacher`, `.task`); `SET` below says how to tell that a recipe set each optional field:
its value differs from the schema's default (a recipe with `--set` overrides is re-read with every field
written out, so "written in the file" cannot be told apart). A field set where the method does not read
it is refused, so a user never believes it acted. The compress stages are judged by their verb's typed
config: a stage field that only another method's config reads (prune `scope` with method structured)
is refused the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, get_args

from kdforge.methods.base import MethodSpec, method_spec


def _changed(model, name: str) -> bool:
    """`model.name` differs from its field's default."""
    return getattr(model, name) != type(model).model_fields[name].get_default(call_default_factory=True)


def _distill(name: str) -> Callable[[Any], bool]:
    return lambda r: _changed(r.distill, name)


def _section(name: str) -> Callable[[Any], bool]:
    return lambda r: _changed(r, name)


# optional field -> whether the recipe sets it (the keys are the vocabulary of MethodSpec.reads)
SET: dict[str, Callable[[Any], bool]] = {
    "distill.losses": _distill("losses"),
    "distill.filter": _distill("filter"),
    "distill.intermediate_epochs": _distill("intermediate_epochs"),
    "distill.bias_calibration": _distill("bias_calibration"),
    "distill.auto": _distill("auto"),
    "distill.lm": _distill("lm"),
    "store": lambda r: r.store is not None,
    "student.trim_vocab": lambda r: bool(r.student.trim_vocab),
    **{name: _section(name) for name in ("mutual", "born_again", "ensemble", "data_free", "search")},
}
HINT = {  # what to do instead, where there is more to say than "remove it"
    "distill.losses": "its losses are fixed by the method and its own section",
    "store": "it runs its teacher live",
    "search": "`kdforge search` tunes method standard",
    "distill.auto": "'auto' is searched for method standard only",
}


def reads(spec: MethodSpec) -> frozenset[str]:
    return spec.reads | ({spec.section} if spec.section else set())


def refuse_unused(recipe) -> None:
    """ValueError (one line: field, method) for the first field of `recipe` its method does not act on."""
    spec = method_spec(recipe.method)
    m = recipe.method
    _compress(recipe, spec)
    for field, is_set in SET.items():
        if field not in reads(spec) and is_set(recipe):
            why = f" ({HINT[field]})" if field in HINT else ""
            raise ValueError(f"{field}: method {m!r} does not read it{why}; remove it")
    if recipe.student.vocab_min_count is not None and not recipe.student.trim_vocab:
        raise ValueError(f"student.vocab_min_count: read with student.trim_vocab only (method {m!r}); add trim_vocab: true or remove it")
    teachers = [("teacher", recipe.teacher)]
    if "ensemble" in reads(spec) and recipe.ensemble.teachers:
        teachers += [(f"ensemble.teachers.{k}", t) for k, t in enumerate(recipe.ensemble.teachers)]
    for where, sec in teachers:
        for f in ("trim_vocab", "vocab_min_count"):
            if getattr(sec, f) not in (None, False):
                raise ValueError(f"{where}.{f}: a teacher's vocabulary is never trimmed (method {m!r} trims the "
                                 "student's, student.trim_vocab); remove it")
    if "distill.losses" in reads(spec) and "distill.layer_map" not in reads(spec):
        for i, t in enumerate(recipe.distill.losses):
            if t.kind == "layerwise":  # its layer_map pairs the models' blocks: only the standard step expands it
                raise ValueError(f"distill.losses.{i}.layer_map: method {m!r} does not map layers (layerwise terms "
                                 "are for method standard | born_again); remove the term")
    if "distill.auto" not in reads(spec):  # workflows of their own train with fixed kd settings
        for i, t in enumerate(recipe.distill.losses):
            for f in ("temperature", "alpha"):
                if getattr(t, f, None) == "auto":
                    raise ValueError(f"distill.losses.{i}.{f}: 'auto' is searched for method standard only; "
                                     f"give a number for method {m!r}")


def _compress(recipe, spec: MethodSpec) -> None:
    m = recipe.method
    if recipe.compress and "compress.export" in spec.reads:  # the causal-LM workflow exports its student, ungated
        for i, stage in enumerate(recipe.compress):
            if stage.kind != "export" or stage.max_accuracy_drop is not None:
                raise ValueError(f"compress.{i}: a causal-LM run's stages export the student (kind: export, no "
                                 f"max_accuracy_drop gate); {stage.kind} stages and accuracy gates are for classifiers")
    elif recipe.compress and "compress" not in spec.reads:  # a workflow of its own: no compress stages
        raise ValueError(f"compress: method {m!r} does not run compress stages; remove the list "
                         "(a finished run's student can be compressed with `kdforge compress RUN_DIR`)")
    if spec.workflow == "classify":  # the classification workflow: hf models classify
        for role in ("teacher", "student") if spec.teacher else ("student",):
            sec = getattr(recipe, role)
            if sec.name == "hf" and sec.task not in (None, "classify"):
                raise ValueError(f"{role}.task: method {m!r} distils classifiers, so task must be classify, "
                                 f"got {sec.task!r} (causal_lm: method token_kd | sequence_kd | gkd; embed: method embedding)")
    for i, stage in enumerate(recipe.compress):
        if stage.max_accuracy_drop is not None and stage.against == "teacher" and not spec.teacher:
            raise ValueError(f"compress.{i}.against: the gate compares with the teacher, but method "
                             f"{m!r} has none; use against: student or previous")
        field = unread_stage_field(stage)
        if field is not None:
            raise ValueError(f"compress.{i}.{field}: {stage.kind} method {stage.method} does not read it; remove it")


def _config_fields(stage, method: str) -> set[str]:
    config = stage.model_copy(update={"method": method}).verb_config()
    return {f.name for f in dataclasses.fields(config)} if dataclasses.is_dataclass(config) else set()


def unread_stage_field(stage) -> str | None:
    """A field the recipe set on `stage` that only another `method:` of its kind reads (by the verbs' typed
    configs), or None."""
    options = get_args(type(stage).model_fields["method"].annotation) if "method" in type(stage).model_fields else ()
    if len(options) < 2:
        return None
    used = _config_fields(stage, stage.method)
    others = set().union(*(_config_fields(stage, o) for o in options if o != stage.method))
    return next((f for f in sorted(others - used) if f in type(stage).model_fields and _changed(stage, f)), None)


__all__ = ["SET", "refuse_unused", "unread_stage_field"]
