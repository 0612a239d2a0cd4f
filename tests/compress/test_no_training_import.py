"""DESIGN.md: compression never imports training."""
import ast
from pathlib import Path

import kdforge.compress


def test_compress_package_does_not_import_train():
    for path in Path(kdforge.compress.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("kdforge.train", "kdforge.stages", "kdforge.methods")) for n in names), path
