//! Terraform addresses: parsing, printing, ordering and `state list` style
//! matching of module paths, resources and resource instances.
//!
//! This module owns the textual form of an address exactly as terraform
//! prints it (so that the strings we store in PostgreSQL and hand back to
//! terraform on `-target` are the ones terraform itself would write), the
//! ordering terraform's state writer uses, and the filter semantics of
//! `terraform state list ADDR`. It is pure: no I/O, no knowledge of the
//! state file layout beyond the `module` and `index_key` fields.
//!
//! The parser is deliberately stricter than terraform's HCL traversal parser:
//! it rejects whitespace, signs, decimals and exponents in index keys, and
//! the `resource.` prefix, so that every accepted address has exactly one
//! spelling (leading zeros in integer keys are the one tolerated exception:
//! `[01]` reads as `[1]`, as in terraform).

use std::cmp::Ordering;
use std::fmt::{self, Write as _};

/// The key of one instance of a resource or module declared with `count` or
/// `for_each`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InstanceKey {
    /// A `count` index.
    Int(i64),
    /// A `for_each` key.
    Str(String),
}

impl InstanceKey {
    /// Reads a state v4 `index_key`: a JSON integer (non-negative) or string.
    ///
    /// Returns `None` for anything else, including a missing/`null` key (the
    /// caller treats that as "no key").
    pub fn from_json(v: &serde_json::Value) -> Option<InstanceKey> {
        match v {
            serde_json::Value::Number(n) => n.as_i64().filter(|i| *i >= 0).map(InstanceKey::Int),
            serde_json::Value::String(s) => Some(InstanceKey::Str(s.clone())),
            _ => None,
        }
    }

    /// The state v4 `index_key` JSON value of this key.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            InstanceKey::Int(i) => serde_json::Value::from(*i),
            InstanceKey::Str(s) => serde_json::Value::String(s.clone()),
        }
    }
}

/// Prints the key without brackets: `0` or `"a"`, quoting strings the way
/// terraform does (HCL quoted-string syntax: `\"`, `\\`, `\n`, `\r`, `\t`,
/// `\uXXXX` for non-printable characters, and `$${` / `%%{` for template
/// introducers).
impl fmt::Display for InstanceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstanceKey::Int(i) => write!(f, "{i}"),
            InstanceKey::Str(s) => write_hcl_quoted(f, s),
        }
    }
}

/// Writes `s` as an HCL quoted string, as terraform prints a string key
/// (see [`InstanceKey`]'s `Display`); also a literal HCL reads back as `s`.
pub fn write_hcl_quoted(f: &mut impl fmt::Write, s: &str) -> fmt::Result {
    f.write_char('"')?;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => f.write_str("\\n")?,
            '\r' => f.write_str("\\r")?,
            '\t' => f.write_str("\\t")?,
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '$' | '%' => {
                f.write_char(c)?;
                if chars.peek() == Some(&'{') {
                    f.write_char(c)?;
                }
            }
            c if !is_go_printable(c) => {
                if (c as u32) < 0x10000 {
                    write!(f, "\\u{:04x}", c as u32)?;
                } else {
                    write!(f, "\\U{:08x}", c as u32)?;
                }
            }
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

/// Approximates Go's `unicode.IsPrint`, which terraform uses to decide which
/// characters of a string key to escape: control characters, every space but
/// U+0020, format characters (Cf) and private-use characters are not
/// printable. Unassigned code points are treated as printable (std has no
/// Unicode category tables); terraform would escape them.
fn is_go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format = matches!(
        u,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private_use = matches!(u, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&u) || (u & 0xFFFE) == 0xFFFE;
    !(format || private_use || noncharacter)
}

/// One step of a module path: `module.NAME` with an optional instance key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModuleStep {
    /// The module call name.
    pub name: String,
    /// The instance key when the module uses `count` or `for_each`.
    pub key: Option<InstanceKey>,
}

/// A module instance path; empty for the root module.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ModulePath(pub Vec<ModuleStep>);

impl ModulePath {
    /// The root module.
    pub fn root() -> ModulePath {
        ModulePath(Vec::new())
    }

    /// True for the root module.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The same path with every instance key removed (terraform's
    /// `ModuleInstance.Module()`), as state v4 `dependencies` write it.
    pub fn without_keys(&self) -> ModulePath {
        ModulePath(
            self.0
                .iter()
                .map(|s| ModuleStep {
                    name: s.name.clone(),
                    key: None,
                })
                .collect(),
        )
    }

