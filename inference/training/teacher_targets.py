"""The frozen teacher's features for every training view, computed once per run and kept on the device; its mask
decoder runs live on them for whatever clicks the student gets.

Why live decoding instead of cached logits: interactive training gives the student new clicks every step (and
follow-up clicks that depend on its own mistakes), and the soft-mask term needs the teacher's answer to those same
clicks. SAM 2's decoder is cheap next to either encoder, so it runs per step on cached features: the encoder, the
expensive part, runs once per view. Views are the inference tiles of each crop times the eight flips/rotations
(`dihedral`), so geometric augmentation of the student keeps an exact teacher target. Nothing is written to disk:
a run never reads targets computed for another mask, prompt or teacher.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from inference.sam2_net import Sam2Net, choose_output
from inference.training import crops as cr

ProgressFn = Callable[[int, int], None]


class TeacherTargets:
    """Entry e = view * n_dihedral + d. Features in `dtype` (bf16 on CUDA) to halve the memory."""

    def __init__(self, net: Sam2Net, crops_t: cr.CropSet, views_t: cr.Views, n_dihedral: int, device: torch.device,
                 dtype: torch.dtype = torch.float32, batch: int = 16, progress: ProgressFn | None = None) -> None:
        self.net = net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.n_dihedral = n_dihedral
        self.canvas = views_t.canvas
        n = len(views_t) * n_dihedral
        self.features: dict[str, torch.Tensor] = {}
        entries = [(v, d) for v in range(len(views_t)) for d in range(n_dihedral)]
        done = 0
        for start in range(0, n, batch):
            chunk = entries[start:start + batch]
            c = cr.assemble(crops_t, [views_t.crop[v] for v, _ in chunk], [views_t.origin[v] for v, _ in chunk],
                            self.canvas)
            d = torch.tensor([dd for _, dd in chunk], device=c.image01.device)
            x = cr.dihedral(c.normalised(), d)
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                out = self.net.encode_normalised(x)
            for k, v in out.items():
                if k not in self.features:
                    self.features[k] = torch.empty((n, *v.shape[1:]), dtype=dtype, device=device)
                self.features[k][start:start + len(chunk)] = v.to(dtype)
            done += len(chunk)
            if progress:
                progress(done, n)

    def entry(self, view: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return view * self.n_dihedral + d

    def embedding(self, entries: torch.Tensor) -> torch.Tensor:
        return self.features["image_embed"][entries]

    @torch.no_grad()
    def logits(self, entries: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The teacher's chosen mask logits (B, 1, T/4, T/4) for clicks on the teacher canvas (SAM's rule)."""
        feats = {k: v[entries].float() for k, v in self.features.items()}
        masks, iou = self.net.decode_all(feats, points, labels)
        return choose_output(masks.float(), iou.float(), labels)[0]
