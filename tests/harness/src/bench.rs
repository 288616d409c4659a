//! Per-request overhead of a filter against a baseline module (and optionally a second one,
//! the body-reading floor), in the same run.
//!
//! Both modules serve the same representative request (an OpenAI chat completion with a
//! `tg-` virtual key and a ~1 KB JSON response carrying `usage`), each on one VM reused
//! across requests as an Envoy worker reuses its VM. Requests run in interleaved rounds
//! (filter then baseline, then baseline then filter, ...) so drift on a noisy machine hits
//! both alike. Every request is timed end to end through the harness; the report gives p50
//! and p99 per module and the ratio of the p50s, which is what DESIGN.md's rule ("every
//! number is a ratio against a baseline in the same run") asks for.
//!
//! Run it with `tollgate-harness bench --wasm FILTER --config CONFIG --baseline NOOP`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::{Host, Outcome, Plugin, Request};

/// Latency figures of one module.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Median per-request time, µs.
    pub p50_us: f64,
    /// 99th percentile per-request time, µs.
    pub p99_us: f64,
    /// Mean per-request time, µs.
    pub mean_us: f64,
    /// Requests measured.
    pub samples: usize,
}

impl Stats {
    /// Summarizes a set of durations.
    pub fn from_durations(durations: &mut [Duration]) -> Stats {
        durations.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| -> f64 {
            if durations.is_empty() {
                return 0.0;
            }
            let rank = ((durations.len() as f64) * q).ceil() as usize;
            durations
                .get(rank.saturating_sub(1).min(durations.len() - 1))
                .map_or(0.0, |d| us(*d))
        };
        let total: f64 = durations.iter().map(|d| us(*d)).sum();
        Stats {
            p50_us: at(0.50),
            p99_us: at(0.99),
            mean_us: if durations.is_empty() {
                0.0
            } else {
                total / durations.len() as f64
            },
            samples: durations.len(),
        }
    }
}

/// The result of a bench run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Report {
    /// The module under test.
    pub filter: Stats,
    /// The baseline (the no-op filter).
    pub baseline: Stats,
    /// A second baseline measured in the same rounds, when given (the body-reading floor).
    pub floor: Option<Stats>,
    /// Interleaved rounds run.
    pub rounds: usize,
}

impl Report {
    /// Filter p50 over baseline p50.
    pub fn ratio(&self) -> f64 {
        if self.baseline.p50_us > 0.0 {
            self.filter.p50_us / self.baseline.p50_us
        } else {
            f64::NAN
        }
    }
}

/// Virtual time given to the service VMs before a bench: the sync service publishes the
/// snapshot on its first tick (one sync interval, 1 s, in) and each worker picks it up on its
/// next tick (every 100 ms at most).
pub const SETTLE: Duration = Duration::from_millis(1_200);

/// The representative request: `POST /v1/chat/completions` with a virtual key, a JSON
/// body, and a ~1 KB JSON response with `usage`, delivered as Envoy does (data, then an
/// empty end of stream).
pub fn chat_completion_request() -> Request {
    let request_body = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarize the plot of Hamlet in two sentences."}],"max_tokens":256,"temperature":0.2}"#;
    let answer = "Prince Hamlet feigns madness while seeking to avenge his father's murder by his uncle Claudius, who has taken both the throne and Hamlet's mother. His hesitation and a chain of deaths, including Polonius, Ophelia, Laertes, Gertrude and Claudius, end in a final duel that leaves Hamlet himself dead and the Danish court in ruins, with Fortinbras arriving to claim the kingdom.";
    let response_body = format!(
        concat!(
            r#"{{"id":"chatcmpl-9x8y7z6w5v4u3t2s1r0q","object":"chat.completion","created":1735689600,"#,
            r#""model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","#,
            r#""content":"{}","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"#,
            r#""usage":{{"prompt_tokens":31,"completion_tokens":87,"total_tokens":118,"#,
            r#""prompt_tokens_details":{{"cached_tokens":0,"audio_tokens":0}},"#,
            r#""completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"#,
            r#""service_tier":"default","system_fingerprint":"fp_0123456789"}}"#
        ),
        answer
    );
    chat_completion_request_with(request_body.to_owned())
        .response_status(200)
        .response_header("content-type", "application/json")
        .response_header("openai-processing-ms", "412")
        .response_header("x-request-id", "req_0123456789abcdef")
        .response_body(response_body)
}

/// `POST /v1/chat/completions` with `request_body`, as the OpenAI SDK sends it with the bench's
/// virtual key (no answer yet).
pub fn chat_completion_request_with(request_body: String) -> Request {
    Request::post("/v1/chat/completions")
        .authority("api.openai.com")
        .header("authorization", "Bearer tg-bench-0123456789abcdef")
        .header("content-type", "application/json")
        .header("content-length", request_body.len().to_string())
        .header("user-agent", "OpenAI/Python 1.55.0")
        .body(request_body)
}

