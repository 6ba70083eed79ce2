"""Training: the one epoch loop with pluggable input policies (:mod:`.loop`) and the one
train-and-checkpoint runner every study uses (:mod:`.run`)."""
