//! The terraform state v4 model, its validation and its lossless round trip.
//!
//! Pure: no I/O. [`parse`] turns the bytes of a `.tfstate` into a validated
//! [`State`] (or an error naming the line/column or the resource address at
//! fault); [`read`] does the same from any reader, one resource at a time
//! (what `state push` uses: no document or state held whole; the reader is
//! the caller's, this module opens nothing); [`State::to_json`] writes it
//! back in terraform's own field order and sort order. Keys terraform may add that we do not interpret are kept
//! verbatim in `extra` maps, so that nothing is lost on the way through.

use std::collections::{BTreeMap, HashSet};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address::{self, InstanceKey};

/// The first 16 bytes of the SHA-256 of `bytes`, in hex: the digests
/// discovery compares.
pub fn short_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a resource's objects, from their own digests
/// ([`Instance::digest`]): that of `provider|mode|each|` and the digests
/// sorted bytewise, joined by newlines, as PostgreSQL computes it for
/// `resource_digests` (migration 0012).
pub fn resource_digest<'a>(
    provider: &str,
    mode: &str,
    each: Option<&str>,
    digests: impl IntoIterator<Item = &'a str>,
) -> String {
    let mut sorted: Vec<&str> = digests.into_iter().collect();
    sorted.sort_unstable();
    let text = format!(
        "{provider}|{mode}|{}|{}",
        each.unwrap_or(""),
        sorted.join("\n")
    );
    short_digest(text.as_bytes())
}

/// A terraform state, format version 4.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub terraform_version: String,
    pub serial: i64,
    pub lineage: String,
    /// Root outputs, sorted by name.
    pub outputs: Vec<(String, Output)>,
    /// Resources, in terraform's order (see [`State::sort`]).
    pub resources: Vec<Resource>,
    /// `check_results` exactly as given (`Some(Value::Null)` for an explicit null).
    pub check_results: Option<Value>,
    /// Top-level keys we do not interpret.
    pub extra: Map<String, Value>,
}

/// A root output value.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    pub value: Value,
    pub type_: Value,
    pub sensitive: bool,
    pub extra: Map<String, Value>,
}

/// One resource (all its instances).
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Module instance address, `""` for the root module.
    pub module: String,
    /// `managed` or `data`.
    pub mode: String,
    pub type_: String,
    pub name: String,
    /// `list` (count), `map` (for_each) or absent.
    pub each: Option<String>,
    pub provider: String,
    pub instances: Vec<Instance>,
    pub extra: Map<String, Value>,
}

/// One instance object: the current object of an instance, or a deposed one.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    pub index_key: Option<Value>,
    /// `tainted` or absent.
    pub status: Option<String>,
    /// The deposed key, or absent for the current object.
    pub deposed: Option<String>,
    pub schema_version: i64,
    pub attributes: Option<Value>,
    pub attributes_flat: Option<Value>,
    pub sensitive_attributes: Option<Value>,
    /// Base64 of the provider's private data.
    pub private: Option<String>,
    /// Resource-level addresses this instance depends on (sorted by terraform).
    pub dependencies: Vec<String>,
    pub create_before_destroy: bool,
    pub extra: Map<String, Value>,
    /// The content's digest as PostgreSQL keeps it with the row (see
    /// [`Instance::digest`]); none for an object read from a file.
    pub stored_digest: StoredDigest,
}

/// An object's digest kept with its row: a cache of what the content
/// says, not part of the content, so it never makes two objects differ.
#[derive(Debug, Clone, Default)]
pub struct StoredDigest(pub Option<String>);

impl PartialEq for StoredDigest {
    fn eq(&self, _: &StoredDigest) -> bool {
        true
    }
}

impl Instance {
    /// Digest of the object's content (32 hex digits), the same however
    /// its JSON objects' keys are ordered (terraform's file and
    /// PostgreSQL's jsonb order them differently): the one stored with its
    /// row where there is one, else computed. What discovery compares with
    /// its baseline; written with every row, so that discovery need not
    /// read any row's attributes.
    pub fn digest(&self) -> std::borrow::Cow<'_, str> {
        match &self.stored_digest.0 {
            Some(d) => std::borrow::Cow::Borrowed(d),
            None => std::borrow::Cow::Owned(self.content_digest()),
        }
    }

    /// [`Instance::digest`] computed from the content.
    pub fn content_digest(&self) -> String {
        let mut bytes = Vec::new();
        self.write_canonical(&mut bytes);
        short_digest(&bytes)
    }

    /// The object's content written to `out` with its JSON objects' keys
    /// sorted, ending in a newline.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        // Written straight into `out` (writing to a Vec cannot fail).
        fn canon(v: &Value, out: &mut Vec<u8>) {
            match v {
                Value::Object(m) => {
                    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                    out.push(b'{');
                    for (k, v) in entries {
                        let _ = serde_json::to_writer(&mut *out, k);
                        out.push(b':');
                        canon(v, out);
                        out.push(b',');
                    }
                    out.push(b'}');
                }
                Value::Array(a) => {
                    out.push(b'[');
                    for x in a {
                        canon(x, out);
                        out.push(b',');
                    }
                    out.push(b']');
                }
                other => {
                    let _ = serde_json::to_writer(&mut *out, other);
                }
            }
        }
        let opt = |v: &Option<Value>, out: &mut Vec<u8>| match v {
            Some(v) => canon(v, out),
            None => out.push(b'-'),
        };
        opt(&self.index_key, out);
        out.extend_from_slice(
            format!(
                "|{:?}|{:?}|{}|{:?}|{}|",
                self.status,
                self.deposed,
                self.schema_version,
                self.private,
                self.create_before_destroy
            )
            .as_bytes(),
        );
        opt(&self.attributes, out);
        opt(&self.attributes_flat, out);
        opt(&self.sensitive_attributes, out);
        let mut deps = self.dependencies.clone();
        deps.sort();
        out.extend_from_slice(deps.join(",").as_bytes());
        canon(&Value::Object(self.extra.clone()), out);
        out.push(b'\n');
    }

    /// Whether `other` is the same object: equal in every field, the
    /// sensitive paths compared as the set they are (terraform writes them
    /// in no stable order).
    pub fn same_object(&self, other: &Instance) -> bool {
        // Keys sorted: PostgreSQL's jsonb orders them its own way.
        fn canonical(v: &Value) -> String {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort();
                    let inner: Vec<String> = keys
                        .into_iter()
                        .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&m[k])))
                        .collect();
                    format!("{{{}}}", inner.join(","))
                }
                Value::Array(items) => {
                    let inner: Vec<String> = items.iter().map(canonical).collect();
                    format!("[{}]", inner.join(","))
                }
                other => other.to_string(),
            }
        }
        fn paths(v: &Option<Value>) -> Option<Vec<String>> {
            match v {
                Some(Value::Array(items)) => {
                    let mut texts: Vec<String> = items.iter().map(canonical).collect();
                    texts.sort();
                    Some(texts)
                }
                other => other.as_ref().map(|v| vec![canonical(v)]),
            }
        }
        let fields_equal = Instance {
            sensitive_attributes: None,
            ..self.clone()
        } == Instance {
            sensitive_attributes: None,
            ..other.clone()
        };
        fields_equal && paths(&self.sensitive_attributes) == paths(&other.sensitive_attributes)
    }
}