/// Runs one request and fails the bench unless it was answered `status`.
fn one(host: &mut Host, request: &Request, status: u16) -> Result<Duration> {
    let start = Instant::now();
    let outcome: Outcome = host.send(request)?;
    let elapsed = start.elapsed();
    // A module that answers anything else (e.g. a 503 before its snapshot arrived) is not
    // doing the work the bench claims to measure.
    served(host, &outcome, status)?;
    Ok(elapsed)
}

/// Fails unless `outcome` ran without a trap and answered `status` (the host's logs in the
/// error, to say why).
pub(crate) fn served(host: &mut Host, outcome: &Outcome, status: u16) -> Result<()> {
    if let Some(trap) = &outcome.trap {
        bail!("the module trapped: {} in {}", trap.message, trap.phase);
    }
    if outcome.status() != Some(status) {
        let logs: Vec<String> = host.take_logs().iter().map(|l| l.to_string()).collect();
        bail!(
            "the request got {:?}, not {status}: {}\n{}",
            outcome.status(),
            outcome.body_text(),
            logs.join("\n")
        );
    }
    Ok(())
}

/// Measures `requests` requests per module in interleaved rounds, after a warm-up.
pub fn run(
    filter: &Plugin,
    baseline: &Plugin,
    request: &Request,
    requests: usize,
) -> Result<Report> {
    run_with(filter, baseline, None, request, requests, |_, _| Ok(()))
}

/// [`run`], with a second baseline `floor` measured in the same rounds when given, and
/// `setup(host, is_filter)` applied to each module's host before the warm-up: extra service
/// VMs, preloaded shared data, a clock advance so their ticks run.
pub fn run_with(
    filter: &Plugin,
    baseline: &Plugin,
    floor: Option<&Plugin>,
    request: &Request,
    requests: usize,
    mut setup: impl FnMut(&mut Host, bool) -> Result<()>,
) -> Result<Report> {
    let mut subjects = Vec::new();
    for (i, plugin) in [Some(filter), Some(baseline), floor]
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut host = plugin.start()?;
        setup(&mut host, i == 0)?;
        subjects.push(Subject {
            host,
            request: request.clone(),
            status: 200,
        });
    }
    let (stats, rounds) = interleaved(&mut subjects, requests)?;
    let mut stats = stats.into_iter();
    let (Some(filter), Some(baseline)) = (stats.next(), stats.next()) else {
        bail!("no modules measured");
    };
    Ok(Report {
        filter,
        baseline,
        floor: stats.next(),
        rounds,
    })
}

/// Requests each subject serves before [`interleaved`] times `requests` of them.
pub fn warmup(requests: usize) -> usize {
    (requests / 10).clamp(10, 1_000)
}

/// One thing timed by [`interleaved`]: a started host, the request it serves and the status
/// every answer must have.
pub struct Subject {
    /// The host, its VMs started (and settled).
    pub host: Host,
    /// The request sent to it.
    pub request: Request,
    /// The status each answer must have.
    pub status: u16,
}

/// Times `requests` requests per subject after a warm-up, in interleaved rounds (each round
/// starts with the next subject, so drift hits every subject alike): the statistics in the
/// subjects' order, and the number of rounds.
pub fn interleaved(subjects: &mut [Subject], requests: usize) -> Result<(Vec<Stats>, usize)> {
    let warmup = warmup(requests);
    for _ in 0..warmup {
        for s in subjects.iter_mut() {
            one(&mut s.host, &s.request, s.status)?;
        }
    }
    let rounds = (requests / 500).clamp(1, 50);
    let per_round = requests.div_ceil(rounds);
    let n = subjects.len();
    let mut times: Vec<Vec<Duration>> = (0..n).map(|_| Vec::with_capacity(requests)).collect();
    for round in 0..rounds {
        let take = per_round.min(requests - times.first().map_or(0, Vec::len));
        for k in 0..n {
            let m = (round + k) % n;
            let (Some(s), Some(t)) = (subjects.get_mut(m), times.get_mut(m)) else {
                continue;
            };
            for _ in 0..take {
                t.push(one(&mut s.host, &s.request, s.status)?);
            }
            s.host.take_logs();
        }
    }
    let stats = times.iter_mut().map(|t| Stats::from_durations(t)).collect();
    Ok((stats, rounds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let mut durations: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let stats = Stats::from_durations(&mut durations);
        assert!((stats.p50_us - 50.0).abs() < 1e-9);
        assert!((stats.p99_us - 99.0).abs() < 1e-9);
        assert!((stats.mean_us - 50.5).abs() < 1e-9);
    }

    #[test]
    fn the_representative_response_is_about_a_kilobyte() {
        let request = chat_completion_request();
        let size: usize = request.response().body.iter().map(Vec::len).sum();
        assert!((900..=1300).contains(&size), "{size} bytes");
    }
}
