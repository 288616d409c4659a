//! The host's proxy-wasm semantics, checked through the probe guest
//! (`tests/harness/guests/probe`), which calls the host the way a real filter would.
//!
//! Run with `CARGO_TARGET_DIR=... cargo test -p tollgate-harness --test host`.

// Tests unwrap freely: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use tollgate_harness::{
    Action, FailurePolicy, Host, HttpResponse, MetricValue, Phase, Plugin, Reply, Request,
    StartError, Upstream,
};

/// The probe with a root configuration, as a plugin.
fn probe(configuration: &str) -> Plugin {
    common::probe_plugin().with_configuration(configuration)
}

/// A request steered by `x-probe` commands.
fn probe_request(commands: &str) -> Request {
    Request::post("/v1/chat/completions")
        .header("x-probe", commands)
        .body(r#"{"model":"gpt-4o-mini"}"#)
        .response_header("content-type", "application/json")
        .response_body(r#"{"usage":{"total_tokens":3}}"#)
}

/// Whether any log line of the host contains `needle`.
fn logged(host: &Host, needle: &str) -> bool {
    host.logs().iter().any(|l| l.message.contains(needle))
}

#[test]
fn configuration_rejected_by_on_configure_is_an_error_naming_it_with_the_guest_log() {
    let error = probe("reject").start().unwrap_err();
    let start = error.downcast_ref::<StartError>().expect("a StartError");
    assert!(start.config_rejected());
    let text = error.to_string();
    assert!(text.contains("rejected its configuration"), "{text}");
    assert!(
        text.contains("probe: configuration rejected on purpose"),
        "{text}"
    );
}

#[test]
fn request_headers_can_be_changed_while_the_filter_holds_them() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(&probe_request("add-request-header,replace-path"))
        .unwrap();
    assert_eq!(outcome.upstream_header("x-probe-added"), Some("1"));
    assert_eq!(outcome.upstream_header(":path"), Some("/rewritten"));
    assert!(outcome.allowed());
}

#[test]
fn a_paused_request_body_is_buffered_and_the_last_callback_sees_all_of_it() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(
            &Request::post("/upload")
                .header("x-probe", "buffer-request")
                .body_chunk("one,")
                .body_chunk("two,")
                .body_chunk("three"),
        )
        .unwrap();
    let bodies: Vec<(usize, bool, Action)> = outcome
        .actions
        .iter()
        .filter(|a| a.phase == Phase::RequestBody)
        .map(|a| (a.size, a.end_of_stream, a.action))
        .collect();
    // The size grows because Envoy hands the buffered body to each later callback.
    assert_eq!(
        bodies,
        [
            (4, false, Action::Pause),
            (8, false, Action::Pause),
            (13, true, Action::Continue)
        ]
    );
    assert!(outcome
        .logs_containing("request body 13 bytes: one,two,three")
        .next()
        .is_some());
    assert_eq!(
        outcome.upstream.as_ref().unwrap().body_text(),
        "one,two,three+probe"
    );
}

#[test]
fn a_paused_response_body_is_buffered_and_can_be_replaced() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(
            &Request::get("/stream")
                .header("x-probe", "buffer-response")
                .response_chunk("a")
                .response_chunk("b")
                .response_chunk("c"),
        )
        .unwrap();
    assert_eq!(outcome.body_text(), "probe:abc");
}

#[test]
fn local_reply_from_request_headers_never_reaches_the_upstream() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("deny,response-header")).unwrap();
    assert!(outcome.upstream.is_none());
    assert!(!outcome.allowed());
    assert_eq!(outcome.status(), Some(429));
    assert!(outcome.body_text().contains("budget exceeded"));
    assert_eq!(outcome.response_header("x-probe-denied"), Some("1"));
    assert_eq!(
        outcome.response_header("content-type"),
        Some("application/json")
    );
    // Envoy encodes a local reply through the filter chain: this filter's response
    // callbacks see it (and may add headers to it).
    assert_eq!(outcome.response_header("x-probe-response"), Some("1"));
    let reply = outcome.local_reply.as_ref().unwrap();
    assert_eq!(reply.phase, Phase::RequestHeaders);
    assert_eq!(reply.status, 429);
    assert!(outcome.response.as_ref().unwrap().local);
}

#[test]
fn local_reply_at_the_end_of_the_request_body_resets_the_upstream_request() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("deny-in-body")).unwrap();
    let upstream = outcome.upstream.as_ref().unwrap();
    assert!(
        !upstream.complete,
        "headers went upstream, the body never finished"
    );
    assert_eq!(outcome.status(), Some(429));
    assert_eq!(
        outcome.local_reply.as_ref().unwrap().phase,
        Phase::RequestBody
    );
}

