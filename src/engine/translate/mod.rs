//! Real-time translation (translation.md): the user's text into the Flow's language before NLU
//! and the Flow, the turn's outputs back into the user's language before they are queued.
//!
//! Both are outbound calls, so both are effects (`effects::Call::Translate`): the turn parks,
//! a call thread asks the provider (`providers.rs`), the answer resumes the turn on a worker.
//! Nothing is committed while a translation is in flight: the input's call comes before the
//! Flow (like Rasa's, which rides along in the same call when both are needed, so that the
//! translated text is what Rasa sees), and the outputs' call carries the turn's finished record
//! with it (`Held`). A crash meanwhile runs the message again, from its start or its last `http`
//! checkpoint, as any unfinished turn.
//!
//! The user's language lives in the session's stored state (`SessionState::language`):
//! detected on the first `setUserLanguageOnExecutionCount` messages, then kept; set by a Code
//! node's `api.setUserLanguage` (which writes `input.language`), then kept for good.
//! Files: `text.rs` (markers, payload strings), `providers.rs` (the HTTP part), one file per API.

mod deepl;
mod google;
mod libre;
mod microsoft;
mod providers;
mod text;

use serde_json::{Value, json};

use super::effects::{Answer, Call};
use super::nlu::{self, Found, RasaRequest};
use crate::config::{Endpoint, Nlu, Translation, TranslationProvider, UserLanguage, same_language, valid_language};
use crate::domain::{Speaker, TranscriptLine, TurnRecord};
use crate::flow::{Flow, Output, SessionState, UserLanguageState};
use crate::ops::metrics::Metrics;
use crate::util::shown;

use text::Plan;

/// The key under which a transcript line's `data` keeps the other text of a translated line
/// (the admin API shows it as the line's `translation`).
pub(crate) const TRANSCRIPT_KEY: &str = "_translation";

/// One provider request: all texts of one direction of one turn.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub provider: TranslationProvider,
    /// `None`: the provider detects it.
    pub source: Option<String>,
    pub target: String,
    pub texts: Vec<String>,
    pub formality: String,
    pub glossary: Option<String>,
}

/// A provider's answer: one text per text sent, and the source language it found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Translated {
    pub texts: Vec<String>,
    pub detected: Option<String>,
}

/// A translation a parked turn waits for, and what the turn does with the answer.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub request: Request,
    pub then: Then,
}

/// Why the turn asked.
#[derive(Debug, Clone)]
pub(crate) enum Then {
    /// The user's text, before NLU; Rasa's parse of the translated text comes along.
    Input { rasa: Option<RasaRequest> },
    /// The outputs of a finished turn (or of the part before an `http` node's call).
    Outputs(Box<Held>),
}

/// A finished turn (or part) waiting for its outputs' translation.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    /// Everything the turn writes, but its outputs and their transcript lines.
    pub record: TurnRecord,
    /// The Flow's outputs.
    pub outputs: Vec<Output>,
    plan: Plan,
    flow_language: String,
    collect: bool,
    /// What the turn waits for once its outputs are committed: the `http` node's call this part
    /// stopped at, or the start of the handover its `handover` node asked for (its record is a
    /// checkpoint either way).
    pub next: Option<Call>,
}

/// The answer for a parked turn.
#[derive(Debug, Clone)]
pub(crate) struct Done {
    pub result: Result<Translated, String>,
    pub then: DoneThen,
}

#[derive(Debug, Clone)]
pub(crate) enum DoneThen {
    /// `None`: no Rasa; `Some(None)`: Rasa failed.
    Input {
        rasa: Option<Option<Found>>,
    },
    Outputs(Box<Held>),
}

/// A held turn with its outputs as the user gets them: for the worker to build the bodies and
/// commit.
pub(crate) struct Finished {
    pub record: TurnRecord,
    pub outputs: Vec<Output>,
    pub next: Option<Call>,
}

