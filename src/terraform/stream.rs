//! What of terraform's output reaches the user when stategraph ran terraform
//! on the user's behalf: terraform's own output, without what only exists
//! because stategraph, not the user, chose how to run it.
//!
//! - `-target` is stategraph's (the change cone), so terraform's "Resource
//!   targeting is in effect" and "Applied changes may be incomplete"
//!   warnings are dropped: the boxed block (colour), the plain block
//!   (`-no-color`), or the `diagnostic` message (`-json`).
//! - Terraform runs more than once per command: only the first `version`
//!   message of `-json` output is shown.
//! - `destroy` applies a destroy plan, for which terraform says "Apply
//!   complete! ... N destroyed." and lists outputs: it ends as terraform's
//!   own destroy ends, "Destroy complete! Resources: N destroyed.".
//! - The plan file is private: its "Saved the plan to:" block names the
//!   user's file and `stategraph apply`, or is dropped where the user asked
//!   for no plan file (`apply`). The note after a plan without `-out` names
//!   `stategraph apply` too.
//!
//! The filter works on a stream, line by line, and holds back only lines
//! that may start such a block (a partial line that cannot is shown at once:
//! a prompt has no newline). Pure, bytes in and bytes out, but for one flag
//! per process: whether the `version` message was shown.

use std::sync::atomic::{AtomicBool, Ordering};

/// Summaries of terraform's warnings about `-target`.
const TARGETING: &[&str] = &[
    "Resource targeting is in effect",
    "Applied changes may be incomplete",
];
/// How the detail of both targeting warnings ends (whatever the wrapping).
const TARGETING_END: &str = "part of an error message.";
/// Longest plain targeting warning held back before it is shown after all
/// (a text this filter does not know).
const MAX_HELD: usize = 40;

/// How terraform's note after a plan without `-out` ends, and how it ends
/// when stategraph ran that plan.
const NO_OUT_NOTE: &str = "if you run \"terraform apply\" now.";
const NO_OUT_NOTE_OURS: &str = "if you run \"stategraph apply\" now.";

/// Whether this process has shown terraform's `version` message.
static VERSION_SHOWN: AtomicBool = AtomicBool::new(false);

/// How terraform's stdout is rewritten on its way to the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// stategraph added the `-target`s: drop terraform's warnings about them.
    pub targeting: bool,
    /// The run applies a destroy plan for `stategraph destroy`.
    pub destroy: bool,
    /// The private plan file terraform writes, and the file the user named
    /// (`plan -out=FILE`), or none (`apply`: no saved-plan block).
    pub saved_plan: Option<(String, Option<String>)>,
}

/// Where the filter is in terraform's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    /// Inside a boxed targeting warning, until its `╵` line.
    Box,
    /// Inside a plain targeting warning, until its detail ends.
    Plain,
    /// Inside terraform's saved-plan block naming the private file, until
    /// its `terraform apply` line.
    Saved,
    /// After a destroy's summary: terraform's list of outputs.
    Rest,
}

/// A streaming rewrite of terraform's stdout (see the module docs).
#[derive(Debug)]
pub struct Filter {
    rewrite: Rewrite,
    mode: Mode,
    /// The partial line received so far.
    partial: Vec<u8>,
    /// Part of the current line was shown already (a prompt): the rest is
    /// shown as it comes.
    mid_line: bool,
    /// Complete lines held back: blank lines (a plain warning takes the one
    /// before it), a `╷` line, a separator before a saved-plan block, or the
    /// lines of a plain warning being read.
    held: Vec<Vec<u8>>,
    /// The detail of the plain warning being read, spaces collapsed.
    detail: String,
}

impl Filter {
    /// A filter applying `rewrite`.
    pub fn new(rewrite: Rewrite) -> Filter {
        Filter {
            rewrite,
            mode: Mode::Normal,
            partial: Vec::new(),
            mid_line: false,
            held: Vec::new(),
            detail: String::new(),
        }
    }

