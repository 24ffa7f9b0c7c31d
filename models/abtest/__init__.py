"""Online A/B tests of a challenger against the champion: per-user bucketing, a simulated
traffic run over the synthetic world, and the statistics that decide (no Dagster here)."""