/// Makes the call (on a call thread, or in `hookflow try`).
pub(crate) fn perform(agent: &ureq::Agent, job: &Job) -> Done {
    let result = providers::send(agent, &job.request);
    let then = match &job.then {
        Then::Input { rasa } => DoneThen::Input {
            rasa: rasa.clone().map(|mut r| {
                if let Ok(t) = &result {
                    r.set_text(t.texts[0].clone());
                }
                nlu::ask(agent, &r)
            }),
        },
        Then::Outputs(held) => DoneThen::Outputs(held.clone()),
    };
    Done { result, then }
}

impl Job {
    /// The answer when the call could not be made at all (it panicked).
    pub(crate) fn failed(&self, why: &str) -> Done {
        let then = match &self.then {
            Then::Input { rasa } => DoneThen::Input { rasa: rasa.as_ref().map(|_| None) },
            Then::Outputs(h) => DoneThen::Outputs(h.clone()),
        };
        Done { result: Err(why.to_owned()), then }
    }
}

/// What the user's language is for this message.
enum Want {
    Known(String),
    Detect,
}

fn wanted(t: &Translation, state: &SessionState, execution: i64) -> Want {
    let stored = state.language.as_ref();
    if let Some(s) = stored.filter(|s| s.set_by_flow) {
        return Want::Known(s.code.clone());
    }
    match &t.user_language {
        UserLanguage::Fixed(code) => Want::Known(code.clone()),
        UserLanguage::Auto => match stored {
            Some(s) if execution > t.detect_messages as i64 => Want::Known(s.code.clone()),
            _ => Want::Detect,
        },
    }
}

/// Before NLU: translates `input.text` into the Flow's language, or returns the call to make
/// (`Err`). `answer` is what the turn was resumed with; what is left of it for NLU (Rasa's
/// answer) comes back. Sets `input.originalText`, `input.language`, `input.translationError`.
pub(crate) fn before_nlu(
    ep: &Endpoint,
    flow: &Flow,
    metrics: &Metrics,
    state: &mut SessionState,
    input: &mut Value,
    execution: i64,
    answer: Option<super::effects::Answer>,
) -> Result<Option<Answer>, Call> {
    let Some(t) = &ep.translation else { return Ok(answer) };
    let text = input["text"].as_str().filter(|s| !s.trim().is_empty()).map(str::to_owned);
    let want = wanted(t, state, execution);
    let known = match &want {
        Want::Known(c) => Some(c.clone()),
        Want::Detect => state.language.as_ref().map(|s| s.code.clone()),
    };
    let m = input.as_object_mut().expect("input is an object");
    m.insert("originalText".into(), text.clone().map_or(Value::Null, Value::String));
    m.insert("language".into(), known.clone().map_or(Value::Null, Value::String));
    m.insert("translationError".into(), Value::Null);
    let rest = match answer {
        Some(Answer::Translate(done)) => match done.then {
            DoneThen::Input { rasa } => {
                input_answered(ep, t, metrics, state, input, &want, done.result);
                return Ok(rasa.map(Answer::Rasa));
            }
            then => Some(Answer::Translate(Box::new(Done { result: done.result, then }))),
        },
        other => other,
    };
    let Some(text) = text else { return Ok(rest) };
    if let Want::Known(code) = &want {
        remember(state, code, false);
        if same_language(code, &t.flow_language) {
            return Ok(rest);
        }
    }
    let source = match want {
        Want::Known(c) => Some(c),
        Want::Detect => None,
    };
    let request = request(t, source, t.flow_language.clone(), vec![text], t.glossary_input.clone());
    // Rasa parses what the Flow reads: the translated text, asked by the same call thread.
    let rasa = match ep.nlu {
        Nlu::Rasa { .. } => nlu::prepare(ep, flow, &mut input.clone()),
        _ => None,
    };
    Err(Call::Translate(Box::new(Job { request, then: Then::Input { rasa } })))
}

