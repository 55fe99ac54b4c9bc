"""`run_export`: checkpoint -> ONNX files (merged graph in each precision, the split pair, optionally the teacher),
each checked against PyTorch, measured on the validation split, carded, and recorded as an Export row.

An export that misses its parity bound is moved to `failed/` next to the others and recorded with
status 'failed': it is kept for inspection, never shipped.
"""

from __future__ import annotations

import datetime as dt
import logging
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inference.export import calibration as calib_mod
from inference.export import card as card_mod
from inference.export import int8_search
from inference.export import latency as latency_mod
from inference.export import parity as parity_mod
from inference.export import tensorrt as trt_mod
from inference.export.quantize import CALIBRATION_METHODS
from store.errors import UserError
from store.schema import Export

log = logging.getLogger("maskbench.export")

PRECISIONS = ("fp32", "fp16", "int8", "int8_weight")
ALIASES = {"int8-weight": "int8_weight", "int8w": "int8_weight", "fp32": "fp32", "fp16": "fp16", "int8": "int8",
           "int8_weight": "int8_weight"}
ProgressFn = Callable[[int, int], None]
LogFn = Callable[[str], None]


class ExportError(UserError):
    pass


def parse_precisions(text: str | Sequence[str]) -> list[str]:
    items = [p.strip().lower() for p in (text.split(",") if isinstance(text, str) else text) if p.strip()]
    bad = [p for p in items if p not in ALIASES]
    if bad or not items:
        raise ExportError(f"unknown precision {', '.join(bad) or '(none)'}; use fp32, fp16, int8, int8-weight")
    out = []
    for p in items:
        if ALIASES[p] not in out:
            out.append(ALIASES[p])
    return out


@dataclass
class ExportOptions:
    precisions: list[str] = field(default_factory=lambda: list(PRECISIONS))
    calibration: str = "stratified"
    calibration_samples: int | None = None  # None: the project's hardware.calibration_samples (500)
    calibration_method: str = "auto"  # auto: min-max, entropy and percentile tried, the best parity kept
    int8_target: float = 0.95  # parity mean IoU the INT8 search aims for (keeps sensitive layers in float)
    int8_keep_float_steps: tuple[int, ...] = int8_search.EXCLUDE_STEPS  # () turns the sensitivity sweep off
    sensitivity_crops: int = 4
    latency_runs: int = 20  # CPU latency per precision (ONNX Runtime, 1 thread) in the cards; 0 skips it
    tensorrt: bool = False
    split_pair: bool = True
    teacher: bool = False
    parity_samples: int = 16
    val_limit: int | None = None  # None: the whole validation split
    seed: int = 1234
    command: str | None = None


@dataclass
class ExportSummary:
    out_dir: Path
    rows: list[dict[str, Any]]
    messages: list[str]

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]


def default_command() -> str:
    return "maskbench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "maskbench export"


def _row_dict(e: Export) -> dict[str, Any]:
    return {"id": e.id, "fmt": e.fmt, "variant": e.variant, "precision": e.precision, "path": e.path,
            "size_bytes": e.size_bytes, "status": e.status, "parity_iou": e.parity_iou,
            "parity_max_abs": e.parity_max_abs, "val_iou": e.val_iou, "calibration_hash": e.calibration_hash,
            "calibration_size": e.calibration_size, "card": e.card, "command": e.command}


def list_exports(db: Any) -> list[dict[str, Any]]:
    from sqlalchemy import select

    with db.session() as s:
        return [_row_dict(e) for e in s.scalars(select(Export).order_by(Export.id))]


def _val_crops(db: Any, limit: int | None) -> tuple[str, list[calib_mod.Crop]]:
    for split in ("val", "test", None):
        crops = [c for c in calib_mod.project_crops(db, split) if c.gt is not None]
        if crops:
            if limit:
                crops = parity_mod.parity_crops(crops, limit) or crops[:limit]
            return split or "all", crops
    raise ExportError("the project has no labelled crops to check exports on: ingest a data set first")


