"""Alert model, sinks (EVE, incidents, evidence, audit, notifications, metrics)."""