#[test]
fn local_reply_from_response_headers_replaces_the_upstream_response() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(&probe_request("local-in-response-headers"))
        .unwrap();
    assert!(outcome.upstream.as_ref().unwrap().complete);
    assert_eq!(outcome.status(), Some(418));
    assert_eq!(outcome.body_text(), "teapot");
    assert_eq!(outcome.response_header("x-probe-teapot"), Some("1"));
    assert!(!outcome.reset);
}

#[test]
fn local_reply_after_the_response_headers_went_out_resets_the_stream() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("deny-in-response-body")).unwrap();
    assert!(outcome.reset);
    assert_eq!(
        outcome.status(),
        Some(200),
        "the client already had the upstream's headers"
    );
    assert!(outcome.local_reply.is_some());
}

#[test]
fn changing_a_response_header_from_a_body_callback_is_a_bad_argument_and_the_sdk_traps() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("late-response-header")).unwrap();
    let trap = outcome
        .trap
        .as_ref()
        .expect("the SDK panics on BAD_ARGUMENT");
    assert_eq!(trap.phase, Phase::ResponseBody);
    // The Rust SDK's panic hook logs the status it did not expect: 2 = BAD_ARGUMENT.
    assert!(
        outcome
            .logs_containing("unexpected status: 2")
            .next()
            .is_some(),
        "{:?}",
        outcome.logs
    );
    assert!(outcome.reset, "the response had started: the stream dies");
    assert!(host.vm_failure(tollgate_harness::VmId(0)).is_some());
}

#[test]
fn fail_closed_answers_503_to_every_later_request() {
    let mut host = probe("").start().unwrap();
    let trapped = host.send(&probe_request("trap-request")).unwrap();
    assert_eq!(trapped.trap.as_ref().unwrap().phase, Phase::RequestHeaders);
    assert_eq!(trapped.status(), Some(503));
    assert!(trapped.upstream.is_none());

    let later = host.send(&probe_request("")).unwrap();
    assert!(later.vm_failed);
    assert_eq!(later.status(), Some(503));
    assert!(later.actions.is_empty(), "the failed VM is not called");
    assert!(later.upstream.is_none());
}

#[test]
fn fail_open_lets_later_requests_through_untouched() {
    let plugin = probe("").with_failure_policy(FailurePolicy::FailOpen);
    let mut host = plugin.start().unwrap();
    let trapped = host.send(&probe_request("trap-request")).unwrap();
    assert!(trapped.trap.is_some());
    assert!(trapped.allowed(), "fail-open: the trapping request goes on");

    let later = host.send(&probe_request("deny")).unwrap();
    assert!(later.vm_failed);
    assert!(later.allowed(), "enforcement silently stopped");
    assert_eq!(later.status(), Some(200));
}

#[test]
fn fail_reload_gives_the_next_request_a_fresh_vm() {
    let plugin = probe("tick=1000").with_failure_policy(FailurePolicy::FailReload);
    let mut host = plugin.start().unwrap();
    let trapped = host.send(&probe_request("trap-request")).unwrap();
    assert_eq!(trapped.status(), Some(503));

    let later = host.send(&probe_request("add-request-header")).unwrap();
    assert!(later.vm_reloaded);
    assert!(later.allowed());
    assert_eq!(later.upstream_header("x-probe-added"), Some("1"));
    assert_eq!(later.context_id, 2, "a fresh VM numbers its contexts anew");
    // The fresh VM was configured again (and re-armed its timer).
    let configured = host
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("configured with"))
        .count();
    assert_eq!(configured, 2);
}

#[test]
fn a_runaway_guest_is_interrupted_by_the_epoch_deadline() {
    let plugin = probe("").with_call_timeout(Duration::from_millis(50));
    let mut host = plugin.start().unwrap();
    let outcome = host.send(&probe_request("loop")).unwrap();
    let trap = outcome.trap.as_ref().unwrap();
    assert!(trap.message.contains("budget"), "{}", trap.message);
    assert_eq!(outcome.status(), Some(503));
}

#[test]
fn pause_from_request_headers_without_resume_stalls_the_stream() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("pause-headers")).unwrap();
    assert_eq!(outcome.stalled, Some(Phase::RequestHeaders));
    assert!(outcome.upstream.is_none());
    assert!(outcome.response.is_none());
}