/// Why a state was refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("the state is not valid JSON: {msg} at line {line}, column {column}")]
    Json {
        msg: String,
        line: usize,
        column: usize,
    },
    #[error("the state is empty")]
    Empty,
    #[error("cannot read the state: {msg}")]
    Read { msg: String },
    #[error(
        "state format version {found} is not supported: stategraph reads version 4 \
         (terraform 0.12 and later). Let terraform upgrade it first \
         (`terraform state pull` with terraform >= 0.12 writes version 4)"
    )]
    Version { found: String },
    #[error("{at}: {problem}")]
    Field { at: String, problem: String },
    #[error("{address} appears twice in the state")]
    Duplicate { address: String },
    #[error("{instance} depends on {dependency:?}, which is not a resource address: {problem}")]
    BadDependency {
        instance: String,
        dependency: String,
        problem: String,
    },
}

/// Parses and validates a state v4 document.
pub fn parse(bytes: &[u8]) -> Result<State, StateError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(StateError::Empty);
    }
    let mut resources = Vec::new();
    let head = read_from(&mut serde_json::Deserializer::from_slice(bytes), &mut |r| {
        resources.push(r);
        Ok(())
    })?;
    Ok(head.into_state(resources))
}

/// Reads and validates a state v4 document from `reader` without holding
/// it whole: each resource is handed to `each` as soon as it is read and
/// checked (its instances in terraform's order, resources in the
/// document's), and the rest of the state is returned at the end. What
/// stays in memory is one resource and the set of resource addresses seen.
///
/// An error of `each` stops the reading and is returned as it is.
pub fn read(
    reader: impl std::io::Read,
    mut each: impl FnMut(Resource) -> Result<(), StateError>,
) -> Result<Head, StateError> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, reader);
    // Only whitespace is skipped here, and kept, so that error positions
    // stay right.
    let mut leading = Vec::new();
    loop {
        let buf = std::io::BufRead::fill_buf(&mut reader)
            .map_err(|e| StateError::Read { msg: e.to_string() })?;
        if buf.is_empty() {
            return Err(StateError::Empty);
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(0) => break,
            Some(n) => {
                leading.extend_from_slice(&buf[..n]);
                std::io::BufRead::consume(&mut reader, n);
                break;
            }
            None => {
                let n = buf.len();
                leading.extend_from_slice(buf);
                std::io::BufRead::consume(&mut reader, n);
            }
        }
    }
    // serde_json reads byte by byte: the outermost reader is a BufReader,
    // whose bytes std reads without a call per byte (through the chain,
    // each byte cost a read call: a fifth of a 136 MiB push's CPU).
    let chained = std::io::BufReader::with_capacity(
        1 << 16,
        std::io::Read::chain(std::io::Cursor::new(leading), reader),
    );
    read_from(
        &mut serde_json::Deserializer::from_reader(chained),
        &mut each,
    )
}

/// [`read`] and [`parse`] on one JSON deserializer.
fn read_from<'de, R: serde_json::de::Read<'de>>(
    de: &mut serde_json::Deserializer<R>,
    each: &mut dyn FnMut(Resource) -> Result<(), StateError>,
) -> Result<Head, StateError> {
    let mut reading = Reading {
        each,
        failed: None,
        validator: Validator::default(),
        top: Map::new(),
        resources_seen: false,
    };
    let outcome =
        serde::de::DeserializeSeed::deserialize(&mut reading, &mut *de).and_then(|()| de.end());
    if let Some(e) = reading.failed.take() {
        return Err(e);
    }
    outcome.map_err(|e| {
        if e.is_io() {
            StateError::Read {
                msg: json_error_message(&e),
            }
        } else {
            StateError::Json {
                msg: json_error_message(&e),
                line: e.line(),
                column: e.column(),
            }
        }
    })?;
    head(reading.top)
}

/// The state of one streaming read: the top-level keys read so far, and
/// the error that stopped it (serde's errors carry only text, so the
/// structured error waits here).
struct Reading<'a> {
    each: &'a mut dyn FnMut(Resource) -> Result<(), StateError>,
    failed: Option<StateError>,
    validator: Validator,
    top: Map<String, Value>,
    resources_seen: bool,
}

impl Reading<'_> {
    /// Records `e` and returns the serde error that unwinds the reading.
    fn fail<E: serde::de::Error>(&mut self, e: StateError) -> E {
        self.failed = Some(e);
        E::custom("stopped")
    }

    fn not_an_object<E: serde::de::Error>(&mut self, found: &str) -> E {
        self.fail(StateError::Field {
            at: "the state".into(),
            problem: format!("expected an object, found {found}"),
        })
    }

    fn resources_not_an_array<E: serde::de::Error>(&mut self, found: &str) -> E {
        self.fail(StateError::Field {
            at: "the state".into(),
            problem: format!("\"resources\" must be an array, found {found}"),
        })
    }
}

/// serde_json's key for a number read with `arbitrary_precision`.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> serde::de::DeserializeSeed<'de> for &mut Reading<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(TopVisitor(self))
    }
}

/// The top-level object: `resources` streamed, every other key kept.
struct TopVisitor<'r, 'a>(&'r mut Reading<'a>);

