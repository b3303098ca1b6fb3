"""Keeping the model table and the real containers in step: plan (pure), loop (apply),
probes (health), scheduler (jobs, leader lock, Docker events)."""
