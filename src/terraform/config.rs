//! The configuration read as HCL, without running terraform: which resource
//! blocks it declares, a hash of everything each block's plan depends on in
//! the configuration, and the dependency edges between blocks.
//!
//! Discovery compares these hashes with the ones recorded when the stored
//! rows were last found converged: a block whose hash (or rows) differ is
//! planned, the others are not. What a block's plan depends on:
//!
//! - its own text (arguments, `count`/`for_each`, `lifecycle`, provisioners);
//! - every `var.*`, `local.*` and module output it reads, followed through
//!   locals, module inputs and outputs to the values they are built from
//!   (variable blocks, `-var`/`-var-file`/tfvars/`TF_VAR_*` values, the
//!   calling module's arguments);
//! - the `count`/`for_each`/`depends_on`/`providers` of the module calls it
//!   sits in;
//! - what applies to every block: provider and `terraform` blocks, `check`
//!   blocks (and `import` blocks with `for_each`), the dependency lock file,
//!   the terraform version and the workspace.
//!
//! `moved` and `import` blocks are not hashed: they are read as what they
//! name ([`Config::moved`], [`Config::imports`]), which discovery plans while
//! the state does not yet reflect them; what a `removed` block names is a
//! stored block the configuration no longer declares, planned anyway.
//!
//! References to other resources are not hashed: they are edges of the
//! graph, and a changed upstream block brings its downstream instances into
//! the cone anyway. A block that reads a data source or calls a function
//! whose result can change without the configuration changing (`timestamp`,
//! `file`, provider functions, ...) has no hash: it is always planned.
//!
//! Anything this reader does not follow (JSON configuration, other override
//! files, a module whose files are not installed, a file it cannot parse) is
//! an [`Unsupported`] reason: discovery then runs terraform's own plan. A
//! file that does not parse is named, not explained: terraform's run says
//! what is wrong, and one mistake gets one error.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use hcl_edit::expr::{Expression, FuncCall, ObjectKey, Traversal, TraversalOperator};
use hcl_edit::structure::{Body, Structure};
use hcl_edit::visit::{visit_expr, visit_func_call, visit_traversal_operator, Visit};
use hcl_edit::Span;
use sha2::{Digest, Sha256};

use super::plan::ConfigInfo;
use super::rundir::OVERRIDE_FILE;

/// Why a configuration cannot be read here (terraform's plan is used instead).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Functions whose result can change while the configuration does not.
const IMPURE: &[&str] = &[
    "timestamp",
    "plantimestamp",
    "uuid",
    "bcrypt",
    "file",
    "filebase64",
    "filemd5",
    "filesha1",
    "filesha256",
    "filesha512",
    "filebase64sha256",
    "filebase64sha512",
    "fileexists",
    "fileset",
    "templatefile",
    "abspath",
    "pathexpand",
];

/// Text in a configuration file that may make what terraform does depend
/// on the directory it runs in, or write files there: where any is found
/// (comments too), no call is [`Narrowable`].
const LOCATED: &[&str] = &[
    "path.cwd",
    "abspath",
    "pathexpand",
    // Commands run in terraform's working directory.
    "provisioner",
    "\"external\"",
    // Files written where terraform runs (`${path.module}/out.zip`).
    "local_file",
    "local_sensitive_file",
    "archive_file",
];

/// What the run gives terraform besides the files.
#[derive(Debug, Default, Clone)]
pub struct Inputs {
    /// `-var=NAME=VALUE` and `-var-file=PATH` arguments, in order.
    pub vars: Vec<String>,
    /// `TF_VAR_*` environment variables.
    pub env: Vec<(String, String)>,
    /// The terraform workspace (`terraform.workspace`).
    pub workspace: String,
    /// Terraform's version text.
    pub tf_version: String,
    /// `TF_CLI_ARGS` and `TF_CLI_ARGS_plan`/`_apply`.
    pub cli_args: Vec<(String, String)>,
    /// The user's terraform data dir, where `init` recorded the installed
    /// modules (`None`: `.terraform` in the root module).
    pub data_dir: Option<PathBuf>,
    /// terraform's `path.cwd`: the directory it runs in.
    pub cwd: String,
    /// Where each file's parse is kept by its digest (see [`ParseCache`]);
    /// `None`: every file is parsed.
    pub cache_dir: Option<PathBuf>,
}

/// One managed resource block.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Block {
    /// Module path (`module.a.module.b`, `""` at the root).
    pub module: String,
    /// Hash of everything its plan depends on in the configuration; `None`
    /// when that is not all in the configuration (see the module docs).
    pub hash: Option<String>,
    /// Hash of its text and the text of what applies to every block and of
    /// the module calls above it, without the values it reads: equal with
    /// `hash` different means a value it reads changed.
    pub text: String,
    /// Whether it has `count` or `for_each`.
    pub expanded: bool,
    /// What its `count`/`for_each` reads among resources and module outputs
    /// (configuration addresses): when one of them changes, so may the set
    /// of its instances.
    pub expansion_reads: Vec<String>,
    /// Its hash per instance of the root `for_each` module call it sits in,
    /// where that call hands each instance its own element of root map
    /// variables (see [`Keyed`]).
    pub keyed: Option<Keyed>,
    /// Whether it has creation-time provisioners: terraform records a new
    /// object before they run, and marks it tainted if they fail.
    pub provisioned: bool,
}

/// The hashes of a block inside a root `for_each` module call whose
/// arguments read root map variables only by the instance's key
/// (`lookup(var.gen, each.key, "1")`, `var.gen[each.key]`,
/// `try(var.gen[each.key], "1")`): each module instance's hash covers its
/// own element of those maps, not the whole maps, so changing one team's
/// entry changes that team's hash only.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Keyed {
    /// The call's module path (`module.team`).
    pub call: String,
    /// The block in the instance of each key the maps name.
    pub by_key: BTreeMap<String, InstanceHash>,
    /// The block in the instance of any other key.
    pub other: InstanceHash,
}

/// A block's hash in one module instance of a keyed call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InstanceHash {
    /// Of everything its plan depends on there (as [`Block::hash`], with the
    /// instance's own map entries).
    pub hash: String,
    /// Of the instance's map entries alone: when only this changed, the
    /// instance was given other entries, and is planned whole.
    pub entries: String,
}

impl Keyed {
    /// The block's hash in module instance `module` (`module.team["a"]`,
    /// or a module path below it), if it is an instance of this call.
    pub fn hash_in(&self, module: &str) -> Option<&InstanceHash> {
        let path = crate::address::parse_module_path(module).ok()?;
        let step = path.0.first()?;
        if format!("module.{}", step.name) != self.call {
            return None;
        }
        match &step.key {
            Some(crate::address::InstanceKey::Str(k)) => {
                Some(self.by_key.get(k).unwrap_or(&self.other))
            }
            _ => None,
        }
    }
}

/// One module call, by module path.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Call {
    /// Hash of its expansion (`count`/`for_each` and what they read, and
    /// those of the calls above it); `None` when it reads a resource or
    /// data source.
    pub hash: Option<String>,
    /// Whether it, or a call above it, has `count` or `for_each`.
    pub expanded: bool,
}

/// A configuration, read.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// Managed resource blocks by configuration address (`module.m.aws_x.y`).
    pub blocks: BTreeMap<String, Block>,
    /// Module calls by module path.
    pub calls: BTreeMap<String, Call>,
    /// Dependency edges, as [`super::plan::Plan::config_info`] gives them
    /// (locals are followed here, so there may be more).
    pub info: ConfigInfo,
    /// `moved` blocks: (from, to), absolute (`module.m.` prefixed inside a
    /// module), as written (a resource, an instance or a module).
    pub moved: Vec<(String, String)>,
    /// The `to` of each `import` block without `for_each`, as written.
    pub imports: Vec<String>,
    /// Root outputs by name: a hash of everything their value depends on
    /// in the configuration (their text and the values they read, as for
    /// blocks; the resources they read are not hashed). An output reading a
    /// data source or an impure function hashes its text and the other
    /// values it reads: a change of the data source's value, or the
    /// function's result, is not seen here.
    pub outputs: BTreeMap<String, String>,
    /// How many files were parsed, not taken from the [`ParseCache`].
    pub parsed_files: usize,
    /// Root `for_each` module calls terraform may be handed with only some
    /// of their instances, by call name (see [`Narrowable`]).
    pub narrowable: BTreeMap<String, Narrowable>,
    /// The provider configurations and requirements every module declares
    /// (which providers one process can serve a plan for: see
    /// [`super::providers`]).
    #[serde(default)]
    pub providers: Vec<ProviderDecl>,
}

/// A `provider` block, or an entry of `required_providers`, in one module.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProviderDecl {
    /// Module path (`""` at the root).
    pub module: String,
    /// The provider's local name in that module.
    pub name: String,
    /// What it declares.
    pub kind: ProviderDeclKind,
}

/// What a [`ProviderDecl`] declares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProviderDeclKind {
    /// A `provider` block; `aliased` when it has an `alias`.
    Config { aliased: bool },
    /// A `required_providers` entry: its `source` and `version`, as written;
    /// `readable` is false when the entry is not a literal this reader
    /// understands (a string or an object of strings).
    Required {
        source: Option<String>,
        version: Option<String>,
        readable: bool,
    },
}

/// A root module call with `for_each` that the root module reads only by
/// literal instance keys (`module.team["a"].id`, never `module.team` whole,
/// nor in a `moved`, `removed` or `import` block): a run changing some of
/// its instances can give terraform a `for_each` filtered to those keys and
/// the ones named, and a state without the other instances, and terraform
/// plans them as it would in the whole configuration. Terraform then runs
/// in a private directory of links to the root module's entries, so never
/// set where the configuration may read that directory's path (`path.cwd`,
/// `abspath`, `pathexpand`), run commands or write files in it
/// (provisioners, the `external` data source, `local_file`,
/// `archive_file`: see [`LOCATED`]), or where a local module source
/// leaves the root module's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Narrowable {
    /// The text of its `for_each` expression.
    pub for_each: String,
    /// The instance keys the root module names by a literal index.
    pub named: BTreeSet<String>,
}

