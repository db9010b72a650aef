"""``stfn prepare``: videos to a prepared folder of frames, flow and a manifest (:mod:`.run`, resumable
through :mod:`.state`, in parallel through :mod:`.pool`, described by :mod:`.manifest`), and the record a
checkpoint keeps of how its data was prepared (:mod:`.record`). Nothing is imported here."""
