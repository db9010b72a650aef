"""``stfn import-mmaction CKPT --out OUT.pt [--modality rgb|flow] [--classes FILE] [--flow-length L]
[--set KEY=VALUE ...]``: an MMAction2 TSN checkpoint (ResNet backbone, RGB or flow) as an stfn checkpoint
that ``stfn predict``, ``eval``, ``model-info`` and ``train.init_rgb`` / ``init_flow`` read
(:mod:`stfn.mmaction`)."""

from __future__ import annotations

import argparse

from stfn.commands import flag_names

HELP = "Convert an MMAction2 TSN checkpoint (ResNet, RGB or flow) into an stfn checkpoint."
FLAGS = {"modality": "--modality", "classes": "--classes", "flow_length": "--flow-length", "out": "--out",
         "overrides": "--set"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="MMAction2 checkpoint (.pth: {'meta', 'state_dict'}), read with weights_only")
    parser.add_argument("--out", required=True, help="the stfn checkpoint to write, e.g. tsn_rgb.pt")
    parser.add_argument("--modality", choices=["rgb", "flow"], default=None,
                        help="rgb or flow (default: from the first convolution: 3 channels rgb, 2L flow)")
    parser.add_argument("--classes", metavar="FILE", default=None,
                        help="class names, one per line, or classInd.txt's '1 Name' lines (default: class_0 ...)")
    parser.add_argument("--flow-length", type=int, default=None, metavar="L",
                        help="flow fields per stack (default: from the first convolution, in_channels / 2)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a data.* or train.* key of the stored config, e.g. --set data.dataset=ucf101 "
                             "(repeatable; default data: MMAction2's TSN test protocol, 25 x 10 crops)")


def run(args: argparse.Namespace) -> int:
    from stfn.mmaction import checkpoint_summary, convert_checkpoint

    with flag_names(**FLAGS):
        ckpt = convert_checkpoint(args.checkpoint, modality=args.modality, classes=args.classes, out=args.out,
                                  flow_length=args.flow_length, overrides=args.overrides)
    print(f"wrote {args.out}: {checkpoint_summary(ckpt)}")
    return 0
