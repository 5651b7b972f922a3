"""Mutation testing, round 16: today's business-day frequency (inference, grid positions, the weekend
and off-grid errors, the holiday hint), ``class_quotas``, Keras' functional ``model.layers`` order,
``check_precision`` and ``restore_dtypes``.

Each test here kills a plausible bug (hourly weekday data taken for business days, one short series
turning a file daily, a time of day ignored on the business-day grid, a depth overwritten by a
shallower reader, a shared layer re-placed at its second call, an integer precision refused, float
buffers left in bfloat16 ...) that the rest of the suite let through. The expected values come from
independent references: pandas' date_range / bdate_range, NumPy's busday functions, Keras 3's own
``model.layers`` (torch backend), Hamilton's largest-remainder method in exact fractions, and the
dtypes torch gave the module before it was converted, never from the code path under test.
Continued: forecasting's re-read of a weekday file on the trained (1B or 2B) grid, the image dev hold-out
against a hand draw, translation's side checks (both sides, the first SIDE_SAMPLE pairs) and the layer's
dtype under autocast (torch.nn, and the state passed by hand between calls).
"""

from __future__ import annotations

import math
import random
import types
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import rnnkit.layers
import rnnkit.models
from models.keras_reference import keras_module, needs_keras  # tests/ is on sys.path (rootdir conftest)
from rnnkit.data import DataError, read_timeseries


def _business_days(start: str, stop: str) -> np.ndarray:
    days = np.arange(start, stop, dtype="datetime64[D]")
    return days[np.is_busday(days)]


# -- business days -------------------------------------------------------------------------------
def test_hourly_weekday_data_is_hourly_with_weekend_gaps_not_business_daily(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    hours = pd.date_range("2024-01-01", "2024-01-13", freq="h", inclusive="left")  # Monday 1st to Friday 12th
    hours = hours[hours.day_of_week < 5]  # every hour of the weekdays: a weekend lies between, yet steps are hours
    path = tmp_path / "hourly.csv"
    path.write_text("time,v\n" + "".join(f"{t.isoformat()},{i}\n" for i, t in enumerate(hours)))
    s = read_timeseries(path, "time", "v", fill="ffill").only()
    assert s.freq == "1h"
    np.testing.assert_array_equal(s.time, pd.date_range(hours[0], hours[-1], freq="h").to_numpy().astype("datetime64[s]"))


def test_business_days_are_inferred_when_any_series_of_a_file_spans_a_weekend(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    long = _business_days("2024-01-01", "2024-02-01")
    short = np.arange("2024-02-05", "2024-02-08", dtype="datetime64[D]")  # Monday to Wednesday: no weekend
    path = tmp_path / "two.csv"
    path.write_text("id,date,price\n" + "".join(f"a,{d},{i}\n" for i, d in enumerate(long))
                    + "".join(f"b,{d},{i}\n" for i, d in enumerate(short)))
    ds = read_timeseries(path, "date", "price", series_id_column="id")
    assert [s.freq for s in ds] == ["1B", "1B"]
    np.testing.assert_array_equal(ds["a"].time, pd.bdate_range("2024-01-01", "2024-01-31").to_numpy().astype("datetime64[s]"))


def test_weekend_error_counts_the_weekend_rows_only_when_there_are_several(tmp_path: Path) -> None:
    days = _business_days("2024-01-01", "2024-01-20")
    one = np.sort(np.append(days, np.datetime64("2024-01-14")))  # a Sunday
    path = tmp_path / "one.csv"
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in one))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price", freq="B")
    assert "2024-01-14T00:00:00 is a Sunday" in str(err.value) and "fall on weekends" not in str(err.value)
    two = np.sort(np.append(one, np.datetime64("2024-01-06")))  # and a Saturday, earlier
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in two))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price", freq="B")
    assert f"{path}:{2 + int(np.flatnonzero(two == np.datetime64('2024-01-06'))[0])}: " in str(err.value)
    assert "2024-01-06T00:00:00 is a Saturday" in str(err.value) and "; 2 timestamps fall on weekends" in str(err.value)


