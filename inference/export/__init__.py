"""Export and quantisation of the student (and the SAM 2 teacher) for stations and edge devices.

* `graph`: ONNX export; the student as one merged graph (image + points in, mask logits + score out) and the
  teacher as an encoder/decoder pair. torch is imported inside the functions.
* `calibration`: the domain calibration set (stratified by defect class, or favouring hard crops), its hash and
  the ONNX Runtime calibration reader. No torch.
* `quantize`: FP16 (float32 inputs/outputs kept), INT8 static QDQ per-channel, INT8 weight-only.
* `parity`: ONNX Runtime against PyTorch on real crops; accuracy against ground truth on the validation split.
* `tensorrt`: engines when `tensorrt` imports, otherwise the exact `trtexec` command for the target device.
* `card`: the model card stored on the Export row and written as JSON next to the file.
* `pipeline`: `run_export(project, ...)`, used by the CLI and the Export panel.
"""
