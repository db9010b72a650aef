"""One video file: decoding (:mod:`.decode`, seeks in :mod:`.seek`) and optical flow (:mod:`.flow`, RAFT in
:mod:`.raft`). Nothing is imported here: OpenCV flow must not load torch (see :mod:`.flow`)."""