    /// Takes the next bytes of terraform's stdout; returns what to show now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(nl + 1);
            rest = tail;
            if self.mid_line {
                out.extend_from_slice(head);
                self.mid_line = false;
                continue;
            }
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(head);
            self.line(line, &mut out);
        }
        if rest.is_empty() {
            return out;
        }
        if self.mid_line {
            out.extend_from_slice(rest);
            return out;
        }
        self.partial.extend_from_slice(rest);
        if self.mode == Mode::Normal && !may_matter(&self.partial) && !self.saved_wrapped() {
            // A prompt, say: shown now, not when its line ends.
            self.flush_held(&mut out);
            out.append(&mut self.partial);
            self.mid_line = true;
        }
        out
    }

    /// The end of terraform's output: what is still held back.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.mode == Mode::Plain || self.mode == Mode::Box {
            // A block that never ended is not one we know: show it.
            self.flush_held(&mut out);
        } else if self.mode == Mode::Normal {
            // Blank lines a plain warning would have taken, a lone `╷`.
            self.flush_held(&mut out);
        }
        if self.mode != Mode::Rest {
            out.append(&mut self.partial);
        }
        self.held.clear();
        self.partial.clear();
        out
    }

    /// Whether the last held line is a "Saved the plan to:" whose path is
    /// on the next line.
    fn saved_wrapped(&self) -> bool {
        self.held.last().is_some_and(|l| {
            strip_ansi(&String::from_utf8_lossy(l)).trim_end() == "Saved the plan to:"
        })
    }

    fn flush_held(&mut self, out: &mut Vec<u8>) {
        for l in self.held.drain(..) {
            out.extend_from_slice(&l);
        }
    }

    /// One complete line (with its newline).
    fn line(&mut self, line: Vec<u8>, out: &mut Vec<u8>) {
        let text = strip_ansi(&String::from_utf8_lossy(&line));
        let text = text.trim_end_matches(['\n', '\r']);
        match self.mode {
            Mode::Rest => {}
            Mode::Box => {
                if text.starts_with('╵') {
                    self.mode = Mode::Normal;
                    self.held.clear();
                }
            }
            Mode::Plain => {
                self.held.push(line);
                for w in text.split_whitespace() {
                    if !self.detail.is_empty() {
                        self.detail.push(' ');
                    }
                    self.detail.push_str(w);
                }
                if self.detail.ends_with(TARGETING_END) {
                    self.held.clear();
                    self.detail.clear();
                    self.mode = Mode::Normal;
                } else if self.held.len() > MAX_HELD {
                    self.flush_held(out);
                    self.detail.clear();
                    self.mode = Mode::Normal;
                }
            }
            Mode::Saved => {
                if text.trim_start().starts_with("terraform apply ") {
                    self.mode = Mode::Normal;
                }
            }
            Mode::Normal => self.normal_line(line, text, out),
        }
    }

    fn normal_line(&mut self, line: Vec<u8>, text: &str, out: &mut Vec<u8>) {
        if text.starts_with('{') {
            self.flush_held(out);
            if let Some(line) = self.json_line(line) {
                out.extend_from_slice(&line);
            }
            return;
        }
        let held_box = self.held.last().is_some_and(|l| {
            strip_ansi(&String::from_utf8_lossy(l))
                .trim_end()
                .starts_with('╷')
        });
        if held_box {
            let summary = text.trim_start_matches('│').trim();
            if self.rewrite.targeting && is_targeting(summary) {
                self.held.pop();
                self.flush_held(out);
                self.mode = Mode::Box;
                return;
            }
            self.flush_held(out);
        }
        if text.trim().is_empty() {
            self.held.push(line);
            return;
        }
        if text.starts_with('╷') {
            self.held.push(line);
            return;
        }
        if self.rewrite.targeting && is_targeting(text) {
            // The plain block opens with a blank line of its own.
            if self
                .held
                .last()
                .is_some_and(|l| l.iter().all(u8::is_ascii_whitespace))
            {
                self.held.pop();
            }
            self.flush_held(out);
            self.mode = Mode::Plain;
            return;
        }
        if let Some((private, given)) = self.rewrite.saved_plan.clone() {
            if !text.is_empty() && text.chars().all(|c| c == '─') {
                // A separator: a saved-plan block may follow.
                self.held.push(line);
                return;
            }
            if text.trim_end() == "Saved the plan to:" {
                // A long path is wrapped onto the next line.
                self.held.push(line);
                return;
            }
            let wrapped = self.saved_wrapped();
            let path = match wrapped {
                true => Some(text.trim()),
                false => text.strip_prefix("Saved the plan to: "),
            };
            if let Some(path) = path {
                if path == private.as_str() {
                    if wrapped {
                        self.held.pop();
                    }
                    match given {
                        Some(given) => {
                            self.flush_held(out);
                            out.extend_from_slice(
                                format!("Saved the plan to: {given}\n").as_bytes(),
                            );
                        }
                        None => {
                            // The separator and the blank lines around it go too.
                            self.held.clear();
                            self.mode = Mode::Saved;
                        }
                    }
                    return;
                }
            }
            let quoted = format!("terraform apply {}", go_quote(&private));
            if let (Some(given), true) = (given, text.trim_start().starts_with(&quoted)) {
                self.flush_held(out);
                out.extend_from_slice(
                    format!("    stategraph apply {}\n", go_quote(&given)).as_bytes(),
                );
                return;
            }
        }
        if self.rewrite.destroy {
            if let Some(n) = destroyed_count(text) {
                self.flush_held(out);
                let line = String::from_utf8_lossy(&line).replace(
                    &format!("Apply complete! Resources: 0 added, 0 changed, {n} destroyed."),
                    &format!("Destroy complete! Resources: {n} destroyed."),
                );
                out.extend_from_slice(line.as_bytes());
                // What follows is the list of outputs, which a destroy does not show.
                self.mode = Mode::Rest;
                return;
            }
        }
        self.flush_held(out);
        if text.ends_with(NO_OUT_NOTE) {
            // The note after a plan without -out: the user applies with stategraph.
            let line = String::from_utf8_lossy(&line).replace(NO_OUT_NOTE, NO_OUT_NOTE_OURS);
            out.extend_from_slice(line.as_bytes());
            return;
        }
        out.extend_from_slice(&line);
    }

    /// One message of `-json` output: shown as it is, rewritten, or dropped.
    fn json_line(&mut self, line: Vec<u8>) -> Option<Vec<u8>> {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(&line) else {
            return Some(line);
        };
        match message["type"].as_str() {
            Some("version") => (!VERSION_SHOWN.swap(true, Ordering::SeqCst)).then_some(line),
            Some("diagnostic")
                if self.rewrite.targeting
                    && message["diagnostic"]["summary"]
                        .as_str()
                        .is_some_and(is_targeting_summary) =>
            {
                None
            }
            Some("change_summary")
                if self.rewrite.destroy && message["changes"]["operation"] == "apply" =>
            {
                let Some(n) = message["@message"].as_str().and_then(destroyed_count) else {
                    return Some(line);
                };
                let text = String::from_utf8_lossy(&line)
                    .replace(
                        &format!("Apply complete! Resources: 0 added, 0 changed, {n} destroyed."),
                        &format!("Destroy complete! Resources: {n} destroyed."),
                    )
                    .replace("\"operation\":\"apply\"", "\"operation\":\"destroy\"");
                self.mode = Mode::Rest;
                Some(text.into_bytes())
            }
            _ => Some(line),
        }
    }
}

