//! Gemini `generateContent` (`POST /v1beta/models/{model}:generateContent`, and
//! `:streamGenerateContent`; the same under `/v1/`, as `google-genai` sends with
//! `api_version="v1"`).
//!
//! - Request: the model is the path's (a `model` in the body is ignored by Gemini, so it must
//!   not price the request); `generationConfig.maxOutputTokens` and `.candidateCount` (either
//!   casing, as Google's JSON mapping accepts); prompt in `contents` and `systemInstruction`;
//!   `tools` (`googleSearch` grounding enables searches). Streaming is chosen by the path.
//! - Usage, `usageMetadata` (<https://ai.google.dev/api/generate-content#UsageMetadata>):
//!   `promptTokenCount` includes `cachedContentTokenCount`; `thoughtsTokenCount` is *not*
//!   inside `candidatesTokenCount`. `toolUsePromptTokenCount` (tool results fed back to the
//!   model, e.g. grounding) is outside `promptTokenCount` but billed as input, so it is added
//!   to `input_uncached`. `promptTokensDetails` / `candidatesTokensDetails` give the audio and
//!   image parts. Gemini's JSON omits zero-valued fields (proto3), so only `promptTokenCount`
//!   is required. `modelVersion` names the model that served; each candidate's
//!   `groundingMetadata.webSearchQueries` are the searches run.
//! - Stream (`streamGenerateContent?alt=sse`,
//!   <https://ai.google.dev/api/generate-content#method:-models.streamgeneratecontent>): every
//!   `data:` is a `GenerateContentResponse` with cumulative `usageMetadata`; the last wins.
//!   Complete when the last chunk carried usage and a candidate with a `finishReason`. Without
//!   `alt=sse` the answer is one JSON array of those responses.

use super::{model_in_path, ApiFormat, ProviderApi, RequestField, Route};
use crate::usage::fields::{read_count, skip, uncached, Count, Fields};
use crate::usage::{scan, usage_of, StreamRead, Usage, UsageError, UsageValue};

/// Gemini `generateContent`.
pub struct Gemini;

impl ProviderApi for Gemini {
    fn format(&self) -> ApiFormat {
        ApiFormat::GeminiGenerateContent
    }

    fn provider(&self) -> &'static str {
        "gemini"
    }

    fn route<'p>(&self, path: &'p str) -> Option<Route<'p>> {
        let rest = path
            .strip_prefix("/v1beta/models/")
            .or_else(|| path.strip_prefix("/v1/models/"))?;
        let (model, method) = rest.split_once(':')?;
        let path_stream = match method {
            "generateContent" => false,
            "streamGenerateContent" => true,
            _ => return None,
        };
        model_in_path(model, false).then_some(Route {
            format: ApiFormat::GeminiGenerateContent,
            path_model: Some(model),
            path_stream,
        })
    }

    fn request_field(&self, key: &str) -> RequestField {
        match key {
            "model" => RequestField::Model,
            "generationConfig" | "generation_config" => RequestField::Config("generationConfig"),
            "tools" => RequestField::Tools,
            "contents" | "systemInstruction" | "system_instruction" => RequestField::Prompt,
            _ => RequestField::Other,
        }
    }

    fn config_field(&self, key: &str) -> RequestField {
        match key {
            "maxOutputTokens" | "max_output_tokens" => {
                RequestField::OutputCap("generationConfig.maxOutputTokens")
            }
            "candidateCount" | "candidate_count" => {
                RequestField::Choices("generationConfig.candidateCount")
            }
            _ => RequestField::Other,
        }
    }

    fn usage_key(&self) -> &'static str {
        "usageMetadata"
    }

    fn answer_may_be_array(&self) -> bool {
        true
    }

    fn read_usage(&self, s: &[u8], i: usize) -> Result<(UsageValue, usize), UsageError> {
        UsageValue::read(s, i, GeminiUsage::meaning)
    }

    fn model_key(&self) -> &'static str {
        "modelVersion"
    }

    fn searches_in(&self, key: scan::Key<'_>, value: &[u8]) -> Result<Option<u64>, UsageError> {
        if key.is("candidates") {
            return grounding_queries(value).map(Some);
        }
        Ok(None)
    }

    fn read_event(&self, st: &mut StreamRead, _name: &[u8], data: &[u8]) -> Result<(), UsageError> {
        // Complete only if the *last* chunk finished the generation.
        st.complete = false;
        let [usage, candidates, model] =
            scan::find_members(data, ["usageMetadata", "candidates", "modelVersion"])?;
        st.served.note_model(model);
        if let Some(candidates) = candidates {
            st.served.note_searches(grounding_queries(candidates)?);
        }
        let Some(usage) = usage else {
            return Ok(());
        };
        st.usage = Some(usage_of(self, usage)?);
        if let Some(candidates) = candidates {
            st.complete = scan::any_has_string_member(candidates, "finishReason")?;
        }
        Ok(())
    }

    fn skipped_event(&self, st: &mut StreamRead, _name: &[u8]) {
        st.complete = false;
    }

    fn oversized_event(&self, st: &mut StreamRead, _name: &[u8], _tail: &[u8]) -> bool {
        st.complete = false;
        false
    }
}

