"""``distill generate`` on this machine: one engine generates a plan's batches in order."""

from __future__ import annotations

from distill.datagen.backends import Backend
from distill.datagen.plan import Plan, Sink, make_engine


def run_engine(engine: Backend, plan: Plan, sink: Sink) -> None:
    """Generate the plan's rows with ``engine``, one batch of its size at a time, into ``sink``."""
    for batch in plan.batches(engine.batch_size):
        outputs = plan.generate(engine, batch)
        sink.write(plan.rows(batch, outputs, engine.name))


def run_local(plan: Plan, sink: Sink, backend: str, model: str | None, options: dict) -> str:
    """Generate the plan's rows with an engine built here; the backend's name."""
    engine = make_engine(backend, model, options)
    try:
        run_engine(engine, plan, sink)
    finally:
        engine.close()
    return engine.name