fn input_answered(
    ep: &Endpoint,
    t: &Translation,
    metrics: &Metrics,
    state: &mut SessionState,
    input: &mut Value,
    want: &Want,
    result: Result<Translated, String>,
) {
    let m = input.as_object_mut().expect("input is an object");
    match result {
        Ok(tr) => {
            let code = match want {
                Want::Known(c) => Some(c.clone()),
                Want::Detect => tr.detected.clone().filter(|c| valid_language(c)),
            };
            if let Some(code) = code {
                remember(state, &code, false);
                m.insert("language".into(), code.into());
            }
            let text = tr.texts.into_iter().next().unwrap_or_default();
            let mask = ep.data_protection.mask_logging;
            log::debug!("{}: input translated into {}: {:?}", ep.name, t.flow_language, shown(mask, &text));
            m.insert("text".into(), text.into());
        }
        Err(e) => {
            failed(ep, metrics, "the user's text", &e);
            m.insert("translationError".into(), e.into());
        }
    }
}

/// The session's language is `code` (unless the Flow set one; `by_flow` is the Flow setting it).
fn remember(state: &mut SessionState, code: &str, by_flow: bool) {
    if state.language.as_ref().is_some_and(|s| s.set_by_flow && !by_flow) {
        return;
    }
    state.language = Some(UserLanguageState { code: code.to_owned(), set_by_flow: by_flow });
}

fn failed(ep: &Endpoint, metrics: &Metrics, what: &str, error: &str) {
    // The error never holds the texts (providers.rs), so masking has nothing to hide here.
    log::warn!("{}: translating {what} failed ({error}); it goes on untranslated", ep.name);
    metrics.translation_failed(&ep.name);
}

fn request(
    t: &Translation,
    source: Option<String>,
    target: String,
    texts: Vec<String>,
    glossary: Option<String>,
) -> Request {
    Request { provider: t.provider.clone(), source, target, texts, formality: t.formality.clone(), glossary }
}

/// What to do with a turn's outputs.
pub(crate) enum After {
    /// Nothing to ask (markers removed where they had to be): commit as they are.
    Ready,
    /// Ask the provider; `hold` makes the job from the turn's record.
    Ask(Box<Pending>),
}

/// A translation to ask for, before the record is made.
pub(crate) struct Pending {
    request: Request,
    plan: Plan,
    flow_language: String,
    collect: bool,
}

impl Pending {
    /// The job that carries the turn's `record` (without outputs) through the call.
    pub(crate) fn hold(self: Box<Self>, record: TurnRecord, outputs: Vec<Output>, next: Option<Call>) -> Call {
        let Pending { request, plan, flow_language, collect } = *self;
        let held = Held { record, outputs, plan, flow_language, collect, next };
        Call::Translate(Box::new(Job { request, then: Then::Outputs(Box::new(held)) }))
    }
}

/// After the Flow (or a part of it): the session takes a language the Flow set
/// (`api.setUserLanguage`), and `outputs` either need no call (markers removed in place when
/// they must be) or a `Pending` translation.
pub(crate) fn after_flow(ep: &Endpoint, state: &mut SessionState, input: &Value, outputs: &mut [Output]) -> After {
    let Some(t) = &ep.translation else { return After::Ready };
    let language = input["language"].as_str().filter(|c| valid_language(c));
    if let Some(code) = language
        && state.language.as_ref().is_none_or(|s| s.code != code)
    {
        // The Flow changed `input.language`: from now on the session speaks it.
        remember(state, code, true);
    }
    let marker = t.marker.as_deref();
    let target = language.filter(|c| !same_language(c, &t.flow_language));
    let plan = Plan::new(outputs, marker, t.translate_payloads);
    let Some(target) = target.filter(|_| !plan.texts.is_empty()) else {
        if t.always_remove_markers || target.is_some() {
            plan.apply(outputs, None);
        }
        return After::Ready;
    };
    let texts = plan.texts.clone();
    let source = Some(t.flow_language.clone());
    let request = request(t, source, target.to_owned(), texts, t.glossary_output.clone());
    let collect = ep.data_protection.collect_conversations;
    After::Ask(Box::new(Pending { request, plan, flow_language: t.flow_language.clone(), collect }))
}

