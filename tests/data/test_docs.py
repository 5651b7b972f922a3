"""The examples of docs/data.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def _blocks() -> list[str]:
    if not DOC.is_file():
        pytest.skip(f"{DOC} not found")
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("soundfile")
    pytest.importorskip("tokenizers")
    blocks = [b for b in _blocks() if not b.startswith("# shared data")]
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_data"}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/data.md block {i}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - shows which block failed
            raise AssertionError(f"docs/data.md example {i} failed: {exc!r}\n{block}") from exc


@pytest.mark.data
def test_doc_examples_on_shared_data(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = _blocks()
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs_data"}
    exec(blocks[0], namespace)  # the imports
    for i, block in enumerate(blocks):
        if block.startswith("# shared data"):
            code = block.replace("../shared/data", str(shared_data))
            exec(compile(code, f"docs/data.md block {i}", "exec"), namespace)