impl<'de> serde::de::Visitor<'de> for TopVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a terraform state (a JSON object)")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let r = self.0;
        while let Some(key) = map.next_key::<String>()? {
            if key == NUMBER_TOKEN {
                return Err(r.not_an_object("a number"));
            }
            if key == "resources" {
                if r.resources_seen {
                    return Err(r.fail(StateError::Field {
                        at: "the state".into(),
                        problem: "\"resources\" appears twice".into(),
                    }));
                }
                r.resources_seen = true;
                map.next_value_seed(ResourcesSeed(&mut *r))?;
                continue;
            }
            let value: Value = map.next_value()?;
            if key == "version" {
                if let Err(e) = check_version(Some(&value)) {
                    return Err(r.fail(e));
                }
            }
            r.top.insert(key, value);
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.0.not_an_object("an array"))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.0.not_an_object("a string"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.not_an_object("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.0.not_an_object("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.0.not_an_object("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.not_an_object("a number"))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.0.not_an_object("null"))
    }
}

/// The `resources` array, one resource at a time.
struct ResourcesSeed<'r, 'a>(&'r mut Reading<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for ResourcesSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ResourcesSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of resources")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let r = self.0;
        let mut ri = 0;
        while let Some(value) = seq.next_element::<Value>()? {
            let checked = resource(ri, value).and_then(|res| {
                r.validator.check(&res)?;
                (r.each)(res)
            });
            if let Err(e) = checked {
                return Err(r.fail(e));
            }
            ri += 1;
        }
        Ok(())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        // A number (arbitrary_precision reads it as a map) or an object.
        let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Err(self.0.resources_not_an_array(type_name(&v)))
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        Err(self.0.resources_not_an_array("a string"))
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.0.resources_not_an_array("a boolean"))
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.0.resources_not_an_array("a number"))
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.0.resources_not_an_array("a number"))
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.0.resources_not_an_array("a number"))
    }
}

/// What JSON types alone cannot check, one resource at a time: unique
/// resources and instances, dependencies that are resource addresses.
/// Holds the resource addresses seen (instance addresses extend their
/// resource's, so instances need checking within their resource only).
#[derive(Default)]
struct Validator {
    resources: HashSet<String>,
    dependencies: HashSet<String>,
}

impl Validator {
    fn check(&mut self, r: &Resource) -> Result<(), StateError> {
        let raddr = r.address();
        if self.resources.contains(&raddr) {
            return Err(StateError::Duplicate { address: raddr });
        }
        let mut seen: HashSet<(String, Option<&str>)> = HashSet::with_capacity(r.instances.len());
        for i in &r.instances {
            let iaddr = i.address(&raddr);
            if !seen.insert((iaddr.clone(), i.deposed.as_deref())) {
                let what = match &i.deposed {
                    Some(d) => format!("{iaddr} (deposed object {d})"),
                    None => iaddr,
                };
                return Err(StateError::Duplicate { address: what });
            }
            if let Some(Value::Number(_)) = &i.index_key {
                if r.each.as_deref() == Some("map") {
                    return Err(StateError::Field {
                        at: iaddr,
                        problem: "an integer index_key on a for_each resource (each = \"map\")"
                            .into(),
                    });
                }
            }
            // Dependencies are checked for form only: terraform records a
            // dependency on a resource that has no instance (`count = 0`),
            // so a dependency absent from the state is normal.
            for d in &i.dependencies {
                if self.dependencies.contains(d.as_str()) {
                    continue;
                }
                match address::parse_resource(d) {
                    Ok(parsed) if parsed.config_address() == *d => {
                        self.dependencies.insert(d.clone());
                    }
                    Ok(_) => {
                        return Err(StateError::BadDependency {
                            instance: iaddr,
                            dependency: d.clone(),
                            problem: "dependencies name resources without module keys".into(),
                        })
                    }
                    Err(e) => {
                        return Err(StateError::BadDependency {
                            instance: iaddr,
                            dependency: d.clone(),
                            problem: e.message.clone(),
                        })
                    }
                }
            }
        }
        self.resources.insert(raddr);
        Ok(())
    }
}

/// serde_json's message without its trailing " at line L column C".
fn json_error_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads typed fields out of one JSON object, naming `at` in errors.
struct Fields<'a> {
    at: &'a str,
    map: Map<String, Value>,
}

impl Fields<'_> {
    fn err(&self, problem: String) -> StateError {
        StateError::Field {
            at: self.at.to_owned(),
            problem,
        }
    }

    fn take(&mut self, key: &str) -> Option<Value> {
        self.map.shift_remove(key)
    }

    fn string(&mut self, key: &str) -> Result<Option<String>, StateError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.err(format!(
                "\"{key}\" must be a string, found {}",
                type_name(&v)
            ))),
        }
    }

    fn required_string(&mut self, key: &str) -> Result<String, StateError> {
        self.string(key)?
            .ok_or_else(|| self.err(format!("\"{key}\" is missing")))
    }

    fn int(&mut self, key: &str) -> Result<Option<i64>, StateError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_i64().is_some_and(|i| i >= 0) => Ok(n.as_i64()),
            Some(v) => Err(self.err(format!(
                "\"{key}\" must be a non-negative integer, found {}",
                match &v {
                    Value::Number(n) => format!("{n}"),
                    other => type_name(other).to_owned(),
                }
            ))),
        }
    }

    fn bool(&mut self, key: &str) -> Result<bool, StateError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(v) => Err(self.err(format!(
                "\"{key}\" must be true or false, found {}",
                type_name(&v)
            ))),
        }
    }

    fn array(&mut self, key: &str) -> Result<Vec<Value>, StateError> {
        match self.take(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(self.err(format!(
                "\"{key}\" must be an array, found {}",
                type_name(&v)
            ))),
        }
    }

    fn object_or_null(&mut self, key: &str) -> Result<Option<Value>, StateError> {
        match self.take(key) {
            None => Ok(None),
            Some(v @ (Value::Object(_) | Value::Null)) => Ok(Some(v)),
            Some(v) => Err(self.err(format!(
                "\"{key}\" must be an object, found {}",
                type_name(&v)
            ))),
        }
    }
}

fn as_object(v: Value, at: &str) -> Result<Map<String, Value>, StateError> {
    match v {
        Value::Object(m) => Ok(m),
        other => Err(StateError::Field {
            at: at.to_owned(),
            problem: format!("expected an object, found {}", type_name(&other)),
        }),
    }
}

/// Everything of a state but its resources: what [`read`] returns once
/// every resource was handed over.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub terraform_version: String,
    pub serial: i64,
    pub lineage: String,
    /// Root outputs, sorted by name.
    pub outputs: Vec<(String, Output)>,
    pub check_results: Option<Value>,
    pub extra: Map<String, Value>,
}

