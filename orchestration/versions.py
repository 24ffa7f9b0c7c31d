"""What the Dagster UI needs to tell stale from fresh: a code version per asset, derived from
the code and SQL it runs, and the warehouse pool every step that opens the DuckDB file joins.

Neither exists outside Dagster, so they live with the code location, not in models/; and since
this module computes values (it calls no Dagster API), it is not in assets/ either, which holds
only asset definitions. Every asset decorator hands these values to Dagster.

A code version is never a hand-written list of modules: such a list goes stale silently (a
module the asset reaches only through another, like the recommender behind the ranked
recommendations, is left out, and editing it leaves the asset fresh). It is derived from the
asset's own module:

- the module's source, and the source of every module of this project (`assets.*`, `models.*`)
  it imports, transitively; `ast` reads the imports, those inside functions included, and a
  package's `__init__.py` counts for each module below it;
- the text of every `sql/<name>.sql` whose `<name>` appears as a whole string literal in any of
  those modules (`run_sql(con, "vocabularies")`, `EVENT_STEPS = ("typed_events", ...)`). A
  literal that only happens to name a relation (an asset's `deps=["vocabularies"]`) adds that
  file too: one stale mark too many, never a change missed.

Left out on purpose: `orchestration/` (how runs are wired: resources, jobs, sensors; not what an
asset computes) and third-party packages (pinned by the environment, not this repository).

The digest changes exactly when that code changes, so Dagster marks the asset and everything
downstream stale after an edit, and not after a restart. Each file is read and parsed once per
process.
"""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

# DuckDB lets one process open the warehouse file at a time (readers included), so every asset
# and check that opens it joins this pool; dagster.yaml (and orchestration/instance.py on any
# other instance) limit it to one slot across all runs.
WAREHOUSE_POOL = "warehouse"

# The folder that holds the top-level packages: the checkout, or site-packages for a wheel
# (sql/ ships there as package data beside assets/ and models/).
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("assets", "models")


class CodeGraph:
    """The import graph of `packages` under `root`, read from source with `ast`, and the SQL
    files under `root/sql_folder` their string literals name. Parses are cached per instance."""

    def __init__(self, root: Path, packages: tuple[str, ...] = PACKAGES, sql_folder: str = "sql"):
        self.root = Path(root)
        self.packages = tuple(packages)
        self.sql_dir = self.root / sql_folder
        self._trees: dict[str, ast.Module] = {}
        self._imports: dict[str, frozenset[str]] = {}

    def file_of(self, module: str) -> Path | None:
        """The source file of a dotted module name (a package's `__init__.py`), or None."""
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    def _tree(self, module: str) -> ast.Module:
        if module not in self._trees:
            path = self.file_of(module)
            if path is None:
                raise ModuleNotFoundError(f"no source for {module} under {self.root} (looked for .py and __init__.py)")
            self._trees[module] = ast.parse(path.read_bytes(), filename=str(path))
        return self._trees[module]

    def _ours(self, module: str) -> bool:
        return module.split(".")[0] in self.packages and self.file_of(module) is not None

    def imports(self, module: str) -> frozenset[str]:
        """The modules of this project that `module` imports directly, anywhere in its source,
        with the packages above each of them."""
        if module in self._imports:
            return self._imports[module]
        is_package = self.file_of(module).name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(self._tree(module)):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = module.split(".") if is_package else module.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module
                found.add(base)
                # `from models.retrieval import data` imports the module models.retrieval.data
                found.update(f"{base}.{alias.name}" for alias in node.names)
        with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
        self._imports[module] = frozenset(m for m in with_parents if self._ours(m))
        return self._imports[module]

    def closure(self, module: str) -> list[str]:
        """`module` and every module of this project it reaches through imports, sorted."""
        seen, todo = set(), [module]
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(self.imports(m) - seen)
        return sorted(seen)

    def sql_names(self, modules: list[str]) -> list[str]:
        """The sql/<name>.sql files whose name is a whole string literal in `modules`."""
        known = {p.stem for p in self.sql_dir.glob("*.sql")}
        return sorted(
            {
                node.value
                for m in modules
                for node in ast.walk(self._tree(m))
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known
            }
        )

    def version(self, module: str) -> str:
        """A short sha256 over the source of `module`'s closure and the SQL it names."""
        modules = self.closure(module)
        h = hashlib.sha256()
        for m in modules:
            h.update(m.encode() + b"\0" + self.file_of(m).read_bytes() + b"\0")
        for name in self.sql_names(modules):
            h.update(f"sql/{name}".encode() + b"\0" + (self.sql_dir / f"{name}.sql").read_bytes() + b"\0")
        return h.hexdigest()[:16]


_GRAPH = CodeGraph(ROOT)


def code_version(module: str) -> str:
    """The code version of the asset defined in `module` (pass `__name__`)."""
    return _GRAPH.version(module)


def content_digest(*parts) -> str:
    """A short digest of `parts` (their text): an asset's data version from what it holds and
    the code version that wrote it (assets/reporting.py `content_version`)."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()[:24]
