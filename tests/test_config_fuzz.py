"""The recipe loader, fuzzed: any YAML text or data gives a Recipe or a one-line KDForgeError, never a traceback."""
import string

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdforge.config import Recipe
from kdforge.recipe_file import load_recipe, parse_recipe
from kdforge.errors import KDForgeError

FIELDS = ["seed", "run_dir", "method", "data", "teacher", "student", "distill", "losses", "kind", "epochs",
          "temperature", "alpha", "name", "hidden", "filter", "mode", "compress", "store", "lr", "x"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(string.printable, max_size=12), st.sampled_from(["kd", "mlp", "digits", "hint", "standard"]))
values = st.recursive(scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(st.sampled_from(FIELDS), kids, max_size=5)), max_leaves=20)


def _ok_or_user_error(fn) -> None:
    try:
        assert isinstance(fn(), Recipe)
    except KDForgeError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_any_data_parses_or_gives_one_line_error(raw):
    _ok_or_user_error(lambda: parse_recipe(raw))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(string.printable, max_size=200))
def test_any_text_file_parses_or_gives_one_line_error(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    _ok_or_user_error(lambda: load_recipe(p))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["distill.epochs", "student.hidden", "distill.losses.0.alpha", "data.name", "x.y", "seed", "distill.losses.3"]),
                          st.text(string.printable.replace("\n", ""), max_size=10)), max_size=3))
def test_any_overrides_parse_or_give_one_line_error(pairs):
    _ok_or_user_error(lambda: parse_recipe(yaml.safe_load("distill: {epochs: 2}"), [f"{k}={v}" for k, v in pairs]))