#[test]
fn pause_from_response_headers_hangs_as_in_envoy() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("pause-response-headers")).unwrap();
    assert_eq!(outcome.stalled, Some(Phase::ResponseHeaders));
    assert!(!outcome.allowed());
}

#[test]
fn close_stream_resets_the_request() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("close")).unwrap();
    assert!(outcome.reset);
    assert!(outcome.response.is_none());
}

#[test]
fn dispatch_needs_method_path_authority_and_a_known_cluster() {
    let mut host = probe("").start().unwrap();
    host.upstream(
        "control",
        Upstream::by_path([("/v1/check", HttpResponse::new(200))]),
    );
    let outcome = host
        .send(&probe_request(
            "dispatch-missing-authority,dispatch-unknown-cluster",
        ))
        .unwrap();
    let refused = outcome
        .logs_containing("dispatch refused: BadArgument")
        .count();
    assert_eq!(refused, 2, "{:?}", outcome.logs);
    assert!(outcome.http_calls.is_empty());
    assert!(outcome.allowed());
}

#[test]
fn a_dispatched_call_is_answered_after_the_callback_and_can_resume_the_request() {
    let mut host = probe("").start().unwrap();
    host.respond("control", |call| {
        assert_eq!(call.method(), "POST");
        assert_eq!(call.body_text(), "check");
        Reply::Respond(HttpResponse::json(200, r#"{"ok":true}"#))
    });
    let outcome = host.send(&probe_request("dispatch")).unwrap();
    assert_eq!(outcome.action(Phase::RequestHeaders), Some(Action::Pause));
    assert_eq!(outcome.http_calls.len(), 1);
    let call = &outcome.http_calls[0];
    assert_eq!(
        (call.cluster.as_str(), call.path()),
        ("control", "/v1/check")
    );
    // The answer came while the request was paused; the filter wrote it into the request
    // headers and resumed.
    assert_eq!(outcome.upstream_header("x-probe-call-status"), Some("200"));
    assert!(outcome.allowed());
    assert!(outcome
        .logs_containing(r#"body={"ok":true}"#)
        .next()
        .is_some());
}

#[test]
fn a_call_answered_by_a_local_reply_denies_the_paused_request() {
    let mut host = probe("").start().unwrap();
    host.upstream(
        "control",
        Upstream::by_path([("/v1/check", HttpResponse::new(403))]),
    );
    let outcome = host.send(&probe_request("deny-after-call")).unwrap();
    assert_eq!(outcome.status(), Some(429));
    assert!(outcome.upstream.is_none());
}

#[test]
fn held_calls_wait_for_the_test_and_a_failed_call_has_no_headers() {
    let mut host = probe("tick=1000 tick-dispatch").start().unwrap();
    host.respond("control", |_| Reply::Hold);
    host.advance(Duration::from_secs(1)).unwrap();
    let pending = host.pending_calls();
    assert_eq!(pending.len(), 1);
    assert!(host.shared_data("tollgate", "snapshot").is_none());

    host.answer(pending[0].vm, pending[0].token, Reply::Fail)
        .unwrap();
    assert!(host.pending_calls().is_empty());
    assert!(logged(&host, "failed"));

    host.respond("control", |_| {
        Reply::Respond(HttpResponse::json(200, "{\"version\":2}"))
    });
    host.advance(Duration::from_secs(1)).unwrap();
    let (snapshot, _) = host.shared_data("tollgate", "snapshot").unwrap();
    assert_eq!(snapshot, b"{\"version\":2}");
}

#[test]
fn ticks_fire_one_period_after_they_are_set_on_the_virtual_clock() {
    let mut host = probe("tick=1000").start().unwrap();
    let start = host.now();
    host.advance(Duration::from_millis(999)).unwrap();
    assert!(!logged(&host, "tick 1 "));
    host.advance(Duration::from_millis(1)).unwrap();
    assert!(logged(&host, "tick 1 "));
    host.advance(Duration::from_millis(3500)).unwrap();
    let ticks: Vec<&str> = host
        .logs()
        .iter()
        .filter(|l| l.message.starts_with("tick "))
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(ticks.len(), 4);
    // Each tick reads the virtual clock at its own due time.
    let start_nanos = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    assert_eq!(
        ticks[3],
        format!("tick 4 at {}", start_nanos + 4_000_000_000)
    );
    assert_eq!(host.now(), start + Duration::from_millis(4500));

    let outcome = host.send(&probe_request("time")).unwrap();
    let expected = format!("time {}", start_nanos + 4_500_000_000);
    assert!(
        outcome.logs_containing(&expected).next().is_some(),
        "{:?}",
        outcome.logs
    );
}

#[test]
fn every_worker_vm_ticks_and_a_tick_can_dispatch_and_store_the_answer() {
    let mut host = probe("tick=500 tick-dispatch").start().unwrap();
    host.new_vm().unwrap();
    let mut version = 0;
    host.respond("control", move |call| {
        assert_eq!(call.path(), "/v1/snapshot");
        version += 1;
        Reply::Respond(HttpResponse::json(
            200,
            format!("{{\"version\":{version}}}"),
        ))
    });
    host.advance(Duration::from_millis(500)).unwrap();
    let calls = host.http_calls();
    assert_eq!(calls.len(), 2, "one tick per VM");
    assert_ne!(calls[0].vm, calls[1].vm);
    let (snapshot, cas) = host.shared_data("tollgate", "snapshot").unwrap();
    assert_eq!(snapshot, b"{\"version\":2}");
    assert!(cas >= 2);
}

#[test]
fn a_trap_in_on_tick_fails_the_vm_for_later_requests() {
    let mut host = probe("tick=100 tick-trap").start().unwrap();
    host.advance(Duration::from_millis(100)).unwrap();
    assert_eq!(
        host.vm_failure(tollgate_harness::VmId(0)).unwrap().phase,
        Phase::Tick
    );
    let outcome = host.send(&probe_request("")).unwrap();
    assert_eq!(outcome.status(), Some(503));
}

#[test]
fn shared_data_cas_refuses_a_stale_write_and_grows_on_every_write() {
    let mut host = probe("").start().unwrap();
    let first_cas = host.set_shared_data("tollgate", "stale", "seed");
    let outcome = host.send(&probe_request("stale-cas")).unwrap();
    assert!(
        outcome
            .logs_containing("stale first=Ok(()) second=Err(CasMismatch)")
            .next()
            .is_some(),
        "{:?}",
        outcome.logs
    );
    let (value, cas) = host.shared_data("tollgate", "stale").unwrap();
    assert_eq!(value, b"first");
    assert!(cas > first_cas);
    // Another vm_id is another namespace.
    assert!(host.shared_data("other", "stale").is_none());
}

#[test]
fn shared_data_is_shared_by_every_worker_of_a_vm_id() {
    let mut host = probe("").start().unwrap();
    let worker = host.new_vm().unwrap();
    for _ in 0..5 {
        host.send(&probe_request("counter")).unwrap();
        host.send_to(worker, &probe_request("counter")).unwrap();
    }
    // A write from outside (another worker, here the test) is what the next read sees.
    host.set_shared_data("tollgate", "counter", "100");
    host.send(&probe_request("counter")).unwrap();
    let (value, _) = host.shared_data("tollgate", "counter").unwrap();
    assert_eq!(value, b"101");
}

#[test]
fn queue_items_reach_the_vm_that_registered_the_queue() {
    // The singleton service registers the queue; workers resolve it and enqueue.
    let filter = probe("");
    let mut host = Host::new();
    let service = host
        .add_vm(&filter.with_configuration("queue-owner"))
        .unwrap();
    let worker = host.add_vm(&filter).unwrap();

    let outcome = host.send_to(worker, &probe_request("enqueue")).unwrap();
    assert_eq!(outcome.queue_items.len(), 1);
    let item = &outcome.queue_items[0];
    assert_eq!(
        (item.vm_id.as_str(), item.queue.as_str()),
        ("tollgate", "usage")
    );
    let request_id = outcome.upstream_header("x-request-id").unwrap();
    assert_eq!(item.text(), format!("usage:{request_id}"));
    // The owner was told (after the worker's callback returned), and did not drain.
    let ready: Vec<_> = outcome.logs_containing("queue ready").collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].vm, service);
    assert_eq!(host.queue_items("tollgate", "usage").len(), 1);
    assert_eq!(host.drain_queue("tollgate", "usage").len(), 1);
    assert!(host.queue_items("tollgate", "usage").is_empty());
}

#[test]
fn a_draining_owner_empties_the_queue() {
    let filter = probe("");
    let mut host = Host::new();
    host.add_vm(&filter.with_configuration("queue-owner drain"))
        .unwrap();
    let worker = host.add_vm(&filter).unwrap();
    for _ in 0..3 {
        host.send_to(worker, &probe_request("enqueue")).unwrap();
    }
    assert!(host.queue_items("tollgate", "usage").is_empty());
    assert_eq!(
        host.logs()
            .iter()
            .filter(|l| l.message == "drained 1")
            .count(),
        3
    );
}

#[test]
fn enqueue_without_a_registered_queue_is_not_found() {
    let mut host = probe("").start().unwrap();
    let outcome = host.send(&probe_request("enqueue")).unwrap();
    assert!(outcome
        .logs_containing("queue usage not found")
        .next()
        .is_some());
    assert!(outcome.queue_items.is_empty());
}

#[test]
fn metrics_are_defined_recorded_and_shared_by_name() {
    let mut host = probe("").start().unwrap();
    let worker = host.new_vm().unwrap();
    let outcome = host.send(&probe_request("metrics")).unwrap();
    assert_eq!(
        outcome.metrics.get("probe_requests"),
        Some(&MetricValue::Counter(1))
    );
    assert_eq!(
        outcome.metrics.get("probe_gauge"),
        Some(&MetricValue::Gauge(7))
    );
    assert_eq!(
        outcome.metrics.get("probe_latency"),
        Some(&MetricValue::Histogram(vec![42]))
    );
    host.send_to(worker, &probe_request("metrics")).unwrap();
    assert_eq!(host.metric("probe_requests"), Some(MetricValue::Counter(2)));
}

#[test]
fn properties_serve_request_attributes_and_filter_state() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(&probe_request("property").header("x-request-id", "req-123"))
        .unwrap();
    let has = |needle: &str| outcome.logs_containing(needle).next().is_some();
    assert!(
        has(r#"property request.path=Some("/v1/chat/completions")"#),
        "{:?}",
        outcome.logs
    );
    assert!(has(r#"property request.id=Some("req-123")"#));
    assert!(has(r#"property plugin_vm_id=Some("tollgate")"#));
    assert!(has(r#"property probe.decision=Some("allow")"#));
    assert_eq!(outcome.filter_state("probe.decision"), Some(&b"allow"[..]));
}

#[test]
fn a_real_http_upstream_on_loopback_answers_calls() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        reader.read_line(&mut request_line).unwrap();
        let mut content_length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                content_length = value.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body).unwrap();
        let answer = br#"{"version":7}"#;
        let mut stream = reader.into_inner();
        write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            answer.len()
        )
        .unwrap();
        stream.write_all(answer).unwrap();
        request_line
    });

    let mut host = probe("tick=1000 tick-dispatch").start().unwrap();
    host.upstream("control", Upstream::http(addr).unwrap());
    host.advance(Duration::from_secs(1)).unwrap();
    assert_eq!(server.join().unwrap().trim(), "GET /v1/snapshot HTTP/1.1");
    let (snapshot, _) = host.shared_data("tollgate", "snapshot").unwrap();
    assert_eq!(snapshot, br#"{"version":7}"#);
}

#[test]
fn tests_run_in_parallel_without_sharing_state() {
    let handles: Vec<_> = (0..4)
        .map(|n| {
            std::thread::spawn(move || {
                let mut host = probe("").start().unwrap();
                for _ in 0..=n {
                    host.send(&probe_request("counter")).unwrap();
                }
                host.shared_data("tollgate", "counter").unwrap().0
            })
        })
        .collect();
    let counts: Vec<Vec<u8>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        counts,
        [b"1".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]
    );
}

#[test]
fn on_log_reads_the_final_request_and_response_headers() {
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(&probe_request("log-headers,replace-path"))
        .unwrap();
    assert!(
        outcome
            .logs_containing(r#"log phase: path=Some("/rewritten") status=Some("200")"#)
            .next()
            .is_some(),
        "{:?}",
        outcome.logs
    );
    let outcome = host.send(&probe_request("log-headers,deny")).unwrap();
    assert!(outcome
        .logs_containing(r#"log phase: path=Some("/v1/chat/completions") status=Some("429")"#)
        .next()
        .is_some());
}

#[test]
fn reading_a_request_header_once_it_was_forwarded_is_a_bad_argument() {
    // Envoy drops its request-header pointer when `on_request_headers` continues, so a
    // filter that reads a request header from a response callback dies there.
    let mut host = probe("").start().unwrap();
    let outcome = host
        .send(&probe_request("read-request-header-late"))
        .unwrap();
    assert_eq!(outcome.trap.as_ref().unwrap().phase, Phase::ResponseHeaders);
    assert!(outcome
        .logs_containing("unexpected status: 2")
        .next()
        .is_some());
    assert_eq!(outcome.status(), Some(503));
}
