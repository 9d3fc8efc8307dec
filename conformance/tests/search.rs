//! Minimal search (FHIR R4 4.0.1, http.html#search and search.html).

use conformance::*;
use serde_json::{Value, json};

server_tests!(
    search_returns_searchset_bundle_with_match_entries,
    search_by_id_list_returns_those_resources,
    search_by_identifier_system_and_value,
    search_by_identifier_value_only,
    search_by_identifier_system_only,
    search_by_identifier_without_system,
    search_excludes_deleted_resources,
    search_last_updated_prefixes,
    search_last_updated_range_with_two_bounds,
    search_count_pages_and_next_links_return_each_resource_once,
    unsorted_search_pages_in_creation_order_while_resources_are_written,
    post_search_with_form_body_matches_get,
    search_of_unknown_resource_type_is_404,
);

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn id_of(resource: &Value) -> String {
    resource["id"].as_str().expect("resource id").to_string()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn create_patients(server: &Server, sys: &str, values: &[&str]) -> Vec<String> {
    let mut ids = Vec::new();
    for v in values {
        ids.push(id_of(&server.create(&patient(sys, v)).await));
    }
    ids
}

/// http.html#search and search.html#return: a `searchset` Bundle whose entries have
/// fullUrl, resource and `search.mode = match`, and a `self` link; `total` if present is
/// the number of matches.
async fn search_returns_searchset_bundle_with_match_entries(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["s1", "s2"]).await;
    let resp = server
        .get(&format!("Patient?identifier={}", enc(&format!("{sys}|"))))
        .await;
    resp.assert_status(200).assert_fhir_json_content_type();
    let b = resp.json();
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "searchset");
    assert!(bundle_link(&b, "self").is_some(), "self link: {b}");
    if let Some(total) = b["total"].as_u64() {
        assert_eq!(total, 2);
    }
    let es = entries(&b);
    assert_eq!(es.len(), 2);
    for e in &es {
        assert_eq!(e["search"]["mode"], "match", "{e}");
        let id = id_of(&e["resource"]);
        assert!(ids.contains(&id));
        assert_eq!(
            e["fullUrl"].as_str().unwrap_or_default(),
            server.url(&format!("Patient/{id}"))
        );
        assert_eq!(e["resource"]["meta"]["versionId"], "1");
    }
}

/// search.html#id: `_id` with a comma-separated list (OR) returns exactly those.
async fn search_by_id_list_returns_those_resources(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["a", "b", "c"]).await;
    let got = server
        .search_ids(&format!("Patient?_id={},{}", ids[0], ids[2]))
        .await;
    assert_eq!(got, sorted(vec![ids[0].clone(), ids[2].clone()]));
    let none = server.search_ids("Patient?_id=no-such-id").await;
    assert!(none.is_empty());
}

/// search.html#token: `identifier=[system]|[code]` matches system and value.
async fn search_by_identifier_system_and_value(server: Server) {
    let sys = unique_system();
    let other = unique_system();
    let ids = create_patients(&server, &sys, &["x1", "x2"]).await;
    create_patients(&server, &other, &["x1"]).await;
    let got = server
        .search_ids(&format!("Patient?identifier={}", enc(&format!("{sys}|x1"))))
        .await;
    assert_eq!(got, vec![ids[0].clone()]);
    // Unencoded `|` is accepted too.
    let got = server
        .search_ids(&format!("Patient?identifier={sys}|x2"))
        .await;
    assert_eq!(got, vec![ids[1].clone()]);
}

/// search.html#token: `identifier=[code]` matches the value in any system.
async fn search_by_identifier_value_only(server: Server) {
    let value = format!("v-{}", uuid::Uuid::new_v4().simple());
    let a = create_patients(&server, &unique_system(), &[&value]).await;
    let b = create_patients(&server, &unique_system(), &[&value]).await;
    let got = server
        .search_ids(&format!("Patient?identifier={value}"))
        .await;
    assert_eq!(got, sorted(vec![a[0].clone(), b[0].clone()]));
}

/// search.html#token: `identifier=[system]|` matches any value in that system.
async fn search_by_identifier_system_only(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["p", "q"]).await;
    create_patients(&server, &unique_system(), &["p"]).await;
    let got = server
        .search_ids(&format!("Patient?identifier={sys}|"))
        .await;
    assert_eq!(got, sorted(ids));
}

/// search.html#token: `identifier=|[code]` matches identifiers that have no system.
async fn search_by_identifier_without_system(server: Server) {
    let value = format!("nosys-{}", uuid::Uuid::new_v4().simple());
    let no_system = server
        .create(&json!({"resourceType": "Patient", "identifier": [{"value": value}]}))
        .await;
    create_patients(&server, &unique_system(), &[&value]).await;
    let got = server
        .search_ids(&format!("Patient?identifier=%7C{value}"))
        .await;
    assert_eq!(got, vec![id_of(&no_system)]);
}