impl Head {
    /// The head of `state` (its resources left out).
    pub fn of(state: &State) -> Head {
        Head {
            terraform_version: state.terraform_version.clone(),
            serial: state.serial,
            lineage: state.lineage.clone(),
            outputs: state.outputs.clone(),
            check_results: state.check_results.clone(),
            extra: state.extra.clone(),
        }
    }

    /// The state of this head and `resources`, sorted as terraform writes it.
    pub fn into_state(self, resources: Vec<Resource>) -> State {
        let mut state = State {
            terraform_version: self.terraform_version,
            serial: self.serial,
            lineage: self.lineage,
            outputs: self.outputs,
            resources,
            check_results: self.check_results,
            extra: self.extra,
        };
        state.sort();
        state
    }
}

/// Checks `version` as soon as it is read: a state of another version is
/// refused before its resources are looked at.
fn check_version(v: Option<&Value>) -> Result<(), StateError> {
    let err = |problem: String| StateError::Field {
        at: "the state".to_owned(),
        problem,
    };
    match v {
        Some(Value::Number(n)) if n.as_u64() == Some(4) => Ok(()),
        Some(Value::Number(n)) => Err(StateError::Version {
            found: n.to_string(),
        }),
        Some(other) => Err(err(format!(
            "\"version\" must be the number 4, found {}",
            type_name(other)
        ))),
        None => Err(err(
            "\"version\" is missing: is this a terraform state file?".into(),
        )),
    }
}

/// The top-level keys of a state, `resources` excepted.
fn head(top: Map<String, Value>) -> Result<Head, StateError> {
    let mut top = Fields {
        at: "the state",
        map: top,
    };
    check_version(top.take("version").as_ref())?;
    let terraform_version = top.string("terraform_version")?.unwrap_or_default();
    let serial = top
        .int("serial")?
        .ok_or_else(|| top.err("\"serial\" is missing".into()))?;
    let lineage = top.required_string("lineage")?;

    let mut outputs = Vec::new();
    if let Some(Value::Object(map)) = top.object_or_null("outputs")? {
        for (name, o) in map {
            let at = format!("output {name:?}");
            let mut f = Fields {
                at: &at,
                map: as_object(o, &at)?,
            };
            let value = f
                .take("value")
                .ok_or_else(|| f.err("\"value\" is missing".into()))?;
            let type_ = f
                .take("type")
                .ok_or_else(|| f.err("\"type\" is missing".into()))?;
            let sensitive = f.bool("sensitive")?;
            outputs.push((
                name,
                Output {
                    value,
                    type_,
                    sensitive,
                    extra: f.map,
                },
            ));
        }
    }
    outputs.sort_by(|a, b| a.0.cmp(&b.0));
    let check_results = top.take("check_results");
    Ok(Head {
        terraform_version,
        serial,
        lineage,
        outputs,
        check_results,
        extra: top.map,
    })
}

/// Resource `ri` of the `resources` array, its instances in terraform's order.
fn resource(ri: usize, r: Value) -> Result<Resource, StateError> {
    let at = format!("resources[{ri}]");
    let mut f = Fields {
        at: &at,
        map: as_object(r, &at)?,
    };
    let module = f.string("module")?.unwrap_or_default();
    let mode = f.required_string("mode")?;
    if mode != "managed" && mode != "data" {
        return Err(f.err(format!(
            "\"mode\" must be \"managed\" or \"data\", found {mode:?}"
        )));
    }
    let type_ = f.required_string("type")?;
    let name = f.required_string("name")?;
    let each = f.string("each")?;
    if let Some(e) = &each {
        if e != "list" && e != "map" {
            return Err(f.err(format!("\"each\" must be \"list\" or \"map\", found {e:?}")));
        }
    }
    let provider = f.required_string("provider")?;
    let raw_instances = f.array("instances")?;
    let mut resource = Resource {
        module,
        mode,
        type_,
        name,
        each,
        provider,
        instances: Vec::with_capacity(raw_instances.len()),
        extra: Map::new(),
    };
    let resource_addr = resource.address();
    if let Err(e) = address::parse_resource(&resource_addr) {
        return Err(f.err(format!("not a valid resource address: {e}")));
    }
    for (ii, inst) in raw_instances.into_iter().enumerate() {
        let at = format!("resources[{ri}].instances[{ii}] ({resource_addr})");
        let mut g = Fields {
            at: &at,
            map: as_object(inst, &at)?,
        };
        let index_key = match g.take("index_key") {
            None | Some(Value::Null) => None,
            Some(k) => {
                if InstanceKey::from_json(&k).is_none() {
                    return Err(g.err(format!(
                        "\"index_key\" must be an integer or a string, found {}",
                        type_name(&k)
                    )));
                }
                Some(k)
            }
        };
        let status = g.string("status")?;
        let deposed = g.string("deposed")?.filter(|d| !d.is_empty());
        let schema_version = g.int("schema_version")?.unwrap_or(0);
        let attributes = g.object_or_null("attributes")?.filter(|v| !v.is_null());
        let attributes_flat = g
            .object_or_null("attributes_flat")?
            .filter(|v| !v.is_null());
        let sensitive_attributes = g.take("sensitive_attributes");
        let private = g.string("private")?;
        let mut dependencies = Vec::new();
        for d in g.array("dependencies")? {
            match d {
                Value::String(s) => dependencies.push(s),
                other => {
                    return Err(g.err(format!(
                        "\"dependencies\" must hold strings, found {}",
                        type_name(&other)
                    )))
                }
            }
        }
        let create_before_destroy = g.bool("create_before_destroy")?;
        resource.instances.push(Instance {
            index_key,
            status,
            deposed,
            schema_version,
            attributes,
            attributes_flat,
            sensitive_attributes,
            private,
            dependencies,
            create_before_destroy,
            extra: g.map,
            stored_digest: StoredDigest::default(),
        });
    }
    resource.extra = f.map;
    resource.instances.sort_by(instance_order);
    Ok(resource)
}

impl Resource {
    /// `module.m[1].data.type.name`, as terraform prints resource addresses.
    pub fn address(&self) -> String {
        let mut s =
            String::with_capacity(self.module.len() + self.type_.len() + self.name.len() + 8);
        if !self.module.is_empty() {
            s.push_str(&self.module);
            s.push('.');
        }
        if self.mode == "data" {
            s.push_str("data.");
        }
        s.push_str(&self.type_);
        s.push('.');
        s.push_str(&self.name);
        s
    }

    /// The address `dependencies` use: module instance keys removed.
    pub fn config_address(&self) -> String {
        let resource = self.address();
        strip_module_keys(&resource)
    }
}

