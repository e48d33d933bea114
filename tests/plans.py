"""Memory plans for the residency tests: the planner's real decision for a variant, with some of
its decisions changed (the way a smaller budget or the OOM ladder would change them)."""

from __future__ import annotations

from dataclasses import replace

from tests.tiny import tiny_variant
from wan_desktop import memory as M


def changed_plan(variant: str = "t2v-1.3B", **changes) -> M.Plan:
    """A real plan of the full-size variant at 24 GiB, with some decisions changed:
    ``text`` / ``dit`` / ``vae`` take dicts of fields of that part; other keys are Plan fields."""
    p = M.plan_for(M.workload_for(tiny_variant(variant), 64, 32, 5), 24)
    text = replace(p.text, **changes.pop("text", {}))
    dit = replace(p.dit, **changes.pop("dit", {}))
    vae = replace(p.vae, **changes.pop("vae", {}))
    return replace(p, text=text, dit=dit, vae=vae, **changes)