/// http.html#delete: deleted resources are no longer found by search.
async fn search_excludes_deleted_resources(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["keep", "drop"]).await;
    server
        .delete(&format!("Patient/{}", ids[1]))
        .await
        .assert_status_in(&[200, 204]);
    let got = server
        .search_ids(&format!("Patient?identifier={sys}|"))
        .await;
    assert_eq!(got, vec![ids[0].clone()]);
    let got = server
        .search_ids(&format!("Patient?_id={},{}", ids[0], ids[1]))
        .await;
    assert_eq!(got, vec![ids[0].clone()]);
}

/// search.html#lastUpdated and search.html#prefix (eq, ne, gt, lt, ge, le, sa, eb, ap):
/// each prefix is applied to the resource's own meta.lastUpdated so the expectations are
/// exact whatever the clock.
async fn search_last_updated_prefixes(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["t1", "t2", "t3"]).await;
    let target = server.read(&format!("Patient/{}", ids[1])).await;
    let t = target["meta"]["lastUpdated"].as_str().unwrap().to_string();
    let scope = format!("identifier={}", enc(&format!("{sys}|")));
    let q = |prefix: &str, value: &str| {
        format!(
            "Patient?{scope}&_lastUpdated={}",
            enc(&format!("{prefix}{value}"))
        )
    };
    let all = sorted(ids.clone());
    let has_target = |got: &[String]| got.contains(&ids[1]);

    // Far bounds: every resource, or none.
    assert_eq!(
        server.search_ids(&q("gt", "2020-01-01")).await,
        all,
        "gt2020-01-01"
    );
    assert_eq!(
        server.search_ids(&q("ge", "2020-01-01")).await,
        all,
        "ge2020-01-01"
    );
    assert_eq!(
        server.search_ids(&q("sa", "2020-01-01")).await,
        all,
        "sa2020-01-01"
    );
    assert_eq!(
        server.search_ids(&q("ne", "2020-01-01")).await,
        all,
        "ne2020-01-01"
    );
    assert_eq!(
        server.search_ids(&q("lt", "2999-01-01")).await,
        all,
        "lt2999"
    );
    assert_eq!(
        server.search_ids(&q("le", "2999-01-01")).await,
        all,
        "le2999"
    );
    assert_eq!(
        server.search_ids(&q("eb", "2999-01-01")).await,
        all,
        "eb2999"
    );
    assert!(
        server.search_ids(&q("lt", "2020-01-01")).await.is_empty(),
        "lt2020"
    );
    assert!(
        server.search_ids(&q("le", "2020-01-01")).await.is_empty(),
        "le2020"
    );
    assert!(
        server.search_ids(&q("eb", "2020-01-01")).await.is_empty(),
        "eb2020"
    );
    assert!(
        server.search_ids(&q("gt", "2999-01-01")).await.is_empty(),
        "gt2999"
    );
    assert!(
        server.search_ids(&q("sa", "2999-01-01")).await.is_empty(),
        "sa2999"
    );
    assert!(
        server.search_ids(&q("eq", "2020-01-01")).await.is_empty(),
        "eq2020-01-01"
    );

    // The target's own instant: inclusive prefixes include it, exclusive ones do not.
    for prefix in ["", "eq", "ge", "le", "ap"] {
        let got = server.search_ids(&q(prefix, &t)).await;
        assert!(
            has_target(&got),
            "_lastUpdated={prefix}{t} includes it: {got:?}"
        );
    }
    for prefix in ["ne", "gt", "lt", "sa", "eb"] {
        let got = server.search_ids(&q(prefix, &t)).await;
        assert!(
            !has_target(&got),
            "_lastUpdated={prefix}{t} excludes it: {got:?}"
        );
    }
    // Whatever the exact instants: gt/le and lt/ge partition the set.
    let gt = server.search_ids(&q("gt", &t)).await;
    let le = server.search_ids(&q("le", &t)).await;
    assert_eq!(sorted([gt, le].concat()), all, "gt + le = all");
    let lt = server.search_ids(&q("lt", &t)).await;
    let ge = server.search_ids(&q("ge", &t)).await;
    assert_eq!(sorted([lt, ge].concat()), all, "lt + ge = all");
}

/// search.html#date: two `_lastUpdated` parameters are ANDed into a range.
async fn search_last_updated_range_with_two_bounds(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["r1", "r2"]).await;
    let scope = format!("identifier={}", enc(&format!("{sys}|")));
    let got = server
        .search_ids(&format!(
            "Patient?{scope}&_lastUpdated=ge2020-01-01&_lastUpdated=le2999-12-31"
        ))
        .await;
    assert_eq!(got, sorted(ids));
    let got = server
        .search_ids(&format!(
            "Patient?{scope}&_lastUpdated=ge2020-01-01&_lastUpdated=le2020-12-31"
        ))
        .await;
    assert!(got.is_empty());
}