def run_export(project: Any, checkpoint: Path | str | None = None, options: ExportOptions | None = None,
               progress: ProgressFn | None = None, log_fn: LogFn | None = None, student: Any = None) -> ExportSummary:
    """Export a student checkpoint (or `student`, an in-memory module) into project.exports_dir."""
    from inference.export import graph, quantize, student_api

    opts = options or ExportOptions()
    precisions = parse_precisions(opts.precisions)
    if opts.calibration_method not in ("auto", *CALIBRATION_METHODS):
        raise ExportError(f"unknown calibration method {opts.calibration_method!r}; use auto, "
                          + ", ".join(CALIBRATION_METHODS))
    command = opts.command or default_command()
    messages: list[str] = []

    def say(msg: str) -> None:
        messages.append(msg)
        log.info(msg)
        if log_fn:
            log_fn(msg)

    # stages: load, fp32 graph, torch reference, one per precision, split pair, teacher, tensorrt
    total = 3 + len(precisions) + int(opts.split_pair) + int(opts.teacher) + int(opts.tensorrt)
    done = 0

    def step(msg: str) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(done, total)
        say(msg)

    if progress:
        progress(0, total)
    if student is None:
        student, model_info = student_api.load_for_export(project, checkpoint)
    else:
        model_info = student_api.describe(student, checkpoint)
    size = int(model_info["input_size"])
    geom = calib_mod.Geometry.of_student(student.config.to_dict(), size)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = project.exports_dir / f"{model_info['name']}-{stamp}"
    n = 1
    while out_dir.exists():
        n += 1
        out_dir = project.exports_dir / f"{model_info['name']}-{stamp}-{n}"
    out_dir.mkdir(parents=True)
    step(f"student {model_info['name']}: {model_info['params']:,} parameters, input {size}")

    # the exporter's graph is the source of every variant (ORT's quantisation pre-processing wants it as is);
    # the shipped FP32 file is a compacted copy
    raw_path = graph.export_student_single(student, out_dir / ".student_single_fp32.raw.onnx", size)
    fp32_path = quantize.compact_copy(raw_path, out_dir / "student_single_fp32.onnx")
    step(f"merged ONNX graph written: {fp32_path.name} ({fp32_path.stat().st_size / 1e6:.2f} MB)")

    val_split, val_crops = _val_crops(project.db, opts.val_limit)
    check_crops = parity_mod.parity_crops(val_crops, opts.parity_samples) or val_crops[: opts.parity_samples]
    reference = graph.torch_runner(graph.single_module(student))
    ref_check = parity_mod.run_all(reference, check_crops, geom)
    ref_val = parity_mod.run_all(reference, val_crops, geom)
    torch_acc = parity_mod.accuracy(ref_val, val_crops, geom)
    step(f"PyTorch reference on {len(val_crops)} {val_split} crops: IoU vs ground truth {torch_acc['iou']}")

    calib_set: calib_mod.CalibrationSet | None = None
    rows: list[dict[str, Any]] = []
    profile = trt_mod.Profile(input_size=size)
    files: dict[str, Path] = {}
    for precision in precisions:
        path = out_dir / f"student_single_{precision}.onnx"
        extra: dict[str, Any] = {}
        if precision == "fp32":
            path = fp32_path
        elif precision == "fp16":
            quantize.to_fp16(raw_path, path)
        elif precision == "int8":
            if calib_set is None:
                n_cal = opts.calibration_samples or int(project.config["hardware"]["calibration_samples"])
                calib_set = calib_mod.select_calibration(project.db, n_cal, opts.calibration, opts.seed)
                say(f"calibration set: {calib_set.size} crops ({opts.calibration}), hash {calib_set.hash[:12]}, "
                    f"per class {calib_set.per_class}")
            cs = calib_set

            def check(candidate: Path) -> parity_mod.Parity:
                return parity_mod.compare(ref_check, parity_mod.run_all(parity_mod.OrtRunner(candidate), check_crops,
                                                                        geom))

            methods = (CALIBRATION_METHODS if opts.calibration_method == "auto"
                       else (opts.calibration_method,))
            found = int8_search.search_static_int8(
                raw_path, path, lambda: calib_mod.CropReader(cs, geom), check, methods=methods,
                target=opts.int8_target, steps=opts.int8_keep_float_steps, say=say,
                sensitivity_feeds=[calib_mod.model_inputs(c, geom) for c in check_crops[: opts.sensitivity_crops]])
            extra["int8_search"] = found.card()
            say(f"int8: {found.method} calibration, {len(found.kept_float)} layer(s) kept in float, parity target "
                f"{opts.int8_target} {'met' if found.met else 'NOT met'}")
        elif precision == "int8_weight":
            quantize.to_int8_weight(raw_path, path)
        files[precision] = path
        runner = parity_mod.OrtRunner(path)
        par = parity_mod.compare(ref_check, parity_mod.run_all(runner, check_crops, geom))
        acc = parity_mod.accuracy(parity_mod.run_all(runner, val_crops, geom), val_crops, geom)
        if acc["iou"] is not None and torch_acc["iou"] is not None:
            acc["iou_drop_vs_pytorch"] = round(torch_acc["iou"] - acc["iou"], 6)
        acc["split"] = val_split
        ok = par.passes(precision)
        status = "ok" if ok else "failed"
        if not ok:
            failed_dir = out_dir / "failed"
            failed_dir.mkdir(exist_ok=True)
            path = Path(shutil.move(str(path), failed_dir / path.name))
        trtexec = None
        if precision in ("fp16", "int8") and ok:
            trtexec = trt_mod.trtexec_command(path, precision, profile)
        is_int8 = precision == "int8"
        rows.append(_record(
            project, path, model_info, "single", precision, status, par, acc, command, trtexec,
            calib_set.summary() if is_int8 and calib_set else None, extra,
        ))
        step(f"{precision}: {status}, {path.stat().st_size / 1e6:.2f} MB, parity IoU {par.iou:.4f}, "
             f"max |dlogit| {par.max_abs:.4g}, val IoU {acc['iou']}")

    if opts.latency_runs and rows:
        singles = {r["precision"]: Path(r["path"]) for r in rows}
        lat = latency_mod.cpu_latency(singles, calib_mod.model_inputs(check_crops[0], geom), runs=opts.latency_runs)
        for r in rows:
            _add_to_card(project, r, "cpu_latency", lat[r["precision"]])
        say("CPU latency (ONNX Runtime, 1 thread, p50): " + ", ".join(
            f"{k} {v['p50_ms']:.1f} ms" + (f" ({v['vs_fp32']}x)" if v["vs_fp32"] is not None else "")
            for k, v in lat.items()))

    if "fp32" not in precisions:
        fp32_path.unlink()

    if opts.split_pair:
        from inference.onnx_export import export_student

        pair = export_student(student, out_dir)
        runner = pair_runner(pair["encoder"], pair["decoder"])
        par = parity_mod.compare(ref_check, parity_mod.run_all(runner, check_crops, geom))
        acc = parity_mod.accuracy(parity_mod.run_all(runner, val_crops, geom), val_crops, geom)
        acc["split"] = val_split
        status = "ok" if par.passes("fp32") else "failed"
        for variant, path in pair.items():
            rows.append(_record(project, path, model_info, variant, "fp32", status, par, acc, command, None,
                                None, {"note": "interactive split pair (encoder once per image, decoder per "
                                       "click); parity and accuracy measured on the pair",
                                       "pair": {k: v.name for k, v in pair.items()}}))
        step(f"split encoder/decoder pair: {status}, parity IoU {par.iou:.4f}")

    if opts.teacher:
        rows.extend(export_teacher(project, out_dir, check_crops[:4], command, say))
        step("teacher encoder/decoder pair written")

    if opts.tensorrt:
        rows_by_prec = {r["precision"]: r for r in rows if r["variant"] == "single" and r["status"] == "ok"}
        for precision in ("fp16", "int8"):
            if precision not in rows_by_prec:
                continue
            src = Path(rows_by_prec[precision]["path"])
            if trt_mod.available():
                engine = out_dir / f"student_single_{precision}.engine"
                cache = out_dir / "calibration.cache" if precision == "int8" else None
                # INT8 engines calibrate on the domain crops the ONNX INT8 used; FP16 needs none
                batches: Callable[[], Any] | None = (
                    (lambda: iter(calib_mod.CropReader(calib_set, geom)))
                    if precision == "int8" and calib_set is not None else None)
                trt_mod.build_engine(raw_path if precision == "int8" else src, engine, precision, profile,
                                     batches, cache)
                rows.append(_record(project, engine, model_info, "single", precision, "ok", None, None, command,
                                    trt_mod.trtexec_command(src, precision, profile), None,
                                    {"calibration_cache": cache.name if cache else None}, fmt="tensorrt"))
                say(f"TensorRT {precision} engine: {engine.name}")
            else:
                say(trt_mod.NOT_AVAILABLE)
                say(f"  cd {out_dir} && {rows_by_prec[precision]['card']['trtexec']}")
        step("TensorRT done" if trt_mod.available() else "TensorRT commands written to the model cards")
    raw_path.unlink(missing_ok=True)
    return ExportSummary(out_dir, rows, messages)


