"""Think-Then-Embed on the starter: held-out Hit@1 of the starter embedder without and with reasoning traces.

    python scripts/report_tte_starter.py                     # starter embedder + starter reasoner
    python scripts/report_tte_starter.py --think-tokens 64 --out reports/tte-starter-64

Three conditions on the starter's held-out records (each query ranked against every document of its
task, pessimistic ties, as in ``mmcascade.evaluation.records_eval``):

* ``none``: the query alone;
* ``student``: the query plus the trace of the student reasoner (``--reasoner``, greedy, ``--think-tokens``);
* ``teacher``: the query plus the templated teacher's trace, written from the ground truth: an upper bound
  on what a perfect reasoner could give this embedder.

Hit@1 is reported per task and per kind (compositional scenes: several objects and a relation; simple:
one object, VQA, labels), with how often the student's answer line equals the teacher's. Writes
``<out>/README.md`` and ``<out>/results.json``. Student traces are cached in the trace cache, so a rerun
only re-embeds.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

try:
    import mmcascade  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


from _starter_finetune import finetune_starter

from mmcascade.data.records import TrainingRecord, read_records, write_records
from mmcascade.data.synthetic.teacher import STARTER_TASK_KINDS, TemplatedTeacher, read_annotated_queries
from mmcascade.evaluation.records_eval import evaluate_records
from mmcascade.reasoner import GenerationSettings, TraceCache, default_trace_cache_path, parse_trace, reason, with_trace

COMMAND = "python scripts/report_tte_starter.py"
CONDITIONS = ("none", "student", "teacher")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/starter"), help="starter data (make starter builds it)")
    parser.add_argument("--embedder", default="starter")
    parser.add_argument("--reasoner", default="starter")
    parser.add_argument("--think-tokens", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--queries-per-task", type=int, default=40, help="the first N records of each task (0: all; CPU time)"
    )
    parser.add_argument(
        "--embedder-steps", type=int, default=60, help="steps of TTE embedder training on teacher traces (0: skip)"
    )
    parser.add_argument("--out", type=Path, default=Path("reports/tte-starter"))
    args = parser.parse_args()

    from mmcascade import Embedder
    from mmcascade.reasoner.local import LocalReasoner

    heldout = args.data / "heldout.jsonl"
    if not heldout.is_file():
        from mmcascade.data.synthetic.starter_split import build_starter_data

        print(f"building the starter data in {args.data}", file=sys.stderr)
        build_starter_data(args.data)
    annotated = dict(read_annotated_queries(heldout)[0])
    records, lines = _first_per_task(list(read_records(heldout)), _record_lines(heldout), args.queries_per_task)
    teacher = TemplatedTeacher()
    teacher_traces = [parse_trace(teacher.trace(annotated[line])) for line in lines]

    reasoner = LocalReasoner.from_pretrained(args.reasoner, batch_size=args.batch_size)
    settings = GenerationSettings(max_new_tokens=args.think_tokens)
    started = time.perf_counter()
    student_traces: list = [None] * len(records)
    with TraceCache(default_trace_cache_path()) as cache:
        for kind, indices in _by_prompt_kind(records).items():
            traces = reason(
                reasoner,
                [records[index].query for index in indices],
                task=kind,
                settings=settings,
                cache=cache,
                batch_size=args.batch_size,
                on_batch=lambda done, total, kind=kind: print(f"  {kind}: {done}/{total}", file=sys.stderr),
            )
            for index, trace in zip(indices, traces, strict=True):
                student_traces[index] = trace
    reasoning_seconds = time.perf_counter() - started

    traced = {
        "none": records,
        "student": [_with(record, trace) for record, trace in zip(records, student_traces, strict=True)],
        "teacher": [_with(record, trace) for record, trace in zip(records, teacher_traces, strict=True)],
    }
    embedder = Embedder.from_pretrained(args.embedder)
    results: dict[str, dict] = {condition: _hit_at_1(embedder, traced[condition]) for condition in CONDITIONS}
    trained = {}
    if args.embedder_steps:
        # Decoupled TTE: the embedder learns to read traces (teacher traces on training queries); a control
        # trains the same steps on the same records without traces.
        with tempfile.TemporaryDirectory() as folder:
            for label, with_traces in (("tte", True), ("control", False)):
                records_path = _training_records(args.data, Path(folder) / f"{label}.jsonl", with_traces)
                final = finetune_starter(records_path, Path(folder) / f"run-{label}", args.embedder_steps)
                tuned = Embedder.from_pretrained(final)
                conditions = CONDITIONS if with_traces else ("none",)
                trained[label] = {condition: _hit_at_1(tuned, traced[condition]) for condition in conditions}
    agreement = _answer_agreement(records, student_traces, teacher_traces)
    incomplete = sum(1 for trace in student_traces if not trace.complete)
    summary = {
        "embedder": args.embedder,
        "reasoner": args.reasoner,
        "think_tokens": args.think_tokens,
        "n_queries": len(records),
        "queries_per_task": args.queries_per_task,
        "student_incomplete_traces": incomplete,
        "student_answer_equals_teacher": agreement,
        "reasoning_seconds": reasoning_seconds,
        "hit@1": results,
        "embedder_steps": args.embedder_steps,
        "hit@1_after_training": trained,
        "machine": f"{platform.processor() or platform.machine()}, {platform.system()}",
        "command": f"{COMMAND} --think-tokens {args.think_tokens} --queries-per-task {args.queries_per_task}",
        "examples": [
            {
                "query": _describe(records[index].query),
                "student": student_traces[index].raw,
                "teacher": teacher_traces[index].raw,
            }
            for index in _example_indices(records)
        ],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "README.md").write_text(_readme(summary))
    print((args.out / "README.md").read_text())


def _record_lines(path: Path) -> list[int]:
    """The file line of each record, in order (blank lines skipped, as the readers do)."""
    with path.open(encoding="utf-8-sig") as handle:
        return [number for number, text in enumerate(handle, start=1) if text.strip()]


def _training_records(data: Path, out: Path, with_traces: bool) -> Path:
    """The starter training records, queries followed by the templated teacher's trace when ``with_traces``."""
    records = list(read_records(data / "train.jsonl"))
    if with_traces:
        annotated = dict(read_annotated_queries(data / "train.jsonl")[0])
        teacher = TemplatedTeacher()
        lines = _record_lines(data / "train.jsonl")
        records = [
            _with(record, parse_trace(teacher.trace(annotated[line]))) if line in annotated else record
            for record, line in zip(records, lines, strict=True)
        ]
    write_records(out, records)
    return out


