"""MMAction2 TSN checkpoints as stfn checkpoints (``stfn import-mmaction``).

MMAction2 (open-mmlab/mmaction2) saves a recognizer as ``{"meta": {...}, "state_dict": {...}}``, a
training checkpoint also with ``optimizer``, ``message_hub``, ...; keys may carry DataParallel's
``module.`` prefix. A TSN is a ``Recognizer2D`` with the ``ResNet`` backbone of
``mmaction/models/backbones/resnet.py`` and the ``TSNHead`` of ``mmaction/models/heads/tsn_head.py``.
Every convolution there is an mmcv ``ConvModule`` (``mmcv/cnn/bricks/conv_module.py``) whose children
are ``conv``, ``bn`` (``build_norm_layer``'s name for BatchNorm) and ``activate`` (no weights), so::

    backbone.conv1.conv.weight                          the 7x7 stem (in_channels 3, or 2 * clip_len for flow)
    backbone.conv1.bn.{weight,bias,running_mean,running_var,num_batches_tracked}
    backbone.layer{i}.{j}.conv{k}.conv.weight / .bn.*   Bottleneck conv1..conv3 (BasicBlock: conv1, conv2)
    backbone.layer{i}.{j}.downsample.conv.weight / .bn.* the first block of a stage (a ConvModule too)
    cls_head.fc_cls.{weight,bias}                       TSNHead: spatial average, consensus, dropout, fc

These are torchvision's ResNet names under the rule MMAction2 itself uses to load torchvision weights
(``ResNet._load_torchvision_checkpoint``): ``conv{k}.conv -> conv{k}``, ``conv{k}.bn -> bn{k}``,
``downsample.conv -> downsample.0``, ``downsample.bn -> downsample.1``; the Bottleneck is torchvision's
(``style='pytorch'``: the stride on the 3x3 convolution). :func:`mmaction_key_map` applies that rule
and puts the result where stfn's TSN keeps it (``backbones.<stream>.net.*``, ``head.fcs.<stream>.*``).
A TSN with MMAction2's ``torchvision.resnet*`` backbone (torchvision's own names under ``backbone.``)
converts too. TSNHead averages the frames' features before its linear layer and stfn's TSN averages
the frames' logits after it: the same for a linear layer.

Inputs. Both feed RGB (MMAction2's decoders return RGB, ``ActionDataPreprocessor(to_rgb=False)``) with
the same ImageNet mean and std (123.675, 116.28, 103.53 / 58.395, 57.12, 57.375), so an RGB model's
weights are copied unchanged. Flow: both stack ``L`` fields as ``x1, y1, x2, y2, ...``
(``FormatShape``: ``L x 2`` channels) quantised with bound 20, but MMAction2 normalises ``(q - 128) /
128`` where stfn uses ``(q - 127.5) / 127.5``. The scale, ``127.5 / 128``, is folded into the first
convolution's weights (exact: the convolution is linear and its zero padding stays zero); the shift
left over, ``+1/256`` of the flow range (half a grey level of the 8-bit flow), cannot be folded
exactly (the zero padding would see it too) and is recorded in ``source["normalisation"]``.

The stfn checkpoint is the one :func:`stfn.engine.checkpoint.make_checkpoint` writes, with MMAction2's
TSN test protocol as its data settings (25 positions, 10 crops of 224 from a short side of 256, the
``test_pipeline`` of ``configs/recognition/tsn/tsn_imagenet-pretrained-r50_8xb32-1x1x3-100e_kinetics400-rgb.py``;
or as the checkpoint's own config says) and ``source``: ``{"format": "mmaction2", "path", "sha256",
"layout", "normalisation", "mmaction_meta"}``. BN-Inception (MMAction2's ``BNInception``) is refused:
stfn has no BN-Inception network to load it into.
"""

from stfn.mmaction.convert import checkpoint_summary, convert_checkpoint
from stfn.mmaction.files import TSN_TEST, read_classes, read_mmaction_checkpoint, tsn_test_settings
from stfn.mmaction.keys import MMActionError, backbone_layout, mmaction_key_map, mmaction_name, resnet_depth
from stfn.mmaction.weights import convert_state_dict

__all__ = ["MMActionError", "TSN_TEST", "backbone_layout", "checkpoint_summary", "convert_checkpoint",
           "convert_state_dict", "mmaction_key_map", "mmaction_name", "read_classes", "read_mmaction_checkpoint",
           "resnet_depth", "tsn_test_settings"]
