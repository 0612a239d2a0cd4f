"""DESIGN.md: the store sits below models. Everything kdforge.store imports, followed to the end,
stays within the store, the teacher wrapper, losses and errors: no training code, model loader,
data loader, recipe schema or workflow (a recipe's store is kdforge.workflows.teacher_store)."""
from tests.test_imports import MODULES, scan

BELOW_MODELS = ("kdforge.store", "kdforge.teacher", "kdforge.taps", "kdforge.losses", "kdforge.errors")


def reached(roots: list[str]) -> set[str]:
    """Every kdforge module the `roots` import at module level, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += scan(name)[0]
    return seen


def test_store_reaches_nothing_above_it():
    store = [m for m in MODULES if m == "kdforge.store" or m.startswith("kdforge.store.")]
    assert {"kdforge.store.read", "kdforge.store.write", "kdforge.store.packing", "kdforge.store.fingerprint"} <= set(store)
    outside = sorted(m for m in reached(store) if not (m in BELOW_MODELS or m.startswith(tuple(f"{p}." for p in BELOW_MODELS))))
    assert not outside, f"kdforge.store reaches {outside}"


def test_the_walk_sees_an_upward_import():
    """The walk itself: the workflow module that serves recipes reaches training code and model loaders."""
    up = reached(["kdforge.workflows.teacher_store"])
    assert {"kdforge.train.distributed", "kdforge.models.hf", "kdforge.store.read"} <= up
