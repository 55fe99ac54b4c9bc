"""Review commands: flag, judge, verdict, undo, queue, weights, stats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

from app.progress import bar


def register(app: typer.Typer) -> None:
    app.command("flag")(flag)
    app.command("judge")(judge)
    app.command("verdict")(verdict)
    app.command("undo")(undo)
    app.command("queue")(queue)
    app.command("weights")(weights)
    app.command("stats")(stats)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _default_author() -> str:
    import getpass

    return os.environ.get("MASKBENCH_USER") or getpass.getuser()


def flag(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    threshold: Optional[float] = typer.Option(
        None, help="Flag when teacher/student IoU < 1 - threshold (default: distillation.disagreement_threshold)."),
    force: bool = typer.Option(False, help="Recompute every record, even unchanged ones."),
    workers: int = typer.Option(4, help="Metric threads."),
) -> None:
    """Compare the latest teacher and student prediction of every sample and store the disagreement records."""
    from review.flagging import flag as run_flag
    from store.config import threshold as cfg_threshold
    from store.project import Project

    with Project.open(project) as p:
        t = cfg_threshold(p.config) if threshold is None else threshold
        with bar("flag") as progress:
            report = run_flag(p.db, t, progress=progress, force=force, workers=workers)
    typer.echo(f"threshold {t:g} (flag when IoU < {1 - t:g})")
    typer.echo(f"  {'class':<16} {'flagged':>8} {'samples':>8}")
    for cls in sorted(report.total):
        typer.echo(f"  {cls:<16} {report.flagged[cls]:>8} {report.total[cls]:>8}")
    typer.echo(f"flagged {report.flagged_total} of {report.pairs_total}; new records {report.written}, "
               f"unchanged {report.unchanged}, without a pair {report.missing_pair}, bad {len(report.bad)}")
    for sid, reason in report.bad[:20]:
        typer.echo(f"  sample {sid}: {reason}")


def judge(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    model: Optional[str] = typer.Option(None, help="Primary LiteLLM model, e.g. openai/gpt-4o."),
    fallback: Optional[list[str]] = typer.Option(None, "--fallback", help="Fallback model (repeatable)."),
    no_fallbacks: bool = typer.Option(False, "--no-fallbacks", help="Use the primary model only."),
    api_base: Optional[str] = typer.Option(None, "--api-base", help="OpenAI-compatible server for the primary."),
    budget_usd: Optional[float] = typer.Option(None, "--budget-usd", help="Hard spending cap for this run (USD)."),
    key_budget_usd: Optional[float] = typer.Option(None, "--key-budget-usd",
                                                   help="Cap on all runs' spend per API key (USD)."),
    workers: Optional[int] = typer.Option(None, help="Concurrent requests."),
    swap: Optional[bool] = typer.Option(None, "--swap/--no-swap", help="Ask twice with A/B swapped."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per request."),
    retries: Optional[int] = typer.Option(None, help="Retries on 429/5xx/timeouts before falling back."),
    defect_class: Optional[str] = typer.Option(None, "--class", help="Only this defect class."),
    limit: Optional[int] = typer.Option(None, help="At most this many samples."),
    rejudge: bool = typer.Option(False, help="Also samples that already have a VLM verdict (cache answers repeats)."),
    skip_reviewed: bool = typer.Option(False, help="Skip samples a human has reviewed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be judged and the worst-case cost."),
) -> None:
    """Ask the VLM judge which mask follows the defect better, for every pending flagged sample."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from review.judge import JudgeRun, JudgeSettings
    from store.project import Project

    with Project.open(project) as p:
        overrides = dict(model=model, api_base=api_base, budget_usd=budget_usd, key_budget_usd=key_budget_usd,
                         workers=workers, swap=swap, timeout_s=timeout, retries=retries)
        if no_fallbacks:
            overrides["fallbacks"] = []
        elif fallback:
            overrides["fallbacks"] = list(fallback)
        settings = JudgeSettings.from_config(p.config, **overrides)
        run = JudgeRun(p.db, settings, rejudge=rejudge, defect_class=defect_class, limit=limit,
                       skip_reviewed=skip_reviewed)
        for w in run.stats.warnings:
            typer.echo(f"warning: {w}", err=True)
        n, worst = run.estimate()
        chain = " -> ".join(a.model for a in run.access)
        typer.echo(f"judge {chain}; {n} pending sample(s); worst case ${worst:.4f}; "
                   f"budget ${settings.budget_usd:.2f}; workers {settings.workers}{'; swap' if settings.swap else ''}")
        if dry_run or n == 0:
            if n == 0:
                typer.echo("nothing to judge")
            return
        with bar("judge") as progress:
            run.progress = progress
            try:
                st = run.run()
            except KeyboardInterrupt:
                run.cancel.set()
                raise
    models = ", ".join(f"{m} {c}" for m, c in sorted(st.by_model.items())) or "-"
    typer.echo(f"verdicts {st.verdicts} (uncertain {st.uncertain}); calls {st.calls}; cache hits {st.cache_hits}; "
               f"bad answers {st.bad_answers}; errors {st.errors}; answered by: {models}")
    typer.echo(f"spent ${st.spent_usd:.4f} of ${st.budget_usd:.2f}; not attempted {st.pending}; run {st.run_id}")
    if st.stopped == "budget":
        typer.echo("stopped: budget reached; the remaining samples stay pending (raise --budget-usd to continue)")
    elif st.stopped == "errors":
        typer.echo("stopped: too many consecutive errors (see JudgeCall errors or the log)")
    elif st.stopped == "cancelled":
        typer.echo("stopped: cancelled")