/// `module.m[1].module.n["a"].x.y` -> `module.m.module.n.x.y` (keys of the
/// resource itself are not part of a resource address, so any `[...]` here
/// belongs to a module).
pub fn strip_module_keys(addr: &str) -> String {
    let mut out = String::with_capacity(addr.len());
    let mut rest = addr;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        match address::key_end(&rest[i..]) {
            Some(end) => rest = &rest[i + end + 1..],
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

impl Instance {
    /// The instance address given its resource's address.
    pub fn address(&self, resource_address: &str) -> String {
        // Written straight into one string: run for every instance several
        // times a plan, `format!` and the key's conversion cost 0.1 s at
        // 100,000 instances.
        use std::fmt::Write as _;
        let mut out = String::with_capacity(resource_address.len() + 16);
        out.push_str(resource_address);
        match &self.index_key {
            None | Some(Value::Null) => return out,
            Some(Value::Number(n)) => {
                if let Some(i) = n.as_u64().filter(|i| *i <= i64::MAX as u64) {
                    let _ = write!(out, "[{i}]");
                    return out;
                }
            }
            Some(Value::String(k)) => {
                out.push('[');
                let _ = crate::address::write_hcl_quoted(&mut out, k);
                out.push(']');
                return out;
            }
            Some(_) => {}
        }
        match self.index_key.as_ref().and_then(InstanceKey::from_json) {
            Some(k) => format!("{resource_address}[{k}]"),
            None => resource_address.to_owned(),
        }
    }
}

/// Terraform's instance order: no key first, then integers, then strings;
/// a deposed object after its instance's current one.
fn instance_order(a: &Instance, b: &Instance) -> std::cmp::Ordering {
    let ka = a.index_key.as_ref().and_then(InstanceKey::from_json);
    let kb = b.index_key.as_ref().and_then(InstanceKey::from_json);
    ka.cmp(&kb).then_with(|| {
        a.deposed
            .as_deref()
            .unwrap_or("")
            .cmp(b.deposed.as_deref().unwrap_or(""))
    })
}

/// Terraform's resource order: by (module, mode, type, name), bytewise.
pub fn resource_order(a: &Resource, b: &Resource) -> std::cmp::Ordering {
    (
        a.module.as_bytes(),
        a.mode.as_bytes(),
        a.type_.as_bytes(),
        a.name.as_bytes(),
    )
        .cmp(&(
            b.module.as_bytes(),
            b.mode.as_bytes(),
            b.type_.as_bytes(),
            b.name.as_bytes(),
        ))
}

impl State {
    /// A state with nothing in it (serial 0), as terraform starts one.
    pub fn empty(lineage: String) -> State {
        State {
            terraform_version: String::new(),
            serial: 0,
            lineage,
            outputs: Vec::new(),
            resources: Vec::new(),
            check_results: None,
            extra: Map::new(),
        }
    }

    /// Every instance address, sorted, each once (deposed objects share
    /// their instance's).
    pub fn sorted_addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = self.instance_addresses().collect();
        out.sort();
        out.dedup();
        out
    }

    /// The address of every instance object, in the state's order (a
    /// deposed object repeats its instance's address).
    pub fn instance_addresses(&self) -> impl Iterator<Item = String> + '_ {
        self.resources.iter().flat_map(|r| {
            let address = r.address();
            r.instances.iter().map(move |i| i.address(&address))
        })
    }

    /// Sorts outputs by name, resources by (module, mode, type, name) and
    /// instances by (index key, deposed key), as terraform's state writer does.
    pub fn sort(&mut self) {
        self.outputs.sort_by(|a, b| a.0.cmp(&b.0));
        self.resources.sort_by(resource_order);
        for r in &mut self.resources {
            r.instances.sort_by(instance_order);
        }
    }

    /// Number of instance objects (deposed objects included).
    pub fn object_count(&self) -> usize {
        self.resources.iter().map(|r| r.instances.len()).sum()
    }

    /// Checks what JSON types alone cannot: unique resources and instances,
    /// and dependencies that are resource addresses.
    pub fn validate(&self) -> Result<(), StateError> {
        let mut v = Validator::default();
        self.resources.iter().try_for_each(|r| v.check(r))
    }

    /// This state (lineage, serial, outputs...) holding `resources` instead
    /// of its own.
    pub fn with_resources(&self, resources: Vec<Resource>) -> State {
        State {
            terraform_version: self.terraform_version.clone(),
            serial: self.serial,
            lineage: self.lineage.clone(),
            outputs: self.outputs.clone(),
            resources,
            check_results: self.check_results.clone(),
            extra: self.extra.clone(),
        }
    }

    /// The state as terraform writes it: same field order, same omissions,
    /// two-space indentation, trailing newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.object_count() * 512);
        self.write_json(&mut out)
            .expect("writing to a Vec cannot fail");
        out
    }

    /// Streams [`State::to_json`] to a writer.
    pub fn write_json(&self, w: impl std::io::Write) -> std::io::Result<()> {
        let mut w = w;
        serde_json::to_writer_pretty(&mut w, self).map_err(std::io::Error::other)?;
        w.write_all(b"\n")
    }
}

// Serialization writes fields in the order of terraform's own state writer
// (internal/states/statefile/version4.go) with its omissions, without
// cloning the (possibly very large) attribute trees.
impl Serialize for State {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("version", &4)?;
        m.serialize_entry("terraform_version", &self.terraform_version)?;
        m.serialize_entry("serial", &self.serial)?;
        m.serialize_entry("lineage", &self.lineage)?;
        m.serialize_entry("outputs", &Outputs(&self.outputs))?;
        m.serialize_entry("resources", &self.resources)?;
        if let Some(c) = &self.check_results {
            m.serialize_entry("check_results", c)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

struct Outputs<'a>(&'a [(String, Output)]);

impl Serialize for Outputs<'_> {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(Some(self.0.len()))?;
        for (name, o) in self.0 {
            m.serialize_entry(name, o)?;
        }
        m.end()
    }
}

