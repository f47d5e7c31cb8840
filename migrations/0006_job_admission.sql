-- Admission: what happens when a job's rate cannot all be guaranteed
-- ('admit-partial', 'reject', 'queue'), and what admission answered (JSON:
-- outcome, requested_bps, within_bound_bps, beyond_bound_bps,
-- expected_completion_ms, evaluated_ms, detail). NULL for jobs stored
-- before admission existed: planned whole.
ALTER TABLE jobs ADD COLUMN admission_policy TEXT;
ALTER TABLE jobs ADD COLUMN admission_json TEXT;
-- An ai-sync job's burst (JSON: bytes_per_iteration, iteration_period_us);
-- NULL when it declares none.
ALTER TABLE jobs ADD COLUMN burst_json TEXT;
