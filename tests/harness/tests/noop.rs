//! The no-op filter driven through whole request lifecycles: what goes in comes out.
//!
//! Run with `CARGO_TARGET_DIR=... cargo test -p tollgate-harness --test noop`.

// Tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use tollgate_harness::{Action, Phase, Request};

/// A host with one VM of the no-op filter.
fn noop_host() -> tollgate_harness::Host {
    common::noop_plugin().start().unwrap()
}

#[test]
fn lifecycle_runs_every_callback_in_envoy_order() {
    let mut host = noop_host();
    let outcome = host
        .send(
            &Request::post("/v1/chat/completions")
                .body(r#"{"model":"gpt-4o-mini"}"#)
                .response_header("content-type", "application/json")
                .response_body(r#"{"usage":{}}"#),
        )
        .unwrap();

    let phases: Vec<(Phase, bool, Action)> = outcome
        .actions
        .iter()
        .map(|a| (a.phase, a.end_of_stream, a.action))
        .collect();
    assert_eq!(
        phases,
        [
            (Phase::RequestHeaders, false, Action::Continue),
            (Phase::RequestBody, true, Action::Continue),
            (Phase::ResponseHeaders, false, Action::Continue),
            // Envoy delivers a buffered response as data, then an empty end of stream.
            (Phase::ResponseBody, false, Action::Continue),
            (Phase::ResponseBody, true, Action::Continue),
        ]
    );
    assert!(outcome.allowed());
    assert_eq!(outcome.status(), Some(200));
    assert!(outcome.trap.is_none());
    assert!(outcome.stalled.is_none());
    assert_eq!(
        outcome.context_id, 2,
        "the root context is 1, the first stream 2"
    );
}

#[test]
fn headers_and_bodies_pass_through_unchanged() {
    let mut host = noop_host();
    let request = Request::post("/v1/chat/completions")
        .authority("api.openai.com")
        .header("authorization", "Bearer tg-abc")
        .header("content-type", "application/json")
        .header("x-repeated", "one")
        .header("x-repeated", "two")
        .body(r#"{"model":"gpt-4o-mini","messages":[]}"#)
        .response_status(201)
        .response_header("content-type", "application/json")
        .response_header("x-upstream", "yes")
        .response_body(r#"{"id":"chatcmpl-1"}"#);
    let outcome = host.send(&request).unwrap();

    let upstream = outcome.upstream.as_ref().unwrap();
    assert!(upstream.complete);
    // Everything the client sent, plus Envoy's generated x-request-id.
    let mut expected = request.headers().clone();
    expected.add("x-request-id", upstream.header("x-request-id").unwrap());
    assert_eq!(upstream.headers, expected);
    assert_eq!(upstream.header("x-repeated"), Some("one"));
    assert_eq!(upstream.headers.get_all("x-repeated").count(), 2);
    assert_eq!(
        upstream.body_text(),
        r#"{"model":"gpt-4o-mini","messages":[]}"#
    );

    let response = outcome.response.as_ref().unwrap();
    assert_eq!(response.status, 201);
    assert!(!response.local);
    assert_eq!(response.header(":status"), Some("201"));
    assert_eq!(response.header("x-upstream"), Some("yes"));
    assert_eq!(response.body_text(), r#"{"id":"chatcmpl-1"}"#);
}

#[test]
fn multi_chunk_bodies_arrive_chunk_by_chunk_and_in_order() {
    let mut host = noop_host();
    let mut request = Request::post("/upload")
        .body_chunk("alpha,")
        .body_chunk("beta,")
        .body_chunk("gamma");
    for index in 0..100 {
        request = request.response_chunk(format!("data: {index}\n\n"));
    }
    let outcome = host.send(&request).unwrap();

    let request_bodies: Vec<(usize, bool)> = outcome
        .actions
        .iter()
        .filter(|a| a.phase == Phase::RequestBody)
        .map(|a| (a.size, a.end_of_stream))
        .collect();
    assert_eq!(request_bodies, [(6, false), (5, false), (5, true)]);
    assert_eq!(
        outcome.upstream.as_ref().unwrap().body_text(),
        "alpha,beta,gamma"
    );

    let response_bodies = outcome
        .actions
        .iter()
        .filter(|a| a.phase == Phase::ResponseBody)
        .count();
    assert_eq!(response_bodies, 100);
    let expected: String = (0..100).map(|i| format!("data: {i}\n\n")).collect();
    assert_eq!(outcome.body_text(), expected);
}

#[test]
fn trailers_follow_the_body_which_then_does_not_end_the_stream() {
    let mut host = noop_host();
    let outcome = host
        .send(
            &Request::post("/grpc")
                .body("payload")
                .trailer("x-checksum", "abc")
                .response_chunk("answer")
                .response_trailer("grpc-status", "0"),
        )
        .unwrap();
    let phases: Vec<(Phase, bool)> = outcome
        .actions
        .iter()
        .map(|a| (a.phase, a.end_of_stream))
        .collect();
    assert_eq!(
        phases,
        [
            (Phase::RequestHeaders, false),
            (Phase::RequestBody, false),
            (Phase::RequestTrailers, false),
            (Phase::ResponseHeaders, false),
            (Phase::ResponseBody, false),
            (Phase::ResponseTrailers, false),
        ]
    );
    let upstream = outcome.upstream.as_ref().unwrap();
    assert_eq!(
        upstream.trailers.as_ref().unwrap().get("x-checksum"),
        Some("abc")
    );
    let response = outcome.response.as_ref().unwrap();
    assert_eq!(
        response.trailers.as_ref().unwrap().get("grpc-status"),
        Some("0")
    );
}

#[test]
fn a_request_without_body_ends_at_its_headers() {
    let mut host = noop_host();
    let outcome = host.send(&Request::get("/v1/models")).unwrap();
    assert_eq!(outcome.actions[0].phase, Phase::RequestHeaders);
    assert!(outcome.actions[0].end_of_stream);
    assert_eq!(outcome.actions[1].phase, Phase::ResponseHeaders);
    assert!(outcome.actions[1].end_of_stream, "no response body either");
    assert!(outcome.allowed());
}

#[test]
fn one_vm_serves_many_requests_and_workers_are_separate_vms() {
    let mut host = noop_host();
    let worker = host.new_vm().unwrap();
    for round in 0..50 {
        let outcome = host.send(&Request::get("/")).unwrap();
        assert_eq!(outcome.context_id, 2 + round);
        let outcome = host.send_to(worker, &Request::get("/")).unwrap();
        assert_eq!(outcome.vm, worker);
        assert!(outcome.allowed());
    }
    // Envoy gives every request its own x-request-id.
    let first = host.send(&Request::get("/")).unwrap();
    let second = host.send(&Request::get("/")).unwrap();
    assert_ne!(
        first.upstream_header("x-request-id"),
        second.upstream_header("x-request-id")
    );
}

#[test]
fn the_noop_logs_nothing_and_touches_no_shared_state() {
    let mut host = noop_host();
    let outcome = host.send(&Request::get("/")).unwrap();
    assert!(outcome.logs.is_empty(), "{:?}", outcome.logs);
    assert!(outcome.http_calls.is_empty());
    assert!(outcome.queue_items.is_empty());
    assert!(outcome.metrics.is_empty());
    assert!(outcome.filter_state.is_empty());
}

#[test]
fn every_import_of_a_proxy_wasm_0_2_5_module_is_provided_by_the_host() {
    // Linked as traps otherwise: a module would load and die on first use.
    assert_eq!(
        common::noop_plugin().unprovided_imports(),
        [] as [String; 0]
    );
    assert_eq!(
        common::probe_plugin().unprovided_imports(),
        [] as [String; 0]
    );
}
