-- `search_reference_lookup` (param, target_id, target_type, rid) is dropped: since 0008,
-- `search_reference_target` (target_id, param, target_type, rid) answers every search that
-- used it -- a reference (`target_id = ? AND param = ?`, with or without `target_type`), a
-- chain (one range per target id) and `_has` -- from the index alone, and no search
-- filters references on `param` without a target id (`:missing` and `_include` probe the
-- owner index by rid). One random-order index insert fewer for each of the ~3.5 reference
-- rows a resource has.
--
-- `search_reference_url` keeps only the rows that have a URL (absolute or canonical
-- references, R4 search.html#reference): the rest, nearly all rows, were indexed under a
-- NULL url that no search looks up (`url = ?` implies `url IS NOT NULL`, so the partial
-- index still serves it: the planner proves the predicate from the strict operator,
-- postgresql.org/docs/15/indexes-partial.html).
DROP INDEX IF EXISTS search_reference_lookup;
DROP INDEX IF EXISTS search_reference_url;
CREATE INDEX search_reference_url ON search_reference (param, url) WHERE url IS NOT NULL;
