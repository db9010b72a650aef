"""The synthetic benchmark: :mod:`.generate` writes the videos and splits, :mod:`.scenes` defines the
classes, :mod:`.render` draws the frames. Nothing is imported here."""
