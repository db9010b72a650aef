"""Data: video files in, training clips out. Three sub-packages and the datasets, lowest first:

- :mod:`stfn.data.video`: one video file: decode (:mod:`~stfn.data.video.decode`, frame-exact seeks in
  :mod:`~stfn.data.video.seek`) and optical flow (:mod:`~stfn.data.video.flow`, RAFT in
  :mod:`~stfn.data.video.raft`). Imports nothing else of ``stfn.data``.
- :mod:`stfn.data.synthetic`: the synthetic benchmark (:mod:`~stfn.data.synthetic.generate`, its classes
  in :mod:`~stfn.data.synthetic.scenes`, drawing in :mod:`~stfn.data.synthetic.render`).
- :mod:`stfn.data.prepare`: ``stfn prepare`` (:mod:`~stfn.data.prepare.run`), its resumable state
  (:mod:`~stfn.data.prepare.state`), worker pool (:mod:`~stfn.data.prepare.pool`), the manifest of a
  prepared folder (:mod:`~stfn.data.prepare.manifest`) and the record a checkpoint keeps of it
  (:mod:`~stfn.data.prepare.record`). Imports video, never the datasets.
- here: splits (:mod:`~stfn.data.splits`, line parsers in :mod:`~stfn.data.split_files`), clip sampling
  (:mod:`~stfn.data.sampling`), transforms, the frame and feature datasets (:mod:`~stfn.data.datasets`,
  :mod:`~stfn.data.features`) and one video on the fly (:mod:`~stfn.data.clip_reader`). They read what
  prepare wrote and never import the synthetic generator.

Nothing is imported here, so ``stfn prepare``'s workers load only what they use (no torch).
"""