/// http.html#paging and search.html#count: `_count` limits the page size; following the
/// `next` links returns every match exactly once and the last page has no `next`.
async fn search_count_pages_and_next_links_return_each_resource_once(server: Server) {
    let sys = unique_system();
    let values: Vec<String> = (0..7).map(|i| format!("pg{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let ids = create_patients(&server, &sys, &refs).await;
    let pages = server
        .all_pages(&format!(
            "Patient?identifier={}&_count=3",
            enc(&format!("{sys}|"))
        ))
        .await;
    assert!(
        pages.len() >= 3,
        "7 matches in pages of 3: {} pages",
        pages.len()
    );
    let mut seen = Vec::new();
    for page in &pages {
        assert_eq!(page["type"], "searchset");
        let es = entries(page);
        assert!(es.len() <= 3, "page larger than _count: {page}");
        if let Some(total) = page["total"].as_u64() {
            assert_eq!(total, 7);
        }
        seen.extend(es.iter().map(|e| id_of(&e["resource"])));
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no resource twice: {seen:?}");
    assert_eq!(sorted(seen), sorted(ids));
    assert!(bundle_link(pages.last().unwrap(), "next").is_none());
}

/// search.html#sort: without `_sort` the order is the server's choice; MediFlow's is
/// creation order (not id order), so ids created as z, a, m, b, k come back in that order.
/// http.html#paging: a resource created between two pages shows up on a later page and
/// nothing is repeated or skipped; `previous` goes back to the same first page.
async fn unsorted_search_pages_in_creation_order_while_resources_are_written(server: Server) {
    let sys = unique_system();
    // Client-chosen ids (update as create, http.html#upsert) whose order differs from the
    // creation order.
    let create = |name: &str| {
        let mut p = patient(&sys, name);
        let id = format!("{name}-{}", &sys[sys.len() - 12..]);
        p["id"] = json!(id);
        let server = &server;
        async move {
            server
                .put(&format!("Patient/{id}"), &p)
                .await
                .assert_status(201);
            id
        }
    };
    let mut ids = Vec::new();
    for name in ["z", "a", "m", "b", "k"] {
        ids.push(create(name).await);
    }
    let page_ids =
        |b: &Value| -> Vec<String> { entries(b).iter().map(|e| id_of(&e["resource"])).collect() };
    let first = server
        .read(&format!(
            "Patient?identifier={}&_count=2&_total=accurate",
            enc(&format!("{sys}|"))
        ))
        .await;
    assert_eq!(page_ids(&first), ids[0..2]);
    assert_eq!(first["total"], 5);
    let second = server
        .read(&bundle_link(&first, "next").expect("a next link after page 1"))
        .await;
    assert_eq!(page_ids(&second), ids[2..4]);
    // search.html#total: the number of all matches, not of those after the page.
    assert_eq!(second["total"], 5);
    // Written while the client pages: it comes after everything created before it.
    ids.push(create("c").await);
    let third = server
        .read(&bundle_link(&second, "next").expect("a next link after page 2"))
        .await;
    assert_eq!(page_ids(&third), ids[4..6]);
    assert_eq!(third["total"], 6);
    assert!(
        bundle_link(&third, "next").is_none(),
        "6 matches in pages of 2"
    );
    let back = server
        .read(&bundle_link(&second, "previous").expect("a previous link on page 2"))
        .await;
    assert_eq!(page_ids(&back), ids[0..2]);
}

/// http.html#search: `POST [base]/[type]/_search` with an
/// `application/x-www-form-urlencoded` body is the same search as GET.
async fn post_search_with_form_body_matches_get(server: Server) {
    let sys = unique_system();
    let ids = create_patients(&server, &sys, &["f1", "f2", "f3"]).await;
    let identifier = format!("{sys}|");
    let resp = server
        .request(Method::POST, "Patient/_search")
        .form(&[
            ("identifier", identifier.as_str()),
            ("_id", &format!("{},{}", ids[0], ids[1])),
        ])
        .send()
        .await;
    resp.assert_status(200);
    let b = resp.json();
    assert_eq!(b["type"], "searchset");
    let got = sorted(entries(&b).iter().map(|e| id_of(&e["resource"])).collect());
    assert_eq!(got, sorted(vec![ids[0].clone(), ids[1].clone()]));

    // Parameters may also be split between the URL and the body.
    let resp = server
        .request(Method::POST, &format!("Patient/_search?_id={}", ids[2]))
        .form(&[("identifier", identifier.as_str())])
        .send()
        .await;
    resp.assert_status(200);
    let got: Vec<String> = entries(&resp.json())
        .iter()
        .map(|e| id_of(&e["resource"]))
        .collect();
    assert_eq!(got, vec![ids[2].clone()]);
}

/// http.html#search with #status: an unknown resource type is 404.
async fn search_of_unknown_resource_type_is_404(server: Server) {
    server.get("NotAType?_id=1").await.assert_outcome(&[404]);
}