    /// `module.m` as a `state list` target: does it select instances in
    /// module instance `other`? Mirrors terraform's
    /// `ModuleInstance.Equal || IsAncestor || TargetContains`.
    fn target_selects(&self, other: &ModulePath) -> bool {
        let (ours, theirs) = (&self.0, &other.0);
        if theirs.len() < ours.len() || ours.iter().zip(theirs).any(|(a, b)| a.name != b.name) {
            return false;
        }
        if theirs.len() > ours.len() {
            // IsAncestor: a keyless step of ours matches any key.
            return ours
                .iter()
                .zip(theirs)
                .all(|(a, b)| a.key.is_none() || a.key == b.key);
        }
        // Same length: Equal, or TargetContains where only a keyless *last*
        // step matches any key.
        let last = ours.len().saturating_sub(1);
        ours.iter()
            .zip(theirs)
            .enumerate()
            .all(|(i, (a, b))| a.key == b.key || (i == last && a.key.is_none()))
    }
}

/// Terraform's order: shorter paths first, then step by step (name, then
/// key with no key first).
impl Ord for ModulePath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for ModulePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            write!(f, "module.{}", step.name)?;
            if let Some(key) = &step.key {
                write!(f, "[{key}]")?;
            }
        }
        Ok(())
    }
}

/// Whether a resource is managed (`resource`) or a data source (`data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// A `resource` block.
    Managed,
    /// A `data` block.
    Data,
}

impl Mode {
    /// Reads the state v4 `mode` field.
    pub fn from_state_str(s: &str) -> Option<Mode> {
        match s {
            "managed" => Some(Mode::Managed),
            "data" => Some(Mode::Data),
            _ => None,
        }
    }

    /// The state v4 `mode` string.
    pub fn as_state_str(self) -> &'static str {
        match self {
            Mode::Managed => "managed",
            Mode::Data => "data",
        }
    }
}

/// Data sources sort before managed resources, as in terraform.
impl Ord for Mode {
    fn cmp(&self, other: &Self) -> Ordering {
        let rank = |m: &Mode| match m {
            Mode::Data => 0,
            Mode::Managed => 1,
        };
        rank(self).cmp(&rank(other))
    }
}

impl PartialOrd for Mode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A resource in a module instance: `module.m[1].data.aws_ami.x`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceAddr {
    /// The module instance holding the resource.
    pub module: ModulePath,
    /// Managed resource or data source.
    pub mode: Mode,
    /// The resource type, e.g. `aws_s3_bucket`.
    pub type_: String,
    /// The resource name.
    pub name: String,
}

impl ResourceAddr {
    /// The configuration address: this resource with module keys removed,
    /// the form state v4 `dependencies` use (`module.m.terraform_data.a`).
    pub fn config_address(&self) -> String {
        ResourceAddr {
            module: self.module.without_keys(),
            mode: self.mode,
            type_: self.type_.clone(),
            name: self.name.clone(),
        }
        .to_string()
    }
}

impl fmt::Display for ResourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.module.is_root() {
            write!(f, "{}.", self.module)?;
        }
        if self.mode == Mode::Data {
            f.write_str("data.")?;
        }
        write!(f, "{}.{}", self.type_, self.name)
    }
}

/// One instance of a resource: `module.m[1].terraform_data.x["a"]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceAddr {
    /// The resource this is an instance of.
    pub resource: ResourceAddr,
    /// The instance key; `None` for a resource without `count`/`for_each`.
    pub key: Option<InstanceKey>,
}

impl fmt::Display for InstanceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.resource)?;
        if let Some(key) = &self.key {
            write!(f, "[{key}]")?;
        }
        Ok(())
    }
}

/// What a user may type in `state list ADDR` or `cone ADDR`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// `module.a` or `module.a[0].module.b`: everything in the module and
    /// its descendants.
    Module(ModulePath),
    /// `module.a[0].aws_instance.x`: every instance of one resource.
    Resource(ResourceAddr),
    /// `aws_instance.x[3]`: exactly one instance.
    Instance(InstanceAddr),
}

impl Target {
    /// Whether this target selects `addr`, with `terraform state list ADDR`
    /// semantics (terraform 1.11 `lookupResourceInstanceAddr`):
    ///
    /// - a module target selects the module instance itself and its
    ///   descendants; a keyless step selects every instance of that module
    ///   when it is the last step (`module.m` selects `module.m[0]`) or when
    ///   the instance lies in a strictly deeper module
    ///   (`module.m.module.inner` selects `module.m[0].module.inner.module.deep`
    ///   but *not* `module.m[0].module.inner` itself — terraform's quirk);
    /// - a resource target selects every instance of exactly that resource in
    ///   exactly that module instance (`module.m.terraform_data.a` selects
    ///   nothing when `m` has `count`);
    /// - an instance target selects only itself (`terraform_data.x[0]` does
    ///   not select a keyless `terraform_data.x`).
    pub fn matches(&self, addr: &InstanceAddr) -> bool {
        match self {
            Target::Module(path) => path.target_selects(&addr.resource.module),
            Target::Resource(resource) => &addr.resource == resource,
            Target::Instance(instance) => instance == addr,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Module(m) => m.fmt(f),
            Target::Resource(r) => r.fmt(f),
            Target::Instance(i) => i.fmt(f),
        }
    }
}