def _first_per_task(records: list[TrainingRecord], lines: list[int], limit: int) -> tuple[list, list[int]]:
    """The first ``limit`` records of each task (all when 0), with their file lines."""
    if not limit:
        return records, lines
    taken: dict[str, int] = defaultdict(int)
    keep = []
    for index, record in enumerate(records):
        if taken[record.meta["task"]] < limit:
            taken[record.meta["task"]] += 1
            keep.append(index)
    return [records[index] for index in keep], [lines[index] for index in keep]


def _by_prompt_kind(records: list[TrainingRecord]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        groups[STARTER_TASK_KINDS[record.meta["task"]]].append(index)
    return dict(groups)


def _with(record: TrainingRecord, trace) -> TrainingRecord:
    from dataclasses import replace

    return replace(record, query=with_trace(record.query, trace))


def _hit_at_1(embedder, records: list[TrainingRecord]) -> dict:
    """Hit@1 overall, per task, and per (task, kind): documents are pooled per task, so tasks run apart."""
    by_task: dict[str, list[TrainingRecord]] = defaultdict(list)
    for record in records:
        by_task[record.meta["task"]].append(record)
    table: dict[str, float] = {}
    hits, total = 0.0, 0
    per_kind: dict[str, list[float]] = defaultdict(list)
    for task, task_records in sorted(by_task.items()):
        (scores,) = evaluate_records(embedder, task_records)
        table[task] = scores.hit_at_1
        for kind, value in scores.per_kind.items():
            count = sum(1 for record in task_records if record.meta.get("kind") == kind)
            table[f"{task}/{kind}"] = value
            per_kind[kind].append(value * count)
        hits += scores.hit_at_1 * scores.n_queries
        total += scores.n_queries
    for kind, weighted in per_kind.items():
        count = sum(1 for record in records if record.meta.get("kind") == kind)
        table[f"all/{kind}"] = sum(weighted) / count
    table["all"] = hits / total
    return table


def _answer_agreement(records, student, teacher) -> dict[str, float]:
    matches: dict[str, list[bool]] = defaultdict(list)
    for record, mine, reference in zip(records, student, teacher, strict=True):
        matches[record.meta["task"]].append(mine.answer.strip().lower() == reference.answer.strip().lower())
    return {task: sum(values) / len(values) for task, values in sorted(matches.items())}


def _example_indices(records: list[TrainingRecord]) -> list[int]:
    seen, picks = set(), []
    for index, record in enumerate(records):
        key = (record.meta["task"], record.meta.get("kind"))
        if key not in seen:
            seen.add(key)
            picks.append(index)
    return picks


def _describe(item) -> str:
    parts = [repr(item.text)] if item.text else []
    parts += [f"[image {Path(str(image)).name}]" for image in item.images]
    return " + ".join(parts)


def _readme(summary: dict) -> str:
    results = summary["hit@1"]
    rows = sorted(key for key in results["none"] if key != "all")
    lines = [
        "# Think-Then-Embed on the starter: Hit@1 with and without reasoning traces",
        "",
        f"Embedder `{summary['embedder']}`, reasoner `{summary['reasoner']}` (greedy, {summary['think_tokens']} "
        f"reasoning tokens), {summary['n_queries']} held-out queries of the starter data (the first "
        f"{summary['queries_per_task']} of each task; 0 = all); each query is ranked against every document of "
        "those records of its task (positives and hard negatives; pessimistic ties).",
        "",
        "| split | no trace | student trace | teacher trace (upper bound) |",
        "|---|---:|---:|---:|",
    ]
    for key in ["all", *rows]:
        cells = " | ".join(f"{results[condition][key]:.3f}" for condition in CONDITIONS)
        lines.append(f"| {key} | {cells} |")
    trained = summary.get("hit@1_after_training") or {}
    if trained:
        lines += [
            "",
            f"## After {summary['embedder_steps']} steps of embedder training (decoupled TTE)",
            "",
            "The starter embedder trained further (its own recipe: configs/starter-fusion.yaml for the late-fusion starter, configs/starter.yaml for the MiniLM one; lower learning rate) on the starter "
            "training records with the teacher's trace appended to every query (`tte`), and, as a control, the same "
            "steps on the same records without traces (`control`). Same held-out queries and pools as above.",
            "",
            "| split | control, no trace | tte, no trace | tte, student trace | tte, teacher trace |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in ["all", *rows]:
            cells = [trained["control"]["none"][key], *(trained["tte"][condition][key] for condition in CONDITIONS)]
            lines.append(f"| {key} | " + " | ".join(f"{value:.3f}" for value in cells) + " |")
    lines += [
        "",
        "Student answers equal to the teacher's (per task): "
        + ", ".join(f"{task} {value:.2f}" for task, value in summary["student_answer_equals_teacher"].items()),
        f"; incomplete student traces: {summary['student_incomplete_traces']}. Reasoning took "
        f"{summary['reasoning_seconds']:.0f} s on {summary['machine']} (0 when every trace came from the cache).",
        "",
        "## Examples",
        "",
    ]
    for example in summary["examples"]:
        lines += [
            f"- query {example['query']}",
            f"  - student: `{example['student']!r}`",
            f"  - teacher: `{example['teacher']!r}`",
        ]
    lines += ["", f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
