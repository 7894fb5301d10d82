"""The engines a user would pick instead of a job, as the benchmarks run them beside it.

They come from the optional dependency group ``bench`` (``pip install -e .[bench]``) and
are used by the benchmarks alone. The parent processes import only the standard
library: this module looks the peers up without importing them, and the children that
run them import them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

INSTALL_HINT = "pip install -e .[bench]"
DUCKDB, POLARS = "DuckDB", "polars"
# Each peer: the distributions it needs, the first one's module name checked too.
NEEDS = {
    DUCKDB: ("duckdb",),
    POLARS: ("polars",),
}
# The report's peers write a workbook: DuckDB with its excel extension, polars with
# rust_xlsxwriter's Python binding.
REPORT_NEEDS = {
    DUCKDB: ("duckdb", "duckdb-extension-excel"),
    POLARS: ("polars", "rustpy-xlsxwriter"),
}
MODULES = {
    "duckdb": "duckdb",
    "duckdb-extension-excel": "duckdb_extension_excel",
    "polars": "polars",
    "rustpy-xlsxwriter": "rustpy_xlsxwriter",
}


def version(dist: str) -> str | None:
    """The installed version of ``dist``, or None when it is not installed (no import)."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def available(needs: dict[str, tuple[str, ...]]) -> tuple[dict[str, str], list[str]]:
    """The peers whose packages are installed, with their versions, and a line per other.

    A peer is skipped, not a failure: its line says what is missing and how to install it.
    """
    found: dict[str, str] = {}
    skipped: list[str] = []
    for peer, dists in needs.items():
        missing = [
            d for d in dists if version(d) is None or importlib.util.find_spec(MODULES[d]) is None
        ]
        if missing:
            skipped.append(f"{peer} skipped: {', '.join(missing)} not installed ({INSTALL_HINT})")
        else:
            found[peer] = ", ".join(f"{d} {version(d)}" for d in dists)
    return found, skipped


def excel_extension() -> Path:
    """The excel extension's file for the installed DuckDB, from the packages that ship it.

    ``duckdb-extension-excel`` (one DuckDB version a release, 1.0 to 1.5 so far) or
    ``duckdb-ext-excel`` (the same for 1.2 to 1.4): ``INSTALL excel`` would download it,
    and the benchmark machine may reach no extension repository.
    """
    import duckdb

    wanted = f"v{duckdb.__version__}"
    places = []
    for module in ("duckdb_extension_excel", "duckdb_ext"):
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations:
            places += [Path(p) / "extensions" for p in spec.submodule_search_locations]
    for place in places:
        for path in sorted(place.glob(f"{wanted}/**/excel.duckdb_extension")):
            return path
    raise RuntimeError(
        f"no excel extension for DuckDB {duckdb.__version__} in {[str(p) for p in places]}: "
        f"install duckdb-extension-excel=={duckdb.__version__} ({INSTALL_HINT})"
    )