impl Serialize for Output {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        m.serialize_entry("value", &self.value)?;
        m.serialize_entry("type", &self.type_)?;
        if self.sensitive {
            m.serialize_entry("sensitive", &true)?;
        }
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        if !self.module.is_empty() {
            m.serialize_entry("module", &self.module)?;
        }
        m.serialize_entry("mode", &self.mode)?;
        m.serialize_entry("type", &self.type_)?;
        m.serialize_entry("name", &self.name)?;
        if let Some(e) = &self.each {
            m.serialize_entry("each", e)?;
        }
        m.serialize_entry("provider", &self.provider)?;
        m.serialize_entry("instances", &self.instances)?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

impl Serialize for Instance {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        let mut m = ser.serialize_map(None)?;
        if let Some(k) = &self.index_key {
            m.serialize_entry("index_key", k)?;
        }
        if let Some(s) = &self.status {
            m.serialize_entry("status", s)?;
        }
        if let Some(d) = &self.deposed {
            m.serialize_entry("deposed", d)?;
        }
        m.serialize_entry("schema_version", &self.schema_version)?;
        if let Some(a) = &self.attributes {
            m.serialize_entry("attributes", a)?;
        }
        if let Some(a) = &self.attributes_flat {
            m.serialize_entry("attributes_flat", a)?;
        }
        if let Some(s) = &self.sensitive_attributes {
            m.serialize_entry("sensitive_attributes", s)?;
        }
        // Keys terraform writes between sensitive_attributes and private
        // (identity, identity_schema_version) keep their place.
        for (k, v) in self.extra.iter().filter(|(k, _)| k.starts_with("identity")) {
            m.serialize_entry(k, v)?;
        }
        if let Some(p) = &self.private {
            m.serialize_entry("private", p)?;
        }
        if !self.dependencies.is_empty() {
            m.serialize_entry("dependencies", &self.dependencies)?;
        }
        if self.create_before_destroy {
            m.serialize_entry("create_before_destroy", &true)?;
        }
        for (k, v) in self
            .extra
            .iter()
            .filter(|(k, _)| !k.starts_with("identity"))
        {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// What is printed in place of a sensitive value.
pub const SENSITIVE: &str = "(sensitive value)";

/// One attribute that differs between two versions of an instance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AttrChange {
    /// `tags["env"]`, `input.value.gen`, `ingress[0].cidr_blocks[1]`.
    pub path: String,
    /// `None`: absent (added).
    pub before: Option<Value>,
    /// `None`: absent (removed).
    pub after: Option<Value>,
}

/// The leaf values of `before` and `after` (instance `attributes`) that
/// differ, by path, in path order; a value under a path either side lists
/// in its `sensitive_attributes` reads [`SENSITIVE`]. A leaf is a scalar,
/// an empty object or an empty array.
pub fn diff_attributes(
    before: Option<&Value>,
    before_sensitive: Option<&Value>,
    after: Option<&Value>,
    after_sensitive: Option<&Value>,
) -> Vec<AttrChange> {
    let mut old = BTreeMap::new();
    let mut new = BTreeMap::new();
    if let Some(v) = before {
        leaves(v, &mut Vec::new(), &mut old);
    }
    if let Some(v) = after {
        leaves(v, &mut Vec::new(), &mut new);
    }
    let mut declared = sensitive_paths(before_sensitive);
    declared.extend(sensitive_paths(after_sensitive));
    let hidden: Vec<Vec<Step>> = declared
        .iter()
        .flat_map(|p| [resolve(before, p), resolve(after, p)])
        .flatten()
        .collect();
    let keys: std::collections::BTreeSet<&Vec<Step>> = old.keys().chain(new.keys()).collect();
    let mask = |path: &[Step], v: Option<&Value>| {
        v.map(|v| {
            if hidden.iter().any(|h| path.starts_with(h)) {
                Value::String(SENSITIVE.to_owned())
            } else {
                v.clone()
            }
        })
    };
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| AttrChange {
            path: path_text(k),
            before: mask(k, old.get(k)),
            after: mask(k, new.get(k)),
        })
        .collect()
}

/// One step of an attribute path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Key(String),
    Index(u64),
}

fn leaves(v: &Value, path: &mut Vec<Step>, out: &mut BTreeMap<Vec<Step>, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(Step::Key(k.clone()));
                leaves(child, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                path.push(Step::Index(i as u64));
                leaves(child, path, out);
                path.pop();
            }
        }
        leaf => {
            out.insert(path.clone(), leaf.clone());
        }
    }
}

/// terraform's `sensitive_attributes` (`[[{"type":"get_attr","value":"a"},
/// {"type":"index","value":{"value":0,"type":"number"}}], ...]`) as paths.
fn sensitive_paths(v: Option<&Value>) -> Vec<Vec<Step>> {
    let Some(Value::Array(paths)) = v else {
        return Vec::new();
    };
    paths
        .iter()
        .filter_map(|p| p.as_array())
        .map(|steps| {
            steps
                .iter()
                .map(|s| match s.get("type").and_then(Value::as_str) {
                    Some("get_attr") => {
                        Step::Key(s["value"].as_str().unwrap_or_default().to_owned())
                    }
                    _ => match &s["value"]["value"] {
                        Value::String(k) => Step::Key(k.clone()),
                        n => Step::Index(n.as_u64().unwrap_or(u64::MAX)),
                    },
                })
                .collect()
        })
        .collect()
}

/// The path in `value` that the sensitive path `steps` reaches: followed
/// through the `{"value": ..., "type": ...}` wrapping of dynamic attributes
/// (terraform_data's `input`), and cut where it cannot be followed (what it
/// reached is masked whole). `None` when it reaches nothing.
fn resolve(value: Option<&Value>, steps: &[Step]) -> Option<Vec<Step>> {
    if steps.is_empty() {
        return Some(Vec::new());
    }
    fn child<'v>(v: &'v Value, step: &Step) -> Option<&'v Value> {
        match (v, step) {
            (Value::Object(m), Step::Key(k)) => m.get(k),
            (Value::Array(a), Step::Index(i)) => a.get(*i as usize),
            (Value::Array(a), Step::Key(k)) => a.get(k.parse::<usize>().ok()?),
            _ => None,
        }
    }
    let mut cur = value?;
    let mut out = Vec::new();
    for step in steps {
        let wrapped = match cur {
            Value::Object(m)
                if m.contains_key("type") && !matches!(step, Step::Key(k) if m.contains_key(k)) =>
            {
                m.get("value").filter(|inner| child(inner, step).is_some())
            }
            _ => None,
        };
        if let Some(inner) = wrapped {
            out.push(Step::Key("value".to_owned()));
            cur = inner;
        }
        match child(cur, step) {
            Some(next) => {
                out.push(match (cur, step) {
                    (Value::Array(_), Step::Key(k)) => Step::Index(k.parse().unwrap_or(u64::MAX)),
                    _ => step.clone(),
                });
                cur = next;
            }
            None => break,
        }
    }
    (!out.is_empty()).then_some(out)
}

