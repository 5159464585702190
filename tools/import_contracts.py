"""Two import-linter contracts that its built-in ones do not express (`make lint` runs them with the
layers contract in pyproject.toml, [tool.importlinter]).

- `private_imports`: a module of another package is imported through that package's `__init__`,
  never as `pkg._module`.  `picogate.rules._live` may import `picogate.rules._worker`;
  `picogate.edgex._forward` may not import `picogate.mqtt._client` (it imports `picogate.mqtt`).
  The root package's own modules (`picogate._router`, `picogate._model`, ...) are the core, which
  every package imports.
- `no_cycles`: no module imports itself back, through any chain of modules, inside a package or
  across packages (a package's `__init__` counts as a module of its own).

Both see every import statement grimp finds: at module level, inside functions, and under
`if TYPE_CHECKING:`.  `ignore_imports` (`importer -> imported`, as in the built-in contracts)
lists the exceptions, each with its reason beside it in the configuration.
"""

from __future__ import annotations

from collections.abc import Iterable

import grimp
from importlinter.application import contract_utils, output
from importlinter.application.contract_utils import AlertLevel
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _owner(module: str) -> str | None:
    """`picogate.mqtt._client` → `picogate.mqtt`: the package whose private module it is (None for
    a public module, or for a private module of the root package)."""
    parts = module.split(".")
    for i in range(2, len(parts)):
        if parts[i].startswith("_") and not parts[i].startswith("__"):
            return ".".join(parts[:i])
    return None


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


class PrivateImportsContract(Contract):
    type_name = "private_imports"

    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[arg-type]
            unmatched_alerting=AlertLevel.ERROR,
        )
        bad: list[dict[str, object]] = []
        for imported in sorted(graph.modules):
            owner = _owner(imported)
            if owner is None:
                continue
            for importer in sorted(graph.find_modules_that_directly_import(imported)):
                if not _inside(importer, owner):
                    details = graph.get_import_details(importer=importer, imported=imported)
                    lines = sorted({d["line_number"] for d in details})
                    bad.append({"importer": importer, "imported": imported, "owner": owner, "lines": lines})
        return ContractCheck(
            kept=not bad,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"bad": bad},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        for b in check.metadata["bad"]:
            lines = ", ".join(f"l.{n}" for n in b["lines"])
            output.print_error(
                f"{b['importer']} imports {b['imported']} ({lines}), a private module of "
                f"{b['owner']}: import it from {b['owner']} (add it to its __init__ and __all__)",
                bold=False,
            )
        output.new_line()


def _cycles(graph: grimp.ImportGraph, modules: Iterable[str]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


class NoCyclesContract(Contract):
    type_name = "no_cycles"

    ignore_imports = fields.SetField(subfield=fields.ImportExpressionField(), required=False)

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        removal = contract_utils.remove_ignored_imports_and_report(
            graph=graph,
            ignore_imports=self.ignore_imports,  # type: ignore[arg-type]
            unmatched_alerting=AlertLevel.ERROR,
        )
        cycles = []
        for component in _cycles(graph, graph.modules):
            members = set(component)
            start = component[0]
            # One cycle through the first module, to show: the shortest way back to it.
            best: tuple[str, ...] | None = None
            for nxt in sorted(graph.find_modules_directly_imported_by(start) & members):
                back = graph.find_shortest_chain(importer=nxt, imported=start)
                if back is not None and (best is None or len(back) + 1 < len(best)):
                    best = (start, *back)
            cycles.append({"modules": component, "example": list(best or component)})
        return ContractCheck(
            kept=not cycles,
            warnings=list(removal.warnings),
            ignored_import_count=removal.ignored_import_count,
            metadata={"cycles": cycles},
        )

    def render_broken_contract(self, check: ContractCheck) -> None:
        for c in check.metadata["cycles"]:
            output.print_error(f"import cycle among {len(c['modules'])} modules: {', '.join(c['modules'])}")
            output.print_error(f"-   {' -> '.join(c['example'])}", bold=False)
            output.new_line()
