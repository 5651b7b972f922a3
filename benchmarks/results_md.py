"""Shared by the benchmark scripts: replace one section of benchmarks/RESULTS.md, keep the rest."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def write_section(heading: str, text: str) -> None:
    """Replace the section that starts with ``heading`` (up to the next ``## ``) by ``text`` in place, or append it."""
    old = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    start = old.find(heading)
    if start < 0:
        RESULTS.write_text(old.rstrip() + "\n\n" + text.rstrip() + "\n")
        return
    end = old.find("\n## ", start + len(heading))
    rest = old[end + 1:] if end >= 0 else ""
    RESULTS.write_text(old[:start] + text.rstrip() + "\n" + ("\n" + rest if rest else ""))


def merge_rows(heading: str, rows: list[str], key_columns: int = 1) -> tuple[list[str], list[str]]:
    """Fill a section's table one run at a time.

    Returns the section's earlier table rows whose first ``key_columns`` cells differ from every
    row in ``rows``, followed by ``rows``; and the section's notes (the lines after its table),
    kept as they are.
    """
    old = RESULTS.read_text() if RESULTS.exists() else ""
    start = old.find(heading)
    if start < 0:
        return rows, []
    end = old.find("\n## ", start + len(heading))
    body = old[start:end if end >= 0 else len(old)].rstrip().splitlines()
    table_lines = [i for i, line in enumerate(body) if line.startswith("|")]
    earlier = [line for i, line in enumerate(body) if line.startswith("|") and not line.startswith("|---")
               and not (i + 1 < len(body) and body[i + 1].startswith("|---"))]  # not the header

    def key(row: str) -> tuple[str, ...]:
        return tuple(c.strip() for c in row.strip().strip("|").split("|"))[:key_columns]

    new = {key(r) for r in rows}
    notes = body[table_lines[-1] + 1:] if table_lines else []
    return [r for r in earlier if key(r) not in new] + rows, notes