/// Whether a partial line may turn out to be one the filter rewrites or
/// drops (then it waits for the line's end).
fn may_matter(partial: &[u8]) -> bool {
    // A character cut in the middle: wait for the rest.
    if std::str::from_utf8(partial).is_err_and(|e| e.error_len().is_none()) {
        return true;
    }
    let text = String::from_utf8_lossy(partial);
    // An escape sequence cut in the middle: wait for the rest.
    if text.rfind('\x1b').is_some_and(|i| !text[i..].contains('m')) {
        return true;
    }
    let text = strip_ansi(&text);
    let text = text.trim_start();
    const STARTS: &[&str] = &[
        "{",
        "╷",
        "│",
        "─",
        "Warning: ",
        "Saved the plan to: ",
        "terraform apply ",
        "Apply complete! ",
        "guarantee ",
    ];
    text.is_empty()
        || STARTS
            .iter()
            .any(|s| s.starts_with(text) || text.starts_with(s))
}

/// `Warning: Resource targeting is in effect` (a plain or boxed summary line).
fn is_targeting(line: &str) -> bool {
    line.strip_prefix("Warning: ")
        .is_some_and(|s| is_targeting_summary(s.trim_end()))
}

fn is_targeting_summary(summary: &str) -> bool {
    TARGETING.contains(&summary)
}

