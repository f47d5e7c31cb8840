-- A volume job's schedule and progress, as the closed loop last measured
-- and planned them (JSON: moved_bytes, measured_until_ms, measured,
-- pace_bps, expected_completion_ms, on_track, evaluated_ms, detail). NULL
-- until the loop first schedules the job.
ALTER TABLE jobs ADD COLUMN progress_json TEXT;
