"""stfn from Python, no config files and no prepared folder: build STFN by name, train it two epochs on a
``Dataset`` made here, save it, load it back and classify a real video.

    python examples/train_in_python.py                      # a video from ../shared/videos when present
    python examples/train_in_python.py --video my_clip.mp4  # any video PyAV decodes
    python examples/train_in_python.py --out /tmp/stfn-example

Everything goes through ``stfn.*`` names (README, "Python API"). The data set is two classes of moving
noise (left-to-right and right-to-left), the backbone the small built-in CNN, so it runs in seconds on a CPU;
put your own ``Dataset`` in its place: it yields ``{"rgb": (T, 3, H, W), "flow": (T, 2L, H, W), "label",
"index", "video"}`` (float inputs, normalised as you like; ``stfn.evaluate`` needs ``index`` and ``video``).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

import stfn

REPO = Path(__file__).resolve().parents[1]
FRAMES, SIZE, FLOW_LENGTH = 4, 64, 2  # T positions per video, crop side, flow fields per stack (L)


class MovingNoise(Dataset):
    """``n`` videos of a noise texture sliding right (label 0) or left (label 1), with their true flow."""

    classes = ["slide_right", "slide_left"]

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 100_003 + i)
        label = i % 2
        step = 3 if label == 0 else -3
        texture = torch.rand(3, SIZE, SIZE * 2, generator=g)
        rgb = torch.stack([texture[:, :, SIZE // 2 + t * step:][:, :, :SIZE] for t in range(FRAMES)])
        flow = torch.zeros(FRAMES, 2 * FLOW_LENGTH, SIZE, SIZE)
        flow[:, 0::2] = -step / 20.0  # x components (the content moves against the window), y stays 0
        flow += 0.05 * torch.randn(flow.shape, generator=g)
        return {"rgb": rgb, "flow": flow, "label": label, "index": i, "video": f"video_{i:03d}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=REPO.parent / "shared" / "videos" / "demo.mp4",
                        help="a real video to classify at the end (default ../shared/videos/demo.mp4)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the checkpoint (default: a temporary one)")
    args = parser.parse_args()
    torch.manual_seed(0)

    # 1. build STFN by name: any of stfn.list_models(), any backbone (resnet50, timm:..., cnn_small)
    print("models:", ", ".join(stfn.list_models()))
    model = stfn.create_model("stfn", num_classes=2, backbone="cnn_small", flow_length=FLOW_LENGTH)

    # 2. train two epochs on our own Dataset with our own optimiser: torchvision's train_one_epoch signature
    train_loader = DataLoader(MovingNoise(16, seed=0), batch_size=4, shuffle=True)
    test_loader = DataLoader(MovingNoise(8, seed=1), batch_size=4)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    device = torch.device("cpu")
    for epoch in range(2):
        stats = stfn.train_one_epoch(model, criterion, optimizer, None, train_loader, device, epoch)
        metrics = stfn.evaluate(model, test_loader, device)
        print(f"epoch {epoch + 1}: train loss {stats.loss:.3f}, test top-1 {metrics['top1']:.1f}% of {metrics['n']}")

    # 3. save it as an stfn checkpoint (what stfn predict / serve / eval / export read) and load it back
    out = args.out or Path(tempfile.mkdtemp(prefix="stfn-example-"))
    path = stfn.save_model(model, out / "model.pt", classes=MovingNoise.classes, epoch=2, metrics=metrics)
    loaded = stfn.load_model(path)
    same = all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.model.state_dict().values(), strict=True))
    print(f"saved {path}; loaded back: {type(loaded.model).__name__}, classes {loaded.classes}, same weights: {same}")

    # 4. classify a real video: decode, optical flow (DIS), 224 px centre crop, the network; one call
    #    (the small CNN pools globally, so it runs at any size; a model of real data is trained at its own)
    if not args.video.is_file():
        print(f"no video at '{args.video}' (pass --video PATH): prediction skipped")
        return
    predictor = loaded.predictor(frames=FRAMES, crops=1, device="cpu")
    result = predictor.predict(args.video, top_k=2)
    top = result["top"][0]
    print(f"{args.video.name}: {top['class']} ({top['prob']:.2f}), {result['frames']} frames, "
          f"{result['timings']['total']:.2f} s")


if __name__ == "__main__":
    main()
