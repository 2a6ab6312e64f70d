"""distill.filters.ray: ``distill filter --executor ray``, the filter stages run on a Ray cluster
from what they declare (``filter``), rows carried as Arrow blocks (``blocks``), and the
distributed plan of the dedupe stage (``dedupe``)."""
