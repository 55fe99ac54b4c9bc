"""ORM schema of a maskbench project store.

The tables mirror the review loop: samples and their masks come in through ingest, models predict masks from
stored prompts, disagreement records pick crops for the judge and for humans, verdicts form an append-only audit
trail, and training runs, exports and latency results record what the ML side did with them. Masks are stored as
COCO RLE so a 100k-sample project stays a few hundred MB and any COCO tool can read them back.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class MaskSource(str, enum.Enum):
    GROUND_TRUTH = "ground_truth"
    TEACHER = "teacher"
    STUDENT = "student"
    CORRECTED = "corrected"
    # A model's output for a reviewer's prompts in the correction tool (Prediction.prompt_source "human"): kept apart
    # from TEACHER / STUDENT so it never stands in for the model's own prediction (review layers, approvals).
    PROMPTED = "prompted"
    # A mask a reviewer gave SAM 2 as its mask input (Prediction.mask_prompt_id), when it is not an existing row.
    MASK_PROMPT = "mask_prompt"


# Prediction.prompt_source of a mask a reviewer prompted in the correction tool (points, box, mask input)
HUMAN_PROMPT_SOURCE = "human"


class ModelKind(str, enum.Enum):
    TEACHER = "teacher"
    STUDENT = "student"


class VerdictKind(str, enum.Enum):
    TEACHER_BETTER = "teacher_better"
    STUDENT_BETTER = "student_better"
    BOTH_GOOD = "both_good"
    BOTH_BAD = "both_bad"
    CORRECTED = "corrected"
    UNCERTAIN = "uncertain"
    UNDO = "undo"


class VerdictAuthorKind(str, enum.Enum):
    HUMAN = "human"
    VLM = "vlm"


def _enum(e: type[enum.Enum], name: str) -> Enum:
    # native_enum=False keeps the column a VARCHAR + CHECK so SQLite and PostgreSQL share one migration path.
    return Enum(e, name=name, native_enum=False, values_callable=lambda x: [m.value for m in x], length=32)


class Sample(Base):
    __tablename__ = "samples"

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    defect_class: Mapped[str] = mapped_column(String(64), index=True)
    split: Mapped[str | None] = mapped_column(String(16), index=True, default=None)
    origin: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    masks: Mapped[list[Mask]] = relationship(back_populates="sample", cascade="all, delete-orphan")


class ModelRecord(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[ModelKind] = mapped_column(_enum(ModelKind, "model_kind"), index=True)
    architecture: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(16), default="torch")
    checkpoint_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    params: Mapped[int | None] = mapped_column(Integer, default=None)
    size_bytes: Mapped[int | None] = mapped_column(Integer, default=None)
    input_size: Mapped[int | None] = mapped_column(Integer, default=None)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (UniqueConstraint("kind", "sha256", name="uq_models_kind_sha"),)


class Mask(Base):
    __tablename__ = "masks"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    source: Mapped[MaskSource] = mapped_column(_enum(MaskSource, "mask_source"), index=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    rle: Mapped[dict[str, Any]] = mapped_column(JSON)
    area: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    sample: Mapped[Sample] = relationship(back_populates="masks")


class Prediction(Base):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    mask_id: Mapped[int] = mapped_column(ForeignKey("masks.id"))
    points: Mapped[list[Any]] = mapped_column(JSON)  # [[x, y], ...] in image pixels
    labels: Mapped[list[Any]] = mapped_column(JSON)  # 1 positive, 0 negative
    prompt_source: Mapped[str] = mapped_column(String(16))  # saliency | ground_truth | human | grid
    # Teacher-only prompts of the correction tool, so a human-prompted mask replays: a box [x0, y0, x1, y1] in image
    # pixels and the mask given as SAM 2's mask input (inference.segmenter.mask_to_logits turns it into logits).
    box: Mapped[list[Any] | None] = mapped_column(JSON, default=None)
    mask_prompt_id: Mapped[int | None] = mapped_column(ForeignKey("masks.id"), default=None)
    score: Mapped[float] = mapped_column(Float)
    device: Mapped[str | None] = mapped_column(String(32), default=None)
    precision: Mapped[str | None] = mapped_column(String(16), default=None)
    # mirror views averaged into the mask (`predict --flip-views`, inference.flip_ensemble): 1 is the crop alone
    views: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (Index("ix_predictions_sample_model", "sample_id", "model_id"),)


class Disagreement(Base):
    __tablename__ = "disagreements"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    teacher_prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    student_prediction_id: Mapped[int] = mapped_column(ForeignKey("predictions.id"))
    iou_ts: Mapped[float] = mapped_column(Float, index=True)
    dice_ts: Mapped[float] = mapped_column(Float)
    iou_teacher_gt: Mapped[float | None] = mapped_column(Float, default=None)
    iou_student_gt: Mapped[float | None] = mapped_column(Float, default=None)
    dice_teacher_gt: Mapped[float | None] = mapped_column(Float, default=None)
    dice_student_gt: Mapped[float | None] = mapped_column(Float, default=None)
    boundary_f: Mapped[float] = mapped_column(Float)
    threshold: Mapped[float] = mapped_column(Float)
    flagged: Mapped[bool] = mapped_column(Boolean, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class JudgeCall(Base):
    __tablename__ = "judge_calls"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    disagreement_id: Mapped[int | None] = mapped_column(ForeignKey("disagreements.id"), default=None)
    run_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    request_hash: Mapped[str] = mapped_column(String(64), index=True)
    prompt_version: Mapped[str] = mapped_column(String(32))
    model_requested: Mapped[str] = mapped_column(String(128))
    model_used: Mapped[str | None] = mapped_column(String(128), default=None)
    a_is: Mapped[str] = mapped_column(String(16))  # "teacher" or "student": which mask was shown as A
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16))  # ok | bad_answer | error | cached | budget
    label: Mapped[str | None] = mapped_column(String(16), default=None)  # A | B | both_good | both_bad
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    answer_raw: Mapped[str | None] = mapped_column(Text, default=None)
    latency_ms: Mapped[float | None] = mapped_column(Float, default=None)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    completion_tokens: Mapped[int | None] = mapped_column(Integer, default=None)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    cache_hit: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    # Non-secret fingerprint of the API key that paid for the call (sha256 prefix), for per-key budgets; never the key.
    key_id: Mapped[str | None] = mapped_column(String(16), index=True, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Verdict(Base):
    """One entry of the append-only review trail; rows are never updated or deleted."""

    __tablename__ = "verdicts"

    id: Mapped[int] = mapped_column(primary_key=True)
    sample_id: Mapped[int] = mapped_column(ForeignKey("samples.id", ondelete="CASCADE"), index=True)
    author_kind: Mapped[VerdictAuthorKind] = mapped_column(_enum(VerdictAuthorKind, "verdict_author_kind"))
    author: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[VerdictKind] = mapped_column(_enum(VerdictKind, "verdict_kind"))
    confidence: Mapped[float | None] = mapped_column(Float, default=None)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
    corrected_mask_id: Mapped[int | None] = mapped_column(ForeignKey("masks.id"), default=None)
    judge_call_id: Mapped[int | None] = mapped_column(ForeignKey("judge_calls.id"), default=None)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("verdicts.id"), default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)

    __table_args__ = (Index("ix_verdicts_sample_author_kind", "sample_id", "author_kind"),)


class TrainingRun(Base):
    __tablename__ = "training_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    mode: Mapped[str] = mapped_column(String(32))  # distill | distill_naive | finetune_teacher
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | finished | failed | stopped
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    data_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    out_dir: Mapped[str] = mapped_column(Text)
    epochs_done: Mapped[int] = mapped_column(Integer, default=0)
    best_val_iou: Mapped[float | None] = mapped_column(Float, default=None)
    best_checkpoint: Mapped[str | None] = mapped_column(Text, default=None)
    metrics: Mapped[list[Any]] = mapped_column(JSON, default=list)  # one dict per epoch
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class Export(Base):
    __tablename__ = "exports"

    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"), default=None)
    fmt: Mapped[str] = mapped_column(String(16))  # onnx | tensorrt
    variant: Mapped[str] = mapped_column(String(16))  # single | encoder | decoder
    precision: Mapped[str] = mapped_column(String(16))  # fp32 | fp16 | int8 | int8_weight
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # ok | failed
    parity_iou: Mapped[float | None] = mapped_column(Float, default=None)
    parity_max_abs: Mapped[float | None] = mapped_column(Float, default=None)
    val_iou: Mapped[float | None] = mapped_column(Float, default=None)
    calibration_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    calibration_size: Mapped[int | None] = mapped_column(Integer, default=None)
    card: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    command: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class LatencyResult(Base):
    __tablename__ = "latency_results"

    id: Mapped[int] = mapped_column(primary_key=True)
    export_id: Mapped[int | None] = mapped_column(ForeignKey("exports.id"), default=None)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("models.id"), default=None)
    model_label: Mapped[str] = mapped_column(Text)
    target: Mapped[str] = mapped_column(String(128))  # "local" or the SSH target name
    backend: Mapped[str] = mapped_column(String(32))  # torch | torch-compiled | onnxruntime-cpu | trtexec ...
    precision: Mapped[str] = mapped_column(String(16))
    batch: Mapped[int] = mapped_column(Integer)
    p50_ms: Mapped[float] = mapped_column(Float)
    p90_ms: Mapped[float | None] = mapped_column(Float, default=None)
    p99_ms: Mapped[float | None] = mapped_column(Float, default=None)
    mean_ms: Mapped[float | None] = mapped_column(Float, default=None)
    throughput: Mapped[float | None] = mapped_column(Float, default=None)  # images per second
    peak_mem_mb: Mapped[float | None] = mapped_column(Float, default=None)
    device: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    raw: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class SshTarget(Base):
    """A saved Jetson (or any SSH) benchmark target; the key is a path, never key material."""

    __tablename__ = "ssh_targets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=22)
    user: Mapped[str] = mapped_column(String(64))
    key_file: Mapped[str | None] = mapped_column(Text, default=None)
    known_hosts: Mapped[str | None] = mapped_column(Text, default=None)
    remote_dir: Mapped[str] = mapped_column(Text, default="/tmp/maskbench")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