/// The answer of an outputs translation, put into the held turn; any other answer comes back.
pub(crate) fn outputs_answered(ep: &Endpoint, metrics: &Metrics, done: Done) -> Result<Finished, Box<Done>> {
    let DoneThen::Outputs(held) = done.then else { return Err(Box::new(done)) };
    let Held { mut record, mut outputs, plan, flow_language, collect, next } = *held;
    let flow_texts: Vec<Output> = outputs.clone();
    match &done.result {
        Ok(tr) => plan.apply(&mut outputs, Some(&tr.texts)),
        Err(e) => {
            failed(ep, metrics, "the outputs", e);
            plan.apply(&mut outputs, None);
        }
    }
    if collect {
        let at = record.now_ms;
        for (o, flow) in outputs.iter().zip(&flow_texts) {
            let mut data = o.data.clone();
            if let Some(d) = data.as_object_mut() {
                let other = json!({"text": flow.text, "language": flow_language, "translated": done.result.is_ok()});
                d.insert(TRANSCRIPT_KEY.into(), other);
            }
            record.transcript.push(TranscriptLine {
                source: Speaker::Bot,
                text: o.text.clone(),
                data: data.to_string(),
                at_ms: at,
            });
        }
    }
    Ok(Finished { record, outputs, next })
}

/// `hookflow try`: the outputs translated at once (blocking: there is no worker to keep free);
/// `Ok(true)` when they were translated, `Err` says why not (they are left untranslated).
pub(crate) fn outputs_now(
    agent: &ureq::Agent,
    ep: &Endpoint,
    state: &mut SessionState,
    input: &Value,
    outputs: &mut [Output],
) -> Result<bool, String> {
    let After::Ask(p) = after_flow(ep, state, input, outputs) else { return Ok(false) };
    match providers::send(agent, &p.request) {
        Ok(tr) => {
            p.plan.apply(outputs, Some(&tr.texts));
            Ok(true)
        }
        Err(e) => {
            p.plan.apply(outputs, None);
            Err(e)
        }
    }
}

