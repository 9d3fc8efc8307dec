-- `search_reference_target` becomes (target_id, param, target_type, rid). A reference probe
-- of a chain or `_has` (`target_id = ? AND target_type = ? AND param = ?`, search_sql.rs)
-- planned on the old (target_id, target_type) -- which PostgreSQL picks once ANALYZE has
-- called the common parameters (Observation.subject) unselective -- filtered the parameter
-- row by row, reading every reference to the patient from any parameter (on a
-- 1M-resource load, 794 rows a patient for the 80 wanted). Now the probe is an index range
-- answered from the index alone, and so is `target_id = ? AND param = ?` (a reference
-- search without a type). The reverse lookup the index was made for (every reference to a
-- resource: A40 merge, `_revinclude=*`) still uses its leading column.
DROP INDEX search_reference_target;
CREATE INDEX search_reference_target ON search_reference (target_id, param, target_type, rid);
