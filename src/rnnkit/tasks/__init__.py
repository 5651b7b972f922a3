"""Applications: one pipeline per task, all driven by the same command line.

A task module defines ``NAME``, ``DESCRIPTION``, a ``Config`` dataclass (the config schema),
``train(config, train_path, dev_path, run, log, progress)`` and a trained-model class with
``load(run_dir)``, ``evaluate(path)`` and ``predict(inputs)``. Modules are imported only when
their task is used.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS: dict[str, tuple[str, str]] = {
    "language-model": ("rnnkit.tasks.language_model",
                       "Character-, word- or subword-level language models (TBPTT) and text generation"),
    "text-classification": ("rnnkit.tasks.text_classification",
                            "Sentiment analysis and text classification (CSV/TSV/JSONL, class folders, "
                            "'label sentence' lines)"),
    "tagging": ("rnnkit.tasks.tagging",
                "Named-entity recognition and sequence labelling from CoNLL column files (BiLSTM-CRF)"),
    "image-classification": ("rnnkit.tasks.image_classification", "Image recognition with images read as sequences (MNIST idx, npz, digits CSV; rows, pixels, permuted)"),
    "translation": ("rnnkit.tasks.translation",
                    "Machine translation with attentional recurrent encoder-decoders (BLEU/chrF, beam search)"),
    "forecasting": ("rnnkit.tasks.forecasting",
                    "Time-series forecasting from CSV with intervals, backtests and baselines"),
    "speech": ("rnnkit.tasks.speech", "Speech recognition from wav files: isolated words, CTC transcripts, connected digits, streaming"),
}
TRAINED_CLASS = {"language-model": "TrainedLanguageModel", "text-classification": "TrainedTextClassifier", "tagging": "TrainedTagger",
                 "image-classification": "TrainedImageClassifier", "forecasting": "TrainedForecaster",
                 "translation": "TrainedTranslator", "speech": "TrainedSpeechModel"}


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(sorted(TASKS))} (see 'rnnkit tasks')")
    return importlib.import_module(TASKS[name][0])


def load_trained(run_dir: str) -> object:
    """Load any trained task from its run folder (the task is read from ``model.json``)."""
    from .run import RunDir, RunError

    run = RunDir.open(run_dir)
    task = run.read_json("model.json").get("task")
    if task not in TASKS:
        raise RunError(f"{run.path}/model.json names an unknown task {task!r}")
    return getattr(get_task(task), TRAINED_CLASS[task]).load(run_dir)


def load_ensemble(run_dirs: list[str]) -> object:
    """Load several trained runs that decide together (tagging runs: :class:`~rnnkit.tasks.tagging_ensemble.TaggerEnsemble`)."""
    from .run import RunDir

    if len(run_dirs) == 1:
        return load_trained(run_dirs[0])
    for run_dir in run_dirs:
        task = RunDir.open(run_dir).read_json("model.json").get("task")
        if task != "tagging":
            raise ValueError(f"{run_dir} is a {task or 'unknown'} run; ensembles combine tagging runs (drop --ensemble)")
    from .tagging_ensemble import TaggerEnsemble

    return TaggerEnsemble.load(run_dirs)


__all__ = ["TASKS", "get_task", "load_ensemble", "load_trained"]