def pair_runner(encoder: Path, decoder: Path) -> parity_mod.Runner:
    """The split pair run as the ORT backend runs it (normalise, encoder, decoder, choose_mask)."""
    import numpy as np

    from inference import preprocess as pp

    enc, dec = parity_mod.OrtRunner(encoder), parity_mod.OrtRunner(decoder)

    def run(feeds: dict[str, Any]) -> tuple[Any, Any]:
        x = ((feeds["image"] - pp.MEAN.reshape(1, 3, 1, 1)) / pp.STD.reshape(1, 3, 1, 1)).astype(np.float32)
        emb, hi = enc.session.run(None, {"image": x})
        masks, scores = dec.session.run(None, {"image_embed": emb, "high_res": hi,
                                               "point_coords": feeds["point_coords"],
                                               "point_labels": feeds["point_labels"]})
        n = int((feeds["point_labels"][0] >= 0).sum())
        i = pp.choose_mask(masks[0], scores[0], n)
        return masks[0, i], scores[0, i:i + 1]

    return run


def _record(project: Any, path: Path, model_info: dict[str, Any], variant: str, precision: str, status: str,
            par: parity_mod.Parity | None, acc: dict[str, Any] | None, command: str, trtexec: str | None,
            calibration: dict[str, Any] | None, extra: dict[str, Any], fmt: str = "onnx") -> dict[str, Any]:
    card = card_mod.make_card(
        path=path, model=model_info, fmt=fmt, variant=variant, precision=precision, status=status,
        parity=par.as_dict() if par else None,
        bounds=parity_mod.PARITY_BOUNDS.get(precision) if par else None,
        accuracy=acc, calibration=calibration, command=command, trtexec=trtexec,
        tensorrt=None if trtexec is None else {"available": trt_mod.available(),
                                               "note": None if trt_mod.available() else trt_mod.NOT_AVAILABLE},
        extra=extra,
    )
    card_mod.write_card(path, card)
    with project.db.session() as s:
        e = Export(
            model_id=model_info.get("model_id"), training_run_id=model_info.get("training_run_id"), fmt=fmt,
            variant=variant, precision=precision, path=str(path), size_bytes=path.stat().st_size, status=status,
            parity_iou=par.iou if par else None, parity_max_abs=par.max_abs if par else None,
            val_iou=acc.get("iou") if acc else None,
            calibration_hash=calibration["hash"] if calibration else None,
            calibration_size=calibration["size"] if calibration else None, card=card, command=command,
        )
        s.add(e)
        s.flush()
        return _row_dict(e)