/// A reference, as far as this reader tells them apart.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
enum Ref {
    Var(String),
    Local(String),
    /// `module.NAME` or `module.NAME.OUTPUT`.
    Module(String, Option<String>),
    /// `TYPE.NAME` of a data source.
    Data(String),
    /// `TYPE.NAME`: a resource if the module declares one.
    Resource(String),
    Cwd,
    Workspace,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Refs {
    refs: BTreeSet<Ref>,
    impure: bool,
}

impl Refs {
    fn of_expr(e: &Expression) -> Refs {
        let mut r = Refs::default();
        r.visit_expr(e);
        r
    }

    fn of_body(b: &Body) -> Refs {
        let mut r = Refs::default();
        r.visit_body(b);
        r
    }

    fn root(&mut self, root: &str, attrs: &[&str]) {
        let first = attrs.first().map(|s| (*s).to_owned());
        let r = match (root, first) {
            ("var", Some(n)) => Ref::Var(n),
            ("local", Some(n)) => Ref::Local(n),
            ("module", Some(n)) => Ref::Module(n, attrs.get(1).map(|s| (*s).to_owned())),
            ("data", Some(t)) => match attrs.get(1) {
                Some(n) => Ref::Data(format!("{t}.{n}")),
                None => return,
            },
            ("path", Some(p)) if p == "cwd" => Ref::Cwd,
            ("terraform", _) => Ref::Workspace,
            ("count" | "each" | "self" | "path", _) => return,
            (t, Some(n)) => Ref::Resource(format!("{t}.{n}")),
            (_, None) => return,
        };
        self.refs.insert(r);
    }
}

impl Visit for Refs {
    fn visit_expr(&mut self, e: &Expression) {
        if let Expression::Variable(v) = e {
            self.root(v.as_str(), &[]);
        }
        visit_expr(self, e);
    }

    fn visit_traversal(&mut self, t: &Traversal) {
        if let Expression::Variable(root) = &t.expr {
            let attrs: Vec<&str> = t
                .operators
                .iter()
                .map_while(|op| match op.value() {
                    TraversalOperator::GetAttr(i) => Some(i.as_str()),
                    _ => None,
                })
                .collect();
            self.root(root.as_str(), &attrs);
        } else {
            self.visit_expr(&t.expr);
        }
        for op in &t.operators {
            visit_traversal_operator(self, op);
        }
    }