/// Notes the translated text on the user's transcript line (which keeps what the user wrote).
pub(crate) fn annotate_user_line(ep: &Endpoint, input: &Value, lines: &mut [TranscriptLine]) {
    let Some(t) = &ep.translation else { return };
    let (Some(original), Some(text)) = (input["originalText"].as_str(), input["text"].as_str()) else { return };
    if original == text && input["translationError"].is_null() {
        return;
    }
    for line in lines.iter_mut().filter(|l| l.source == Speaker::User) {
        let mut data: Value = serde_json::from_str(&line.data).unwrap_or_else(|_| json!({}));
        if let Some(d) = data.as_object_mut() {
            let other = json!({"text": text, "language": t.flow_language, "from": input["language"],
                               "translated": input["translationError"].is_null()});
            d.insert(TRANSCRIPT_KEY.into(), other);
        }
        line.data = data.to_string();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ProviderKind;

    /// An endpoint translating between `flow` and `user` (LibreTranslate, nothing listening).
    fn endpoint(flow: &str, user: &str, extra: Value) -> Endpoint {
        let mut t = json!({"provider": {"type": "libretranslate", "url": "http://127.0.0.1:9"},
                           "flowLanguage": flow, "userLanguage": user, "noTranslationMarker": "**"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        let config = json!({"endpoints": [{"name": "bot", "urlToken": "token-1234", "flow": "flow.json",
            "webhook": {"url": "http://127.0.0.1:9/"}, "translation": t}]});
        let path = std::path::Path::new("/tmp/hookflow-translate-unit/h.json");
        crate::config::parse(&config.to_string(), path, &|_| None).unwrap().endpoints.remove(0)
    }

    fn flow() -> Flow {
        let dir = std::path::Path::new("/tmp");
        Flow::compile(&dir.join("flow.json"), dir, &json!({"nodes": []})).expect("an empty Flow compiles")
    }

    fn out(text: &str) -> Output {
        Output { text: text.into(), data: json!({}), delay_ms: 0 }
    }

    #[test]
    fn the_input_asks_only_when_the_languages_differ_and_detects_on_the_first_messages() {
        let (metrics, flow) = (Metrics::new(), flow());
        let ep = endpoint("en", "auto", json!({"setUserLanguageOnExecutionCount": 2}));
        let mut state = SessionState::default();
        let mut input = json!({"text": "Bonjour"});
        let Err(Call::Translate(job)) = before_nlu(&ep, &flow, &metrics, &mut state, &mut input, 1, None) else {
            panic!("message 1 is sent to be detected")
        };
        assert_eq!((job.request.source.as_deref(), job.request.target.as_str()), (None, "en"));
        let done = Done {
            result: Ok(Translated { texts: vec!["Hello".into()], detected: Some("fr".into()) }),
            then: DoneThen::Input { rasa: None },
        };
        let answer = Some(crate::engine::effects::Answer::Translate(Box::new(done)));
        let rest = before_nlu(&ep, &flow, &metrics, &mut state, &mut input, 1, answer);
        assert!(matches!(rest, Ok(None)));
        assert_eq!((input["text"].as_str(), input["originalText"].as_str()), (Some("Hello"), Some("Bonjour")));
        assert_eq!(state.language, Some(UserLanguageState { code: "fr".into(), set_by_flow: false }));
        // Message 3: past the detection, the stored language is the source.
        let mut input = json!({"text": "Salut"});
        let Err(Call::Translate(job)) = before_nlu(&ep, &flow, &metrics, &mut state, &mut input, 3, None) else {
            panic!("French is not the Flow's language")
        };
        assert_eq!(job.request.source.as_deref(), Some("fr"));
        // The Flow's own language: nothing to ask.
        let ep = endpoint("en", "en-US", json!({}));
        let mut input = json!({"text": "Hi"});
        assert!(matches!(
            before_nlu(&ep, &flow, &metrics, &mut SessionState::default(), &mut input, 1, None),
            Ok(None)
        ));
        assert_eq!(input["language"], "en-US");
    }

    #[test]
    fn the_outputs_follow_the_language_the_flow_set_and_markers_go_when_they_must() {
        let ep = endpoint("en", "fr", json!({}));
        let mut state = SessionState {
            language: Some(UserLanguageState { code: "fr".into(), set_by_flow: false }),
            ..SessionState::default()
        };
        let mut outputs = vec![out("Use **X** now")];
        let After::Ask(p) = after_flow(&ep, &mut state, &json!({"language": "de"}), &mut outputs) else {
            panic!("German is not the Flow's language")
        };
        assert_eq!(
            (p.request.target.as_str(), p.request.texts.clone()),
            ("de", vec!["Use".to_owned(), "now".to_owned()])
        );
        assert_eq!(state.language, Some(UserLanguageState { code: "de".into(), set_by_flow: true }));
        // Same language: no request; markers stay unless alwaysRemoveMarkers.
        let input = json!({"language": "en"});
        let mut kept = vec![out("Use **X** now")];
        assert!(matches!(after_flow(&ep, &mut SessionState::default(), &input, &mut kept), After::Ready));
        assert_eq!(kept[0].text, "Use **X** now");
        let removing = endpoint("en", "en", json!({"alwaysRemoveMarkers": true}));
        assert!(matches!(after_flow(&removing, &mut SessionState::default(), &input, &mut kept), After::Ready));
        assert_eq!(kept[0].text, "Use X now");
    }

    /// A request of two French texts for `kind` at `url`.
    pub(crate) fn request_to(kind: &str, url: &str, source: Option<&str>, target: &str) -> Request {
        let kind = match kind {
            "deepl" => ProviderKind::Deepl,
            "libretranslate" => ProviderKind::Libretranslate,
            "google" => ProviderKind::Google,
            _ => ProviderKind::Microsoft,
        };
        let provider = TranslationProvider {
            kind,
            url: url.into(),
            api_key: Some("k-1".into()),
            region: None,
            timeout: Duration::from_secs(1),
        };
        Request {
            provider,
            source: source.map(str::to_owned),
            target: target.into(),
            texts: vec!["Bonjour".into(), "Au revoir".into()],
            formality: "default".into(),
            glossary: None,
        }
    }
}
