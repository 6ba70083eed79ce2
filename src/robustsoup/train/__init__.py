"""Training: the one epoch loop with pluggable steps and input policies (:mod:`.loop`), the
per-batch crop-and-flip augmentation (:mod:`.augment`) and the one train-and-checkpoint runner
every study uses (:mod:`.run`)."""