    fn visit_func_call(&mut self, f: &FuncCall) {
        if !f.name.namespace.is_empty() || IMPURE.contains(&f.name.name.as_str()) {
            self.impure = true;
        }
        visit_func_call(self, f);
    }
}

/// Text and references of one item (a block, an attribute's expression).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct Item {
    text: String,
    refs: Refs,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ModuleCall {
    /// Text of `source`, `version`, `count`, `for_each`, `depends_on`, `providers`.
    meta: Item,
    expanded: bool,
    /// Whether it has `for_each`.
    for_each: bool,
    /// Arguments that read a root map variable by the instance's key only:
    /// argument name -> variable name (see [`keyed_var`]).
    keyed: BTreeMap<String, String>,
    args: BTreeMap<String, Item>,
}

/// One module's declarations.
#[derive(Debug, Default)]
struct Module {
    /// `""` or `module.a.module.b`.
    path: String,
    parent: Option<usize>,
    /// Name of the call in the parent.
    call_name: String,
    /// Block text and references, whether expanded, and what `count` /
    /// `for_each` read.
    resources: BTreeMap<String, (Item, bool, Refs)>,
    data: BTreeMap<String, Item>,
    variables: BTreeMap<String, String>,
    /// The text of each variable's `default`.
    defaults: BTreeMap<String, String>,
    /// Resources (`TYPE.NAME`) with creation-time provisioners.
    provisioned: BTreeSet<String>,
    /// Resources (`TYPE.NAME`) named by each resource's `replace_triggered_by`.
    triggers: BTreeMap<String, Vec<String>>,
    locals: BTreeMap<String, Item>,
    outputs: BTreeMap<String, Item>,
    calls: BTreeMap<String, ModuleCall>,
    /// Index of each called module.
    children: BTreeMap<String, usize>,
}

fn sha(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let d = h.finalize();
    d[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the configuration rooted at `root`.
pub fn read(root: &Path, inputs: &Inputs) -> Result<Config, Unsupported> {
    let data_dir = inputs
        .data_dir
        .clone()
        .unwrap_or_else(|| root.join(".terraform"));
    let manifest = read_manifest(root, &data_dir);
    let mut loader = Loader {
        cache: ParseCache::new(inputs.cache_dir.clone()),
        manifest: &manifest,
        modules: Vec::new(),
        global: Vec::new(),
        moved: Vec::new(),
        imports: Vec::new(),
        providers: Vec::new(),
        located: false,
        root,
    };
    loader.load(root, "", None, "", 0)?;
    let Loader {
        modules,
        mut global,
        moved,
        imports,
        cache,
        located,
        providers,
        ..
    } = loader;
    global.push(inputs.tf_version.clone());
    // Arguments terraform takes from the environment (`-var`s among them).
    global.extend(inputs.cli_args.iter().map(|(k, v)| format!("{k}={v}")));
    global.push(std::fs::read_to_string(root.join(".terraform.lock.hcl")).unwrap_or_default());
    let root_values = root_values(root, inputs)?;
    let mut reader = Reader {
        modules: &modules,
        root_values: &root_values,
        inputs,
        memo: HashMap::new(),
        active: BTreeSet::new(),
        keyed: None,
    };
    let global = sha(&global.iter().map(String::as_str).collect::<Vec<_>>());

    let mut config = Config {
        moved,
        imports,
        providers,
        parsed_files: cache.parsed_files,
        narrowable: match located {
            true => BTreeMap::new(),
            false => narrowable_calls(root),
        },
        ..Config::default()
    };
    for (i, m) in modules.iter().enumerate() {
        let chain = reader.chain(i);
        let chain_text = reader.chain_text(i);
        if !m.path.is_empty() {
            config.calls.insert(
                m.path.clone(),
                Call {
                    hash: chain.clone().map(|c| c.0),
                    expanded: chain.as_ref().is_none_or(|c| c.1),
                },
            );
        }
        for (name, (item, expanded, expansion)) in &m.resources {
            let own = reader.item_hash(i, item);
            let hash = match (&chain, own) {
                (Some((c, _)), Some(own)) => Some(sha(&[&global, c, &own])),
                _ => None,
            };
            config.blocks.insert(
                join(&m.path, name),
                Block {
                    module: m.path.clone(),
                    hash,
                    text: sha(&[&global, &chain_text, &item.text]),
                    expanded: *expanded,
                    expansion_reads: {
                        let mut out = BTreeSet::new();
                        reader.deps(i, expansion, &mut out, &mut BTreeSet::new());
                        out.into_iter().collect()
                    },
                    keyed: None,
                    provisioned: m.provisioned.contains(name),
                },
            );
        }
    }
    config.info = reader.info();
    if let Some(root) = modules.first() {
        for (name, item) in &root.outputs {
            let hash = match reader.item_hash(0, item) {
                Some(h) => sha(&[&global, &h]),
                None => format!("text:{}", sha(&[&global, &reader.known_hash(0, item)])),
            };
            config.outputs.insert(name.clone(), hash);
        }
    }
    keyed_hashes(&modules, &root_values, inputs, &global, &mut config);
    Ok(config)
}

/// Whether the local module source `source`, called from the module in
/// `dir`, stays inside `root`, as terraform records it: relative to the
/// root module's directory, `..` taken lexically and never above it
/// (`../<root's name>/m` from the root is recorded as such, and resolves
/// elsewhere from another directory).
fn within(root: &Path, dir: &Path, source: &str) -> bool {
    use std::path::Component;
    let Ok(parent) = dir.strip_prefix(root) else {
        return false;
    };
    let mut depth: usize = 0;
    for c in parent.join(source).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::Normal(_) => depth += 1,
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// The root module's [`Narrowable`] calls (none where a root file cannot
/// be parsed).
fn narrowable_calls(root: &Path) -> BTreeMap<String, Narrowable> {
    let Ok(bodies) = root_bodies(root) else {
        return BTreeMap::new();
    };
    let mut calls = BTreeMap::new();
    let mut reads = CallReads::default();
    for body in &bodies {
        for s in body.iter() {
            match s {
                Structure::Block(b) => {
                    let labels: Vec<&str> = b.labels.iter().map(|l| l.as_str()).collect();
                    match (b.ident.as_str(), labels.as_slice()) {
                        ("module", [name]) if b.body.get_attribute("count").is_none() => {
                            if let Some(e) = b.body.get_attribute("for_each") {
                                let for_each = e.value.to_string().trim().to_owned();
                                calls.insert((*name).to_owned(), for_each);
                            }
                        }
                        // What these name is moved, forgotten or imported
                        // whole: never narrowed.
                        ("moved" | "removed" | "import", _) => {
                            let mut whole = CallReads {
                                literal_keys: false,
                                ..CallReads::default()
                            };
                            whole.visit_body(&b.body);
                            reads.whole.extend(whole.whole);
                            reads.any_whole |= whole.any_whole;
                            continue;
                        }
                        _ => {}
                    }
                    reads.visit_body(&b.body);
                }
                Structure::Attribute(a) => reads.visit_expr(&a.value),
            }
        }
    }
    if reads.any_whole {
        return BTreeMap::new();
    }
    calls
        .into_iter()
        .filter(|(name, _)| !reads.whole.contains(name))
        .map(|(name, for_each)| {
            let named = reads.named.remove(&name).unwrap_or_default();
            (name, Narrowable { for_each, named })
        })
        .collect()
}

/// How the root module reads its module calls: by literal instance key, or
/// whole.
#[derive(Debug)]
struct CallReads {
    /// Whether `module.NAME["key"]` counts as reading that key only (not in
    /// `moved`, `removed`, `import` blocks).
    literal_keys: bool,
    named: BTreeMap<String, BTreeSet<String>>,
    whole: BTreeSet<String>,
    /// `module` alone: every call, whole.
    any_whole: bool,
}

impl Default for CallReads {
    fn default() -> Self {
        CallReads {
            literal_keys: true,
            named: BTreeMap::new(),
            whole: BTreeSet::new(),
            any_whole: false,
        }
    }
}

impl Visit for CallReads {
    fn visit_expr(&mut self, e: &Expression) {
        if let Expression::Variable(v) = e {
            self.any_whole |= v.as_str() == "module";
        }
        visit_expr(self, e);
    }

    fn visit_traversal(&mut self, t: &Traversal) {
        let module = matches!(&t.expr, Expression::Variable(v) if v.as_str() == "module");
        if !module {
            self.visit_expr(&t.expr);
        }
        let ops: Vec<&TraversalOperator> = t.operators.iter().map(|op| op.value()).collect();
        if module {
            match (ops.first(), ops.get(1)) {
                (Some(TraversalOperator::GetAttr(name)), key) => {
                    let literal = match key {
                        Some(TraversalOperator::Index(Expression::String(k))) => {
                            Some(k.as_str().to_owned())
                        }
                        _ => None,
                    };
                    match literal.filter(|_| self.literal_keys) {
                        Some(k) => {
                            self.named
                                .entry(name.as_str().to_owned())
                                .or_default()
                                .insert(k);
                        }
                        None => {
                            self.whole.insert(name.as_str().to_owned());
                        }
                    }
                }
                _ => self.any_whole = true,
            }
        }
        for op in &t.operators {
            visit_traversal_operator(self, op);
        }
    }
}

/// At most this many keys in a call's keyed maps: each costs one more
/// hashing of the called module's blocks.
const MAX_KEYS: usize = 512;

/// Fills [`Block::keyed`] for the blocks of every root `for_each` module
/// call with keyed arguments whose maps this reader can split by key.
fn keyed_hashes(
    modules: &[Module],
    root_values: &BTreeMap<String, String>,
    inputs: &Inputs,
    global: &str,
    config: &mut Config,
) {
    let Some(root) = modules.first() else {
        return;
    };
    for (name, call) in &root.calls {
        if !call.for_each || call.keyed.is_empty() {
            continue;
        }
        let Some(&child) = root.children.get(name) else {
            continue;
        };
        // Each keyed variable's elements by key, from its value or else its
        // default; `None` for one with neither (terraform asks for it).
        let mut maps: BTreeMap<&str, Option<BTreeMap<String, String>>> = BTreeMap::new();
        let mut readable = true;
        for var in call.keyed.values() {
            let value = root_values
                .get(var)
                .cloned()
                .or_else(|| root.defaults.get(var).map(|d| format!("hcl:{d}")));
            match value.map(|v| map_elements(&v)) {
                None => {
                    maps.insert(var, None);
                }
                Some(Some(m)) => {
                    maps.insert(var, Some(m));
                }
                Some(None) => readable = false,
            }
        }
        let keys: BTreeSet<&String> = maps.values().flatten().flat_map(|m| m.keys()).collect();
        if !readable || keys.len() > MAX_KEYS {
            continue;
        }
        let path = format!("module.{name}");
        let inside = |m: &Module| m.path == path || m.path.starts_with(&format!("{path}."));
        let hash_all = |key: Option<&str>| -> BTreeMap<String, Option<InstanceHash>> {
            let elements: BTreeMap<String, String> = maps
                .iter()
                .map(|(var, m)| {
                    let element = match (m, key) {
                        (None, _) => "unset".to_owned(),
                        (Some(m), Some(k)) => m
                            .get(k)
                            .map(|e| format!("element:{e}"))
                            .unwrap_or_else(|| "absent".to_owned()),
                        (Some(_), None) => "absent".to_owned(),
                    };
                    ((*var).to_owned(), element)
                })
                .collect();
            let entries = sha(&elements
                .iter()
                .flat_map(|(k, v)| [k.as_str(), v.as_str()])
                .collect::<Vec<_>>());
            let mut reader = Reader {
                modules,
                root_values,
                inputs,
                memo: HashMap::new(),
                active: BTreeSet::new(),
                keyed: Some((child, elements)),
            };
            let mut out = BTreeMap::new();
            for (i, m) in modules.iter().enumerate().filter(|(_, m)| inside(m)) {
                let chain = reader.chain(i);
                for (block, (item, _, _)) in &m.resources {
                    let own = reader.item_hash(i, item);
                    let hash = match (&chain, own) {
                        (Some((c, _)), Some(own)) => Some(InstanceHash {
                            hash: sha(&[global, c, &own]),
                            entries: entries.clone(),
                        }),
                        _ => None,
                    };
                    out.insert(join(&m.path, block), hash);
                }
            }
            out
        };
        let other = hash_all(None);
        let by_key: Vec<(&String, BTreeMap<String, Option<InstanceHash>>)> =
            keys.iter().map(|k| (*k, hash_all(Some(k)))).collect();
        for (block, other) in other {
            let Some(other) = other else {
                continue;
            };
            let by_key: Option<BTreeMap<String, InstanceHash>> = by_key
                .iter()
                .map(|(k, hashes)| Some(((*k).clone(), hashes.get(&block)?.clone()?)))
                .collect();
            if let (Some(by_key), Some(b)) = (by_key, config.blocks.get_mut(&block)) {
                if b.hash.is_some() {
                    b.keyed = Some(Keyed {
                        call: path.clone(),
                        by_key,
                        other,
                    });
                }
            }
        }
    }
}

/// The elements of a map value as a variable's value text gives it
/// ([`root_values`]): key -> the element's text. `None` where it is not a
/// map of literal keys.
fn map_elements(value: &str) -> Option<BTreeMap<String, String>> {
    let (kind, text) = value.split_once(':')?;
    let mut out = BTreeMap::new();
    if kind == "json" {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        for (k, v) in v.as_object()? {
            out.insert(k.clone(), v.to_string());
        }
        return Some(out);
    }
    let e: Expression = text.trim().parse().ok()?;
    let Expression::Object(o) = e else {
        return None;
    };
    for (k, v) in o.iter() {
        let key = match k {
            ObjectKey::Ident(i) => i.as_str().to_owned(),
            ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
            _ => return None,
        };
        let element = v.expr().to_string().trim().to_owned();
        if out.insert(key, element).is_some() {
            // The same key twice: leave that to terraform.
            return None;
        }
    }
    Some(out)
}

/// The root variable an argument of a `for_each` module call reads by the
/// instance's key only: `lookup(var.X, each.key)`, `lookup(var.X, each.key,
/// D)`, `var.X[each.key]` or `try(var.X[each.key], D)`, with D a literal.
fn keyed_var(e: &Expression) -> Option<String> {
    fn root_var(e: &Expression) -> Option<String> {
        let Expression::Traversal(t) = e else {
            return None;
        };
        match (&t.expr, t.operators.as_slice()) {
            (Expression::Variable(v), [op]) if v.as_str() == "var" => match op.value() {
                TraversalOperator::GetAttr(x) => Some(x.as_str().to_owned()),
                _ => None,
            },
            _ => None,
        }
    }
    fn each_key(e: &Expression) -> bool {
        let Expression::Traversal(t) = e else {
            return false;
        };
        matches!((&t.expr, t.operators.as_slice()), (Expression::Variable(v), [op])
            if v.as_str() == "each"
                && matches!(op.value(), TraversalOperator::GetAttr(k) if k.as_str() == "key"))
    }
    fn literal(e: &Expression) -> bool {
        matches!(
            e,
            Expression::Null(_)
                | Expression::Bool(_)
                | Expression::Number(_)
                | Expression::String(_)
        )
    }
    /// `var.X[each.key]`
    fn indexed(e: &Expression) -> Option<String> {
        let Expression::Traversal(t) = e else {
            return None;
        };
        match (&t.expr, t.operators.as_slice()) {
            (Expression::Variable(v), [attr, index]) if v.as_str() == "var" => {
                match (attr.value(), index.value()) {
                    (TraversalOperator::GetAttr(x), TraversalOperator::Index(k)) if each_key(k) => {
                        Some(x.as_str().to_owned())
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
    match e {
        Expression::FuncCall(f) if f.name.namespace.is_empty() && !f.args.expand_final() => {
            let args: Vec<&Expression> = f.args.iter().collect();
            match (f.name.name.as_str(), args.as_slice()) {
                ("lookup", [m, k]) if each_key(k) => root_var(m),
                ("lookup", [m, k, d]) if each_key(k) && literal(d) => root_var(m),
                ("try", [x, d]) if literal(d) => indexed(x),
                _ => None,
            }
        }
        e => indexed(e),
    }
}

fn join(module: &str, rest: &str) -> String {
    if module.is_empty() {
        rest.to_owned()
    } else {
        format!("{module}.{rest}")
    }
}

/// `<data dir>/modules/modules.json`: module key (`a.b`) to directory.
fn read_manifest(root: &Path, dir: &Path) -> HashMap<String, PathBuf> {
    let Ok(text) = std::fs::read(dir.join("modules").join("modules.json")) else {
        return HashMap::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    v["Modules"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let key = m["Key"].as_str()?;
            let dir = m["Dir"].as_str()?;
            Some((key.to_owned(), root.join(dir)))
        })
        .collect()
}

/// What one `.tf` file declares, before it is placed in its module: the
/// unit [`ParseCache`] keeps per file digest.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Parsed {
    /// `TYPE.NAME`, text and references, whether expanded, what
    /// `count`/`for_each` read.
    resources: Vec<(String, Item, bool, Refs)>,
    triggers: Vec<(String, Vec<String>)>,
    provisioned: Vec<String>,
    data: Vec<(String, Item)>,
    /// Name, block text, `default` text.
    variables: Vec<(String, String, Option<String>)>,
    locals: Vec<(String, Item)>,
    outputs: Vec<(String, Item)>,
    /// Name, call, literal `source`.
    calls: Vec<(String, ModuleCall, Option<String>)>,
    /// `moved` blocks, relative to the module.
    moved: Vec<(String, String)>,
    /// `import` targets, relative to the module.
    imports: Vec<String>,
    /// Text of the blocks that apply to every resource block.
    global: Vec<String>,
    /// `provider` blocks and `required_providers` entries (module path empty).
    #[serde(default)]
    providers: Vec<ProviderDecl>,
}

/// Parses one file's text; `None` when it does not parse.
fn parse_file(text: &str) -> Option<Parsed> {
    let body: Body = text.parse().ok()?;
    let mut p = Parsed::default();
    for s in body.iter() {
        let Structure::Block(b) = s else {
            continue;
        };
        let labels: Vec<&str> = b.labels.iter().map(|l| l.as_str()).collect();
        let text = match b.span() {
            Some(r) => text[r].to_owned(),
            None => format!("{} {labels:?} {{{}}}", b.ident.as_str(), b.body),
        };
        match (b.ident.as_str(), labels.as_slice()) {
            ("resource", [t, n]) => {
                let expanded = b.body.get_attribute("count").is_some()
                    || b.body.get_attribute("for_each").is_some();
                let mut refs = Refs::of_body(&b.body);
                // replace_triggered_by plans a replacement when what it
                // names changes, whether or not the state says it depends on it.
                let mut triggered = Refs::default();
                let mut any_trigger = false;
                for l in b.body.get_blocks("lifecycle") {
                    if let Some(a) = l.body.get_attribute("replace_triggered_by") {
                        triggered.visit_expr(&a.value);
                        any_trigger = true;
                    }
                }
                refs.impure |= any_trigger;
                let named: Vec<String> = triggered
                    .refs
                    .iter()
                    .filter_map(|r| match r {
                        Ref::Resource(x) => Some(x.clone()),
                        _ => None,
                    })
                    .collect();
                if !named.is_empty() {
                    p.triggers.push((format!("{t}.{n}"), named));
                }
                let mut expansion = Refs::default();
                for key in ["count", "for_each"] {
                    if let Some(a) = b.body.get_attribute(key) {
                        expansion.visit_expr(&a.value);
                    }
                }
                let at_creation = b.body.get_blocks("provisioner").any(|p| {
                    p.body
                        .get_attribute("when")
                        .is_none_or(|w| w.value.to_string().trim() != "destroy")
                });
                if at_creation {
                    p.provisioned.push(format!("{t}.{n}"));
                }
                p.resources
                    .push((format!("{t}.{n}"), Item { text, refs }, expanded, expansion));
            }
            ("data", [t, n]) => {
                let refs = Refs::of_body(&b.body);
                p.data.push((format!("{t}.{n}"), Item { text, refs }));
            }
            ("variable", [n]) => {
                let default = b.body.get_attribute("default").map(|d| d.value.to_string());
                p.variables.push(((*n).to_owned(), text, default));
            }
            ("locals", []) => {
                for a in b.body.attributes() {
                    p.locals.push((
                        a.key.as_str().to_owned(),
                        Item {
                            text: a.value.to_string(),
                            refs: Refs::of_expr(&a.value),
                        },
                    ));
                }
            }
            ("output", [n]) => {
                let refs = Refs::of_body(&b.body);
                p.outputs.push(((*n).to_owned(), Item { text, refs }));
            }
            ("module", [n]) => {
                let mut call = ModuleCall::default();
                let mut source = None;
                let mut meta: Vec<String> = Vec::new();
                for a in b.body.attributes() {
                    let key = a.key.as_str();
                    let item = Item {
                        text: a.value.to_string(),
                        refs: Refs::of_expr(&a.value),
                    };
                    match key {
                        "source" | "version" | "count" | "for_each" | "depends_on"
                        | "providers" => {
                            if matches!(key, "count" | "for_each") {
                                call.expanded = true;
                            }
                            call.for_each |= key == "for_each";
                            if key == "source" {
                                if let Expression::String(s) = &a.value {
                                    source = Some(s.as_str().to_owned());
                                }
                            }
                            meta.push(format!("{key}={}", item.text));
                            call.meta.refs.refs.extend(item.refs.refs);
                            call.meta.refs.impure |= item.refs.impure;
                        }
                        _ => {
                            if let Some(var) = keyed_var(&a.value) {
                                call.keyed.insert(key.to_owned(), var);
                            }
                            call.args.insert(key.to_owned(), item);
                        }
                    }
                }
                if b.body.blocks().next().is_some() {
                    meta.push(b.body.to_string());
                }
                call.meta.text = meta.join("\n");
                p.calls.push(((*n).to_owned(), call, source));
            }
            ("moved", []) => {
                let end = |key: &str| {
                    b.body
                        .get_attribute(key)
                        .map(|a| a.value.to_string().trim().to_owned())
                };
                match (end("from"), end("to")) {
                    // Discovery plans what a move touches (its old
                    // address while that holds rows): no other block's
                    // plan depends on it.
                    (Some(from), Some(to)) => p.moved.push((from, to)),
                    _ => p.global.push(text),
                }
            }
            ("import", []) => {
                let to = b.body.get_attribute("to");
                match (to, b.body.get_attribute("for_each")) {
                    // Planned as a new instance while the state holds
                    // none at `to` (terraform ignores it after).
                    (Some(to), None) => p.imports.push(to.value.to_string().trim().to_owned()),
                    _ => p.global.push(text),
                }
            }
            // What a `removed` block names holds rows no block
            // declares: those are planned whatever the block says.
            ("removed", []) => {}
            ("provider", [n]) => {
                p.providers.push(ProviderDecl {
                    module: String::new(),
                    name: (*n).to_owned(),
                    kind: ProviderDeclKind::Config {
                        aliased: b.body.get_attribute("alias").is_some(),
                    },
                });
                p.global.push(text);
            }
            ("terraform", []) => {
                for r in b.body.get_blocks("required_providers") {
                    p.providers
                        .extend(r.body.attributes().map(required_provider));
                }
                p.global.push(text);
            }
            _ => p.global.push(text),
        }
    }
    Some(p)
}

/// One `required_providers` entry: `aws = { source = "...", version = "..." }`
/// or the older `aws = "~> 5.0"`.
fn required_provider(a: &hcl_edit::structure::Attribute) -> ProviderDecl {
    let literal = |e: &Expression| match e {
        Expression::String(s) => Some(s.as_str().to_owned()),
        _ => None,
    };
    let (mut source, mut version, mut readable) = (None, None, true);
    match &a.value {
        Expression::String(s) => version = Some(s.as_str().to_owned()),
        Expression::Object(o) => {
            for (k, v) in o.iter() {
                let key = match k {
                    ObjectKey::Ident(i) => i.as_str().to_owned(),
                    ObjectKey::Expression(Expression::String(s)) => s.as_str().to_owned(),
                    _ => {
                        readable = false;
                        continue;
                    }
                };
                match key.as_str() {
                    "source" => source = literal(v.expr()),
                    "version" => version = literal(v.expr()),
                    // Aliases a module expects to be handed: not a
                    // configuration, and not a requirement.
                    "configuration_aliases" => continue,
                    _ => {
                        readable = false;
                        continue;
                    }
                }
                readable &= literal(v.expr()).is_some();
            }
        }
        _ => readable = false,
    }
    ProviderDecl {
        module: String::new(),
        name: a.key.as_str().to_owned(),
        kind: ProviderDeclKind::Required {
            source,
            version,
            readable,
        },
    }
}

/// Each file's [`Parsed`] declarations kept by the sha256 of its text (and
/// of stategraph's version), one
/// small JSON file per digest in a directory of stategraph's data dir
/// (`hcl/`), so that a file unchanged since an earlier run is not parsed
/// again. Kept on disk rather than in PostgreSQL: it is read before the
/// module tree is known (each module's calls are found in its files), one
/// lookup per file, where a database round trip each would cost more than
/// the parse it saves. Content-addressed: safe to share between checkouts
/// and to delete at any time; an entry that cannot be read or written is
/// parsed as if absent.
///
/// Pruned as it is used: an entry is touched when found (at most once a
/// day), and a run that writes an entry removes, at most once a day,
/// those not found for [`PRUNE_AFTER`] (files since edited, another
/// stategraph version's).
struct ParseCache {
    dir: Option<PathBuf>,
    /// Files parsed (not found in the cache) so far.
    parsed_files: usize,
}

/// How long a [`ParseCache`] entry is kept without being found.
const PRUNE_AFTER: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
/// How often a [`ParseCache`] entry's time is refreshed, and the cache pruned.
const TOUCH_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// How long ago `path` was last modified (`None` if unknown).
fn age(path: &Path) -> Option<std::time::Duration> {
    std::fs::metadata(path)
        .ok()?
        .modified()
        .ok()?
        .elapsed()
        .ok()
}

impl ParseCache {
    fn new(dir: Option<PathBuf>) -> ParseCache {
        ParseCache {
            dir,
            parsed_files: 0,
        }
    }

    /// What `text` declares: from the cache, else `parse()` (kept for next time).
    fn parsed(
        &mut self,
        text: &str,
        parse: impl FnOnce() -> Result<Parsed, Unsupported>,
    ) -> Result<Parsed, Unsupported> {
        let entry = self.dir.as_ref().map(|dir| {
            // The stategraph version is part of the key: an entry written
            // by another version may mean something else by the same shape.
            let mut hasher = Sha256::new();
            hasher.update(concat!(
                "stategraph ",
                env!("CARGO_PKG_VERSION"),
                " parse 2\n"
            ));
            hasher.update(text.as_bytes());
            let digest = hasher.finalize();
            let name: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            dir.join(format!("{name}.json"))
        });
        if let Some((entry, found)) = entry.as_ref().and_then(|e| {
            let bytes = std::fs::read(e).ok()?;
            Some((e, serde_json::from_slice::<Parsed>(&bytes).ok()?))
        }) {
            if age(entry).is_some_and(|a| a > TOUCH_EVERY) {
                let _ = std::fs::File::options()
                    .append(true)
                    .open(entry)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            }
            return Ok(found);
        }
        self.parsed_files += 1;
        let parsed = parse()?;
        if let Some(entry) = entry {
            // Best effort: a cache that cannot be written costs a parse.
            let _ = self.keep(&entry, &parsed);
            self.prune();
        }
        Ok(parsed)
    }

    /// Removes entries not found for [`PRUNE_AFTER`], at most once every
    /// [`TOUCH_EVERY`] (a marker file says when it last ran). Best effort.
    fn prune(&self) {
        let Some(dir) = &self.dir else {
            return;
        };
        let marker = dir.join(".pruned");
        if age(&marker).is_some_and(|a| a < TOUCH_EVERY) {
            return;
        }
        let _ = std::fs::write(&marker, b"");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let stale = path.extension().is_some_and(|x| x == "json")
                && age(&path).is_some_and(|a| a > PRUNE_AFTER);
            if stale {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Writes `entry` whole or not at all (private: configuration text may
    /// hold values its authors consider secret).
    fn keep(&self, entry: &Path, parsed: &Parsed) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(parsed).map_err(std::io::Error::other)?;
        super::write_private(entry, &bytes)
    }
}

/// Reads a root module and the modules it calls, depth first.
struct Loader<'a> {
    /// Files parsed before, by digest.
    cache: ParseCache,
    /// Installed modules by key (see [`read_manifest`]).
    manifest: &'a HashMap<String, PathBuf>,
    /// Every module read, the root first.
    modules: Vec<Module>,
    /// Text of the blocks that apply to every resource block.
    global: Vec<String>,
    /// `moved` blocks (see [`Config::moved`]).
    moved: Vec<(String, String)>,
    /// `import` targets (see [`Config::imports`]).
    imports: Vec<String>,
    /// See [`Config::providers`].
    providers: Vec<ProviderDecl>,
    /// Whether a file has [`LOCATED`] text, or a module's directory is
    /// outside the root module's (see [`Narrowable`]).
    located: bool,
    /// The root module's directory.
    root: &'a Path,
}

impl Loader<'_> {
    /// Reads the module in `dir` at module path `path` (called `call_name` by
    /// the module at index `parent`) and what it calls; returns its index.
    fn load(
        &mut self,
        dir: &Path,
        path: &str,
        parent: Option<usize>,
        call_name: &str,
        depth: usize,
    ) -> Result<usize, Unsupported> {
        if depth > 32 {
            return Err(Unsupported(format!(
                "modules nested deeper than 32 at {path}"
            )));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Unsupported(format!("cannot read {}: {e}", dir.display())))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut m = Module {
            path: path.to_owned(),
            parent,
            call_name: call_name.to_owned(),
            ..Module::default()
        };
        let mut sources: Vec<(String, String)> = Vec::new();
        for file in &files {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with(".tf.json") {
                return Err(Unsupported(format!(
                    "{} is JSON configuration",
                    file.display()
                )));
            }
            if !name.ends_with(".tf") || name == OVERRIDE_FILE {
                continue;
            }
            if name == "override.tf" || name.ends_with("_override.tf") {
                return Err(Unsupported(format!(
                    "{} is an override file",
                    file.display()
                )));
            }
            let text = std::fs::read_to_string(file)
                .map_err(|e| Unsupported(format!("cannot read {}: {e}", file.display())))?;
            self.located |= LOCATED.iter().any(|f| text.contains(f));
            let parsed = self.cache.parsed(&text, || {
                parse_file(&text)
                    .ok_or_else(|| Unsupported(format!("cannot parse {}", file.display())))
            })?;
            for (name, item, expanded, expansion) in parsed.resources {
                m.resources.insert(name, (item, expanded, expansion));
            }
            m.triggers.extend(parsed.triggers);
            m.provisioned.extend(parsed.provisioned);
            m.data.extend(parsed.data);
            for (name, text, default) in parsed.variables {
                if let Some(d) = default {
                    m.defaults.insert(name.clone(), d);
                }
                m.variables.insert(name, text);
            }
            m.locals.extend(parsed.locals);
            m.outputs.extend(parsed.outputs);
            for (name, call, source) in parsed.calls {
                if let Some(source) = source {
                    sources.push((name.clone(), source));
                }
                m.calls.insert(name, call);
            }
            self.moved.extend(
                parsed
                    .moved
                    .into_iter()
                    .map(|(from, to)| (join(path, &from), join(path, &to))),
            );
            self.imports
                .extend(parsed.imports.into_iter().map(|to| join(path, &to)));
            self.global.extend(parsed.global);
            self.providers
                .extend(parsed.providers.into_iter().map(|d| ProviderDecl {
                    module: path.to_owned(),
                    ..d
                }));
        }
        let index = self.modules.len();
        self.modules.push(m);
        for (name, source) in sources {
            let child_path = join(path, &format!("module.{name}"));
            let key = child_path
                .split('.')
                .filter(|s| *s != "module")
                .collect::<Vec<_>>()
                .join(".");
            let child_dir = if source.starts_with("./") || source.starts_with("../") {
                self.located |= !within(self.root, dir, &source);
                dir.join(&source)
            } else if let Some(d) = self.manifest.get(&key) {
                d.clone()
            } else {
                return Err(Unsupported(format!(
                    "module {child_path} ({source}) is not installed here"
                )));
            };
            let child = self.load(&child_dir, &child_path, Some(index), &name, depth + 1)?;
            self.modules[index].children.insert(name, child);
        }
        let loaded = &self.modules[index];
        if loaded.children.len() != loaded.calls.len() {
            let missing: Vec<&String> = loaded
                .calls
                .keys()
                .filter(|c| !loaded.children.contains_key(*c))
                .collect();
            return Err(Unsupported(format!(
                "module call(s) {missing:?} in {} have no literal source",
                dir.display()
            )));
        }
        Ok(index)
    }
}

/// The root module's input variables as terraform checks them before it
/// plans: each declared variable and whether it has a default, and the
/// names given a value (`TF_VAR_*`, tfvars files, `-var`, `-var-file`).
#[derive(Debug, Clone, Default)]
pub struct RootVariables {
    /// Declared variables: name -> whether it has a default.
    pub declared: BTreeMap<String, bool>,
    /// Names given a value.
    pub given: BTreeSet<String>,
    /// What terraform's prompt for a variable shows: its `description`
    /// (where a plain string) and whether it is `sensitive` (typed unseen).
    pub prompts: BTreeMap<String, VariablePrompt>,
}

/// See [`RootVariables::prompts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VariablePrompt {
    pub description: Option<String>,
    pub sensitive: bool,
}

/// Reads the root module's variable blocks (its `.tf` files only, override
/// files included) and the values `inputs` and the tfvars files give.
/// `Err` where this reader cannot tell (JSON configuration, a file it
/// cannot read or parse): terraform then checks for itself.
pub fn root_variables(root: &Path, inputs: &Inputs) -> Result<RootVariables, Unsupported> {
    let mut declared = BTreeMap::new();
    let mut prompts: BTreeMap<String, VariablePrompt> = BTreeMap::new();
    for body in root_bodies(root)? {
        for b in body.blocks().filter(|b| b.ident.as_str() == "variable") {
            if let [label] = b.labels.as_slice() {
                let has_default = b.body.get_attribute("default").is_some();
                let entry = declared.entry(label.as_str().to_owned()).or_insert(false);
                *entry |= has_default;
                // Override files replace what they set.
                let prompt = prompts.entry(label.as_str().to_owned()).or_default();
                if let Some(a) = b.body.get_attribute("description") {
                    prompt.description = match &a.value {
                        Expression::String(s) => Some(s.as_str().to_owned()),
                        _ => None,
                    };
                }
                if let Some(a) = b.body.get_attribute("sensitive") {
                    prompt.sensitive = matches!(&a.value, Expression::Bool(b) if *b.value());
                }
            }
        }
    }
    let given = root_values(root, inputs)?.into_keys().collect();
    Ok(RootVariables {
        declared,
        given,
        prompts,
    })
}

/// Where the configuration keeps its state, as its `terraform` block says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// No backend block: `terraform.tfstate` in the root module.
    Default,
    /// `backend "local"`, with its `path` and `workspace_dir` if set.
    Local {
        path: Option<String>,
        workspace_dir: Option<String>,
    },
    /// Any other backend (`s3`, `gcs`, `http`, ...), or `cloud`.
    Other(String),
}

/// The backend the root module's `terraform` blocks declare (stategraph's
/// own override file aside; other override files win, as terraform merges
/// them). `Err` where the files cannot be read or parsed.
pub fn backend(root: &Path) -> Result<Backend, Unsupported> {
    let mut found = Backend::Default;
    for body in root_bodies(root)? {
        for t in body.blocks().filter(|b| b.ident.as_str() == "terraform") {
            if t.body.get_blocks("cloud").next().is_some() {
                found = Backend::Other("cloud".to_owned());
            }
            for b in t.body.get_blocks("backend") {
                let Some(kind) = b.labels.first().map(|l| l.as_str().to_owned()) else {
                    continue;
                };
                let text_of = |key: &str| {
                    b.body.get_attribute(key).and_then(|a| match &a.value {
                        Expression::String(s) => Some(s.as_str().to_owned()),
                        _ => None,
                    })
                };
                found = match kind.as_str() {
                    "local" => Backend::Local {
                        path: text_of("path"),
                        workspace_dir: text_of("workspace_dir"),
                    },
                    _ => Backend::Other(kind),
                };
            }
        }
    }
    Ok(found)
}

/// The root module's `.tf` files (stategraph's own override file aside),
/// parsed, in the order terraform merges them: override files last. `Err`
/// for JSON configuration, or a file that cannot be read or parsed.
fn root_bodies(root: &Path) -> Result<Vec<Body>, Unsupported> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Unsupported(format!("cannot read {}: {e}", root.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort_by_key(|p| {
        let name = p.file_name().unwrap_or_default().to_string_lossy();
        let stem = name.trim_end_matches(".json").trim_end_matches(".tf");
        (stem == "override" || stem.ends_with("_override"), p.clone())
    });
    let mut out = Vec::new();
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".tf.json") {
            return Err(Unsupported(format!(
                "{} is JSON configuration",
                path.display()
            )));
        }
        if !name.ends_with(".tf") || name == OVERRIDE_FILE {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Unsupported(format!("cannot read {}: {e}", path.display())))?;
        out.push(
            text.parse()
                .map_err(|_| Unsupported(format!("cannot parse {}", path.display())))?,
        );
    }
    Ok(out)
}

/// Whether `root` holds a configuration file terraform counts as one:
/// `.tf` or `.tf.json`, not an override file (nor stategraph's own).
pub fn has_configuration(root: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        let stem = name
            .strip_suffix(".tf.json")
            .or_else(|| name.strip_suffix(".tf"));
        match stem {
            Some(stem) => stem != "override" && !stem.ends_with("_override") && e.path().is_file(),
            None => false,
        }
    })
}

/// The text that sets each root variable, last definition wins:
/// `TF_VAR_*`, `terraform.tfvars`, `*.auto.tfvars`, then `-var`/`-var-file`
/// in order.
fn root_values(root: &Path, inputs: &Inputs) -> Result<BTreeMap<String, String>, Unsupported> {
    let mut values = BTreeMap::new();
    for (k, v) in &inputs.env {
        if let Some(name) = k.strip_prefix("TF_VAR_") {
            values.insert(name.to_owned(), format!("env:{v}"));
        }
    }
    let mut files = vec![
        root.join("terraform.tfvars"),
        root.join("terraform.tfvars.json"),
    ];
    let mut auto: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|e| Unsupported(format!("cannot read {}: {e}", root.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.ends_with(".auto.tfvars") || n.ends_with(".auto.tfvars.json")
        })
        .collect();
    auto.sort();
    files.extend(auto);
    for f in files.iter().filter(|f| f.is_file()) {
        tfvars_file(f, &mut values)?;
    }
    for arg in &inputs.vars {
        if let Some(file) = arg.strip_prefix("-var-file=") {
            let p = Path::new(file);
            let p = if p.is_absolute() {
                p.to_path_buf()
            } else {
                root.join(p)
            };
            tfvars_file(&p, &mut values)?;
        } else if let Some(kv) = arg.strip_prefix("-var=") {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            values.insert(k.trim().to_owned(), format!("arg:{v}"));
        }
    }
    Ok(values)
}

fn tfvars_file(path: &Path, values: &mut BTreeMap<String, String>) -> Result<(), Unsupported> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Unsupported(format!("cannot read {}: {e}", path.display())))?;
    if path.to_string_lossy().ends_with(".json") {
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| Unsupported(format!("cannot parse {}", path.display())))?;
        for (k, v) in v.as_object().into_iter().flatten() {
            values.insert(k.clone(), format!("json:{v}"));
        }
        return Ok(());
    }
    let body: Body = text
        .parse()
        .map_err(|_| Unsupported(format!("cannot parse {}", path.display())))?;
    for a in body.attributes() {
        values.insert(a.key.as_str().to_owned(), format!("hcl:{}", a.value));
    }
    Ok(())
}

