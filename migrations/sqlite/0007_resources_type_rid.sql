-- Search results without `_sort` come in `rid` order (creation order), and paging is keyset
-- paging on rid (see server/src/storage/search_sql.rs). This index walks one resource type in
-- that order, so a search with no selective parameter (`GET Patient`, `_has`) reads only its
-- own type and stops after a page. (On SQLite rid is the rowid, which every index carries;
-- naming it keeps the two backends' definitions alike.)
CREATE INDEX resources_type_rid ON resources (res_type, rid);