fn path_text(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(k)
                if !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    && !k.starts_with(|c: char| c.is_ascii_digit()) =>
            {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Key(k) => out.push_str(&format!("[{}]", Value::String(k.clone()))),
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn an_instance_address_is_written_as_terraform_prints_it() {
        let with = |key: Option<serde_json::Value>| Instance {
            index_key: key,
            status: None,
            deposed: None,
            schema_version: 0,
            attributes: None,
            attributes_flat: None,
            sensitive_attributes: None,
            private: None,
            dependencies: Vec::new(),
            create_before_destroy: false,
            extra: Map::new(),
            stored_digest: StoredDigest::default(),
        };
        let keys = [
            json!(0),
            json!(17),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(-1),
            json!(1.5),
            json!("a"),
            json!("team-0003"),
            json!("a\"b"),
            json!("back\\slash"),
            json!("$${x}"),
            json!("${x}"),
            json!("100%{x}"),
            json!("tab\there"),
            json!("é"),
            json!(""),
            json!(null),
            json!(true),
        ];
        for key in keys {
            let expected = match crate::address::InstanceKey::from_json(&key) {
                Some(k) => format!("module.m[\"x\"].t.n[{k}]"),
                None => "module.m[\"x\"].t.n".to_owned(),
            };
            assert_eq!(
                with(Some(key.clone())).address("module.m[\"x\"].t.n"),
                expected,
                "{key}"
            );
        }
        assert_eq!(with(None).address("t.n"), "t.n");
    }

    #[test]
    fn sensitive_paths_are_a_set() {
        let with = |paths: serde_json::Value| Instance {
            index_key: None,
            status: None,
            deposed: None,
            schema_version: 0,
            attributes: Some(serde_json::json!({ "value": "x" })),
            attributes_flat: None,
            sensitive_attributes: Some(paths),
            private: None,
            dependencies: Vec::new(),
            create_before_destroy: false,
            extra: Map::new(),
            stored_digest: StoredDigest::default(),
        };
        let a = with(serde_json::json!([
            [{ "type": "get_attr", "value": "value_wo" }],
            [{ "type": "get_attr", "value": "value" }]
        ]));
        let b = with(serde_json::json!([
            [{ "value": "value", "type": "get_attr" }],
            [{ "type": "get_attr", "value": "value_wo" }]
        ]));
        assert!(a.same_object(&b));
        let c = with(serde_json::json!([[{ "type": "get_attr", "value": "value" }]]));
        assert!(!a.same_object(&c));
        let mut d = b.clone();
        d.attributes = Some(serde_json::json!({ "value": "y" }));
        assert!(!a.same_object(&d));
    }

    use super::*;

    const SMALL: &str = r#"{
  "version": 4,
  "terraform_version": "1.11.4",
  "serial": 7,
  "lineage": "0b6e7e1c-1111-2222-3333-444455556666",
  "outputs": {
    "b": { "value": 1.50, "type": "number" },
    "a": { "value": "s3cret", "type": "string", "sensitive": true }
  },
  "resources": [
    {
      "module": "module.m[1]",
      "mode": "managed",
      "type": "terraform_data",
      "name": "x",
      "each": "map",
      "provider": "provider[\"terraform.io/builtin/terraform\"]",
      "instances": [
        { "index_key": "b", "schema_version": 0, "attributes": {"id": "2", "big": 123456789012345678901234567890}, "sensitive_attributes": [], "dependencies": ["terraform_data.base"] },
        { "index_key": "a", "status": "tainted", "schema_version": 0, "attributes": {"id": "1"}, "sensitive_attributes": [[{"type":"get_attr","value":"input"}]], "private": "eyJzY2hlbWFfdmVyc2lvbiI6IjAifQ==", "dependencies": ["terraform_data.base"], "create_before_destroy": true, "identity_schema_version": 0 }
      ]
    },
    {
      "mode": "managed",
      "type": "terraform_data",
      "name": "base",
      "provider": "provider[\"terraform.io/builtin/terraform\"]",
      "instances": [
        { "schema_version": 0, "attributes": {"id": "0"}, "sensitive_attributes": [] },
        { "deposed": "00000001", "schema_version": 0, "attributes": {"id": "old"}, "sensitive_attributes": [] }
      ]
    }
  ],
  "check_results": null
}"#;

    #[test]
    fn parses_and_sorts_like_terraform() {
        let s = parse(SMALL.as_bytes()).unwrap();
        assert_eq!(s.serial, 7);
        assert_eq!(s.outputs[0].0, "a");
        assert_eq!(s.resources[0].address(), "terraform_data.base");
        assert_eq!(s.resources[1].address(), "module.m[1].terraform_data.x");
        assert_eq!(s.resources[1].config_address(), "module.m.terraform_data.x");
        let keys: Vec<_> = s.resources[1]
            .instances
            .iter()
            .map(|i| i.address("r"))
            .collect();
        assert_eq!(keys, [r#"r["a"]"#, r#"r["b"]"#]);
        assert_eq!(s.object_count(), 4);
    }

    #[test]
    fn round_trip_is_lossless() {
        let s = parse(SMALL.as_bytes()).unwrap();
        let again = parse(&s.to_json()).unwrap();
        assert_eq!(s, again);
        let text = String::from_utf8(s.to_json()).unwrap();
        // Numbers keep their exact text; explicit null check_results stays.
        assert!(text.contains("123456789012345678901234567890"), "{text}");
        assert!(text.contains("1.50"), "{text}");
        assert!(text.contains("\"check_results\": null"), "{text}");
        assert!(text.contains("identity_schema_version"), "{text}");
        // Field order as terraform writes it.
        let p = |k: &str| text.find(k).unwrap();
        assert!(p("\"status\"") < p("\"schema_version\": 0,\n          \"attributes\": {\n            \"id\": \"1\""));
        assert!(p("\"private\"") < p("\"create_before_destroy\""));
    }

    #[test]
    fn streamed_reading_gives_what_parse_gives() {
        let mut resources = Vec::new();
        let head = read(SMALL.as_bytes(), |r| {
            resources.push(r);
            Ok(())
        })
        .unwrap();
        assert_eq!(head.into_state(resources), parse(SMALL.as_bytes()).unwrap());
        // Whitespace before the document keeps error positions right.
        let padded = format!("\n\n{}", &SMALL[..200]);
        let e = read(padded.as_bytes(), |_| Ok(())).unwrap_err();
        let StateError::Json { line, .. } = e else {
            panic!("expected a JSON error, got {e}")
        };
        let StateError::Json { line: at, .. } = parse(padded.as_bytes()).unwrap_err() else {
            unreachable!()
        };
        assert_eq!(line, at);
        assert!(matches!(
            read(&b" \n "[..], |_| Ok(())).unwrap_err(),
            StateError::Empty
        ));
        // The consumer's error stops the reading and comes back as it is.
        let e = read(SMALL.as_bytes(), |_| {
            Err(StateError::Read {
                msg: "consumer gone".into(),
            })
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "cannot read the state: consumer gone");
        // A resource that repeats an earlier one is refused as it is read.
        let dup = SMALL.replace(
            "\"name\": \"base\"",
            "\"name\": \"x\", \"module\": \"module.m[1]\"",
        );
        let mut handed = 0;
        let e = read(dup.as_bytes(), |_| {
            handed += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(e, StateError::Duplicate { .. }), "{e}");
        assert_eq!(handed, 1);
    }

    #[test]
    fn truncated_json_names_line_and_column() {
        let cut = &SMALL[..200];
        let e = parse(cut.as_bytes()).unwrap_err();
        let StateError::Json { line, .. } = e else {
            panic!("expected a JSON error, got {e}")
        };
        assert!(line > 1);
        assert!(parse(b"not json")
            .unwrap_err()
            .to_string()
            .contains("line 1, column"));
        assert!(matches!(parse(b"  \n").unwrap_err(), StateError::Empty));
    }

    #[test]
    fn version_3_is_refused_with_advice() {
        let e =
            parse(br#"{"version": 3, "serial": 1, "lineage": "x", "modules": []}"#).unwrap_err();
        assert!(e.to_string().contains("version 3 is not supported"), "{e}");
    }

    #[test]
    fn wrong_field_types_name_the_resource() {
        let bad = SMALL.replace(
            "\"schema_version\": 0, \"attributes\": {\"id\": \"2\"",
            "\"schema_version\": \"zero\", \"attributes\": {\"id\": \"2\"",
        );
        let e = parse(bad.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("module.m[1].terraform_data.x"), "{e}");
        assert!(e.contains("schema_version"), "{e}");
        let bad = SMALL.replace("\"serial\": 7", "\"serial\": \"7\"");
        assert!(parse(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("\"serial\" must be"));
        let bad = SMALL.replace("\"index_key\": \"b\"", "\"index_key\": [1]");
        assert!(parse(bad.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("index_key"));
    }

    #[test]
    fn duplicates_are_refused() {
        let bad = SMALL.replace("\"index_key\": \"b\"", "\"index_key\": \"a\"");
        let e = parse(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, StateError::Duplicate { address } if address == r#"module.m[1].terraform_data.x["a"]"#),
            "{e}"
        );
    }

    #[test]
    fn malformed_dependencies_are_refused_absent_ones_kept() {
        let bad = SMALL.replace(
            "[\"terraform_data.base\"], \"create",
            "[\"not an address\"], \"create",
        );
        let e = parse(bad.as_bytes()).unwrap_err();
        assert!(
            matches!(&e, StateError::BadDependency { dependency, .. } if dependency == "not an address"),
            "{e}"
        );
        let keyed = SMALL.replace(
            "[\"terraform_data.base\"], \"create",
            "[\"module.m[1].terraform_data.x\"], \"create",
        );
        assert!(parse(keyed.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("without module keys"));
        // terraform writes dependencies on resources with count = 0.
        let absent = SMALL.replace(
            "[\"terraform_data.base\"], \"create",
            "[\"terraform_data.gone\"], \"create",
        );
        let s = parse(absent.as_bytes()).unwrap();
        assert_eq!(parse(&s.to_json()).unwrap(), s);
    }

    #[test]
    fn module_keys_are_stripped_for_config_addresses() {
        assert_eq!(
            strip_module_keys(r#"module.a["x]y"].module.b[2].t.n"#),
            "module.a.module.b.t.n"
        );
        assert_eq!(strip_module_keys(r#"module.a["q\"]"].t.n"#), "module.a.t.n");
        assert_eq!(strip_module_keys("t.n"), "t.n");
    }

    #[test]
    fn attribute_diffs_name_paths_and_mask_sensitive_values() {
        let before = json!({"id": "1", "input": {"gen": "1", "pw": "a"}, "tags": {"a b": "x"}});
        let after = json!({"id": "1", "input": {"gen": "2", "pw": "b"}, "list": [1]});
        let sensitive =
            json!([[{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "pw"}]]);
        let changes = diff_attributes(Some(&before), None, Some(&after), Some(&sensitive));
        let shown: Vec<(String, Option<Value>, Option<Value>)> = changes
            .into_iter()
            .map(|c| (c.path, c.before, c.after))
            .collect();
        assert_eq!(
            shown,
            [
                ("input.gen".to_owned(), Some(json!("1")), Some(json!("2"))),
                (
                    "input.pw".to_owned(),
                    Some(json!(SENSITIVE)),
                    Some(json!(SENSITIVE))
                ),
                ("list[0]".to_owned(), None, Some(json!(1))),
                ("tags[\"a b\"]".to_owned(), Some(json!("x")), None),
            ]
        );
        assert!(diff_attributes(Some(&before), None, Some(&before), None).is_empty());

        // terraform_data's input is dynamic: its sensitive path skips the
        // {"value", "type"} wrapping the state holds it in.
        let wrapped = |secret: &str| json!({"input": {"value": {"gen": "1", "secret": secret}, "type": ["object", {}]}});
        let sensitive = json!([[{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "secret"}]]);
        let changes = diff_attributes(
            Some(&wrapped("pw-1")),
            Some(&sensitive),
            Some(&wrapped("pw-2")),
            Some(&sensitive),
        );
        assert_eq!(
            changes,
            [AttrChange {
                path: "input.value.secret".to_owned(),
                before: Some(json!(SENSITIVE)),
                after: Some(json!(SENSITIVE)),
            }]
        );
        // A path that cannot be followed masks what it reached.
        let odd = json!([[{"type": "get_attr", "value": "input"}, {"type": "get_attr", "value": "nope"}]]);
        let changes = diff_attributes(None, None, Some(&wrapped("pw-1")), Some(&odd));
        assert!(
            changes.iter().all(|c| c.after == Some(json!(SENSITIVE))),
            "{changes:?}"
        );
    }
}