/// Hashes of named values, memoized per module.
struct Reader<'a> {
    modules: &'a [Module],
    root_values: &'a BTreeMap<String, String>,
    inputs: &'a Inputs,
    memo: HashMap<(usize, Ref), Option<String>>,
    /// Values being hashed (a cycle is not followed twice).
    active: BTreeSet<(usize, Ref)>,
    /// Hashing one instance of a keyed call (see [`Keyed`]): the called
    /// module's index, and the instance's element of each keyed root
    /// variable (its text, `absent`, or `unset`).
    keyed: Option<(usize, BTreeMap<String, String>)>,
}

impl Reader<'_> {
    /// Hash of an item's text and of the values it reads; `None` when it
    /// reads something outside the configuration.
    fn item_hash(&mut self, m: usize, item: &Item) -> Option<String> {
        if item.refs.impure {
            return None;
        }
        let mut parts = vec![item.text.clone()];
        for r in &item.refs.refs {
            parts.push(self.value(m, r)?);
        }
        Some(sha(&parts.iter().map(String::as_str).collect::<Vec<_>>()))
    }

    /// Hash of an item's text and of those values it reads that are in the
    /// configuration (not a data source's, nor what reads one): for a root
    /// output reading a data source, so that a variable it reads beside
    /// it is still seen changing. An impure function's result is not.
    fn known_hash(&mut self, m: usize, item: &Item) -> String {
        let mut parts = vec![item.text.clone()];
        for r in &item.refs.refs {
            parts.push(self.value(m, r).unwrap_or_else(|| "unknown".to_owned()));
        }
        sha(&parts.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Hash of one referenced value in module `m`.
    fn value(&mut self, m: usize, r: &Ref) -> Option<String> {
        let key = (m, r.clone());
        if let Some(v) = self.memo.get(&key) {
            return v.clone();
        }
        if !self.active.insert(key.clone()) {
            return Some("cycle".to_owned());
        }
        let modules = self.modules;
        let module = &modules[m];
        let v = match r {
            Ref::Resource(_) => Some(String::new()),
            Ref::Data(_) => None,
            Ref::Cwd => Some(self.inputs.cwd.clone()),
            Ref::Workspace => Some(self.inputs.workspace.clone()),
            Ref::Local(n) => match module.locals.get(n) {
                Some(item) => self.item_hash(m, item),
                None => Some(format!("no local {n}")),
            },
            Ref::Var(n) => {
                let decl = module.variables.get(n).cloned().unwrap_or_default();
                match module.parent {
                    None => {
                        let value = self.root_values.get(n).cloned().unwrap_or_default();
                        Some(sha(&[&decl, &value]))
                    }
                    Some(p) => {
                        let call = modules[p].calls.get(&module.call_name);
                        let arg = call.and_then(|c| c.args.get(n)).cloned();
                        let element = match (&self.keyed, call) {
                            (Some((child, elements)), Some(call)) if *child == m => {
                                call.keyed.get(n).and_then(|var| elements.get(var))
                            }
                            _ => None,
                        };
                        match (element, arg) {
                            // This instance's element of a root map, and the
                            // argument's text (its default).
                            (Some(element), Some(arg)) => {
                                Some(sha(&[&decl, &arg.text, "keyed", element]))
                            }
                            (_, arg) => match arg {
                                Some(arg) => self.item_hash(p, &arg).map(|a| sha(&[&decl, &a])),
                                None => Some(sha(&[&decl])),
                            },
                        }
                    }
                }
            }
            Ref::Module(name, output) => match module.children.get(name) {
                Some(&c) => {
                    let outputs: Vec<Item> = modules[c]
                        .outputs
                        .iter()
                        .filter(|(o, _)| output.as_ref().is_none_or(|x| x == *o))
                        .map(|(_, i)| i.clone())
                        .collect();
                    let mut parts = Vec::new();
                    let mut dynamic = false;
                    for o in &outputs {
                        match self.item_hash(c, o) {
                            Some(h) => parts.push(h),
                            None => dynamic = true,
                        }
                    }
                    (!dynamic).then(|| sha(&parts.iter().map(String::as_str).collect::<Vec<_>>()))
                }
                None => Some(format!("no module {name}")),
            },
        };
        self.active.remove(&key);
        self.memo.insert(key, v.clone());
        v
    }

    /// Hash of the expansion of module `m` and the calls above it, and
    /// whether any of them is expanded; `None` if an expansion reads a
    /// resource or something outside the configuration.
    fn chain(&mut self, m: usize) -> Option<(String, bool)> {
        let modules = self.modules;
        let module = &modules[m];
        let Some(p) = module.parent else {
            return Some((String::new(), false));
        };
        let (above, above_expanded) = self.chain(p)?;
        let call = &modules[p].calls[&module.call_name];
        let reads_resource = call.meta.refs.refs.iter().any(|r| match r {
            Ref::Resource(x) => modules[p].resources.contains_key(x),
            Ref::Module(..) | Ref::Data(_) => true,
            _ => false,
        });
        if reads_resource && call.expanded {
            return None;
        }
        let own = self.item_hash(p, &call.meta)?;
        Some((sha(&[&above, &own]), above_expanded || call.expanded))
    }

    /// Dependencies of what `refs` reads in module `m`, as configuration
    /// addresses: resources, data sources and module outputs.
    fn deps(
        &self,
        m: usize,
        refs: &Refs,
        out: &mut BTreeSet<String>,
        seen: &mut BTreeSet<(usize, Ref)>,
    ) {
        let module = &self.modules[m];
        for r in &refs.refs {
            if !seen.insert((m, r.clone())) {
                continue;
            }
            match r {
                Ref::Resource(x) if module.resources.contains_key(x) => {
                    out.insert(join(&module.path, x));
                }
                Ref::Data(x) => {
                    out.insert(join(&module.path, &format!("data.{x}")));
                }
                Ref::Module(name, output) => {
                    if let Some(&c) = module.children.get(name) {
                        for o in self.modules[c].outputs.keys() {
                            if output.as_ref().is_none_or(|x| x == o) {
                                out.insert(format!("{}.output.{o}", self.modules[c].path));
                            }
                        }
                    }
                }
                Ref::Local(n) => {
                    if let Some(item) = module.locals.get(n) {
                        self.deps(m, &item.refs, out, seen);
                    }
                }
                Ref::Var(n) => {
                    if let Some(p) = module.parent {
                        let call = &self.modules[p].calls[&module.call_name];
                        if let Some(arg) = call.args.get(n) {
                            self.deps(p, &arg.refs, out, seen);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Hash of the text of the module calls above module `m`.
    fn chain_text(&self, m: usize) -> String {
        let module = &self.modules[m];
        match module.parent {
            None => String::new(),
            Some(p) => sha(&[
                &self.chain_text(p),
                &self.modules[p].calls[&module.call_name].meta.text,
            ]),
        }
    }

    /// Edges of a node in module `m` reading `refs`, plus what the module
    /// calls above it read for their expansion.
    fn node_deps(&self, m: usize, refs: &Refs) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        self.deps(m, refs, &mut out, &mut BTreeSet::new());
        let mut at = m;
        while let Some(p) = self.modules[at].parent {
            let call = &self.modules[p].calls[&self.modules[at].call_name];
            self.deps(p, &call.meta.refs, &mut out, &mut BTreeSet::new());
            at = p;
        }
        out
    }

    fn info(&self) -> ConfigInfo {
        let mut edges = BTreeSet::new();
        for (i, m) in self.modules.iter().enumerate() {
            let nodes = m
                .resources
                .iter()
                .map(|(n, (item, _, _))| (join(&m.path, n), item))
                .chain(
                    m.data
                        .iter()
                        .map(|(n, item)| (join(&m.path, &format!("data.{n}")), item)),
                )
                .chain(
                    m.outputs
                        .iter()
                        .filter(|_| !m.path.is_empty())
                        .map(|(n, item)| (format!("{}.output.{n}", m.path), item)),
                );
            for (node, item) in nodes {
                for dep in self.node_deps(i, &item.refs) {
                    if dep != node {
                        edges.insert((node.clone(), dep));
                    }
                }
            }
        }
        let mut output_refs = BTreeSet::new();
        if let Some(root) = self.modules.first() {
            for (name, item) in &root.outputs {
                for dep in self.node_deps(0, &item.refs) {
                    output_refs.insert((name.clone(), dep));
                }
            }
        }
        ConfigInfo {
            edges: edges.into_iter().collect(),
            output_refs: output_refs.into_iter().collect(),
            outputs: self
                .modules
                .first()
                .map(|m| m.outputs.keys().cloned().collect())
                .unwrap_or_default(),
            triggers: self
                .modules
                .iter()
                .flat_map(|m| {
                    m.triggers.iter().flat_map(move |(block, named)| {
                        named
                            .iter()
                            .filter(|t| m.resources.contains_key(*t))
                            .map(move |t| (join(&m.path, block), join(&m.path, t)))
                    })
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/tf")
            .join(name)
    }

    /// A copy of a fixture that a test may edit.
    fn copy(name: &str) -> tempfile::TempDir {
        fn walk(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, &to.join(e.file_name()));
                } else {
                    std::fs::copy(&p, to.join(e.file_name())).unwrap();
                }
            }
        }
        let dir = tempfile::tempdir().unwrap();
        walk(&fixture(name), dir.path());
        dir
    }

    fn hashes(c: &Config) -> BTreeMap<String, Option<String>> {
        c.blocks
            .iter()
            .map(|(k, b)| (k.clone(), b.hash.clone()))
            .collect()
    }

    fn differing(a: &Config, b: &Config) -> Vec<String> {
        let (a, b) = (hashes(a), hashes(b));
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    fn edit(dir: &Path, file: &str, from: &str, to: &str) {
        let p = dir.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    }

    #[test]
    fn blocks_calls_and_edges_of_the_chain() {
        let c = read(&fixture("chain"), &Inputs::default()).unwrap();
        let keys: Vec<&str> = c.blocks.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "module.branch.terraform_data.l1",
                "module.branch.terraform_data.l2",
                "module.branch.terraform_data.l3",
                "module.branch.terraform_data.l4",
                "terraform_data.island",
                "terraform_data.join",
                "terraform_data.root",
            ]
        );
        assert!(c.blocks.values().all(|b| b.hash.is_some()));
        assert!(c.blocks["terraform_data.island"].expanded);
        assert!(!c.blocks["terraform_data.root"].expanded);
        assert!(c.calls["module.branch"].expanded);
        let has = |a: &str, b: &str| c.info.edges.iter().any(|(x, y)| x == a && y == b);
        // The same edges terraform's plan JSON gives (plan.rs tests).
        assert!(has(
            "module.branch.terraform_data.l1",
            "terraform_data.root"
        ));
        assert!(has(
            "module.branch.terraform_data.l2",
            "module.branch.terraform_data.l1"
        ));
        assert!(has(
            "module.branch.output.tail_id",
            "module.branch.terraform_data.l4"
        ));
        assert!(has("terraform_data.join", "module.branch.output.tail_id"));
        assert!(!c
            .info
            .edges
            .iter()
            .any(|(a, _)| a == "terraform_data.island"));
        assert_eq!(c.info.outputs, ["root_id", "tails"]);
        assert!(c
            .info
            .output_refs
            .contains(&("root_id".to_owned(), "terraform_data.root".to_owned())));
    }

    #[test]
    fn an_unchanged_file_is_not_parsed_again() {
        let dir = copy("chain");
        let files = config_files(dir.path());
        let cache = tempfile::tempdir().unwrap();
        let inputs = Inputs {
            cache_dir: Some(cache.path().join("hcl")),
            ..Inputs::default()
        };
        let uncached = read(dir.path(), &Inputs::default()).unwrap();
        let first = read(dir.path(), &inputs).unwrap();
        assert_eq!(first.parsed_files, files);
        let second = read(dir.path(), &inputs).unwrap();
        assert_eq!(second.parsed_files, 0, "unchanged files were parsed again");
        // What the cache gives is what parsing gives.
        assert_eq!(hashes(&second), hashes(&uncached));
        assert_eq!(second.info.edges, uncached.info.edges);
        assert_eq!(second.outputs, uncached.outputs);
        // One file edited: that one is parsed, and its change seen.
        edit(
            dir.path(),
            "main.tf",
            r#"input = "root""#,
            r#"input = "root2""#,
        );
        let third = read(dir.path(), &inputs).unwrap();
        assert_eq!(third.parsed_files, 1);
        assert_eq!(differing(&second, &third), ["terraform_data.root"]);
        // A cache entry that cannot be read is parsed again, not trusted.
        for e in std::fs::read_dir(cache.path().join("hcl")).unwrap() {
            std::fs::write(e.unwrap().path(), "not json").unwrap();
        }
        let fourth = read(dir.path(), &inputs).unwrap();
        assert_eq!(fourth.parsed_files, files);
        assert_eq!(hashes(&fourth), hashes(&third));
    }

    /// Entries not found for a month go when an entry is next written (at
    /// most once a day); one found again is kept, and so is a fresh one.
    #[test]
    fn the_parse_cache_forgets_entries_unused_for_a_month() {
        let dir = copy("chain");
        let cache = tempfile::tempdir().unwrap();
        let hcl = cache.path().join("hcl");
        let inputs = Inputs {
            cache_dir: Some(hcl.clone()),
            ..Inputs::default()
        };
        read(dir.path(), &inputs).unwrap();
        let entries = || -> Vec<PathBuf> {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&hcl)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            v.sort();
            v
        };
        let used = entries();
        assert!(!used.is_empty());
        let long_ago = std::time::SystemTime::now() - 2 * PRUNE_AFTER;
        let set_time = |p: &Path| {
            std::fs::File::options()
                .append(true)
                .open(p)
                .unwrap()
                .set_modified(long_ago)
                .unwrap()
        };
        // An entry no file has any more, and every other one, unused for
        // two months; the last prune as long ago.
        let orphan = hcl.join(format!("{}.json", "0".repeat(64)));
        std::fs::write(&orphan, "{}").unwrap();
        for p in used.iter().chain([&orphan]) {
            set_time(p);
        }
        set_time(&hcl.join(".pruned"));
        // Found again: touched, so kept. An edit writes a new entry, which
        // prunes: the orphan goes.
        read(dir.path(), &inputs).unwrap();
        edit(
            dir.path(),
            "main.tf",
            r#"input = "root""#,
            r#"input = "root2""#,
        );
        read(dir.path(), &inputs).unwrap();
        let now = entries();
        assert!(!orphan.exists(), "{now:?}");
        assert!(used.iter().all(|p| now.contains(p)), "{now:?}");
        assert_eq!(now.len(), used.len() + 1, "{now:?}");
    }

    /// How many `.tf` files the configuration in `dir` has, modules included.
    fn config_files(dir: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                n += config_files(&p);
            } else if p.extension().is_some_and(|x| x == "tf") {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn an_edited_block_changes_its_own_hash_only() {
        let dir = copy("chain");
        let before = read(dir.path(), &Inputs::default()).unwrap();
        edit(
            dir.path(),
            "main.tf",
            r#"input = "root""#,
            r#"input = "root2""#,
        );
        let after = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(differing(&before, &after), ["terraform_data.root"]);
        // Inside a module: that block, and nothing that merely references it.
        edit(
            dir.path(),
            "modules/branch/main.tf",
            "input = terraform_data.l1.id",
            "input = \"${terraform_data.l1.id}-x\"",
        );
        let again = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(
            differing(&after, &again),
            ["module.branch.terraform_data.l2"]
        );
        // An output read by another block: that block.
        edit(
            dir.path(),
            "modules/branch/main.tf",
            "value = terraform_data.l4.id",
            "value = terraform_data.l3[0].id",
        );
        let third = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(differing(&again, &third), ["terraform_data.join"]);
    }

    #[test]
    fn variable_values_reach_the_blocks_that_read_them() {
        let dir = copy("chain");
        let base = read(dir.path(), &Inputs::default()).unwrap();
        let with = |vars: &[&str]| {
            let inputs = Inputs {
                vars: vars.iter().map(|s| s.to_string()).collect(),
                ..Inputs::default()
            };
            read(dir.path(), &inputs).unwrap()
        };
        // sleep_seconds goes to every branch's l1 only.
        let slept = with(&["-var=sleep_seconds=1"]);
        assert_eq!(
            differing(&base, &slept),
            ["module.branch.terraform_data.l1"]
        );
        assert_eq!(base.calls, slept.calls);
        // gen drives the module's for_each: the call's expansion changes.
        let gen = with(&[r#"-var=gen={a="2",b="1",c="1"}"#]);
        assert_ne!(base.calls["module.branch"], gen.calls["module.branch"]);
        // A tfvars file the same way, and TF_VAR_ below both.
        std::fs::write(dir.path().join("x.tfvars"), "sleep_seconds = 1\n").unwrap();
        let file = with(&["-var-file=x.tfvars"]);
        assert_eq!(differing(&base, &file), ["module.branch.terraform_data.l1"]);
        let env = read(
            dir.path(),
            &Inputs {
                env: vec![("TF_VAR_sleep_seconds".into(), "1".into())],
                ..Inputs::default()
            },
        )
        .unwrap();
        assert_eq!(differing(&base, &env), ["module.branch.terraform_data.l1"]);
        // Global: a provider block changes every block.
        std::fs::write(dir.path().join("p.tf"), "provider \"null\" {}\n").unwrap();
        let provider = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(differing(&base, &provider).len(), base.blocks.len());
    }

    #[test]
    fn a_map_read_by_instance_key_changes_that_instance_only() {
        let dir = copy("teams");
        let with = |vars: &[&str]| {
            let inputs = Inputs {
                vars: vars.iter().map(|s| s.to_string()).collect(),
                ..Inputs::default()
            };
            read(dir.path(), &inputs).unwrap()
        };
        let base = "module.team.terraform_data.base";
        let service = "module.team.terraform_data.service";
        let one = with(&[r#"-var=gen={a="2",b="1"}"#]);
        let two = with(&[r#"-var=gen={a="3", "b" = "1"}"#]);
        // The block's hash covers the whole map: it changes ...
        assert_eq!(differing(&one, &two), [base]);
        // ... but per instance, only team a's does.
        let (k1, k2) = (
            one.blocks[base].keyed.as_ref().unwrap(),
            two.blocks[base].keyed.as_ref().unwrap(),
        );
        assert_eq!(k1.call, "module.team");
        let at = |k: &Keyed, m: &str| k.hash_in(m).unwrap().hash.clone();
        assert_ne!(at(k1, r#"module.team["a"]"#), at(k2, r#"module.team["a"]"#));
        assert_eq!(at(k1, r#"module.team["b"]"#), at(k2, r#"module.team["b"]"#));
        assert_eq!(at(k1, r#"module.team["c"]"#), at(k2, r#"module.team["c"]"#));
        assert_ne!(at(k1, r#"module.team["a"]"#), at(k1, r#"module.team["c"]"#));
        let entries = |k: &Keyed, m: &str| k.hash_in(m).unwrap().entries.clone();
        assert_ne!(
            entries(k1, r#"module.team["a"]"#),
            entries(k2, r#"module.team["a"]"#)
        );
        assert_eq!(
            entries(k1, r#"module.team["b"]"#),
            entries(k2, r#"module.team["b"]"#)
        );
        assert_eq!(k1.hash_in("module.other[\"a\"]"), None);
        // A key absent from the map takes the argument's default; an unset
        // map is its declared default (`{}`).
        let empty = with(&["-var=gen={}"]);
        let unset = with(&[]);
        let (ke, ku) = (
            empty.blocks[base].keyed.as_ref().unwrap(),
            unset.blocks[base].keyed.as_ref().unwrap(),
        );
        assert_eq!(at(k1, r#"module.team["c"]"#), at(ke, r#"module.team["c"]"#));
        assert_eq!(at(ke, r#"module.team["c"]"#), at(ku, r#"module.team["c"]"#));
        assert_eq!(at(ke, r#"module.team["a"]"#), at(ku, r#"module.team["a"]"#));
        assert_ne!(at(k1, r#"module.team["a"]"#), at(ku, r#"module.team["a"]"#));
        // A block that does not read the map: the same in every instance.
        let ks = one.blocks[service].keyed.as_ref().unwrap();
        assert_eq!(at(ks, r#"module.team["a"]"#), at(ks, r#"module.team["b"]"#));
        // A value every instance reads changes every instance's hash.
        let slept = with(&[r#"-var=gen={a="2",b="1"}"#, "-var=sleep_seconds=3"]);
        let kz = slept.blocks[base].keyed.as_ref().unwrap();
        assert_ne!(at(k1, r#"module.team["b"]"#), at(kz, r#"module.team["b"]"#));
        // ... though not its entries.
        assert_eq!(
            entries(k1, r#"module.team["b"]"#),
            entries(kz, r#"module.team["b"]"#)
        );
        // A map this reader cannot split by key: no per-instance hashes.
        let computed = with(&[r#"-var=gen={(local.x)="2"}"#]);
        assert!(computed.blocks[base].keyed.is_none());
        assert!(computed.blocks[base].hash.is_some());
    }

    #[test]
    fn what_reads_a_map_by_instance_key() {
        let var = |text: &str| keyed_var(&text.parse::<Expression>().unwrap());
        for keyed in [
            r#"lookup(var.gen, each.key, "1")"#,
            "lookup(var.gen, each.key)",
            "var.gen[each.key]",
            "try(var.gen[each.key], null)",
        ] {
            assert_eq!(var(keyed).as_deref(), Some("gen"), "{keyed}");
        }
        for other in [
            "lookup(var.gen, each.value)",
            "lookup(var.gen, each.key, var.default)",
            "lookup(local.gen, each.key)",
            "var.gen[each.key].x",
            "var.gen",
            "try(var.gen[each.key], local.d)",
            "provider::x::lookup(var.gen, each.key)",
        ] {
            assert_eq!(var(other), None, "{other}");
        }
    }

    #[test]
    fn data_sources_and_impure_functions_have_no_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.tf"),
            r#"
data "terraform_remote_state" "net" {
  backend = "local"
}
locals {
  from_data = data.terraform_remote_state.net.outputs
  plain     = "x"
}
resource "terraform_data" "a" { input = local.from_data }
resource "terraform_data" "b" { input = "${local.plain}-${timestamp()}" }
resource "terraform_data" "c" { input = local.plain }
resource "terraform_data" "d" {
  input = terraform_data.c.id
  lifecycle { replace_triggered_by = [terraform_data.c] }
}
"#,
        )
        .unwrap();
        let c = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(c.blocks["terraform_data.a"].hash, None);
        assert_eq!(c.blocks["terraform_data.b"].hash, None);
        assert!(c.blocks["terraform_data.c"].hash.is_some());
        assert_eq!(c.blocks["terraform_data.d"].hash, None);
        let has = |a: &str, b: &str| c.info.edges.iter().any(|(x, y)| x == a && y == b);
        // Through a local, which terraform's plan JSON cannot follow.
        assert!(has("terraform_data.a", "data.terraform_remote_state.net"));
    }

    #[test]
    fn an_output_reading_a_data_source_and_a_variable_sees_the_variable_change() {
        // `azs_used` of the aws corpus: terraform planned its change when
        // `azs` changed; its hash (the text only) did not change.
        let dir = tempfile::tempdir().unwrap();
        let write = |azs: &str| {
            std::fs::write(
                dir.path().join("main.tf"),
                format!(
                    r#"
variable "azs" {{
  type    = list(string)
  default = {azs}
}}
data "terraform_remote_state" "zones" {{
  backend = "local"
}}
output "used" {{
  value = [for az in var.azs : az if contains(data.terraform_remote_state.zones.outputs.names, az)]
}}
output "text" {{
  value = data.terraform_remote_state.zones.outputs
}}
"#
                ),
            )
            .unwrap();
            read(dir.path(), &Inputs::default()).unwrap().outputs
        };
        let before = write(r#"["a", "b"]"#);
        let after = write(r#"["a", "b", "c"]"#);
        assert_ne!(before["used"], after["used"]);
        assert_eq!(before["text"], after["text"]);
    }

    #[test]
    fn what_count_and_for_each_read_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("main.tf"),
            r#"
resource "terraform_data" "src" { input = { a = 1 } }
locals { keys = terraform_data.src.output }
resource "terraform_data" "each" {
  for_each = local.keys
  input    = each.key
}
resource "terraform_data" "plain" {
  count = 2
  input = terraform_data.src.id
}
"#,
        )
        .unwrap();
        let c = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(
            c.blocks["terraform_data.each"].expansion_reads,
            ["terraform_data.src"]
        );
        assert!(c.blocks["terraform_data.plain"].expansion_reads.is_empty());
    }

    #[test]
    fn a_call_read_only_by_literal_keys_is_narrowable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("m")).unwrap();
        std::fs::write(
            dir.path().join("m/main.tf"),
            "output \"id\" { value = \"x\" }\n",
        )
        .unwrap();
        let narrowable = |main: &str| {
            std::fs::write(dir.path().join("main.tf"), main).unwrap();
            read(dir.path(), &Inputs::default()).unwrap().narrowable
        };
        let calls = r#"
variable "teams" { type = set(string) }
module "team" {
  source   = "./m"
  for_each = var.teams # the teams
}
module "counted" {
  source = "./m"
  count  = 2
}
"#;
        let found = narrowable(&format!(
            "{calls}\noutput \"a\" {{ value = module.team[\"a\"].id }}\n\
             resource \"terraform_data\" \"b\" {{ input = module.team[\"b\"] }}\n"
        ));
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            ["team"],
            "count is not narrowed"
        );
        assert_eq!(found["team"].for_each, "var.teams");
        assert_eq!(
            found["team"].named,
            BTreeSet::from(["a".into(), "b".into()])
        );
        // Read whole, in any way: not narrowable.
        for whole in [
            "output \"all\" { value = module.team }",
            "output \"all\" { value = { for k, t in module.team : k => t.id } }",
            "output \"all\" { value = values(module.team)[*].id }",
            "output \"one\" { value = module.team[var.pick].id }\nvariable \"pick\" {}",
            "resource \"terraform_data\" \"x\" { depends_on = [module.team] }",
            "moved {\n  from = module.old[\"a\"]\n  to = module.team[\"a\"]\n}",
            "locals { where = path.cwd }",
            "resource \"local_file\" \"f\" {\n  filename = \"out.txt\"\n  content = \"x\"\n}",
            "resource \"terraform_data\" \"p\" {\n  provisioner \"local-exec\" {\n    command = \"true\"\n  }\n}",
        ] {
            let found = narrowable(&format!("{calls}\n{whole}\n"));
            assert!(found.is_empty(), "{whole}: {found:?}");
        }
        // A local module outside the root module's directory.
        std::fs::write(
            dir.path().join("main.tf"),
            format!("{calls}\nmodule \"up\" {{ source = \"../{}/m\" }}\n", {
                dir.path().file_name().unwrap().to_string_lossy()
            }),
        )
        .unwrap();
        let back = read(dir.path(), &Inputs::default()).unwrap();
        assert!(
            back.narrowable.is_empty(),
            "../<root>/m resolves elsewhere from another directory"
        );
        std::fs::write(
            dir.path().join("main.tf"),
            format!("{calls}\nmodule \"down\" {{ source = \"./m/../m\" }}\n"),
        )
        .unwrap();
        let inside = read(dir.path(), &Inputs::default()).unwrap();
        assert_eq!(inside.narrowable.len(), 1, "./m/../m is inside the root");
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("m")).unwrap();
        std::fs::write(outside.path().join("m/main.tf"), "").unwrap();
        let up = pathdiff(outside.path().join("m"), dir.path());
        std::fs::write(
            dir.path().join("main.tf"),
            format!("{calls}\nmodule \"up\" {{ source = \"{up}\" }}\n"),
        )
        .unwrap();
        let c = read(dir.path(), &Inputs::default()).unwrap();
        assert!(c.narrowable.is_empty(), "{up}: {:?}", c.narrowable);
    }

    /// `to` relative to `from` (both absolute), through `..`.
    fn pathdiff(to: PathBuf, from: &Path) -> String {
        let ups = from.components().count() - 1;
        let rel: PathBuf = to.components().skip(1).collect();
        format!("{}{}", "../".repeat(ups), rel.display())
    }

    #[test]
    fn what_it_cannot_follow_is_said() {
        let dir = copy("chain");
        std::fs::write(dir.path().join("extra.tf.json"), "{}").unwrap();
        let e = read(dir.path(), &Inputs::default()).unwrap_err();
        assert!(e.0.contains("JSON configuration"), "{e}");
        std::fs::remove_file(dir.path().join("extra.tf.json")).unwrap();
        std::fs::write(dir.path().join("x_override.tf"), "").unwrap();
        let e = read(dir.path(), &Inputs::default()).unwrap_err();
        assert!(e.0.contains("override"), "{e}");
        std::fs::remove_file(dir.path().join("x_override.tf")).unwrap();
        // stategraph's own override file is not the user's configuration.
        std::fs::write(dir.path().join(OVERRIDE_FILE), "terraform {}").unwrap();
        assert!(read(dir.path(), &Inputs::default()).is_ok());
        std::fs::write(dir.path().join("broken.tf"), "resource \"x\" {").unwrap();
        let e = read(dir.path(), &Inputs::default()).unwrap_err();
        assert!(e.0.contains("cannot parse"), "{e}");
        std::fs::remove_file(dir.path().join("broken.tf")).unwrap();
        edit(
            dir.path(),
            "main.tf",
            "./modules/branch",
            "git::https://example.com/m.git",
        );
        let e = read(dir.path(), &Inputs::default()).unwrap_err();
        assert!(e.0.contains("not installed"), "{e}");
    }
}