def test_a_business_day_at_another_time_of_day_is_off_the_grid(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    grid = pd.bdate_range("2024-01-01 16:00", periods=15, normalize=False)
    stamps = [str(t) for t in grid]
    stamps[6] = str(grid[6] - pd.Timedelta(hours=1))  # 15:00 on a business day: not a time of the 16:00 grid
    assert pd.Timestamp(stamps[6]) not in grid
    path = tmp_path / "t.csv"
    path.write_text("date,price\n" + "".join(f"{t},1\n" for t in stamps))
    with pytest.raises(DataError, match=f"t.csv:8: timestamp {grid[6].date()}T15:00:00 is off the regular 1B grid"):
        read_timeseries(path, "date", "price", freq="B")
def test_holiday_gap_hint_offers_fills_but_not_regular_false(tmp_path: Path) -> None:
    days = _business_days("2024-01-01", "2024-02-10")
    days = days[days != np.datetime64("2024-01-15")]  # a Monday holiday
    path = tmp_path / "h.csv"
    path.write_text("date,price\n" + "".join(f"{d},1\n" for d in days))
    with pytest.raises(DataError) as err:
        read_timeseries(path, "date", "price")
    message = str(err.value)
    # regular=False would drop the business-day grid (and the frequency) the holidays sit on
    assert "holidays?" in message and "fill='ffill' or 'interpolate'" in message and "regular" not in message



# -- class_quotas ------------------------------------------------------------------------------
def _largest_remainders(sizes: list[int], total: int, ties: list[int]) -> list[int]:
    """Hamilton's largest-remainder method in exact fractions, a class capped at ``size - 1``: floors first,
    then one more each by decreasing remainder (ties by ``ties``), skipping a class at its cap, in
    rounds until ``total`` or every cap is reached."""
    n = sum(sizes)
    shares = [Fraction(size * total, n) for size in sizes]
    quotas = [min(math.floor(share), max(size - 1, 0)) for share, size in zip(shares, sizes)]
    ranked = sorted(range(len(sizes)), key=lambda c: (-(shares[c] - quotas[c]), ties[c]))
    while sum(quotas) < total and any(quotas[c] < max(sizes[c] - 1, 0) for c in ranked):  # rounds, as needed
        for c in ranked:
            if sum(quotas) < total and quotas[c] < max(sizes[c] - 1, 0):
                quotas[c] += 1
    return quotas


def test_class_quotas_equal_a_plain_largest_remainder_allocation() -> None:
    from rnnkit.data.splits import class_quotas

    assert class_quotas([0, 4, 6], 3, [0, 1, 2]) == [0, 1, 2]  # shares 0, 1.2, 1.8
    rng = random.Random(16)
    checked = 0
    while checked < 400:
        sizes = [rng.randint(0 if k else 1, 12) for k in range(rng.randint(1, 5))]  # an empty class gives none
        if rng.random() < 0.5:  # equal classes: equal remainders, ordered by the tie values
            sizes = sizes[:1] * len(sizes)
        total = rng.randint(1, sum(sizes))
        n = sum(sizes)
        remainders = {size: Fraction(size * total, n) % 1 for size in set(sizes)}
        if len(set(remainders.values())) < len(remainders):
            continue  # classes of different sizes with equal remainders: their float remainders may differ
        ties = rng.sample(range(10), len(sizes))
        assert class_quotas(sizes, total, ties) == _largest_remainders(sizes, total, ties), (sizes, total, ties)
        checked += 1


# -- Keras' model.layers order ---------------------------------------------------------------
_rk = types.SimpleNamespace(layers=rnnkit.layers, Input=rnnkit.layers.Input, Model=rnnkit.models.Model)


def _order_graphs(keras: Any) -> dict[str, Any]:
    layers, out = keras.layers, {}
    # ``a`` feeds a shallow reader (s) and a deep one (d1): its depth is the deeper path's, also when the
    # shallow reader comes later in the walk (z0 shares the depth a would wrongly get, and is met first)
    i = keras.Input(shape=(4,), name="i")
    z = layers.Dense(2, name="z2")(layers.Dense(4, name="z1")(layers.Dense(4, name="z0")(i)))
    a = layers.Dense(4, name="a")(i)
    s = layers.Dense(2, name="s")(a)
    d2 = layers.Dense(2, name="d2")(layers.Dense(4, name="d1")(a))
    out["late_shallow_reader"] = keras.Model(i, [z, layers.Concatenate(name="cat")([s, d2])])
    # a shared layer called shallow (r) and deep (q): its depth is its deepest call's, ahead of x0 met first;
    # it keeps its place of first meeting, ahead of y0 at its depth
    j = keras.Input(shape=(4,), name="j")
    shared = layers.Dense(4, name="shared")
    x = layers.Dense(2, name="x1")(layers.Dense(4, name="x0")(j))
    r = layers.Dense(2, name="r")(shared(j))
    y = layers.Dense(2, name="y2")(layers.Dense(4, name="y1")(layers.Dense(4, name="y0")(j)))  # ties shared, met later
    q2 = layers.Dense(2, name="q2")(layers.Dense(4, name="q")(shared(layers.Dense(4, name="p")(j))))
    out["shared_called_shallow_and_deep"] = keras.Model(j, [x, r, y, q2])
    return out


@needs_keras
@pytest.mark.parametrize("graph", ["late_shallow_reader", "shared_called_shallow_and_deep"])
def test_functional_layer_order_matches_keras_when_depths_must_be_maxed(graph: str) -> None:
    keras = keras_module()
    kmodel, model = _order_graphs(keras)[graph], _order_graphs(_rk)[graph]
    assert [layer.name for layer in model.layers] == [layer.name for layer in kmodel.layers]
    model.set_weights(kmodel.get_weights())
    x = np.random.default_rng(2).random((2, 4)).astype("float32")
    ours, theirs = model.predict(x, verbose=0), kmodel.predict(x, verbose=0)
    for o, t in zip(ours if isinstance(ours, list) else [ours], theirs if isinstance(theirs, list) else [theirs]):
        np.testing.assert_allclose(np.asarray(o), np.asarray(t), atol=1e-5)


# -- precision names and dtypes -------------------------------------------------------------
def test_check_precision_takes_lightnings_integer_and_spaced_spellings() -> None:
    from rnnkit.tasks.config import ConfigError, check_precision

    # Lightning's Trainer(precision=16 / 64 / 32) and YAML's unquoted 16 are integers; a CLI value may carry spaces
    assert [check_precision(v) for v in (16, 32, 64)] == ["16-mixed", "32-true", "64-true"]
    assert check_precision(" bf16 ") == "bf16-mixed" and check_precision(" 16-true\n") == "16-true"
    for bad in (True, 16.0, "fp16"):
        with pytest.raises(ConfigError, match="train.precision"):
            check_precision(bad)


def test_restore_dtypes_puts_back_float_buffers_and_keeps_integer_ones() -> None:
    from torch import nn

    from rnnkit.training.dtypes import floating_dtypes, restore_dtypes

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = {k: v.dtype for k, v in model.state_dict().items()}
    record = floating_dtypes(model)
    model.to(dtype=torch.bfloat16)  # what Lightning's bf16-true does
    assert model[1].running_mean.dtype == torch.bfloat16 and model[1].num_batches_tracked.dtype == torch.long
    restore_dtypes(model, record)
    assert {k: v.dtype for k, v in model.state_dict().items()} == before


# -- round 16, continued: forecasting's re-read on the trained business grid -----------------------
def _business_forecaster(tmp_path: Path, step: int) -> Any:
    """A forecaster trained (one epoch) on every ``step``-th business day of 2022's first half (1B inferred,
    2B given as data.freq)."""
    import json

    from typer.testing import CliRunner

    from rnnkit.cli import app
    from rnnkit.tasks.forecasting import TrainedForecaster

    days = _business_days("2022-01-03", "2022-07-02")[::step]
    path = tmp_path / "train.csv"
    path.write_text("date,price\n" + "".join(f"{d},{50 + 0.02 * i + 0.3 * (i % 5):.4f}\n" for i, d in enumerate(days)))
    result = CliRunner().invoke(app, ["train", "forecasting", "--train", str(path), "--out", str(tmp_path / "runs"), "--json",
                                      *(f"--set={kv}" for kv in ("data.time_column=date", "data.target=price",
                                                                 "data.lookback=3", "data.horizon=2", "data.test_size=10",
                                                                 "train.epochs=1", "model.hidden_size=4",
                                                                 "train.accelerator=cpu",
                                                                 *([f"data.freq={step}B"] if step > 1 else [])))])
    assert result.exit_code == 0, result.output
    return TrainedForecaster.load(json.loads(result.output)["run"])


def _series_file(path: Path, rows: list[tuple[str, np.datetime64]]) -> Path:
    path.write_text("id,date,price\n" + "".join(f"{sid},{d},{i}\n" for i, (sid, d) in enumerate(rows)))
    return path


def test_business_model_rereads_only_weekday_files_with_no_freq_given_on_its_own_grid(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    model = _business_forecaster(tmp_path, 1)
    wed_to_fri = np.arange("2022-06-29", "2022-07-02", dtype="datetime64[D]")
    path = _series_file(tmp_path / "a.csv", [("a", d) for d in wed_to_fri])
    nxt = pd.bdate_range(pd.Timestamp("2022-07-01") + pd.offsets.BDay(1), periods=2).strftime("%Y-%m-%d").tolist()
    assert [r["time"] for r in model.forecast(path, overrides=["data.series_id_column=id"])] == nxt
    # data.freq given: the file is read as the user says (daily), and refused, not re-read as business days
    with pytest.raises(DataError, match="series 'a' steps by 1D, but the model was trained on data that steps by 1B"):
        model.forecast(path, overrides=["data.series_id_column=id", "data.freq=1D"])
    # a second series with a Saturday: the file is not weekdays only, so it stays daily (and is refused as such)
    week = np.arange("2022-06-24", "2022-07-02", dtype="datetime64[D]")
    assert not np.is_busday(week).all()
    path = _series_file(tmp_path / "b.csv", [("a", d) for d in wed_to_fri] + [("b", d) for d in week])
    with pytest.raises(DataError, match="series 'a' steps by 1D, but the model was trained on data that steps by 1B"):
        model.forecast(path, overrides=["data.series_id_column=id"])


def test_a_two_business_day_model_rereads_weekdays_on_its_2b_grid(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    model = _business_forecaster(tmp_path, 2)
    mon_to_fri = np.arange("2022-06-27", "2022-07-02", dtype="datetime64[D]")
    grid = pd.bdate_range("2022-06-27", periods=3, freq="2B")  # pandas: 06-27, 06-29, 07-01
    assert pd.Timestamp("2022-06-28") not in grid
    path = _series_file(tmp_path / "d.csv", [("a", d) for d in mon_to_fri])
    # data.freq=null clears the trained setting: the daily file is re-read on the trained 2B grid (not on 1B,
    # then refused as a 1B series), where Tuesday is off it, named by its line
    with pytest.raises(DataError, match=r"d.csv:3: timestamp 2022-06-28T00:00:00 is off the regular 2B grid"):
        model.forecast(path, overrides=["data.series_id_column=id", "data.freq=null"])


# -- round 16, continued: the image dev hold-out -------------------------------------------------
def _split_dev_by_hand(labels: list[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """The documented hold-out, by hand: round(n * fraction) (at least 1) dev examples by exact largest
    remainders, ties by a class's first place in the seeded order; a class's first examples in that
    order go to dev."""
    n = len(labels)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    classes = sorted(set(labels))
    seq = [labels[i] for i in order]
    sizes = [seq.count(c) for c in classes]
    quotas = _largest_remainders(sizes, max(1, round(n * fraction)), [seq.index(c) for c in classes])
    held: list[int] = []
    for c, q in zip(classes, quotas):
        held += [i for i in order if labels[i] == c][:q]
    return sorted(set(range(n)) - set(held)), sorted(held)


def test_image_dev_hold_out_equals_a_hand_stratified_largest_remainder_draw() -> None:
    from rnnkit.tasks.image_classification import _split_dev

    assert max(1, round(10 * 0.17)) == 2 and int(10 * 0.17) == 1  # rounded, not floored
    rng = random.Random(16)
    for case in range(200):
        k = rng.randint(1, 4)
        n_per = [rng.randint(1, 9) for _ in range(k)]
        if case % 2:  # equal classes: equal remainders, ordered by each class's first place in the seeded order
            n_per = n_per[:1] * k
        labels = [f"c{c}" for c, m in enumerate(n_per) for _ in range(m)]
        rng.shuffle(labels)
        fraction, seed = rng.choice([0.1, 0.17, 0.25, 0.3, 0.45]), rng.randint(0, 99)
        keep, held = _split_dev(np.asarray(labels), fraction, seed)
        assert (keep.tolist(), held.tolist()) == _split_dev_by_hand(labels, fraction, seed), (labels, fraction, seed)


# -- round 16, continued: translation's side checks ------------------------------------------------
def _translation_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    src_words = ["ka", "lu", "mi", "no", "pe", "ri", "so", "tu"]
    tgt_words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    rng = random.Random(seed)
    src, tgt = [], []
    for _ in range(n):
        idx = [rng.randrange(len(src_words)) for _ in range(rng.randint(2, 5))]
        src.append(" ".join(src_words[i] for i in idx))
        tgt.append(" ".join(tgt_words[i] for i in reversed(idx)))
    return src, tgt


def _per_word(tokenize: Any, lines: list[str]) -> float:
    return sum(len(tokenize(s)) for s in lines) / sum(len(s.split()) for s in lines)


def test_translation_side_checks_need_both_sides_and_read_the_first_side_sample() -> None:
    from rnnkit.tasks.config import ConfigError
    from rnnkit.tasks.translation import SIDE_SAMPLE, SWAPPED_MARGIN, DataConfig, Preprocessor

    prep = Preprocessor.fit(*_translation_pairs(300, 0), DataConfig(vocab_size=40))
    by = {side: getattr(prep, side).tokenizer.tokenize for side in ("source", "target")}
    src, _ = _translation_pairs(30, 1)
    # source text on both sides: the target side is cheaper under the source vocabulary, the source side is
    # not cheaper under the target one, so the pair is not swapped (the target just is not the target language)
    assert _per_word(by["target"], src) > SWAPPED_MARGIN * _per_word(by["source"], src)
    assert not _per_word(by["source"], src) > SWAPPED_MARGIN * _per_word(by["target"], src)
    prep.check_sides(src, src, "x", "fix")
    # only the first SIDE_SAMPLE pairs are measured: right ones there, swapped ones after
    right, swapped = _translation_pairs(SIDE_SAMPLE, 2), _translation_pairs(4000, 3)
    prep.check_sides(right[0] + swapped[1], right[1] + swapped[0], "x", "fix")
    with pytest.raises(ConfigError, match="look swapped"):  # the same swapped pairs first are refused
        prep.check_sides(swapped[1] + right[0], swapped[0] + right[1], "x", "fix")
    foreign = [" ".join(random.Random(i).choice(["xyzzy", "qwv", "jjkx", "zqzq"]) for _ in range(4)) for i in range(3000)]
    assert _per_word(by["source"], foreign) > 1.5 * prep.train_subwords_per_word["source"]
    assert prep.language_notes(right[0] + foreign, right[1], "x") == []
    assert len(prep.language_notes(foreign + right[0], right[1], "x")) == 1


# -- round 16, continued: the layer's dtype under autocast ---------------------------------------
@pytest.mark.parametrize("impl", ["reference", "engine", "auto"])
def test_autocast_states_in_either_dtype_match_torch_nn_and_carry_the_layers_dtype(impl: str) -> None:
    """Under CPU autocast torch.nn takes a float32 input with an encoder's bfloat16 state, and a bfloat16
    input with none; rnnkit does too, and its reference scan and engine carry and return the layer's
    float32 (the fused kernel, as torch.nn, returns bfloat16). An integer state is refused, as torch.nn
    refuses it."""
    from torch import nn

    import rnnkit.nn as rnn

    torch.manual_seed(0)
    ref = nn.LSTM(5, 8, batch_first=True)
    layer = rnn.LSTM(5, 8, batch_first=True)
    layer.load_state_dict(ref.state_dict())
    layer.implementation = impl
    x, hx = torch.randn(3, 12, 5), (torch.randn(1, 3, 8), torch.randn(1, 3, 8))
    hx_bf = tuple(h.bfloat16() for h in hx)
    want = torch.float32 if impl != "auto" else torch.bfloat16
    for xi, hi, hr in ((x, hx_bf, tuple(h.float() for h in hx_bf)), (x.bfloat16(), None, None)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, (h, c) = layer(xi, hi)
        expected, (eh, ec) = ref(xi.float(), hr)  # float32 torch.nn on the same (rounded) values
        assert {out.dtype, h.dtype, c.dtype} == {want}
        for got, w in ((out, expected), (h, eh), (c, ec)):
            torch.testing.assert_close(got.float(), w, atol=0.03, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            ref(x, tuple(h.long() for h in hx))
        with pytest.raises(ValueError, match=r"hx\[0\] is torch.int64 on cpu but the input is torch.float32"):
            layer(x, tuple(h.long() for h in hx))


@pytest.mark.parametrize("impl", ["reference", "engine"])
def test_a_stateful_layer_under_autocast_carries_its_state_in_float32_between_calls(impl: str) -> None:
    """Streaming bfloat16 chunks under autocast gives what passing each call's final state as the next
    call's ``hx`` gives (torch.nn's meaning of carrying state): the state carried between calls stays in
    the layer's float32, not rounded to the input's bfloat16. (Chunks, not one call on the whole sequence:
    autocast's bfloat16 input projection rounds differently for another number of steps.)"""
    import rnnkit.nn as rnn

    torch.manual_seed(0)
    stream = rnn.LSTM(5, 8, batch_first=True, stateful=True, implementation=impl)
    plain = rnn.LSTM(5, 8, batch_first=True, implementation=impl)
    plain.load_state_dict(stream.state_dict())
    x = torch.randn(3, 24, 5).bfloat16()
    got, want, hx = [], [], None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for part in x.split(8, dim=1):
            got.append(stream(part)[0])
            out, hx = plain(part, hx)
            want.append(out)
    assert stream.state is not None and all(s.dtype == torch.float32 for s in stream.state)
    assert hx is not None and all(h.dtype == torch.float32 for h in hx)
    torch.testing.assert_close(torch.cat(got, 1), torch.cat(want, 1), atol=1e-6, rtol=0)
