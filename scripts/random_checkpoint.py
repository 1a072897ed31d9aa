#!/usr/bin/env python3
"""A random-init SAM 2.1 checkpoint in the official format, written by the official package.

    random_checkpoint.py SIZE OUT      (SIZE: tiny | small | base_plus | large)

torch.manual_seed(0) and the official builder, so the same package writes the same bytes
(tests hold recorded answers to it by sha256). Nudged as the parity fixtures are: plain
random init says "no object" on every frame, and empty masks would make any agreement
figure meaningless; same shapes, same cost. Written to OUT.partial, then renamed: OUT is
complete or absent.
"""
import os
import sys

import torch
from sam2.build_sam import build_sam2

size, ckpt = sys.argv[1], sys.argv[2]
letter = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}[size]
torch.manual_seed(0)
sd = build_sam2(f"configs/sam2.1/sam2.1_hiera_{letter}.yaml", None, device="cpu").state_dict()
sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += 3.0
for i in range(4):
    sd[f"sam_mask_decoder.output_hypernetworks_mlps.{i}.layers.2.weight"] *= 8.0
torch.save({"model": sd}, ckpt + ".partial")
os.replace(ckpt + ".partial", ckpt)
