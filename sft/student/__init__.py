"""distill.sft.student: student design and init from a teacher; analysis (temperatures,
compression)."""
