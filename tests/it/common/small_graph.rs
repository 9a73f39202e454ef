//! A small stored state with dependencies, written by two real applies:
//! what `deps::` draws and `web::` serves.

use super::{assert_ok, sg_in, TestDb, TfWorkdir};

/// The state's name.
pub const SMALL_GRAPH: &str = "shop";

/// `base` <- `net` <- `app["web"]`, `app["api"]`, `db`; `lonely` alone.
/// `db` holds a sensitive password that changes with `gen` (and replaces it).
const CONFIG: &str = r#"
variable "gen" {
  type = string
}

resource "terraform_data" "base" {
  input = "base"
}

resource "terraform_data" "net" {
  input = "net-${terraform_data.base.id}"
}

resource "terraform_data" "app" {
  for_each = toset(["web", "api"])
  input    = "${each.key}-${terraform_data.net.id}-${var.gen}"
}

resource "terraform_data" "db" {
  input = { host = terraform_data.net.id }
  # Not `input`: terraform copies that to `output` unmarked.
  triggers_replace = { password = sensitive("pw-${var.gen}") }
}

resource "terraform_data" "lonely" {
  input = "alone"
}
"#;

/// Applies the configuration twice (gen 1, then 2: `app` and `db` change)
/// into state [`SMALL_GRAPH`] with `stategraph apply`.
pub fn store_small_graph(db: &TestDb) -> TfWorkdir {
    let wd = TfWorkdir::empty();
    wd.write_file("main.tf", CONFIG);
    for gen in ["1", "2"] {
        let var = format!("-var=gen={gen}");
        assert_ok(
            &format!("apply of gen {gen}"),
            &sg_in(
                db,
                &wd,
                SMALL_GRAPH,
                &["apply", "-auto-approve", "-no-color", &var],
            ),
        );
    }
    wd
}
