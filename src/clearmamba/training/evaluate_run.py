"""The evaluation job behind ``clearmamba evaluate``: which exams to score, then metrics, CSV and report.

Which exams (``--split``):

- ``auto`` (default): when ``--data`` is the run's training source (same content hash), its recorded test split
  (the exams the run held out; the built-in benchmark adds its held-out-device and OOD sets); for any other source,
  all of it;
- ``test``: the recorded test split of the training source, or the test split another source names itself;
- ``all``: every labelled exam of the source.

Labels are read against the checkpoint's class names, so a set holding one class, or a test-only manifest, is
scored by the model's own classes; a label the model does not know is an error listing the ones it does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clearmamba.data.examset import ExamSet
from clearmamba.data.loaders import DataError, ReadOptions
from clearmamba.data.sources import POOL, SPLIT_NAMES, Source, as_unknown, open_source, open_unlabelled

from .evaluate import gallery_frames, provenance_of, write_evaluation
from .load import load_run
from .predict import predict
from .record import RunRecord


def recorded_test(source: Source, record: RunRecord) -> ExamSet:
    """The exams of ``source`` whose ids the run recorded as its test split, in that order."""
    exams = source.exams()
    position = {exam_id: i for i, exam_id in enumerate(exams.exam_id)}
    missing = [i for i in record.data.test_exam_ids if i not in position]
    if missing:
        raise DataError(f"--data {source.spec}: {len(missing)} recorded test exam(s) are missing from it (e.g. "
                        f"{missing[0]!r})")
    return exams.subset([position[i] for i in record.data.test_exam_ids], name="test")


def adapted(model, exams: ExamSet):
    """``model`` with BatchNorm statistics of ``exams`` (their frames, times and masks; never their labels)."""
    from clearmamba.adaptation import AdaptationConfig, UnlabelledExams, adapt

    return adapt(model, UnlabelledExams.from_examset(exams), AdaptationConfig()).model


def evaluation_sets(source: Source, record: RunRecord, split: str) -> tuple[dict[str, ExamSet], list[str]]:
    """The named sets to score and one line saying how many exams each holds and why."""
    same = source.sha256 == record.data.source_sha256
    # the built-in benchmark's held-out-device and OOD sets (its calibration set fitted the rule: not scored)
    extra = {n: s for n, s in source.sets.items() if n not in (*SPLIT_NAMES, POOL, "calibration")}
    if split == "all":
        sets = {"test": source.exams()}
        why = "every labelled exam" + (" (this is the training source: the count includes training exams)"
                                       if same else "")  # fmt: skip
    elif same:
        if not record.data.test_exam_ids:
            raise DataError(f"--data {source.spec}: the run recorded no test split; use --split all")
        sets = {"test": recorded_test(source, record)}
        rule = record.data.split
        how = f"drawn with seed {rule.seed}" if "test" in rule.drawn else "named by the source"
        why = f"the run's recorded test split ({how}), held out of training"
    elif split == "test":
        if "test" not in source.sets:
            raise DataError(f"--data {source.spec}: names no test split and is not the run's training source; "
                            "use --split all (or --split auto)")
        sets = {"test": source.sets["test"]}
        why = "the test split it names (not the training source)"
    else:
        if record.data.source == source.spec:
            why = "all of it: its content changed since training (hash differs), so no exam is known to be held out"
        else:
            why = "all of it (not the run's training source)"
        sets = {"test": source.exams()}
    sets.update(extra)
    notes = [f"scoring {len(sets['test'])} exams of {source.spec}: {why}"]
    notes += [f"also scoring {name} ({len(s)} exams)" for name, s in extra.items()]
    return sets, notes


def run_evaluation(checkpoint: str | Path, data: str, split: str = "auto", oods: dict[str, str] | None = None,
                   out: str | Path = "eval", n_boot: int = 200, max_pixels: int = ReadOptions.max_pixels,
                   encoding: str = "utf-8", device: str = "cpu",
                   adapt: bool = False) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Score ``checkpoint`` on ``data`` (and OOD sets); write metrics.json, predictions.csv, report.html."""
    model, record = load_run(checkpoint, "cpu" if device == "auto" else device)
    read = ReadOptions(channels=record.preprocessing.in_chans, size=record.preprocessing.frame_size,
                       max_pixels=max_pixels, encoding=encoding)  # fmt: skip
    builtin = record.data.builtin if data == "builtin" and record.data.builtin is not None else None
    source = open_source(data, read, class_names=record.classes, builtin=builtin)
    sets, notes = evaluation_sets(source, record, split)
    for name, path in (oods or {}).items():
        key = name if name.startswith("ood") else f"ood_{name}"
        sets[key] = as_unknown(open_unlabelled(path, read), name)
        notes.append(f"also scoring {key} ({len(sets[key])} exams from {path}, as unknown)")
    intensity = record.preprocessing.intensity
    if intensity.steps:  # what the model saw in training: the record's acquisition-invariant steps
        sets = {n: intensity.apply_examset(s) for n, s in sets.items()}
    name = record.model.arch
    target = "cpu" if device == "auto" else device
    if adapt:
        notes.append("BatchNorm statistics re-estimated on each set's unlabelled exams before scoring it (--adapt)")
    predictions = {name: {k: predict(adapted(model, v) if adapt else model, v, device=target)
                          for k, v in sets.items()}}  # fmt: skip
    oods_present = [k for k in sets if k.startswith("ood")]
    metrics = write_evaluation(
        out, predictions, list(record.classes), ood_sets={"test": oods_present} if oods_present else None,
        rules={name: record.referral}, gallery=gallery_frames(sets), n_boot=n_boot,
        metadata={"checkpoint": str(checkpoint), "data": data, "split": split},
        provenance=provenance_of({name: (record, Path(checkpoint))}, f"clearmamba evaluate --data {data}"),
    )  # fmt: skip
    return {"test": metrics["models"][name].get("test", {}), "all": metrics}, notes
