"""Encoder milliseconds per crop against canvases per encoder call, on this machine's CPU: the torch student
(channels_last, as inference.torch_backend runs it), its ONNX Runtime pair, and the native-scale SAM 2 teacher
(random weights: time does not depend on the values). Rounds are interleaved so a machine that gets busier slows
every setting alike; the median of the rounds is printed. Why: on a 2-core CPU the torch encoders were markedly
slower per canvas in calls of 4-16 canvases than one at a time (page faults of large activations), so the torch
backends encode one canvas per call on a CPU (`CPU_ENCODE_CHUNK`) and keep batches on a GPU.

    python bench/bench_encode_batch.py --data ../shared/datasets/magnetic-tile [--crops 16] [--chunks 1,4,16]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--crops", type=int, default=16)
    ap.add_argument("--chunks", default="1,4,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--teacher-config", default="sam2.1/sam2.1_hiera_t.yaml")
    a = ap.parse_args()

    import torch

    from inference.onnx_export import export_student
    from inference.ort_backend import OrtStudentSegmenter
    from inference.sam2_net import build_model
    from inference.student import StudentConfig, StudentModel
    from inference.teacher import Sam2NativeSegmenter
    from inference.torch_backend import StudentTorchSegmenter
    from store.images import load_image

    torch.manual_seed(0)
    # the first crops in name order (MT_Blowhole): smaller than 512 px, one canvas each
    images = [load_image(p) for p in sorted(a.data.rglob("*.jpg"))[: a.crops]]
    student = StudentModel(StudentConfig())
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_student(student, Path(tmp))
        segs = {"student torch": StudentTorchSegmenter(student),
                "student onnxruntime": OrtStudentSegmenter(onnx["encoder"], onnx["decoder"]),
                "teacher torch": Sam2NativeSegmenter(build_model(a.teacher_config, image_size=512), scale=1.0)}
        chunks = [int(c) for c in a.chunks.split(",")]
        for seg in segs.values():
            seg.embed_batch(images[:2])  # warm-up
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(a.rounds):
            for name, seg in segs.items():
                for chunk in chunks:
                    seg.encode_chunk = chunk
                    t0 = time.perf_counter()
                    seg.embed_batch(images)
                    times.setdefault((name, chunk), []).append((time.perf_counter() - t0) * 1000 / len(images))
    print(f"{len(images)} crops, torch threads {torch.get_num_threads()}; ms per image, median of {a.rounds} rounds")
    for name in segs:
        base = statistics.median(times[(name, chunks[0])])
        medians = [statistics.median(times[(name, c)]) for c in chunks]
        row = "  ".join(f"{c}/call {m:6.0f} ({m / base:.2f}x)" for c, m in zip(chunks, medians))
        print(f"{name:<20} {row}")


if __name__ == "__main__":
    main()