/// N in terraform's "Apply complete! Resources: 0 added, 0 changed, N destroyed.".
fn destroyed_count(line: &str) -> Option<u64> {
    let start = line.find("Apply complete! Resources: 0 added, 0 changed, ")?;
    let rest = &line[start + "Apply complete! Resources: 0 added, 0 changed, ".len()..];
    let n = rest.strip_suffix(" destroyed.").or_else(|| {
        rest.find(" destroyed.")
            .map(|i| &rest[..i])
            .filter(|n| n.chars().all(|c| c.is_ascii_digit()))
    })?;
    n.parse().ok()
}

/// `text` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A path quoted as terraform quotes it (Go's `%q`), for plain paths.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(rewrite: Rewrite, input: &str, chunk: usize) -> String {
        let mut f = Filter::new(rewrite);
        let mut out = Vec::new();
        for piece in input.as_bytes().chunks(chunk) {
            out.extend(f.push(piece));
        }
        out.extend(f.finish());
        String::from_utf8(out).unwrap()
    }

    fn targeting() -> Rewrite {
        Rewrite {
            targeting: true,
            ..Rewrite::default()
        }
    }

    const PLAIN_PLAN: &str = "Changes to Outputs:\n  ~ x = \"a1\" -> (known after apply)\n\n\
Warning: Resource targeting is in effect\n\n\
You are creating a plan with the -target option, which means that the result\n\
of this plan may not represent all of the changes requested by the current\n\
configuration.\n\n\
The -target option is not for routine use, and is provided only for\n\
exceptional situations such as recovering from errors or mistakes, or when\n\
Terraform specifically suggests to use it as part of an error message.\n";

    #[test]
    fn drops_the_plain_warning_in_any_chunking() {
        for chunk in [1, 3, 7, 64, 4096] {
            assert_eq!(
                run(targeting(), PLAIN_PLAN, chunk),
                "Changes to Outputs:\n  ~ x = \"a1\" -> (known after apply)\n",
                "chunks of {chunk}"
            );
        }
        let apply = "a: Destruction complete after 0s\n\n\
Warning: Applied changes may be incomplete\n\n\
The plan was created with the -target option in effect, so some changes\n\
requested in the configuration may have been ignored and the output values\n\
may not be fully updated. Run the following command to verify that no other\n\
changes are pending:\n    terraform plan\n\n\
Note that the -target option is not suitable for routine use, and is provided\n\
only for exceptional situations such as recovering from errors or mistakes,\n\
or when Terraform specifically suggests to use it as part of an error\n\
message.\n\nApply complete! Resources: 0 added, 1 changed, 0 destroyed.\n";
        assert_eq!(
            run(targeting(), apply, 5),
            "a: Destruction complete after 0s\n\n\
             Apply complete! Resources: 0 added, 1 changed, 0 destroyed.\n"
        );
        // Without stategraph's targets, the warning is the user's.
        assert_eq!(run(Rewrite::default(), PLAIN_PLAN, 5), PLAIN_PLAN);
    }

    #[test]
    fn drops_the_boxed_warning() {
        let boxed = "  ~ x = 1\n\x1b[33m╷\x1b[0m\x1b[0m\n\
\x1b[33m│\x1b[0m \x1b[0m\x1b[1m\x1b[33mWarning: \x1b[0m\x1b[0m\x1b[1mResource targeting is in effect\x1b[0m\n\
\x1b[33m│\x1b[0m \x1b[0m\n\
\x1b[33m│\x1b[0m \x1b[0mYou are creating a plan\n\
\x1b[33m╵\x1b[0m\x1b[0m\n\
\x1b[33m╷\x1b[0m\x1b[0m\n\
\x1b[33m│\x1b[0m \x1b[0m\x1b[1m\x1b[33mWarning: \x1b[0m\x1b[0m\x1b[1mSomething else\x1b[0m\n\
\x1b[33m╵\x1b[0m\x1b[0m\n";
        let kept = "  ~ x = 1\n\x1b[33m╷\x1b[0m\x1b[0m\n\
\x1b[33m│\x1b[0m \x1b[0m\x1b[1m\x1b[33mWarning: \x1b[0m\x1b[0m\x1b[1mSomething else\x1b[0m\n\
\x1b[33m╵\x1b[0m\x1b[0m\n";
        for chunk in [1, 2, 9, 4096] {
            assert_eq!(run(targeting(), boxed, chunk), kept, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_prompt_is_shown_before_its_line_ends() {
        let mut f = Filter::new(targeting());
        let out = f.push(b"var.x\n  Enter a value: ");
        assert_eq!(String::from_utf8(out).unwrap(), "var.x\n  Enter a value: ");
        assert_eq!(f.push(b"yes\nnext\n"), b"yes\nnext\n");
    }

    #[test]
    fn the_note_after_a_plan_names_stategraph_apply() {
        let note = "Note: You didn't use the -out option to save this plan, so Terraform can't\n\
guarantee to take exactly these actions if you run \"terraform apply\" now.\n";
        assert_eq!(
            run(targeting(), note, 5),
            "Note: You didn't use the -out option to save this plan, so Terraform can't\n\
             guarantee to take exactly these actions if you run \"stategraph apply\" now.\n"
        );
    }

    #[test]
    fn json_drops_targeting_diagnostics() {
        let lines = "{\"@level\":\"info\",\"type\":\"change_summary\"}\n\
{\"@level\":\"warn\",\"@message\":\"Warning: Resource targeting is in effect\",\"diagnostic\":{\"severity\":\"warning\",\"summary\":\"Resource targeting is in effect\"},\"type\":\"diagnostic\"}\n\
{\"@level\":\"warn\",\"@message\":\"Warning: x\",\"diagnostic\":{\"severity\":\"warning\",\"summary\":\"x\"},\"type\":\"diagnostic\"}\n";
        let out = run(targeting(), lines, 11);
        assert!(!out.contains("targeting"), "{out}");
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    #[test]
    fn destroy_ends_as_terraform_destroy_does() {
        let rewrite = Rewrite {
            destroy: true,
            ..Rewrite::default()
        };
        let human = "a: Destruction complete after 0s\n\n\
\x1b[0m\x1b[1m\x1b[32mApply complete! Resources: 0 added, 0 changed, 2 destroyed.\x1b[0m\n\
\x1b[0m\x1b[1m\x1b[32m\nOutputs:\n\nx = \"a1\"\n";
        assert_eq!(
            run(rewrite.clone(), human, 4),
            "a: Destruction complete after 0s\n\n\
             \x1b[0m\x1b[1m\x1b[32mDestroy complete! Resources: 2 destroyed.\x1b[0m\n"
        );
        let json = "{\"@message\":\"Apply complete! Resources: 0 added, 0 changed, 2 destroyed.\",\"changes\":{\"add\":0,\"change\":0,\"import\":0,\"remove\":2,\"operation\":\"apply\"},\"type\":\"change_summary\"}\n\
{\"@message\":\"Outputs: 1\",\"type\":\"outputs\"}\n";
        assert_eq!(
            run(rewrite, json, 4096),
            "{\"@message\":\"Destroy complete! Resources: 2 destroyed.\",\"changes\":{\"add\":0,\"change\":0,\"import\":0,\"remove\":2,\"operation\":\"destroy\"},\"type\":\"change_summary\"}\n"
        );
    }

    #[test]
    fn the_saved_plan_block_names_the_users_file_or_goes() {
        let block = "Plan: 1 to add.\n\n─────\n\nSaved the plan to: /tmp/sg/final.tfplan\n\n\
To perform exactly these actions, run the following command to apply:\n    \
terraform apply \"/tmp/sg/final.tfplan\"\n";
        let named = || Rewrite {
            saved_plan: Some(("/tmp/sg/final.tfplan".into(), Some("a.plan".into()))),
            ..Rewrite::default()
        };
        let renamed = "Plan: 1 to add.\n\n─────\n\nSaved the plan to: a.plan\n\n\
             To perform exactly these actions, run the following command to apply:\n    \
             stategraph apply \"a.plan\"\n";
        assert_eq!(run(named(), block, 3), renamed);
        let wrapped = "Plan: 1 to add.\n\n─────\n\nSaved the plan to:\n/tmp/sg/final.tfplan\n\n\
To perform exactly these actions, run the following command to apply:\n    \
terraform apply \"/tmp/sg/final.tfplan\"\n";
        assert_eq!(run(named(), wrapped, 3), renamed);
        let none = Rewrite {
            saved_plan: Some(("/tmp/sg/final.tfplan".into(), None)),
            ..Rewrite::default()
        };
        assert_eq!(run(none.clone(), block, 3), "Plan: 1 to add.\n");
        assert_eq!(run(none, wrapped, 3), "Plan: 1 to add.\n");
    }
}