def _add_to_card(project: Any, row: dict[str, Any], key: str, value: Any) -> None:
    """A measurement taken after the file was carded (latency is measured for all precisions at once)."""
    card = dict(row["card"])
    card[key] = value
    card_mod.write_card(Path(row["path"]), card)
    with project.db.session() as s:
        e = s.get(Export, row["id"])
        e.card = card
    row["card"] = card


def export_teacher(project: Any, out_dir: Path, crops: Sequence[calib_mod.Crop], command: str,
                   say: LogFn) -> list[dict[str, Any]]:
    """SAM 2 teacher as an encoder/decoder pair (config and weights from the project's distillation.teacher)."""
    from inference.export import graph
    from inference.sam2_configs import teacher_config
    from inference.sam2_net import build

    tcfg = project.config["distillation"]["teacher"]
    config = teacher_config(tcfg)
    ckpt = tcfg.get("checkpoint")
    if not ckpt:
        say("teacher: no distillation.teacher.checkpoint set: exporting random weights (graph check only)")
    net = build(config, int(tcfg.get("image_size") or 1024), ckpt)
    enc_p, dec_p = graph.export_teacher_pair(net, out_dir / "teacher_encoder_fp32.onnx",
                                             out_dir / "teacher_decoder_fp32.onnx")
    enc_m, dec_m = graph.teacher_modules(net)
    t_size = net.image_size
    enc_r, dec_r = parity_mod.OrtRunner(enc_p), parity_mod.OrtRunner(dec_p)
    refs, outs = [], []
    import torch

    for crop in crops:
        feeds = calib_mod.model_inputs(crop, calib_mod.Geometry(t_size))
        feats = enc_r.session.run(None, {"image": feeds["image"]})
        names = ["image_embed", "high_res_0", "high_res_1"]
        dec_feeds = {**dict(zip(names, feats)), "point_coords": feeds["point_coords"],
                     "point_labels": feeds["point_labels"]}
        logits, score = dec_r.session.run(None, dec_feeds)
        with torch.no_grad():
            tf = enc_m(torch.from_numpy(feeds["image"]))
            tl, ts = dec_m(*tf, torch.from_numpy(feeds["point_coords"]), torch.from_numpy(feeds["point_labels"]))
        refs.append((tl[0, 0].numpy(), ts[0].numpy()))
        outs.append((logits[0, 0], score[0]))
    par = parity_mod.compare(refs, outs) if crops else None
    status = "ok" if par is None or par.passes("fp32") else "failed"
    info = {"name": Path(config).stem, "kind": "teacher", "architecture": Path(config).stem,
            "checkpoint": ckpt, "params": int(sum(p.numel() for p in net.parameters())), "input_size": t_size}
    rows = []
    for variant, p in (("encoder", enc_p), ("decoder", dec_p)):
        rows.append(_record(project, p, info, variant, "fp32", status, par, None, command, None, None,
                            {"pair": {"encoder": enc_p.name, "decoder": dec_p.name}, "checked_as": "pair"}))
    return rows
