"""rnnkit.runtime: keeping freed memory in the process (glibc's mallopt) so training steps stop re-faulting pages."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from rnnkit import runtime

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
needs_glibc = pytest.mark.skipif(not GLIBC, reason="mallopt thresholds exist in glibc only")

# Page faults of torch.nn.LSTM training steps (H=256, B=64, T=100) once the heap has settled: every step
# allocates and frees the same activation buffers and oneDNN workspace.
_FAULTS = textwrap.dedent("""
    import resource, sys, torch
    from rnnkit import runtime
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(128, 256, batch_first=True)
    x = torch.randn(64, 100, 128)
    if sys.argv[1] == "reuse":
        assert runtime.reuse_freed_memory()
    def faults():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y, _ = lstm(x)
        y.sum().backward()
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print([faults() for _ in range(9)][3:])  # the settled steps (seen: 16k each, or 0 with reuse)
""")


def _faults(mode: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, timeout=300,
                          check=True)
    return [int(n) for n in done.stdout.strip().splitlines()[-1].strip("[]").split(",")]


@needs_glibc
def test_training_steps_reuse_freed_buffers_instead_of_faulting_pages_in_again() -> None:
    default = _faults("default")  # what glibc does unless told: here the buffers come back as fresh pages
    if min(default) < 1000:
        pytest.skip(f"this C library already reuses the buffers ({default} faults a step): nothing to show")
    reused = _faults("reuse")
    # the heap may take a step or two more to settle (seen once: 9870, then 0 faults a step)
    assert sorted(reused)[len(reused) // 2] < 100 and reused[-1] < 100, (default, reused)


@needs_glibc
def test_reuse_freed_memory_takes_effect_and_can_be_repeated() -> None:
    assert runtime.reuse_freed_memory()
    assert runtime.reuse_freed_memory()
    assert runtime.freed_memory_reused()


def test_other_c_libraries_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.platform, "system", lambda: "Darwin")
    assert runtime.reuse_freed_memory() is False


def test_a_threshold_below_a_mebibyte_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1 MiB"):
        runtime.reuse_freed_memory(4096)


@pytest.mark.parametrize("value", ["0", "false", "No", "off"])
def test_the_environment_variable_turns_it_off(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    calls: list[int] = []
    monkeypatch.setattr(runtime, "reuse_freed_memory", lambda *a: calls.append(1) or True)
    monkeypatch.setenv(runtime.ENV, value)
    assert runtime.reuse_freed_memory_from_env() is False
    assert not calls


def test_the_environment_variable_defaults_to_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "reuse_freed_memory", lambda *a: True)
    monkeypatch.delenv(runtime.ENV, raising=False)
    assert runtime.reuse_freed_memory_from_env() is True


def test_a_bad_environment_value_stops_the_command_line_with_one_line() -> None:
    done = subprocess.run([sys.executable, "-m", "rnnkit.cli", "version"], capture_output=True, text=True,
                          timeout=120, env={**_env(), runtime.ENV: "maybe"})
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: RNNKIT_REUSE_FREED_MEMORY must be 1 or 0, got 'maybe'; set it to 1 or 0, "
                                   "or unset it")


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


def test_new_file_mode_follows_the_umask_without_changing_it(tmp_path) -> None:
    import os
    import stat

    previous = os.umask(0o027)
    try:
        assert runtime.new_file_mode() == (0o640 if platform.system() == "Linux" else runtime.new_file_mode())
        (tmp_path / "f").write_text("x")
        if platform.system() == "Linux":  # read from /proc: what a plain open() gives right now
            assert stat.S_IMODE(os.stat(tmp_path / "f").st_mode) == runtime.new_file_mode()
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(previous)


def test_return_freed_memory_runs_on_glibc_only(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runtime.return_freed_memory() is GLIBC
    monkeypatch.setattr(runtime.platform, "system", lambda: "Darwin")
    assert runtime.return_freed_memory() is False
