"""A recipe refuses what its method will not use: one line naming the field and the method, exit 2."""
import pytest
import yaml

from kdforge.cli import main
from kdforge.config_refuse import SET, reads
from kdforge.errors import KDForgeError
from kdforge.recipe_file import parse_recipe
from kdforge.registry import METHODS, WORKFLOWS

LAYERWISE = {"losses": [{"kind": "layerwise"}, {"kind": "kd", "temperature": 2.0, "alpha": 0.5}]}

# (recipe fragment, method, the field the error names, the method it names): every field issue 26 found
# accepted but ignored, where it has no effect
IGNORED = [
    *[({"distill": {"losses": [{"kind": "ce"}]}}, m, "distill.losses", m) for m in ("data_free", "mutual")],
    *[({"store": {"path": "teacher-store"}}, m, "store", m)
      for m in ("born_again", "mutual", "multi_teacher", "data_free", "embedding")],
    *[({"distill": {"intermediate_epochs": 2, **LAYERWISE}}, m, "distill.intermediate_epochs", m)
      for m in ("supervised", "born_again", "multi_teacher", "token_kd")],
    *[({"distill": {"bias_calibration": "labels"}}, m, "distill.bias_calibration", m)
      for m in ("born_again", "mutual", "multi_teacher", "data_free", "embedding", "token_kd")],
    *[({"distill": {"filter": {"mode": "drop"}}}, m, "distill.filter", m)
      for m in ("supervised", "mutual", "multi_teacher", "data_free", "embedding", "gkd")],
    *[({"distill": LAYERWISE}, m, "distill.losses.0.layer_map", m) for m in ("embedding", "multi_teacher", "token_kd")],
    ({"compress": [{"kind": "prune", "method": "structured", "amount": 0.5, "scope": "layer"}]}, "standard",
     "compress.0.scope", "structured"),
    *[({"compress": [{"kind": "quantize", "method": q, "per_channel": True}]}, "standard", "compress.0.per_channel", q)
      for q in ("fp16", "bf16")],
    ({"teacher": {"name": "hf", "hf": "x", "trim_vocab": True}}, "standard", "teacher.trim_vocab", "standard"),
    ({"teacher": {"name": "hf", "hf": "x", "vocab_min_count": 2}}, "standard", "teacher.vocab_min_count", "standard"),
    *[({section: value}, m, section, m) for section, value in (
        ("mutual", {"count": 3}), ("born_again", {"generations": 4}), ("ensemble", {"weighting": "confidence"}),
        ("data_free", {"latent_dim": 8}), ("search", {"seeds": 2}))  # search: `kdforge search` tunes method standard
      for m in [k for k in ("standard", "supervised", "token_kd") if section not in reads(METHODS.get(k))][:2]],
]


def _id(case) -> str:
    return f"{case[2]}-under-{case[1]}"


@pytest.mark.parametrize("case", IGNORED, ids=map(_id, IGNORED))
def test_each_ignored_field_is_refused_in_one_line_naming_field_and_method(case, tmp_path, capsys, monkeypatch):
    fragment, method, field, named = case
    monkeypatch.setattr(WORKFLOWS, "get", lambda key: pytest.fail(f"the recipe was run, not refused ({field})"))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": method, **fragment}))
    assert main(["run", str(recipe), "--set", f"run_dir={tmp_path / 'run'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{field}:" in err and named in err, err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", METHODS.keys())
def test_every_optional_field_a_method_does_not_read_is_refused_and_the_others_are_not(key):
    """Derived from the registration: each optional field outside what `key` reads is refused, naming both."""
    values = {"distill.losses": {"distill": {"losses": [{"kind": "ce"}]}}, "distill.filter": {"distill": {"filter": {"mode": "drop"}}},
              "distill.intermediate_epochs": {"distill": {"intermediate_epochs": 1}},
              "distill.bias_calibration": {"distill": {"bias_calibration": "labels"}},
              "distill.auto": {"distill": {"auto": {"trials": 2}}}, "distill.lm": {"distill": {"lm": {"lmbda": 0.2}}},
              "store": {"store": {"path": "s"}}, "student.trim_vocab": {"student": {"name": "hf", "hf": "x", "trim_vocab": True}},
              "mutual": {"mutual": {"count": 3}}, "born_again": {"born_again": {"generations": 4}},
              "ensemble": {"ensemble": {"count": 2}}, "data_free": {"data_free": {"latent_dim": 8}}, "search": {"search": {"seeds": 2}}}
    assert set(values) == set(SET)  # every optional field is exercised
    spec = METHODS.get(key)
    for field, fragment in values.items():
        if field in reads(spec):
            continue
        with pytest.raises(KDForgeError) as e:
            parse_recipe({"method": key, **fragment})
        assert f"{field}: method {key!r} does not read it" in str(e.value) and "\n" not in str(e.value)


def test_a_default_value_written_out_is_not_refused():
    """`--set` re-reads a recipe with every field written out: defaults never count as set."""
    r = parse_recipe({"method": "mutual", "distill": {"epochs": 2}}, ["distill.epochs=3"])
    assert r.distill.epochs == 3
    parse_recipe({"method": "token_kd", "compress": [{"kind": "export"}]}, ["seed=1"])