/// The search queries Gemini's grounding ran: `webSearchQueries` of each candidate's
/// `groundingMetadata`, the largest count (candidates search alike).
fn grounding_queries(candidates: &[u8]) -> Result<u64, UsageError> {
    let mut most = 0u64;
    scan::for_each_element(candidates, |candidate| {
        let [grounding] = scan::find_members(candidate, ["groundingMetadata"])?;
        if let Some(g) = grounding {
            let [queries] = scan::find_members(g, ["webSearchQueries"])?;
            let mut n = 0u64;
            scan::for_each_element(queries.unwrap_or_default(), |_| {
                n = n.saturating_add(1);
                Ok::<_, UsageError>(())
            })?;
            most = most.max(n);
        }
        Ok::<_, UsageError>(())
    })?;
    Ok(most)
}

/// Per-modality token counts (`promptTokensDetails`, `candidatesTokensDetails`: a list of
/// `{"modality": "AUDIO", "tokenCount": N}`): the audio and image parts. Anything else in the
/// list (other modalities, entries that are not objects, a value that is not a list) is not a
/// count of these and is skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Modalities {
    audio: Count,
    image: Count,
}

impl Modalities {
    /// Reads the value at `s[i]`; returns the index just past it. A repeated key overwrites,
    /// as in serde_json's `Value`: the counts start again (found by `fuzz/fuzz_targets/
    /// usage_json.rs`: a second `promptTokensDetails` added its counts to the first's).
    fn read(&mut self, s: &[u8], i: usize) -> Result<usize, UsageError> {
        *self = Modalities::default();
        if s.get(i) != Some(&b'[') {
            return skip(s, i);
        }
        scan::walk_array(s, i, |j| {
            if s.get(j) != Some(&b'{') {
                return skip(s, j);
            }
            let (mut modality, mut count) = (None, Count::default());
            let end = scan::walk_object(s, j, |key, v| {
                let end = skip(s, v)?;
                let token = s.get(v..end).unwrap_or_default();
                if key.is("modality") {
                    modality = scan::unquote(token).map(|m| m.into_owned());
                } else if key.is("tokenCount") {
                    count = Count::from_token(token)?;
                }
                Ok::<_, UsageError>(end)
            })?;
            match modality.as_deref() {
                Some(b"AUDIO") => self.audio = count,
                Some(b"IMAGE") => self.image = count,
                _ => {}
            }
            Ok(end)
        })
    }

    fn parts(&self, field: &'static str) -> Result<(u64, u64), UsageError> {
        Ok((self.audio.or_zero(field)?, self.image.or_zero(field)?))
    }
}

/// `usageMetadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GeminiUsage {
    prompt: Count,
    candidates: Count,
    cached: Count,
    thoughts: Count,
    tool_use: Count,
    prompt_modalities: Modalities,
    candidate_modalities: Modalities,
}

impl Fields for GeminiUsage {
    fn read_named(&mut self, name: &[u8], s: &[u8], i: usize) -> Result<Option<usize>, UsageError> {
        let slot = match name {
            b"promptTokenCount" => &mut self.prompt,
            b"candidatesTokenCount" => &mut self.candidates,
            b"cachedContentTokenCount" => &mut self.cached,
            b"thoughtsTokenCount" => &mut self.thoughts,
            b"toolUsePromptTokenCount" => &mut self.tool_use,
            b"promptTokensDetails" => return self.prompt_modalities.read(s, i).map(Some),
            b"candidatesTokensDetails" => return self.candidate_modalities.read(s, i).map(Some),
            _ => return Ok(None),
        };
        read_count(s, i, slot).map(Some)
    }
}

impl GeminiUsage {
    fn meaning(&self) -> Result<Usage, UsageError> {
        const PROMPT: &str = "usageMetadata.promptTokenCount";
        const CACHED: &str = "usageMetadata.cachedContentTokenCount";
        let prompt = self.prompt.required(PROMPT)?;
        let cached = self.cached.or_zero(CACHED)?;
        let candidates = self
            .candidates
            .or_zero("usageMetadata.candidatesTokenCount")?;
        let thoughts = self.thoughts.or_zero("usageMetadata.thoughtsTokenCount")?;
        // Tokens of tool results fed back to the model (grounding, code execution): part of
        // `totalTokenCount` and billed as input, though outside `promptTokenCount`.
        let tool_use = self
            .tool_use
            .or_zero("usageMetadata.toolUsePromptTokenCount")?;
        let (audio_in, image_in) = self
            .prompt_modalities
            .parts("usageMetadata.promptTokensDetails")?;
        let (audio_out, image_out) = self
            .candidate_modalities
            .parts("usageMetadata.candidatesTokensDetails")?;
        let input_uncached = uncached(prompt, cached, PROMPT, CACHED)?.saturating_add(tool_use);
        // The per-modality counts are parts of the prompt (cached tokens included) and of the
        // candidates: each token is billed once, so they are clamped to what is uncached.
        let input_audio = audio_in.min(input_uncached);
        Ok(Usage {
            input_uncached,
            cache_read: cached,
            output: candidates.saturating_add(thoughts),
            reasoning: thoughts,
            input_audio,
            input_image: image_in.min(input_uncached - input_audio),
            output_audio: audio_out.min(candidates),
            output_image: image_out.min(candidates - audio_out.min(candidates)),
            ..Usage::default()
        })
    }
}
