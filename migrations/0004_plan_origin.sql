-- Why each plan was made: what triggered it (operator, congestion,
-- improvement, rollback, automatic-rollback, approval) and the figures
-- behind it (JSON: predicted MLU before and after, the forecast used, the
-- routes it changes). A plan the closed loop only recommends is stored with
-- status 'computed' and a proposal state ('proposed', then 'approved' or
-- 'expired' when a newer proposal or plan replaces it).
ALTER TABLE plans ADD COLUMN trigger TEXT NOT NULL DEFAULT 'operator';
ALTER TABLE plans ADD COLUMN reason_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE plans ADD COLUMN proposal_state TEXT;
