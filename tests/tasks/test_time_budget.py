"""``train.max_minutes`` (a wall-clock training budget) is offered and checked by every task."""

from __future__ import annotations

import pytest

from rnnkit.tasks import TASKS, get_task
from rnnkit.tasks.config import ConfigError, load_config, seconds_budget


@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_task_offers_a_checked_time_budget(task: str) -> None:
    module = get_task(task)
    assert load_config(module.Config, overrides=["train.max_minutes=2.5"]).train.max_minutes == 2.5
    assert load_config(module.Config).train.max_minutes is None
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError, match="train.max_minutes: must be > 0"):
            load_config(module.Config, overrides=[f"train.max_minutes={bad}"])


def test_seconds_budget() -> None:
    assert seconds_budget(None) is None and seconds_budget(1.5) == 90.0


def test_floats_in_exponent_form_are_read_as_numbers() -> None:
    module = get_task("image-classification")
    assert load_config(module.Config, overrides=["train.learning_rate=1e-3"]).train.learning_rate == 1e-3
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(module.Config, overrides=["train.learning_rate=fast"])