/// An address that does not parse; says where and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {message} at column {column}")]
pub struct AddressError {
    /// The text given.
    pub input: String,
    /// 1-based column (in characters) of the problem.
    pub column: usize,
    /// What went wrong, e.g. "expected a module name".
    pub message: String,
}

/// Parses a full resource instance address as terraform prints it.
pub fn parse_instance(s: &str) -> Result<InstanceAddr, AddressError> {
    let mut p = Parser::new(s);
    let (module, resource) = p.parse_any()?;
    match resource {
        Some((resource, key)) => Ok(InstanceAddr {
            resource: resource_addr(module, resource),
            key,
        }),
        None => Err(p.error_at(s.len(), "expected a resource after the module path")),
    }
}

/// Parses a resource address (module steps may carry keys, the resource
/// itself may not).
pub fn parse_resource(s: &str) -> Result<ResourceAddr, AddressError> {
    let mut p = Parser::new(s);
    let (module, resource) = p.parse_any()?;
    match resource {
        Some((resource, None)) => Ok(resource_addr(module, resource)),
        Some((_, Some(_))) => Err(p.error_at(
            p.last_key_start,
            "a resource address cannot carry an instance key",
        )),
        None => Err(p.error_at(s.len(), "expected a resource after the module path")),
    }
}

/// Parses a state v4 `module` field; `""` is the root module.
pub fn parse_module_path(s: &str) -> Result<ModulePath, AddressError> {
    if s.is_empty() {
        return Ok(ModulePath::root());
    }
    let mut p = Parser::new(s);
    let (module, resource) = p.parse_any()?;
    match resource {
        None => Ok(module),
        Some(_) => Err(p.error_at(p.resource_start, "expected a module path, found a resource")),
    }
}

/// Parses what a user may type to select instances: a module path, a
/// resource or one instance.
pub fn parse_target(s: &str) -> Result<Target, AddressError> {
    let mut p = Parser::new(s);
    let (module, resource) = p.parse_any()?;
    Ok(match resource {
        None => Target::Module(module),
        Some((resource, None)) => Target::Resource(resource_addr(module, resource)),
        Some((resource, key)) => Target::Instance(InstanceAddr {
            resource: resource_addr(module, resource),
            key,
        }),
    })
}

/// A parsed address: module steps, then the resource part and its key if any.
type Parsed = (ModulePath, Option<(ResourcePart, Option<InstanceKey>)>);

struct ResourcePart {
    mode: Mode,
    type_: String,
    name: String,
}

fn resource_addr(module: ModulePath, r: ResourcePart) -> ResourceAddr {
    ResourceAddr {
        module,
        mode: r.mode,
        type_: r.type_,
        name: r.name,
    }
}

/// A hand-written cursor over the address; positions are byte offsets,
/// errors report 1-based character columns.
struct Parser<'s> {
    input: &'s str,
    pos: usize,
    resource_start: usize,
    last_key_start: usize,
}

impl<'s> Parser<'s> {
    fn new(input: &'s str) -> Self {
        Parser {
            input,
            pos: 0,
            resource_start: 0,
            last_key_start: 0,
        }
    }

    fn error_at(&self, byte: usize, message: &str) -> AddressError {
        AddressError {
            input: self.input.to_string(),
            column: self.input[..byte.min(self.input.len())].chars().count() + 1,
            message: message.to_string(),
        }
    }