def verdict(
    sample_id: int = typer.Argument(..., help="Sample id."),
    kind: str = typer.Argument(..., help="teacher_better | student_better | both_good | both_bad | corrected"),
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    author: Optional[str] = typer.Option(None, help="Reviewer name (default: MASKBENCH_USER or the login name)."),
    mask: Optional[Path] = typer.Option(None, help="Corrected mask image (for 'corrected')."),
    reason: Optional[str] = typer.Option(None, help="Short note."),
) -> None:
    """Record a human verdict for one sample."""
    from review.verdicts import record_verdict
    from store.images import load_mask
    from store.project import Project

    corrected = load_mask(mask) if mask is not None else None
    with Project.open(project) as p:
        v = record_verdict(p.db, sample_id, kind, author or _default_author(), reason=reason,
                           corrected_mask=corrected)
    typer.echo(f"verdict {v.id}: sample {sample_id} {v.verdict.value} by {v.author}")


def undo(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    author: Optional[str] = typer.Option(None, help="Whose latest verdict to undo (default: you)."),
) -> None:
    """Undo your latest verdict still in effect (recorded as an undo row; nothing is deleted)."""
    from review.verdicts import undo_last
    from store.project import Project

    who = author or _default_author()
    with Project.open(project) as p:
        row = undo_last(p.db, who)
    if row is None:
        typer.echo(f"nothing to undo for {who}")
    else:
        typer.echo(f"undid verdict {row.supersedes_id} on sample {row.sample_id}")


def queue(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    status: str = typer.Option("pending", help="pending | reviewed | all"),
    defect_class: Optional[str] = typer.Option(None, "--class", help="Only this defect class."),
    limit: int = typer.Option(20, help="Rows to show."),
    order: str = typer.Option(
        "disagreement", help="disagreement (lowest teacher/student IoU first) | hardness (expected gain of a "
        "verdict first: disagreement x teacher/student confidence, see review/queue_order.py) | random (seeded)."),
    seed: int = typer.Option(0, help="Seed of --order random."),
) -> None:
    """List flagged samples (most disagreeing first, or --order hardness | random) with the VLM verdict, the human
    status and the hardness score."""
    from review.queue_order import ORDERS, ordered_queue, row_hardness
    from review.queue_rows import queue_count
    from store.errors import UserError
    from store.project import Project

    if order not in ORDERS:
        raise UserError(f"--order must be one of {', '.join(ORDERS)}, not {order!r}")
    with Project.open(project) as p, p.db.session() as s:
        total = queue_count(s, status=status, defect_class=defect_class)
        rows = ordered_queue(s, order, seed=seed, status=status, defect_class=defect_class, limit=limit)
    typer.echo(f"{total} flagged sample(s) ({status}), order: {order}")
    typer.echo(f"  {'sample':>7} {'class':<12} {'iou':>5} {'hard':>5} {'vlm':<15} {'conf':>5} {'human':<15}")
    for r in rows:
        conf = "" if r.vlm_confidence is None else f"{r.vlm_confidence:.2f}"
        typer.echo(f"  {r.sample_id:>7} {r.defect_class:<12} {r.iou_ts:>5.2f} {row_hardness(r):>5.2f} "
                   f"{r.vlm_verdict or '-':<15} {conf:>5} {r.human_verdict or 'pending':<15}")


def weights(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
    out: Path = typer.Option(Path("weights.csv"), "--out", "-o", help="CSV file to write."),
) -> None:
    """Write per-sample distillation weights (feature, soft, dice, hard) following docs/weights.md."""
    from review.weights import write_csv
    from store.project import Project

    with Project.open(project) as p:
        counts = write_csv(p, out)
    n = sum(counts.values())
    typer.echo(f"wrote {n} samples to {out} (human verdicts {counts['human']}, VLM {counts['vlm']}, "
               f"default {counts['none']})")


def stats(
    project: Path = typer.Option(..., "--project", "-p", help="Project folder."),
) -> None:
    """VLM-vs-human agreement and the share of disagreements won by the student, per class."""
    from review.stats import agreement_stats
    from store.project import Project

    with Project.open(project) as p:
        st = agreement_stats(p.db)
    typer.echo(f"  {'class':<14} {'flagged':>7} {'vlm':>5} {'human':>5} {'both':>5} {'agree':>6} "
               f"{'student wins (human)':>21} {'(all)':>6}")
    for cls, c in [*st.per_class.items(), ("all", st.total)]:
        typer.echo(f"  {cls:<14} {c.flagged:>7} {c.vlm:>5} {c.human:>5} {c.compared:>5} {_pct(c.agreement):>6} "
                   f"{_pct(c.student_win_share_human):>21} {_pct(c.student_win_share):>6}")
