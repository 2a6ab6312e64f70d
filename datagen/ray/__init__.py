"""distill.datagen.ray: ``distill generate --executor ray``, the engine batches of a generate
plan on a Ray cluster (``generate``)."""
