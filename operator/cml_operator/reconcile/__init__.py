"""Pure reconcile logic: spec parsing, decisions, the error policy, conditions and status. No I/O."""