    fn rest(&self) -> &'s str {
        &self.input[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    /// Module steps, then optionally `[data.]TYPE.NAME[KEY]`, then the end.
    fn parse_any(&mut self) -> Result<Parsed, AddressError> {
        let mut steps = Vec::new();
        if self.input.is_empty() {
            return Err(self.error_at(0, "expected a module or resource address"));
        }
        loop {
            let word_start = self.pos;
            let word = self.ident("expected `module.`, `data.` or a resource type")?;
            match word {
                "module" => {
                    self.expect_dot("expected `.` after `module`")?;
                    let name = self.ident("expected a module name")?.to_string();
                    let key = self.opt_key()?;
                    steps.push(ModuleStep { name, key });
                    if self.pos == self.input.len() {
                        return Ok((ModulePath(steps), None));
                    }
                    self.expect_dot("expected `.` after the module step")?;
                }
                "data" => {
                    self.resource_start = word_start;
                    self.expect_dot("expected `.` after `data`")?;
                    let type_ = self.ident("expected a data source type")?.to_string();
                    let resource = self.finish_resource(Mode::Data, type_)?;
                    return Ok((ModulePath(steps), Some(resource)));
                }
                type_ => {
                    self.resource_start = word_start;
                    let resource = self.finish_resource(Mode::Managed, type_.to_string())?;
                    return Ok((ModulePath(steps), Some(resource)));
                }
            }
        }
    }

    fn finish_resource(
        &mut self,
        mode: Mode,
        type_: String,
    ) -> Result<(ResourcePart, Option<InstanceKey>), AddressError> {
        self.expect_dot("expected `.` and a resource name after the resource type")?;
        let name = self.ident("expected a resource name")?.to_string();
        let key = self.opt_key()?;
        if self.pos != self.input.len() {
            return Err(self.error_at(self.pos, "unexpected text after the address"));
        }
        Ok((ResourcePart { mode, type_, name }, key))
    }

    fn expect_dot(&mut self, message: &str) -> Result<(), AddressError> {
        if self.eat('.') {
            Ok(())
        } else {
            Err(self.error_at(self.pos, message))
        }
    }

    /// An identifier: a letter or `_`, then letters, digits, `_` or `-`.
    fn ident(&mut self, message: &str) -> Result<&'s str, AddressError> {
        let rest = self.rest();
        let mut chars = rest.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_alphabetic() || c == '_' => {}
            _ => return Err(self.error_at(self.pos, message)),
        }
        let end = chars
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
            .map_or(rest.len(), |(i, _)| i);
        self.pos += end;
        Ok(&rest[..end])
    }

    fn opt_key(&mut self) -> Result<Option<InstanceKey>, AddressError> {
        let start = self.pos;
        if !self.eat('[') {
            return Ok(None);
        }
        self.last_key_start = start;
        let key = match self.peek() {
            Some('"') => InstanceKey::Str(self.quoted()?),
            Some(c) if c.is_ascii_digit() => {
                let digits_start = self.pos;
                let len = self
                    .rest()
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(self.rest().len());
                self.pos += len;
                let n = self.input[digits_start..self.pos]
                    .parse::<i64>()
                    .map_err(|_| self.error_at(digits_start, "index is too large"))?;
                InstanceKey::Int(n)
            }
            _ => {
                return Err(self.error_at(
                    self.pos,
                    "expected a non-negative integer or a quoted string as the index",
                ))
            }
        };
        if !self.eat(']') {
            return Err(self.error_at(self.pos, "expected `]` to close the index"));
        }
        Ok(Some(key))
    }

    /// An HCL quoted string; the cursor is on the opening quote.
    fn quoted(&mut self) -> Result<String, AddressError> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let rest = self.rest();
            let Some(c) = rest.chars().next() else {
                return Err(self.error_at(open, "unterminated string"));
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\n' => return Err(self.error_at(self.pos, "unterminated string")),
                '$' | '%' if rest[1..].starts_with(c) && rest[2..].starts_with('{') => {
                    out.push(c);
                    out.push('{');
                    self.pos += 3;
                }
                '$' | '%' if rest[1..].starts_with('{') => {
                    return Err(self.error_at(
                        self.pos,
                        "template sequences are not allowed in an address; double the `$` or `%` to escape it",
                    ))
                }
                '\\' => {
                    let esc_start = self.pos;
                    self.pos += 1;
                    let decoded = match self.peek() {
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some(u @ ('u' | 'U')) => {
                            let width = if u == 'u' { 4 } else { 8 };
                            let hex = self.rest().get(1..1 + width).unwrap_or("");
                            let ch = (hex.len() == width && hex.chars().all(|c| c.is_ascii_hexdigit()))
                                .then(|| u32::from_str_radix(hex, 16).ok())
                                .flatten()
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error_at(esc_start, "invalid unicode escape"))?;
                            self.pos += width;
                            ch
                        }
                        _ => return Err(self.error_at(esc_start, "invalid escape sequence")),
                    };
                    self.pos += 1;
                    out.push(decoded);
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }
}

/// Index of the `]` closing the instance key that `s` starts with (`[0]`,
/// `["a]b"]`: brackets inside the quoted string do not count), or `None`
/// if it is not closed.
pub fn key_end(s: &str) -> Option<usize> {
    let mut in_str = false;
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == ']' {
            return Some(i);
        }
    }
    None
}

