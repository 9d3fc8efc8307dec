-- Search results without `_sort` come in `rid` order (creation order), and paging is keyset
-- paging on rid (see server/src/storage/search_sql.rs). This index walks one resource type in
-- that order, so a search with no selective parameter (`GET Patient`, `_has`) reads only its
-- own type and stops after a page.
CREATE INDEX resources_type_rid ON resources (res_type, rid);
