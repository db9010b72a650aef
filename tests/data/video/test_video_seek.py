"""Sparse decoding by seeking: the seek path is taken on H.264 MP4 and decodes little of the file."""

from __future__ import annotations

import numpy as np
import pytest

from stfn.data.video import decode as V
from stfn.data.video.seek import scan_packets, seek_decode

pytestmark = pytest.mark.timeout(120)


def test_sparse_decode_seeks_on_generated_h264(video_factory) -> None:
    path = video_factory("seek.mp4", n=60)  # H.264 with B-frames, a key frame every 8 frames
    full = V.read_video(path, backend="pyav")
    assert len(full) == 60
    indices = [55, 3, 30, 31, 59, 0, 44]
    np.testing.assert_array_equal(V.read_frames(path, indices, backend="pyav"), full[indices])

    # the seek path is taken (not the sequential fallback) and skips most of the file
    container, stream = V._open(path)
    scan = scan_packets(container, stream)
    assert scan.pts is not None and len(scan.keys) >= 6

    class Counting:
        def __init__(self, c):
            self.c, self.decoded = c, 0

        def seek(self, *a, **k):
            return self.c.seek(*a, **k)

        def decode(self, s):
            for frame in self.c.decode(s):
                self.decoded += 1
                yield frame

    counting = Counting(container)
    got = seek_decode(counting, stream, scan, [50, 51])
    container.close()
    assert got is not None and sorted(got) == [50, 51]
    np.testing.assert_array_equal(got[50], full[50])
    assert counting.decoded < 20  # from the key frame before 50, not from frame 0