/// The resource part of an instance address: `module.m[0].t.n["k"]` ->
/// `module.m[0].t.n`; an address without an instance key is returned whole.
pub fn strip_instance_key(addr: &str) -> &str {
    let mut from = 0;
    while let Some(offset) = addr[from..].find('[') {
        let start = from + offset;
        let Some(end) = key_end(&addr[start..]) else {
            return addr;
        };
        if start + end + 1 == addr.len() {
            return &addr[..start];
        }
        from = start + end + 1;
    }
    addr
}

#[cfg(test)]
mod tests {
    #[test]
    fn instance_keys_are_stripped_from_the_end_only() {
        use super::strip_instance_key as s;
        assert_eq!(s(r#"module.m[0].t.n["k]"]"#), "module.m[0].t.n");
        assert_eq!(s(r#"module.m["a"].t.n"#), r#"module.m["a"].t.n"#);
        assert_eq!(s("t.n[3]"), "t.n");
        assert_eq!(s("t.n"), "t.n");
    }

    use super::*;

    /// `terraform state list` of a configuration with `module "m" { count = 2 }`,
    /// `module "m2" {}`, `module "fe" { for_each = ["k1", "k2"] }` (each holding
    /// `module "inner"` holding `module "deep"`), and root resources with
    /// count/for_each and data sources. Observed from terraform 1.11.4.
    const OBSERVED_ALL: &str = r#"
data.terraform_remote_state.x
data.terraform_remote_state.y
terraform_data.bar["a"]
terraform_data.bar["b c"]
terraform_data.bar["q\"x"]
terraform_data.foo[0]
terraform_data.foo[1]
terraform_data.foo[2]
terraform_data.foo[3]
terraform_data.root_dep
terraform_data.root_dep_direct
terraform_data.single
terraform_data.uses_data
module.fe["k1"].terraform_data.a[0]
module.fe["k1"].terraform_data.a[1]
module.fe["k1"].terraform_data.b
module.fe["k2"].terraform_data.a[0]
module.fe["k2"].terraform_data.a[1]
module.fe["k2"].terraform_data.b
module.m[0].terraform_data.a[0]
module.m[0].terraform_data.a[1]
module.m[0].terraform_data.b
module.m[1].terraform_data.a[0]
module.m[1].terraform_data.a[1]
module.m[1].terraform_data.b
module.m2.terraform_data.a[0]
module.m2.terraform_data.a[1]
module.m2.terraform_data.b
module.fe["k1"].module.inner.terraform_data.c
module.fe["k1"].module.inner.terraform_data.d["x"]
module.fe["k2"].module.inner.terraform_data.c
module.fe["k2"].module.inner.terraform_data.d["x"]
module.m[0].module.inner.terraform_data.c
module.m[0].module.inner.terraform_data.d["x"]
module.m[1].module.inner.terraform_data.c
module.m[1].module.inner.terraform_data.d["x"]
module.m2.module.inner.terraform_data.c
module.m2.module.inner.terraform_data.d["x"]
module.fe["k1"].module.inner.module.deep.terraform_data.e
module.fe["k2"].module.inner.module.deep.terraform_data.e
module.m[0].module.inner.module.deep.terraform_data.e
module.m[1].module.inner.module.deep.terraform_data.e
module.m2.module.inner.module.deep.terraform_data.e
"#;

    /// `terraform state list FILTER` against that state, observed from
    /// terraform 1.11.4. An empty list is where terraform answered
    /// "Unknown module/resource/resource instance" (nothing selected).
    const OBSERVED_FILTERS: &str = r#"
=== module.m
module.m[0].terraform_data.a[0]
module.m[0].terraform_data.a[1]
module.m[0].terraform_data.b
module.m[1].terraform_data.a[0]
module.m[1].terraform_data.a[1]
module.m[1].terraform_data.b
module.m[0].module.inner.terraform_data.c
module.m[0].module.inner.terraform_data.d["x"]
module.m[1].module.inner.terraform_data.c
module.m[1].module.inner.terraform_data.d["x"]
module.m[0].module.inner.module.deep.terraform_data.e
module.m[1].module.inner.module.deep.terraform_data.e
=== module.m[0]
module.m[0].terraform_data.a[0]
module.m[0].terraform_data.a[1]
module.m[0].terraform_data.b
module.m[0].module.inner.terraform_data.c
module.m[0].module.inner.terraform_data.d["x"]
module.m[0].module.inner.module.deep.terraform_data.e
=== module.m.module.inner
module.m[0].module.inner.module.deep.terraform_data.e
module.m[1].module.inner.module.deep.terraform_data.e
=== module.m[1].module.inner
module.m[1].module.inner.terraform_data.c
module.m[1].module.inner.terraform_data.d["x"]
module.m[1].module.inner.module.deep.terraform_data.e
=== module.fe
module.fe["k1"].terraform_data.a[0]
module.fe["k1"].terraform_data.a[1]
module.fe["k1"].terraform_data.b
module.fe["k2"].terraform_data.a[0]
module.fe["k2"].terraform_data.a[1]
module.fe["k2"].terraform_data.b
module.fe["k1"].module.inner.terraform_data.c
module.fe["k1"].module.inner.terraform_data.d["x"]
module.fe["k2"].module.inner.terraform_data.c
module.fe["k2"].module.inner.terraform_data.d["x"]
module.fe["k1"].module.inner.module.deep.terraform_data.e
module.fe["k2"].module.inner.module.deep.terraform_data.e
=== module.fe["k2"].module.inner
module.fe["k2"].module.inner.terraform_data.c
module.fe["k2"].module.inner.terraform_data.d["x"]
module.fe["k2"].module.inner.module.deep.terraform_data.e
=== module.m2
module.m2.terraform_data.a[0]
module.m2.terraform_data.a[1]
module.m2.terraform_data.b
module.m2.module.inner.terraform_data.c
module.m2.module.inner.terraform_data.d["x"]
module.m2.module.inner.module.deep.terraform_data.e
=== module.m.terraform_data.a
=== module.m[0].terraform_data.a
module.m[0].terraform_data.a[0]
module.m[0].terraform_data.a[1]
=== module.m[0].terraform_data.a[1]
module.m[0].terraform_data.a[1]
=== terraform_data.foo
terraform_data.foo[0]
terraform_data.foo[1]
terraform_data.foo[2]
terraform_data.foo[3]
=== terraform_data.foo[3]
terraform_data.foo[3]
=== terraform_data.single
terraform_data.single
=== terraform_data.single[0]
=== data.terraform_remote_state.x
data.terraform_remote_state.x
=== module.m2[0]
=== module.m[2]
=== module.m.module.inner.module.deep
=== module.m2.module.inner.terraform_data.d
module.m2.module.inner.terraform_data.d["x"]
=== terraform_data.bar["q\"x"]
terraform_data.bar["q\"x"]
"#;

    /// Keys `terraform state list` printed for `for_each = ["a\tb", "x$${y}",
    /// "p%%{q}", "nb\u00a0sp", "c\u0001d", "nl\nx", "back\\slash", "", "é😀",
    /// "zw\u200bj"]`, observed from terraform 1.11.4 (in its order).
    const OBSERVED_WEIRD: &str = r#"
terraform_data.weird[""]
terraform_data.weird["a\tb"]
terraform_data.weird["back\\slash"]
terraform_data.weird["c\u0001d"]
terraform_data.weird["nb\u00a0sp"]
terraform_data.weird["nl\nx"]
terraform_data.weird["p%%{q}"]
terraform_data.weird["x$${y}"]
terraform_data.weird["zw\u200bj"]
terraform_data.weird["é😀"]
"#;

    fn lines(s: &str) -> Vec<&str> {
        s.lines().filter(|l| !l.is_empty()).collect()
    }

    fn observed_filters() -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&str, Vec<&str>)> = Vec::new();
        for line in lines(OBSERVED_FILTERS) {
            match line.strip_prefix("=== ") {
                Some(filter) => out.push((filter, Vec::new())),
                None => out.last_mut().unwrap().1.push(line),
            }
        }
        out
    }

    #[test]
    fn round_trips_every_observed_address() {
        for s in lines(OBSERVED_ALL).into_iter().chain(lines(OBSERVED_WEIRD)) {
            let addr = parse_instance(s).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(addr.to_string(), s);
        }
    }

    #[test]
    fn round_trips_more_addresses() {
        for s in [
            "aws_s3_bucket.b",
            "data.aws_ami.x",
            "module.m.aws_s3_bucket.b",
            "module.m[1].data.x.y",
            "module.m[1].terraform_data.x[\"a\"]",
            "module.a[0].module.b[\"k\"].t_t.n-n[12]",
            "t.n[\"quote\\\"inside\"]",
            "t.n[\"a b\"]",
            "t.n[\"\"]",
            "t.n[9223372036854775807]",
            "_t._n",
            "t.n[\"x$${y}%%{z}$$a%b\"]",
            "t.n[\"\\u0000\\u007f\\U000f0000\"]",
        ] {
            let addr = parse_instance(s).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(addr.to_string(), s, "{addr:?}");
            assert_eq!(parse_target(s).unwrap().to_string(), s);
        }
        for s in [
            "module.a",
            "module.a[0].module.b[\"k\"]",
            "module.fe[\"k1\"]",
        ] {
            assert_eq!(parse_module_path(s).unwrap().to_string(), s);
        }
        for s in ["module.a[0].module.b[\"k\"].t_t.n", "data.a.b"] {
            assert_eq!(parse_resource(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn parses_structure() {
        let addr = parse_instance(r#"module.m[1].data.aws_ami.x["a\nb"]"#).unwrap();
        assert_eq!(
            addr,
            InstanceAddr {
                resource: ResourceAddr {
                    module: ModulePath(vec![ModuleStep {
                        name: "m".into(),
                        key: Some(InstanceKey::Int(1)),
                    }]),
                    mode: Mode::Data,
                    type_: "aws_ami".into(),
                    name: "x".into(),
                },
                key: Some(InstanceKey::Str("a\nb".into())),
            }
        );
        assert_eq!(addr.resource.config_address(), "module.m.data.aws_ami.x");
        assert_eq!(parse_module_path("").unwrap(), ModulePath::root());
        assert_eq!(ModulePath::root().to_string(), "");
        assert_eq!(
            parse_target("module.m").unwrap(),
            Target::Module(ModulePath(vec![ModuleStep {
                name: "m".into(),
                key: None
            }]))
        );
        assert!(matches!(parse_target("a.b").unwrap(), Target::Resource(_)));
        assert!(matches!(
            parse_target("a.b[0]").unwrap(),
            Target::Instance(_)
        ));
        // Leading zeros are tolerated (terraform reads `[01]` as `[1]`).
        assert_eq!(parse_instance("a.b[01]").unwrap().to_string(), "a.b[1]");
        // Escapes terraform never prints still read back.
        assert_eq!(
            parse_instance(r#"a.b["\u0041\U0001F600"]"#).unwrap().key,
            Some(InstanceKey::Str("A😀".into()))
        );
    }

    #[test]
    fn key_display_and_json() {
        assert_eq!(InstanceKey::Int(0).to_string(), "0");
        assert_eq!(InstanceKey::Str("a".into()).to_string(), "\"a\"");
        assert_eq!(
            InstanceKey::Str("q\"\\\n\t\r\u{1}\u{a0}${%{".into()).to_string(),
            r#""q\"\\\n\t\r\u0001\u00a0$${%%{""#
        );
        use serde_json::json;
        assert_eq!(InstanceKey::from_json(&json!(3)), Some(InstanceKey::Int(3)));
        assert_eq!(
            InstanceKey::from_json(&json!("k")),
            Some(InstanceKey::Str("k".into()))
        );
        for v in [json!(null), json!(-1), json!(1.5), json!(true), json!([1])] {
            assert_eq!(InstanceKey::from_json(&v), None, "{v}");
        }
        let big: serde_json::Value = serde_json::from_str("123456789012").unwrap();
        assert_eq!(
            InstanceKey::from_json(&big),
            Some(InstanceKey::Int(123456789012))
        );
        assert_eq!(InstanceKey::Int(7).to_json(), json!(7));
        assert_eq!(Mode::from_state_str("data"), Some(Mode::Data));
        assert_eq!(Mode::Managed.as_state_str(), "managed");
        assert_eq!(Mode::from_state_str("Managed"), None);
    }

    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            (
                "module.[",
                r#"invalid address "module.[": expected a module name at column 8"#,
            ),
            (
                "",
                r#"invalid address "": expected a module or resource address at column 1"#,
            ),
            (
                "a.b[-1]",
                r#"invalid address "a.b[-1]": expected a non-negative integer or a quoted string as the index at column 5"#,
            ),
            (
                "a.b.",
                r#"invalid address "a.b.": unexpected text after the address at column 4"#,
            ),
            (
                "module.m.",
                r#"invalid address "module.m.": expected `module.`, `data.` or a resource type at column 10"#,
            ),
            (
                "a.b [1]",
                r#"invalid address "a.b [1]": unexpected text after the address at column 4"#,
            ),
            (
                " a.b",
                r#"invalid address " a.b": expected `module.`, `data.` or a resource type at column 1"#,
            ),
            (
                "terraform_data",
                r#"invalid address "terraform_data": expected `.` and a resource name after the resource type at column 15"#,
            ),
            (
                "data.x",
                r#"invalid address "data.x": expected `.` and a resource name after the resource type at column 7"#,
            ),
            (
                "module.terraform_data.x",
                r#"invalid address "module.terraform_data.x": expected `.` and a resource name after the resource type at column 24"#,
            ),
            (
                "a.1b",
                r#"invalid address "a.1b": expected a resource name at column 3"#,
            ),
            (
                "a.b[1][2]",
                r#"invalid address "a.b[1][2]": unexpected text after the address at column 7"#,
            ),
            (
                "a.b[1",
                r#"invalid address "a.b[1": expected `]` to close the index at column 6"#,
            ),
            (
                r#"a.b["x"#,
                r#"invalid address "a.b[\"x": unterminated string at column 5"#,
            ),
            (
                r#"a.b["x${y}"]"#,
                r#"invalid address "a.b[\"x${y}\"]": template sequences are not allowed in an address; double the `$` or `%` to escape it at column 7"#,
            ),
            (
                r#"a.b["\q"]"#,
                r#"invalid address "a.b[\"\\q\"]": invalid escape sequence at column 6"#,
            ),
            (
                r#"a.b["\u12"]"#,
                r#"invalid address "a.b[\"\\u12\"]": invalid unicode escape at column 6"#,
            ),
            (
                r#"a.b["\ud800"]"#,
                r#"invalid address "a.b[\"\\ud800\"]": invalid unicode escape at column 6"#,
            ),
            (
                "a.b['a']",
                r#"invalid address "a.b['a']": expected a non-negative integer or a quoted string as the index at column 5"#,
            ),
            (
                "a.b[1.0]",
                r#"invalid address "a.b[1.0]": expected `]` to close the index at column 6"#,
            ),
            (
                "a.b[99999999999999999999]",
                r#"invalid address "a.b[99999999999999999999]": index is too large at column 5"#,
            ),
            (
                "é.ü[\"\"].x",
                r#"invalid address "é.ü[\"\"].x": unexpected text after the address at column 8"#,
            ),
        ];
        for (input, message) in cases {
            let err = parse_target(input).unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert_eq!(
            parse_instance("module.m").unwrap_err().to_string(),
            r#"invalid address "module.m": expected a resource after the module path at column 9"#
        );
        assert_eq!(
            parse_resource("module.m[0].a.b[0]")
                .unwrap_err()
                .to_string(),
            r#"invalid address "module.m[0].a.b[0]": a resource address cannot carry an instance key at column 16"#
        );
        assert_eq!(
            parse_module_path("module.m.a.b").unwrap_err().to_string(),
            r#"invalid address "module.m.a.b": expected a module path, found a resource at column 10"#
        );
    }

    #[test]
    fn orders_like_terraform_state_writer() {
        let observed = lines(OBSERVED_ALL);
        let mut parsed: Vec<InstanceAddr> = observed
            .iter()
            .map(|s| parse_instance(s).unwrap())
            .collect();
        parsed.reverse();
        parsed.sort();
        let printed: Vec<String> = parsed.iter().map(ToString::to_string).collect();
        assert_eq!(printed, observed);

        let mut weird: Vec<InstanceAddr> = lines(OBSERVED_WEIRD)
            .iter()
            .map(|s| parse_instance(s).unwrap())
            .collect();
        weird.reverse();
        weird.sort();
        let printed: Vec<String> = weird.iter().map(ToString::to_string).collect();
        assert_eq!(printed, lines(OBSERVED_WEIRD));

        let mut keys = vec![
            InstanceKey::Str("b".into()),
            InstanceKey::Int(10),
            InstanceKey::Str("B".into()),
            InstanceKey::Int(2),
            InstanceKey::Str("a".into()),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                InstanceKey::Int(2),
                InstanceKey::Int(10),
                InstanceKey::Str("B".into()),
                InstanceKey::Str("a".into()),
                InstanceKey::Str("b".into()),
            ]
        );
        assert!(Mode::Data < Mode::Managed);
        assert!(
            parse_module_path("module.z").unwrap()
                < parse_module_path("module.a.module.a").unwrap()
        );
    }

    #[test]
    fn matches_like_terraform_state_list() {
        let all: Vec<InstanceAddr> = lines(OBSERVED_ALL)
            .iter()
            .map(|s| parse_instance(s).unwrap())
            .collect();
        let filters = observed_filters();
        assert_eq!(filters.len(), 20);
        for (filter, expected) in filters {
            let target = parse_target(filter).unwrap();
            let mut got: Vec<&InstanceAddr> = all.iter().filter(|a| target.matches(a)).collect();
            got.sort();
            let got: Vec<String> = got.iter().map(ToString::to_string).collect();
            assert_eq!(got, expected, "state list {filter}");
        }
    }

    #[test]
    fn root_module_target_matches_everything() {
        let target = Target::Module(ModulePath::root());
        assert!(target.matches(&parse_instance("a.b").unwrap()));
        assert!(target.matches(&parse_instance("module.x[3].a.b").unwrap()));
    }
}
